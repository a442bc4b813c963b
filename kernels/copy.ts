/**
 * Tensor plumbing the model needs, all differentiable, with CPU twins: slicing and concatenating
 * along the last dim, the MLA key build (per-head part + one part shared by every head), and the
 * [B, T, H, D] <-> [B, H, T, D] permute.
 *
 * Legend: R rows (the product of all dims but the last), C / Cx / Co row lengths (last dims),
 * B batch, T time, H heads, da per-head columns, ds shared columns, D head dim.
 *
 *     copyColumns:           out[r, oo + j] (+)= x[r, xo + j],  j < len   (the building block)
 *     sliceLastDim:          x [..., C] -> [..., len]
 *     concatLastDim:         [..., C1], [..., C2], ... -> [..., C1 + C2 + ...]
 *     concatBroadcastHeads:  a [B, T, H, da], shared [B, T, 1, ds] -> [B, T, H, da + ds]
 *                            (MLA: k = [k_nope ; k_pe]; the backward sums over heads in order)
 *     transpose12:           [A, B, C, D] -> [A, C, B, D]
 *
 * Every backward either writes its whole gradient or adds into it, following `gradFor`: no
 * zero fills are needed. copyColumns and the key build follow `_rows.ts`'s row plan (rows on
 * threads, vec4 units when every offset and length is 4-aligned: no per-element division, which
 * lavapipe does lane by lane); transpose12 runs one thread per output element. The only
 * reduction (the shared part's gradient over heads) loops over heads in a fixed order.
 *
 * On the CPU backend each launcher calls its implementation in `host/copy.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
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
import {
  hostConcatBroadcastHeads,
  hostConcatBroadcastHeadsBackward,
  hostCopyColumns,
  hostTranspose12,
} from "./host/copy.ts";
import { Tensor } from "./tensor.ts";

function copySource(plan: RowPlan, acc: boolean, pad: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read_write> out: array<V>;
// in units (vec4s or scalars): row width walked, columns copied, strides and offsets
struct P { rows: u32, width: u32, len: u32, xs: u32, xo: u32, os: u32, oo: u32, _a: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let r = plan_row(wid, nwg, li);
  if (r >= p.rows) { return; }
  for (var k = plan_lane(li); k < p.width; k += TPR) {
    ${
    pad
      // one thread per out column: zeros outside the copied range (a slice's gradient)
      ? `let j = k - p.oo;
    var v = V(0.0);
    if (k >= p.oo && j < p.len) { v = x[r * p.xs + p.xo + j]; }
    out[r * p.os + k] = v;`
      : `let v = x[r * p.xs + p.xo + k];
    ${acc ? "out[r * p.os + p.oo + k] += v;" : "out[r * p.os + p.oo + k] = v;"}`
  }
  }
}`;
}

/** Options of {@linkcode copyColumns}. */
export interface CopyColumnsOptions {
  /** Columns to copy. Default: all of x's row from `xOffset`. */
  len?: number;
  /** First column read in each row of x. Default 0. */
  xOffset?: number;
  /** First column written in each row of out. Default 0. */
  outOffset?: number;
  /** Add into out instead of overwriting it. */
  accumulate?: boolean;
  /** Also write zeros to the rest of each out row (not with `accumulate`). */
  zeroRest?: boolean;
}

/**
 * Encodes `out[r, outOffset + j] (+)= x[r, xOffset + j]` for j < len, for every row r; the row
 * strides are the last dims of x and out.
 *
 * @param out f32 [..., Co] with R rows (must not share x's buffer).
 * @param x f32 [..., Cx] with R rows.
 * @throws when the rows differ, the range does not fit, or out shares x's buffer.
 * @example copyColumns(qPe, q, { xOffset: dn, len: dr }); // q [N, dn + dr] -> qPe [N, dr]
 */
