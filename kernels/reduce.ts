/**
 * Reductions: row sum / mean / max over the last dim with their backwards, and a deterministic
 * full reduction to a scalar ({@linkcode sumAllForward}) for the loss and the gradient norm.
 *
 * Legend: R rows (the product of all dims but the last), C columns (the last dim), N elements,
 * G first-stage groups of the full reduction.
 *
 *     reduce:  x [R, C] -> out [R]            (max also writes argmax i32 [R])
 *     sumAll:  x [N]    -> out [1]            (optionally of x^2, times a scale)
 *
 * Determinism: row reductions follow `_rows.ts`'s row plan (one thread per row up to 256
 * columns, else 8 lanes, each folding a fixed strided slice, lanes combined in order); the full reduction is two-stage, G = min(256, ceil(N / 1024)) contiguous
 * strides then one workgroup over the G partials, a partition that depends on N alone. No
 * atomics anywhere, so the same inputs give the same bits.
 *
 * The max backward sends the gradient to the argmax only (the first one on ties), as PyTorch's
 * `max(dim)` does.
 *
 * On the CPU backend each launcher calls its implementation in `host/reduce.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import { hostReduce, hostReduceBackward, hostSumAll, hostSumAllBackward } from "./host/reduce.ts";
import {
  assertF32,
  dropLastDim,
  type Floats,
  like,
  PLAN_WG,
  planGrid,
  planKey,
  type RowPlan,
  rowPlan,
  rowsOf,
  wgslRowHelpers,
  wgslRowPlan,
} from "./_rows.ts";
import { Tensor } from "./tensor.ts";

/** The row reductions. */
export type RowReduceOp = "sum" | "mean" | "max";

/** Options of {@linkcode reduceForward}. */
export interface ReduceOptions {
  /** Which reduction. */
  op: RowReduceOp;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
  /** For "max": an i32 [R] tensor that receives the argmax (ties: the first), for the backward. */
  argmax?: Tensor;
}

function reduceSource(op: RowReduceOp, plan: RowPlan, acc: boolean, withArg: boolean): string {
  // Columns in order within a thread (strict > keeps the first maximum), lanes in order after.
  const comps = plan.vec ? ["x", "y", "z", "w"] : [""];
  const fold = op === "max"
    ? /* wgsl */ `
  var best = NEG_MAX;
  var bi = 0u;
  for (var j = plan_lane(li); j < n; j += TPR) {
    let v = x[base + j];
    ${
      comps.map((c, k) =>
        `if (v${c ? `.${c}` : ""} > best) { best = v${c ? `.${c}` : ""}; bi = ${
          plan.vec ? `4u * j + ${k}u` : "j"
        }; }`
      ).join("\n    ")
    }
  }
  let r2 = lanes_max_arg(li, best, bi);
  let r = bitcast<f32>(r2.x);`
    : /* wgsl */ `
  var s = V(0.0);
  for (var j = plan_lane(li); j < n; j += TPR) { s += x[base + j]; }
  let r = lanes_sum(li, hsum(s)) * ${op === "mean" ? "p.inv_c" : "1.0"};`;
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${withArg ? "@group(0) @binding(2) var<storage, read_write> arg: array<i32>;" : ""}
struct P { rows: u32, u: u32, inv_c: f32, _pad: u32 }
@group(0) @binding(${withArg ? 3 : 2}) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  ${fold}
  if (n > 0u && plan_lane(li) == 0u) {
    ${acc ? "out[row] = out[row] + r;" : "out[row] = r;"}
    ${withArg ? "arg[row] = i32(r2.y);" : ""}
  }
}`;
}

/**
 * Encodes `out[r] = op(x[r, :])` over the last dim of `x`.
 *
 * @param out f32 [R] (any shape with R elements).
 * @param x f32 [..., C].
 * @throws when sizes disagree or `argmax` is given for another op than "max".
 * @example reduceForward(rowMax, logits, { op: "max", argmax: idx });
 */
export function reduceForward(out: Tensor, x: Tensor, opts: ReduceOptions): void {
  assertF32(x, "reduceForward");
  const { rows, C } = rowsOf(x);
  if (out.size !== rows) {
    throw new Error(`reduceForward: out has ${out.size} elements, x [${x.shape}] has ${rows} rows`);
  }
  if (opts.argmax && opts.op !== "max") throw new Error("reduceForward: argmax needs op max");
  if (opts.argmax && opts.argmax.size !== rows) {
    throw new Error(`reduceForward: argmax has ${opts.argmax.size} elements, want ${rows}`);
  }
  if (rows === 0) return;
  const acc = Boolean(opts.accumulate), withArg = Boolean(opts.argmax);
  if (out.device.kind === "cpu") {
    return hostReduce(out, x, { op: opts.op, C, accumulate: acc, argmax: opts.argmax });
  }
  const plan = rowPlan(C);
  const bindings = [x.binding, out.binding];
  if (opts.argmax) bindings.push(opts.argmax.binding);
  launch(
    x.device,
    `reduce_${opts.op}`,
    `${planKey(plan)}|${acc}|${withArg}`,
    () => reduceSource(opts.op, plan, acc, withArg),
    bindings,
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).f32(1 / C).u32(0),
  );
}

/** Options of {@linkcode reduceBackward}. */
export interface ReduceBackwardOptions {
  /** Which reduction the forward was. */
  op: RowReduceOp;
  /** For "max": the argmax the forward saved, i32 [R]. */
  argmax?: Tensor;
  /** Add into `dx` instead of overwriting it. */
  accumulate?: boolean;
}

function reduceBackwardSource(op: RowReduceOp, acc: boolean): string {
  const isMax = op === "max";
  const value = isMax
    ? "select(0.0, dout[row], i32(c) == arg[row])"
    : op === "mean"
    ? "dout[row] * p.inv_c"
    : "dout[row]";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> dout: array<f32>;
${isMax ? "@group(0) @binding(1) var<storage, read> arg: array<i32>;" : ""}
@group(0) @binding(${isMax ? 2 : 1}) var<storage, read_write> dx: array<f32>;
struct P { n: u32, c: u32, inv_c: f32, _pad: u32 }
@group(0) @binding(${isMax ? 3 : 2}) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let row = i / p.c;
  let c = i - row * p.c;
  let g = ${value};
  ${acc ? "dx[i] = dx[i] + g;" : "dx[i] = g;"}
}`;
}

