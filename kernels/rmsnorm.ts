/**
 * RMSNorm over the last dim with a learned weight (Zhang & Sennrich 2019, as DeepSeek-V3 uses
 * it before attention, before the FFN, on the MLA latents and before the head), with its
 * backward and CPU twins.
 *
 * Legend: R rows (the product of all dims but the last), C columns (the normalized dim),
 * K row chunks of the weight-gradient reduction.
 *
 *     forward:  rrms [R] = 1 / sqrt(mean_c x^2 + eps);   y [R, C] = x * rrms * w
 *     backward: dx [R, C] = rrms * w * dy - x * rrms^3 * mean_c(w * dy * x)
 *               dw [C]    = sum_r dy * x * rrms
 *
 * The forward saves the reciprocal RMS, all the backward needs besides x and w. The forward and
 * dx follow `_rows.ts`'s row plan (one thread per row up to 256 columns, a fixed-order fold with
 * vec4 loads when C % 4 == 0, lanes combined in lane order past that). dw is reduced over rows in
 * two fixed-order passes: K = ceil(R / 32) chunk partials [K, C] (one thread per column, or per
 * four columns, and chunk, looping over its 32 rows in order), then one thread per column
 * summing the K partials in order. No atomics, so the bits repeat.
 *
 * On the CPU backend each launcher calls its implementation in `host/rmsnorm.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import {
  assertF32,
  type Floats,
  like,
  PLAN_WG,
  planGrid,
  planKey,
  type RowPlan,
  rowPlan,
  rowsOf,
  wgslRowPlan,
} from "./_rows.ts";
import { sumToBias } from "./elementwise.ts";
import { hostRmsnorm, hostRmsnormBackward } from "./host/rmsnorm.ts";
import { Tensor } from "./tensor.ts";

/** The RMSNorm epsilon DeepSeek-V3 uses (`rms_norm_eps`). */
export const RMSNORM_EPS = 1e-6;

/** Rows per chunk of the first dw pass (why 32: enough work per thread, K small). */
const DW_ROWS_PER_CHUNK = 32;
/** Threads per workgroup of the dw passes (one per column). */
const DW_WG = 64;

function forwardSource(plan: RowPlan): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> w: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;
@group(0) @binding(3) var<storage, read_write> rrms: array<f32>;
struct P { rows: u32, u: u32, c: u32, eps: f32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  var s = V(0.0);
  for (var j = plan_lane(li); j < n; j += TPR) { let v = x[base + j]; s += v * v; }
  let r = 1.0 / sqrt(lanes_sum(li, hsum(s)) / f32(p.c) + p.eps);
  for (var j = plan_lane(li); j < n; j += TPR) { y[base + j] = x[base + j] * r * w[j]; }
  if (n > 0u && plan_lane(li) == 0u) { rrms[row] = r; }
}`;
}

/**
 * Encodes `y = x * rrms * w` with `rrms = 1 / sqrt(mean(x^2) + eps)` over the last dim.
 *
 * @param y f32, x's shape.
 * @param rrms f32 [R]: receives the reciprocal RMS of each row (for the backward).
 * @param x f32 [..., C].
 * @param w f32 [C].
 * @throws when sizes disagree.
 * @example rmsnormForward(y, rrms, x, w, { eps: 1e-6 });
 */
export function rmsnormForward(
  y: Tensor,
  rrms: Tensor,
  x: Tensor,
  w: Tensor,
  opts: { eps?: number } = {},
): void {
  assertF32(x, "rmsnormForward");
  const { rows, C } = rowsOf(x);
  if (y.size !== x.size || w.size !== C || rrms.size !== rows) {
    throw new Error(
      `rmsnormForward: y [${y.shape}], rrms [${rrms.shape}], x [${x.shape}], w [${w.shape}]; ` +
        `want y like x, rrms [${rows}], w [${C}]`,
    );
  }
  if (rows === 0) return;
  if (y.device.kind === "cpu") return hostRmsnorm(y, rrms, x, w, opts.eps ?? RMSNORM_EPS);
  const plan = rowPlan(C);
  launch(
    x.device,
    "rmsnorm",
    planKey(plan),
    () => forwardSource(plan),
    [x.binding, w.binding, y.binding, rrms.binding],
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).u32(C).f32(opts.eps ?? RMSNORM_EPS),
  );
}

function dxSource(plan: RowPlan, acc: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> dy: array<V>;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> w: array<V>;
@group(0) @binding(3) var<storage, read> rrms: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<V>;
struct P { rows: u32, u: u32, c: u32, _a: u32 }
@group(0) @binding(5) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  var s = V(0.0);
  for (var j = plan_lane(li); j < n; j += TPR) { s += w[j] * dy[base + j] * x[base + j]; }
  let r = rrms[min(row, p.rows - 1u)];
  // d/dx of x * r(x): r * w dy - x * r^3 * mean(w dy x)
  let k = r * r * r * lanes_sum(li, hsum(s)) / f32(p.c);
  for (var j = plan_lane(li); j < n; j += TPR) {
    let g = r * w[j] * dy[base + j] - x[base + j] * k;
    ${acc ? "dx[base + j] = dx[base + j] + g;" : "dx[base + j] = g;"}
  }
}`;
}

