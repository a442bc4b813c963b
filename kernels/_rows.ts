/**
 * Internal helpers shared by the row-wise kernel files (reduce, softmax, rmsnorm, cross-entropy,
 * embedding, copy, rope): the row workgroup size, the row grid, deterministic workgroup
 * reductions in WGSL, and the host array type the CPU twins are generic over.
 *
 * Row kernels run ONE workgroup per row: each thread folds a strided slice of the row in a fixed
 * order, then the workgroup combines the partials with a fixed-shape tree in workgroup memory.
 * The order depends only on the row length, so the same inputs give the same bits.
 *
 * Legend: R rows, C columns (the last dim), WG threads per workgroup.
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