/**
 * Encodes the gradient of a row reduction: `dx[r, c] = dout[r]` (sum), `dout[r] / C` (mean), or
 * `dout[r]` at the saved argmax and 0 elsewhere (max). Writes every element of `dx`.
 *
 * @param dx f32 [..., C].
 * @param dout f32 [R].
 * @throws when sizes disagree or "max" comes without `argmax`.
 * @example reduceBackward(dx, dRowMax, { op: "max", argmax: idx, accumulate: true });
 */
export function reduceBackward(dx: Tensor, dout: Tensor, opts: ReduceBackwardOptions): void {
  const { rows, C } = rowsOf(dx);
  if (dout.size !== rows) {
    throw new Error(`reduceBackward: dout has ${dout.size} elements, dx has ${rows} rows`);
  }
  const isMax = opts.op === "max";
  if (isMax && !opts.argmax) throw new Error("reduceBackward: op max needs the saved argmax");
  const acc = Boolean(opts.accumulate);
  if (dx.device.kind === "cpu") {
    return hostReduceBackward(dx, dout, { op: opts.op, C, accumulate: acc, argmax: opts.argmax });
  }
  const bindings = isMax
    ? [dout.binding, opts.argmax!.binding, dx.binding]
    : [dout.binding, dx.binding];
  launch1d(
    dx.device,
    `reduce_${opts.op}_bwd`,
    `${acc}`,
    () => reduceBackwardSource(opts.op, acc),
    bindings,
    dx.size,
    (p) => p.u32(dx.size).u32(C).f32(1 / C).u32(0),
  );
}

/**
 * CPU twin of {@linkcode reduceForward}.
 * @returns the reductions [R] (same array type as `x`) and, for every op, the argmax [R].
 * @example reduceCpu(new Float32Array([1, 3, 2, 2]), 2, "max") // { out: [3, 2], argmax: [1, 0] }
 */