function dwSource(vec: boolean, acc: boolean): string {
  return /* wgsl */ `
alias V = ${vec ? "vec4<f32>" : "f32"};
@group(0) @binding(0) var<storage, read> dy: array<V>;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> rrms: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<V>;
struct P { rows: u32, u: u32, per_chunk: u32, _pad: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(${DW_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let j = wid.x * ${DW_WG}u + li;
  if (j >= p.u) { return; }
  let k = wid.y;
  let r1 = min(p.rows, (k + 1u) * p.per_chunk);
  var s = V(0.0);
  for (var r = k * p.per_chunk; r < r1; r++) { s += dy[r * p.u + j] * x[r * p.u + j] * rrms[r]; }
  ${acc ? "part[k * p.u + j] = part[k * p.u + j] + s;" : "part[k * p.u + j] = s;"}
}`;
}

/** Options of {@linkcode rmsnormBackward}. */
export interface RmsnormBackwardOptions {
  /** Add into `dx` instead of overwriting it. */
  accumulateX?: boolean;
  /** Add into `dw` instead of overwriting it (parameter gradients usually do). */
  accumulateW?: boolean;
}

/**
 * Encodes the RMSNorm gradients. Pass `null` for a gradient that is not needed.
 *
 * @param dx f32, x's shape, or null.
 * @param dw f32 [C], or null.
 * @param dy f32, the upstream gradient, x's shape.
 * @param x f32 [..., C], the forward input.
 * @param w f32 [C].
 * @param rrms f32 [R], saved by the forward.
 * @throws when sizes disagree.
 * @example rmsnormBackward(dx, w.grad, dy, x, w, rrms, { accumulateW: true });
 */
