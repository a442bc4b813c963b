/**
 * Internal helpers shared by the row-wise kernel files (reduce, softmax, rmsnorm, cross-entropy,
 * embedding, copy, rope): the row plan, the row workgroup size, the row grids, deterministic
 * workgroup reductions in WGSL, and the host array type the CPU twins are generic over.
 *
 * Two layouts. The older one ({@linkcode rowWorkgroup}, {@linkcode wgslRowHelpers}) runs ONE
 * workgroup per row and combines the threads' partials with a fixed-shape tree in workgroup
 * memory. The row plan ({@linkcode rowPlan}, {@linkcode wgslRowPlan}) gives each row TPR
 * threads (1 for rows up to 256 columns, else 8) and packs 64 / TPR rows into a 64-thread workgroup;
 * each thread folds a strided slice of its row in a fixed order (four columns at a time when
 * C % 4 == 0), and the TPR partials are combined after ONE barrier by reading them back in lane
 * order. Why: on lavapipe (llvmpipe) a workgroup barrier and a per-lane load are expensive and a
 * short row left most of a 32..256-thread workgroup idle (bench/README.md, "rows.ts"). On a
 * discrete GPU, 64-thread workgroups of whole short rows read each row's cache lines in order,
 * and long rows' 8 lanes read 128 contiguous bytes per step. In both layouts the order
 * depends only on the shape, so the same inputs give the same bits.
 *
 * Legend: R rows, C columns (the last dim), WG threads per workgroup, TPR threads per row,
 * RPW rows per workgroup, U units per row (C / 4 vec4s, or C scalars).
 *
 * @module
 */
import { grid1d } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";

/** Host arrays the CPU twins accept: f32 to mirror the GPU, f64 for finite differences. */
export type Floats = Float32Array | Float64Array;

/** A zero-filled array of the same element type as `x`, `n` long. */
export function like<A extends Floats>(x: A, n: number): A {
  return (x instanceof Float64Array ? new Float64Array(n) : new Float32Array(n)) as A;
}

/**
 * Threads per row workgroup for rows of `c` columns: the next power of two, between 32 and 256,
 * so short rows do not idle 256 threads and long rows get the full width.
 * @example rowWorkgroup(10) // 32
 * @example rowWorkgroup(6400) // 256
 */
export function rowWorkgroup(c: number): number {
  let wg = 32;
  while (wg < 256 && wg < c) wg *= 2;
  return wg;
}

/** The grid of a one-workgroup-per-row launch (folded into y past 65535 rows). */
export function rowGrid(rows: number): [number, number, number] {
  return grid1d(rows, 1);
}

/**
 * `{ rows, C }` of a tensor read as [rows, C] over its last dim.
 * @throws when the tensor has no dims.
 */
export function rowsOf(t: Tensor): { rows: number; C: number } {
  if (t.shape.length === 0) throw new Error("expected a tensor with at least one dim, got []");
  const C = t.shape[t.shape.length - 1];
  return { rows: C === 0 ? 0 : t.size / C, C };
}

/** The shape with the last dim dropped ([1] for a vector, so a result is never 0-d). */
export function dropLastDim(shape: readonly number[]): number[] {
  return shape.length > 1 ? shape.slice(0, -1) : [1];
}

/** Throws unless `t` is f32 (the row kernels read and write f32 only). */
export function assertF32(t: Tensor, what: string): void {
  if (t.dtype !== "f32") throw new Error(`${what}: expected an f32 tensor, got ${t.dtype}`);
}

/**
 * WGSL: the row of a {@linkcode rowGrid} launch (`row_of(wid, nwg)`), and the deterministic
 * workgroup reductions `wg_sum`, `wg_max` and `wg_max_arg` over `wg` threads. Each reduction
 * must be called from uniform control flow by every thread of the workgroup; it leaves the
 * scratch memory free for the next call.
 */