export function reduceCpu<A extends Floats>(
  x: A,
  C: number,
  op: RowReduceOp,
): { out: A; argmax: Int32Array } {
  const rows = C === 0 ? 0 : x.length / C;
  const out = like(x, rows);
  const argmax = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0, best = -Infinity, bi = 0;
    for (let c = 0; c < C; c++) {
      const v = x[r * C + c];
      s += v;
      if (v > best) {
        best = v;
        bi = c;
      }
    }
    out[r] = op === "max" ? best : op === "mean" ? s / C : s;
    argmax[r] = bi;
  }
  return { out, argmax };
}

/** CPU twin of {@linkcode reduceBackward}: dx [R, C] from dout [R]. */
export function reduceBackwardCpu<A extends Floats>(
  dout: A,
  C: number,
  op: RowReduceOp,
  argmax?: Int32Array,
): A {
  const rows = dout.length;
  const dx = like(dout, rows * C);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < C; c++) {
      dx[r * C + c] = op === "max"
        ? (c === argmax![r] ? dout[r] : 0)
        : op === "mean"
        ? dout[r] / C
        : dout[r];
    }
  }
  return dx;
}

function rowReduceOp(x: Tensor, op: RowReduceOp): Tensor {
  const out = Tensor.empty(x.device, dropLastDim(x.shape));
  const argmax = op === "max" ? Tensor.empty(x.device, [out.size], "i32") : undefined;
  reduceForward(out, x, { op, argmax });
  if (needsGrad(x)) {
    record(`reduce_${op}`, [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      reduceBackward(grad, out.grad, { op, argmax, accumulate });
    });
  }
  return out;
}

/**
 * Sum over the last dim, with autograd.
 * @returns f32 [...] (x's shape without its last dim; [1] for a vector).
 * @example const s = sumRows(x); // x [B, T, D] -> s [B, T]
 */
export function sumRows(x: Tensor): Tensor {
  return rowReduceOp(x, "sum");
}

/** Mean over the last dim, with autograd. @example meanRows(x) // [B, T, D] -> [B, T] */
export function meanRows(x: Tensor): Tensor {
  return rowReduceOp(x, "mean");
}

/**
 * Max over the last dim, with autograd (the gradient goes to the first argmax).
 * @example maxRows(logits) // [N, V] -> [N]
 */
export function maxRows(x: Tensor): Tensor {
  return rowReduceOp(x, "max");
}

/** Threads per workgroup of the full reduction (also the most first-stage groups). */
const ALL_WG = 256;

/** First-stage groups for `n` elements: a function of `n` alone, so the order is fixed. */
export function sumAllGroups(n: number): number {
  return Math.max(1, Math.min(ALL_WG, Math.ceil(n / (4 * ALL_WG))));
}

const SUM_ALL_SRC = (square: boolean, acc: boolean) => /* wgsl */ `
${wgslRowHelpers(ALL_WG)}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
struct P { n: u32, groups: u32, scale: f32, _pad: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(${ALL_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let g = wid.x;
  // Group g folds x[g*WG + li + k*groups*WG]: coalesced, and fixed for a given n.
  let stride = p.groups * WG;
  var s = 0.0;
  for (var i = g * WG + li; i < p.n; i += stride) {
    let v = x[i];
    s += ${square ? "v * v" : "v"};
  }
  let r = wg_sum(li, s) * p.scale;
  if (li == 0u) { ${acc ? "dst[g] = dst[g] + r;" : "dst[g] = r;"} }
}`;

/** Options of {@linkcode sumAllForward}. */
export interface SumAllOptions {
  /** Sum squares instead (the gradient norm's sum of squares). */
  square?: boolean;
  /** Multiply the sum by this (1/N for a mean). Default 1. */
  scale?: number;
  /** Add into `out[0]` (e.g. a sum of squares over many gradient tensors). */
  accumulate?: boolean;
}

/**
 * Encodes `out[0] = scale * sum_i x_i` (or of `x_i^2`) over every element of `x`, in two
 * fixed-order stages (deterministic: the partition depends only on x's size).
 *
 * @param out f32 [1] (any tensor; element 0 is written).
 * @param x f32, any shape.
 * @example sumAllForward(sq, grad, { square: true, accumulate: true });
 */