export function copyColumns(out: Tensor, x: Tensor, opts: CopyColumnsOptions = {}): void {
  assertF32(x, "copyColumns");
  const { rows, C: cx } = rowsOf(x), co = rowsOf(out).C;
  const xo = opts.xOffset ?? 0, oo = opts.outOffset ?? 0, len = opts.len ?? cx - xo;
  if (rowsOf(out).rows !== rows) {
    throw new Error(`copyColumns: x [${x.shape}] and out [${out.shape}] differ in rows`);
  }
  if (xo < 0 || oo < 0 || len < 0 || xo + len > cx || oo + len > co) {
    throw new Error(
      `copyColumns: ${len} columns from ${xo} of [${x.shape}] to ${oo} of [${out.shape}] ` +
        "do not fit",
    );
  }
  if (out.buffer === x.buffer) throw new Error("copyColumns: out must not share x's buffer");
  const acc = Boolean(opts.accumulate), pad = Boolean(opts.zeroRest) && !acc;
  if (rows === 0 || (pad ? co : len) === 0) return;
  if (out.device.kind === "cpu") {
    return hostCopyColumns(out, x, { rows, cx, co, xo, oo, len }, {
      accumulate: acc,
      zeroRest: pad,
    });
  }
  // vec4 units when every row start, offset and length is 4-aligned
  const w = [cx, co, xo, oo, len].every((v) => v % 4 === 0) ? 4 : 1;
  const width = (pad ? co : len) / w;
  const plan = { ...rowPlan(width * w), vec: w === 4, units: width };
  launch(
    x.device,
    "copy_columns",
    `${planKey(plan)}|${acc}|${pad}`,
    () => copySource(plan, acc, pad),
    [x.binding, out.binding],
    planGrid(plan, rows),
    (p) =>
      p.u32(rows).u32(width).u32(len / w).u32(cx / w).u32(xo / w).u32(co / w).u32(oo / w).u32(0),
  );
}

/** CPU twin of {@linkcode copyColumns} on [R, C] arrays: returns the updated copy of `out`. */
export function copyColumnsCpu<A extends Floats>(
  out: A,
  x: Floats,
  opts: { cx: number; co: number } & CopyColumnsOptions,
): A {
  const { cx, co } = opts, rows = x.length / cx;
  const xo = opts.xOffset ?? 0, oo = opts.outOffset ?? 0, len = opts.len ?? cx - xo;
  const res = like(out, out.length);
  if (!opts.zeroRest || opts.accumulate) res.set(out);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < len; j++) {
      const v = x[r * cx + xo + j];
      res[r * co + oo + j] = opts.accumulate ? res[r * co + oo + j] + v : v;
    }
  }
  return res;
}

/**
 * `x[..., start : start + len]` with autograd.
 * @example const qPe = sliceLastDim(q, dn, dr); // [B, T, H, dn + dr] -> [B, T, H, dr]
 */
export function sliceLastDim(x: Tensor, start: number, len: number): Tensor {
  const out = Tensor.empty(x.device, [...x.shape.slice(0, -1), len]);
  copyColumns(out, x, { xOffset: start, len });
  if (needsGrad(x)) {
    record("slice_last_dim", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      copyColumns(grad, out.grad, { outOffset: start, len, accumulate, zeroRest: true });
    });
  }
  return out;
}

/**
 * Concatenation along the last dim with autograd; every part has the same leading dims.
 * @example const kv = concatLastDim([cKv, kPe]); // [N, rkv], [N, dr] -> [N, rkv + dr]
 * @throws when there are no parts or their leading dims differ.
 */
export function concatLastDim(parts: Tensor[]): Tensor {
  if (parts.length === 0) throw new Error("concatLastDim: no parts");
  const lead = parts[0].shape.slice(0, -1);
  const widths = parts.map((p) => p.shape[p.shape.length - 1]);
  for (const p of parts) {
    if (p.shape.length !== lead.length + 1 || p.shape.slice(0, -1).some((d, i) => d !== lead[i])) {
      throw new Error(`concatLastDim: part [${p.shape}] does not match [${lead}, *]`);
    }
  }
  const out = Tensor.empty(parts[0].device, [...lead, widths.reduce((a, b) => a + b, 0)]);
  const offsets = widths.map((_, i) => widths.slice(0, i).reduce((a, b) => a + b, 0));
  parts.forEach((p, i) => copyColumns(out, p, { outOffset: offsets[i] }));
  if (needsGrad(...parts)) {
    record("concat_last_dim", [out], () => {
      if (!out.grad) return;
      parts.forEach((p, i) => {
        if (!p.requiresGrad) return;
        const { grad, accumulate } = gradFor(p);
        copyColumns(grad, out.grad!, { xOffset: offsets[i], len: widths[i], accumulate });
      });
    });
  }
  return out;
}