export function rmsnormBackward(
  dx: Tensor | null,
  dw: Tensor | null,
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  rrms: Tensor,
  opts: RmsnormBackwardOptions = {},
): void {
  const { rows, C } = rowsOf(x);
  if (
    dy.size !== x.size || w.size !== C || rrms.size !== rows || (dx && dx.size !== x.size) ||
    (dw && dw.size !== C)
  ) {
    throw new Error(
      `rmsnormBackward: dx [${dx?.shape}], dw [${dw?.shape}], dy [${dy.shape}], x [${x.shape}], ` +
        `w [${w.shape}], rrms [${rrms.shape}]`,
    );
  }
  const gpu = x.device;
  if (gpu.kind === "cpu") {
    return hostRmsnormBackward(dx, dw, dy, x, w, rrms, {
      accumulateX: Boolean(opts.accumulateX),
      accumulateW: Boolean(opts.accumulateW),
    });
  }
  if (dx && rows > 0) {
    const plan = rowPlan(C), acc = Boolean(opts.accumulateX);
    launch(
      gpu,
      "rmsnorm_dx",
      `${planKey(plan)}|${acc}`,
      () => dxSource(plan, acc),
      [dy.binding, x.binding, w.binding, rrms.binding, dx.binding],
      planGrid(plan, rows),
      (p) => p.u32(rows).u32(plan.units).u32(C).u32(0),
    );
  }
  if (dw) {
    const acc = Boolean(opts.accumulateW), vec = C % 4 === 0, u = vec ? C / 4 : C;
    const chunks = Math.max(1, Math.ceil(rows / DW_ROWS_PER_CHUNK));
    if (chunks > 65535) throw new Error(`rmsnormBackward: ${rows} rows is more than supported`);
    const pass1 = (part: Tensor, a: boolean) =>
      launch(
        gpu,
        "rmsnorm_dw",
        `${vec}|${a}`,
        () => dwSource(vec, a),
        [dy.binding, x.binding, rrms.binding, part.binding],
        [Math.ceil(u / DW_WG), chunks, 1],
        (p) => p.u32(rows).u32(u).u32(DW_ROWS_PER_CHUNK).u32(0),
      );
    if (chunks === 1) {
      pass1(dw, acc);
    } else {
      const part = Tensor.empty(gpu, [chunks, C]);
      pass1(part, false);
      sumToBias(dw, part, acc); // column sums over the K chunks, in chunk order
      part.dispose(); // later users of the pooled buffer are encoded after this read
    }
  }
}

/** CPU twin of {@linkcode rmsnormForward}: `{ y [R, C], rrms [R] }`. */
export function rmsnormCpu<A extends Floats>(
  x: A,
  w: Floats,
  opts: { eps?: number } = {},
): { y: A; rrms: A } {
  const C = w.length, rows = x.length / C, eps = opts.eps ?? RMSNORM_EPS;
  const y = like(x, x.length), rrms = like(x, rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < C; j++) s += x[r * C + j] ** 2;
    const k = 1 / Math.sqrt(s / C + eps);
    rrms[r] = k;
    for (let j = 0; j < C; j++) y[r * C + j] = x[r * C + j] * k * w[j];
  }
  return { y, rrms };
}

/** CPU twin of {@linkcode rmsnormBackward}: `{ dx [R, C], dw [C] }`. */
export function rmsnormBackwardCpu<A extends Floats>(
  dy: A,
  x: Floats,
  w: Floats,
  rrms: Floats,
): { dx: A; dw: A } {
  const C = w.length, rows = x.length / C;
  const dx = like(dy, x.length), dw = like(dy, C);
  for (let r = 0; r < rows; r++) {
    const k = rrms[r];
    let s = 0;
    for (let j = 0; j < C; j++) s += w[j] * dy[r * C + j] * x[r * C + j];
    for (let j = 0; j < C; j++) {
      const i = r * C + j;
      dx[i] = k * w[j] * dy[i] - x[i] * k * k * k * s / C;
      dw[j] += dy[i] * x[i] * k;
    }
  }
  return { dx, dw };
}

/**
 * RMSNorm over the last dim, with autograd for x and w.
 * @param x f32 [..., C].
 * @param w f32 [C].
 * @returns y, x's shape.
 * @example const h = rmsnorm(x, attnNormWeight); // [B, T, D]
 */
export function rmsnorm(x: Tensor, w: Tensor, opts: { eps?: number } = {}): Tensor {
  const y = Tensor.empty(x.device, x.shape);
  const rrms = Tensor.empty(x.device, [rowsOf(x).rows]);
  rmsnormForward(y, rrms, x, w, opts);
  if (needsGrad(x, w)) {
    record("rmsnorm", [y], () => {
      if (!y.grad) return;
      const gx = x.requiresGrad ? gradFor(x) : null;
      const gw = w.requiresGrad ? gradFor(w) : null;
      rmsnormBackward(gx?.grad ?? null, gw?.grad ?? null, y.grad, x, w, rrms, {
        accumulateX: gx?.accumulate,
        accumulateW: gw?.accumulate,
      });
    });
  }
  return y;
}