export function sumAllForward(out: Tensor, x: Tensor, opts: SumAllOptions = {}): void {
  assertF32(x, "sumAllForward");
  const gpu = x.device, n = x.size;
  const square = Boolean(opts.square), acc = Boolean(opts.accumulate);
  const scale = opts.scale ?? 1;
  if (out.device.kind === "cpu") return hostSumAll(out, x, { square, scale, accumulate: acc });
  const groups = sumAllGroups(n);
  const run = (
    src: Tensor,
    dst: Tensor,
    len: number,
    g: number,
    sq: boolean,
    a: boolean,
    s: number,
  ) =>
    launch(
      gpu,
      "sum_all",
      `${sq}|${a}`,
      () => SUM_ALL_SRC(sq, a),
      [src.binding, dst.binding],
      [g, 1, 1],
      (p) => p.u32(len).u32(g).f32(s).u32(0),
    );
  if (groups === 1) {
    run(x, out, n, 1, square, acc, scale);
    return;
  }
  const partial = Tensor.empty(gpu, [groups]);
  run(x, partial, n, groups, square, false, 1);
  run(partial, out, groups, 1, false, acc, scale);
  // Later users of this pooled buffer are encoded after the read above, so it may go back now.
  partial.dispose();
}

/** CPU twin of {@linkcode sumAllForward} (accumulated in f64). */
export function sumAllCpu(x: Floats, opts: { square?: boolean; scale?: number } = {}): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += opts.square ? x[i] * x[i] : x[i];
  return s * (opts.scale ?? 1);
}

const SUM_ALL_BWD_SRC = (square: boolean, acc: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dout: array<f32>;
${square ? "@group(0) @binding(1) var<storage, read> x: array<f32>;" : ""}
@group(0) @binding(${square ? 2 : 1}) var<storage, read_write> dx: array<f32>;
struct P { n: u32, scale: f32, _a: u32, _b: u32 }
@group(0) @binding(${square ? 3 : 2}) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let g = ${square ? "2.0 * x[i] * dout[0] * p.scale" : "dout[0] * p.scale"};
  ${acc ? "dx[i] = dx[i] + g;" : "dx[i] = g;"}
}`;

/**
 * Encodes the gradient of {@linkcode sumAllForward}: `dx = scale * dout[0]`, or
 * `2 scale x dout[0]` for a sum of squares.
 *
 * @param dx f32, x's shape.
 * @param dout f32 [1].
 * @param opts `x` is required when `square`.
 */
export function sumAllBackward(
  dx: Tensor,
  dout: Tensor,
  opts: SumAllOptions & { x?: Tensor } = {},
): void {
  const square = Boolean(opts.square), acc = Boolean(opts.accumulate);
  if (square && !opts.x) throw new Error("sumAllBackward: square needs the forward input x");
  if (dx.device.kind === "cpu") {
    const scale = opts.scale ?? 1;
    return hostSumAllBackward(dx, dout, { square, scale, accumulate: acc, x: opts.x });
  }
  const bindings = square
    ? [dout.binding, opts.x!.binding, dx.binding]
    : [dout.binding, dx.binding];
  launch1d(
    dx.device,
    "sum_all_bwd",
    `${square}|${acc}`,
    () => SUM_ALL_BWD_SRC(square, acc),
    bindings,
    dx.size,
    (p) => p.u32(dx.size).f32(opts.scale ?? 1).u32(0).u32(0),
  );
}

/** CPU twin of {@linkcode sumAllBackward}. */
export function sumAllBackwardCpu<A extends Floats>(
  x: A,
  dout: number,
  opts: { square?: boolean; scale?: number } = {},
): A {
  const dx = like(x, x.length);
  const s = opts.scale ?? 1;
  for (let i = 0; i < x.length; i++) dx[i] = opts.square ? 2 * x[i] * dout * s : dout * s;
  return dx;
}

/**
 * The scalar `scale * sum(x)` (or of `x^2`), deterministic, with autograd.
 * @returns f32 [1].
 * @example const l = sumAll(perTokenLoss, { scale: 1 / n });
 */
export function sumAll(x: Tensor, opts: { square?: boolean; scale?: number } = {}): Tensor {
  const out = Tensor.empty(x.device, [1]);
  sumAllForward(out, x, opts);
  if (needsGrad(x)) {
    record("sum_all", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      sumAllBackward(grad, out.grad, { ...opts, x, accumulate });
    });
  }
  return out;
}