function bcastSource(plan: RowPlan, acc: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> a: array<V>;
@group(0) @binding(1) var<storage, read> sh: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
// rows = B T H; h heads; da, ds in units
struct P { rows: u32, h: u32, da: u32, ds: u32 }
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li); // (b, t, h)
  if (row >= p.rows) { return; }
  let s = p.da + p.ds;
  let shb = (row / p.h) * p.ds;
  for (var j = plan_lane(li); j < s; j += TPR) {
    var v: V;
    if (j < p.da) { v = a[row * p.da + j]; } else { v = sh[shb + j - p.da]; }
    ${acc ? "out[row * s + j] = out[row * s + j] + v;" : "out[row * s + j] = v;"}
  }
}`;
}

function bcastBackwardSource(plan: RowPlan, acc: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> dout: array<V>;
@group(0) @binding(1) var<storage, read_write> dsh: array<V>;
// rows = B T; h heads; da, ds in units
struct P { rows: u32, h: u32, da: u32, ds: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let bt = plan_row(wid, nwg, li);
  if (bt >= p.rows) { return; }
  let s = p.da + p.ds;
  for (var j = plan_lane(li); j < p.ds; j += TPR) {
    var acc = V(0.0);
    for (var h = 0u; h < p.h; h++) { acc += dout[(bt * p.h + h) * s + p.da + j]; }
    ${acc ? "dsh[bt * p.ds + j] = dsh[bt * p.ds + j] + acc;" : "dsh[bt * p.ds + j] = acc;"}
  }
}`;
}

/** The row plan of the key build: vec4 units when both parts are whole vec4s. */
function bcastPlan(da: number, ds: number, width: number): { plan: RowPlan; w: number } {
  const w = da % 4 === 0 && ds % 4 === 0 ? 4 : 1;
  return { plan: { ...rowPlan(width), vec: w === 4, units: width / w }, w };
}

function bcastShape(a: Tensor, shared: Tensor, what: string) {
  if (a.shape.length !== 4 || shared.shape.length !== 4 || shared.shape[2] !== 1) {
    throw new Error(
      `${what}: want a [B, T, H, da], shared [B, T, 1, ds]; got [${a.shape}], [${shared.shape}]`,
    );
  }
  const [B, T, H, da] = a.shape, ds = shared.shape[3];
  if (shared.shape[0] !== B || shared.shape[1] !== T) {
    throw new Error(`${what}: a [${a.shape}] and shared [${shared.shape}] differ in B, T`);
  }
  return { B, T, H, da, ds };
}

/**
 * Encodes `out[b, t, h, :] (+)= [a[b, t, h, :] ; shared[b, t, 0, :]]`.
 *
 * @param out f32 [B, T, H, da + ds].
 * @param a f32 [B, T, H, da].
 * @param shared f32 [B, T, 1, ds].
 * @example concatBroadcastHeadsForward(k, kNope, kPe);
 */
export function concatBroadcastHeadsForward(
  out: Tensor,
  a: Tensor,
  shared: Tensor,
  opts: { accumulate?: boolean } = {},
): void {
  const { B, T, H, da, ds } = bcastShape(a, shared, "concatBroadcastHeadsForward");
  if (out.size !== (a.size / da) * (da + ds)) {
    throw new Error(
      `concatBroadcastHeadsForward: out [${out.shape}] is not [${a.shape.slice(0, 3)}, ${da + ds}]`,
    );
  }
  const acc = Boolean(opts.accumulate), rows = B * T * H;
  if (rows === 0) return;
  if (out.device.kind === "cpu") {
    return hostConcatBroadcastHeads(out, a, shared, { BT: B * T, H, da, ds, accumulate: acc });
  }
  const { plan, w } = bcastPlan(da, ds, da + ds);
  launch(
    a.device,
    "concat_bcast_heads",
    `${planKey(plan)}|${acc}`,
    () => bcastSource(plan, acc),
    [a.binding, shared.binding, out.binding],
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(H).u32(da / w).u32(ds / w),
  );
}