export function wgslRowHelpers(wg: number): string {
  return /* wgsl */ `
const WG: u32 = ${wg}u;
// The most negative finite f32: the identity of max (WGSL has no -inf literal).
const NEG_MAX: f32 = -3.4028234663852886e38;
var<workgroup> red_v: array<f32, ${wg}>;
var<workgroup> red_i: array<u32, ${wg}>;
fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y * nwg.x + wid.x; }
fn wg_sum(li: u32, v: f32) -> f32 {
  red_v[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) { red_v[li] = red_v[li] + red_v[li + s]; }
    workgroupBarrier();
  }
  let r = red_v[0];
  workgroupBarrier();
  return r;
}
fn wg_max(li: u32, v: f32) -> f32 {
  red_v[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) { red_v[li] = max(red_v[li], red_v[li + s]); }
    workgroupBarrier();
  }
  let r = red_v[0];
  workgroupBarrier();
  return r;
}
// Max with its index; ties go to the smaller index (the first occurrence in the row).
fn wg_max_arg(li: u32, v: f32, i: u32) -> vec2<u32> {
  red_v[li] = v;
  red_i[li] = i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) {
      let vb = red_v[li + s];
      let ib = red_i[li + s];
      let va = red_v[li];
      if (vb > va || (vb == va && ib < red_i[li])) {
        red_v[li] = vb;
        red_i[li] = ib;
      }
    }
    workgroupBarrier();
  }
  let r = vec2<u32>(bitcast<u32>(red_v[0]), red_i[0]);
  workgroupBarrier();
  return r;
}`;
}

/** Threads per workgroup of a {@linkcode rowPlan} launch. */
export const PLAN_WG = 64;
/** Rows up to this many columns get one thread each. */
const ONE_THREAD_COLS = 256;
/** Longer rows get 8 threads (more past this many columns per thread). */
const COLS_PER_LANE = 2048;

/** How a row kernel lays rows on threads: a function of the row length alone. */
export interface RowPlan {
  /** Threads per row (1, or a power of two from 8 to 64). */
  tpr: number;
  /** Rows per workgroup (64 / tpr). */
  rpw: number;
  /** Whether rows are read as vec4 (C % 4 == 0). */
  vec: boolean;
  /** Units per row: C / 4 with vec4, else C. */
  units: number;
}

/**
 * The row plan for rows of `c` columns: one thread per row up to 256 columns, else 8 threads
 * (more, up to 64, past 2048 columns per thread); vec4 units when `c % 4 == 0`.
 *
 * Why 8: on lavapipe a workgroup runs as 8-lane SIMD groups one after another, so 8 lanes of a
 * row reading neighbouring units stream the row in order; 16 or 32 lanes measured 2-3x slower
 * (each SIMD group strides across the row), and so did one row per workgroup. On a GPU, 8 lanes
 * reading 8 neighbouring vec4s are 128 contiguous bytes: coalesced.
 * @example rowPlan(128) // { tpr: 1, rpw: 64, vec: true, units: 32 }
 * @example rowPlan(6400) // { tpr: 8, rpw: 8, vec: true, units: 1600 }
 */
export function rowPlan(c: number): RowPlan {
  let tpr = c <= ONE_THREAD_COLS ? 1 : 8;
  while (tpr < PLAN_WG && tpr * COLS_PER_LANE < c) tpr *= 2;
  const vec = c % 4 === 0;
  return { tpr, rpw: PLAN_WG / tpr, vec, units: vec ? c / 4 : c };
}

/** The workgroup grid of a {@linkcode rowPlan} launch over `rows` rows. */
export function planGrid(plan: RowPlan, rows: number): [number, number, number] {
  return grid1d(Math.ceil(rows / plan.rpw), 1);
}

/** A stable pipeline-key fragment for a plan. */
export function planKey(plan: RowPlan): string {
  return `${plan.tpr}${plan.vec ? "v" : "s"}`;
}

/**
 * WGSL for a {@linkcode rowPlan} kernel: `alias V` (vec4<f32> or f32, the unit a thread loads),
 * `hsum(V) -> f32` and `hmax(V) -> f32` (fixed order), `plan_row(wid, nwg, li)` (the row of
 * this thread; may be past the last row, so guard with the row count and never return before a
 * lane combine) and `plan_lane(li)`, and the lane combines over the TPR threads of a row:
 * `lanes_sum(li, v)`, `lanes_lse(li, m, s) -> vec2(max, sum of s * exp(m - max))` and
 * `lanes_max_arg(li, v, i) -> vec2(bitcast max, its index; ties: the smaller index)`, each
 * called from uniform control flow by every thread (one barrier; none when TPR is 1). Two
 * combines in one kernel need a `workgroupBarrier()` between them.
 */
export function wgslRowPlan(plan: RowPlan): string {
  const { tpr, rpw, vec } = plan;
  const lanes = tpr === 1
    ? /* wgsl */ `
fn lanes_sum(li: u32, v: f32) -> f32 { return v; }
fn lanes_lse(li: u32, m: f32, s: f32) -> vec2<f32> { return vec2<f32>(m, s); }
fn lanes_max_arg(li: u32, v: f32, i: u32) -> vec2<u32> { return vec2<u32>(bitcast<u32>(v), i); }`
    : /* wgsl */ `
var<workgroup> lane_a: array<f32, ${PLAN_WG}>;
var<workgroup> lane_b: array<f32, ${PLAN_WG}>;
fn lanes_sum(li: u32, v: f32) -> f32 {
  lane_a[li] = v;
  workgroupBarrier();
  let b = li - li % TPR;
  var t = 0.0;
  for (var k = 0u; k < TPR; k++) { t += lane_a[b + k]; }
  return t;
}
fn lanes_lse(li: u32, m: f32, s: f32) -> vec2<f32> {
  lane_a[li] = m;
  lane_b[li] = s;
  workgroupBarrier();
  let b = li - li % TPR;
  var rm = NEG_MAX;
  for (var k = 0u; k < TPR; k++) { rm = max(rm, lane_a[b + k]); }
  var rs = 0.0;
  // exp(NEG_MAX - rm) underflows to 0 for lanes that saw no element (or only -inf).
  for (var k = 0u; k < TPR; k++) { rs += lane_b[b + k] * exp(lane_a[b + k] - rm); }
  return vec2<f32>(rm, rs);
}
var<workgroup> lane_i: array<u32, ${PLAN_WG}>;
// Max with its index (bitcast in .x); ties go to the smaller index.
fn lanes_max_arg(li: u32, v: f32, i: u32) -> vec2<u32> {
  lane_a[li] = v;
  lane_i[li] = i;
  workgroupBarrier();
  let b = li - li % TPR;
  var bv = lane_a[b];
  var bi = lane_i[b];
  for (var k = 1u; k < TPR; k++) {
    let vk = lane_a[b + k];
    let ik = lane_i[b + k];
    if (vk > bv || (vk == bv && ik < bi)) {
      bv = vk;
      bi = ik;
    }
  }
  return vec2<u32>(bitcast<u32>(bv), bi);
}`;
  return /* wgsl */ `
const TPR: u32 = ${tpr}u;
const RPW: u32 = ${rpw}u;
// The most negative finite f32: the identity of max (WGSL has no -inf literal).
const NEG_MAX: f32 = -3.4028234663852886e38;
alias V = ${vec ? "vec4<f32>" : "f32"};
fn hsum(v: V) -> f32 { return ${vec ? "(v.x + v.y) + (v.z + v.w)" : "v"}; }
fn hmax(v: V) -> f32 { return ${vec ? "max(max(v.x, v.y), max(v.z, v.w))" : "v"}; }
fn plan_row(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * RPW + li / TPR;
}
fn plan_lane(li: u32) -> u32 { return li % TPR; }
${lanes}`;
}