/**
 * Encodes the gradients of {@linkcode concatBroadcastHeadsForward}: `da` gets its columns of
 * `dout`; `dshared` gets the sum over heads of the shared columns (heads in order). Pass null for
 * a gradient that is not needed.
 *
 * @param da f32 [B, T, H, da] or null.
 * @param dshared f32 [B, T, 1, ds] or null.
 * @param dout f32 [B, T, H, da + ds].
 */
export function concatBroadcastHeadsBackward(
  da: Tensor | null,
  dshared: Tensor | null,
  dout: Tensor,
  opts: { accumulateA?: boolean; accumulateShared?: boolean } = {},
): void {
  if (dout.shape.length !== 4) {
    throw new Error(
      `concatBroadcastHeadsBackward: want dout [B, T, H, da + ds], got [${dout.shape}]`,
    );
  }
  const [B, T, H, s] = dout.shape;
  if (da) copyColumns(da, dout, { len: rowsOf(da).C, accumulate: opts.accumulateA });
  if (dshared) {
    const ds = rowsOf(dshared).C, acc = Boolean(opts.accumulateShared);
    if (dshared.size !== B * T * ds || ds > s) {
      throw new Error(
        `concatBroadcastHeadsBackward: dshared [${dshared.shape}] vs dout [${dout.shape}]`,
      );
    }
    if (B * T === 0 || ds === 0) return;
    if (dshared.device.kind === "cpu") {
      return hostConcatBroadcastHeadsBackward(dshared, dout, {
        BT: B * T,
        H,
        s,
        ds,
        accumulate: acc,
      });
    }
    const { plan, w } = bcastPlan(s - ds, ds, ds);
    launch(
      dout.device,
      "concat_bcast_heads_bwd",
      `${planKey(plan)}|${acc}`,
      () => bcastBackwardSource(plan, acc),
      [dout.binding, dshared.binding],
      planGrid(plan, B * T),
      (p) => p.u32(B * T).u32(H).u32((s - ds) / w).u32(ds / w),
    );
  }
}

/** Shape of the MLA key build, for the CPU twins. */
export interface BroadcastHeadsShape {
  /** Batch. */
  B: number;
  /** Time. */
  T: number;
  /** Heads. */
  H: number;
  /** Per-head width of the first part (the per-head input). */
  da: number;
  /** Width of the shared part broadcast to every head. */
  ds: number;
}

/** CPU twin of {@linkcode concatBroadcastHeadsForward}: out [B, T, H, da + ds]. */
export function concatBroadcastHeadsCpu<A extends Floats>(
  a: A,
  shared: Floats,
  shape: BroadcastHeadsShape,
): A {
  const { B, T, H, da, ds } = shape, s = da + ds;
  const out = like(a, B * T * H * s);
  for (let bt = 0; bt < B * T; bt++) {
    for (let h = 0; h < H; h++) {
      const row = bt * H + h;
      for (let j = 0; j < da; j++) out[row * s + j] = a[row * da + j];
      for (let j = 0; j < ds; j++) out[row * s + da + j] = shared[bt * ds + j];
    }
  }
  return out;
}

/** CPU twin of {@linkcode concatBroadcastHeadsBackward}: `{ da, dshared }`. */
export function concatBroadcastHeadsBackwardCpu<A extends Floats>(
  dout: A,
  shape: BroadcastHeadsShape,
): { da: A; dshared: A } {
  const { B, T, H, da, ds } = shape, s = da + ds;
  const ga = like(dout, B * T * H * da), gs = like(dout, B * T * ds);
  for (let bt = 0; bt < B * T; bt++) {
    for (let h = 0; h < H; h++) {
      const row = bt * H + h;
      for (let j = 0; j < da; j++) ga[row * da + j] = dout[row * s + j];
      for (let j = 0; j < ds; j++) gs[bt * ds + j] += dout[row * s + da + j];
    }
  }
  return { da: ga, dshared: gs };
}

/**
 * `[a ; shared]` along the last dim, with `shared` broadcast over heads, with autograd.
 * @param a f32 [B, T, H, da].
 * @param shared f32 [B, T, 1, ds].
 * @returns f32 [B, T, H, da + ds].
 * @example const k = concatBroadcastHeads(kNope, kPe); // MLA keys [B, T, H, dn + dr]
 */
export function concatBroadcastHeads(a: Tensor, shared: Tensor): Tensor {
  const { B, T, H, da, ds } = bcastShape(a, shared, "concatBroadcastHeads");
  const out = Tensor.empty(a.device, [B, T, H, da + ds]);
  concatBroadcastHeadsForward(out, a, shared);
  if (needsGrad(a, shared)) {
    record("concat_bcast_heads", [out], () => {
      if (!out.grad) return;
      const ga = a.requiresGrad ? gradFor(a) : null;
      const gs = shared.requiresGrad ? gradFor(shared) : null;
      concatBroadcastHeadsBackward(ga?.grad ?? null, gs?.grad ?? null, out.grad, {
        accumulateA: ga?.accumulate,
        accumulateShared: gs?.accumulate,
      });
    });
  }
  return out;
}

const TRANSPOSE_SRC = (acc: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct P { n: u32, b: u32, c: u32, d: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  // out [A, C, B, D] at (a, c, b, k) reads x [A, B, C, D] at (a, b, c, k)
  let k = i % p.d;
  var q = i / p.d;
  let b = q % p.b;
  q = q / p.b;
  let c = q % p.c;
  let a = q / p.c;
  let v = x[((a * p.b + b) * p.c + c) * p.d + k];
  ${acc ? "out[i] = out[i] + v;" : "out[i] = v;"}
}`;

/**
 * Encodes `out[a, c, b, :] (+)= x[a, b, c, :]`.
 *
 * @param out f32 [A, C, B, D].
 * @param x f32 [A, B, C, D].
 * @throws when x is not 4-D or out's size differs.
 * @example transpose12Forward(qh, q); // [B, T, H, D] -> [B, H, T, D]
 */
export function transpose12Forward(
  out: Tensor,
  x: Tensor,
  opts: { accumulate?: boolean } = {},
): void {
  assertF32(x, "transpose12Forward");
  if (x.shape.length !== 4 || out.size !== x.size) {
    throw new Error(
      `transpose12Forward: want x [A, B, C, D] and out of its size; got [${x.shape}], [${out.shape}]`,
    );
  }
  const [A, B, C, D] = x.shape, acc = Boolean(opts.accumulate);
  if (out.device.kind === "cpu") return hostTranspose12(out, x, { A, B, C, D, accumulate: acc });
  launch1d(
    x.device,
    "transpose12",
    `${acc}`,
    () => TRANSPOSE_SRC(acc),
    [x.binding, out.binding],
    x.size,
    (p) => p.u32(x.size).u32(B).u32(C).u32(D),
  );
}

/** CPU twin of {@linkcode transpose12Forward}: [A, B, C, D] -> [A, C, B, D]. */
export function transpose12Cpu<A extends Floats>(x: A, shape: readonly number[]): A {
  const [A, B, C, D] = shape;
  const out = like(x, x.length);
  for (let a = 0; a < A; a++) {
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        for (let k = 0; k < D; k++) {
          out[((a * C + c) * B + b) * D + k] = x[((a * B + b) * C + c) * D + k];
        }
      }
    }
  }
  return out;
}

/**
 * Swaps dims 1 and 2 of a 4-D tensor, with autograd (the backward is the same swap).
 * @example const qh = transpose12(q); // [B, T, H, D] -> [B, H, T, D]
 */
export function transpose12(x: Tensor): Tensor {
  const [A, B, C, D] = x.shape;
  const out = Tensor.empty(x.device, [A, C, B, D]);
  transpose12Forward(out, x);
  if (needsGrad(x)) {
    record("transpose12", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      transpose12Forward(grad, out.grad, { accumulate });
    });
  }
  return out;
}
