/**
 * CPU-backend implementations of the tensor plumbing (`../copy.ts`): column copies, the MLA key
 * build and its backward, and the dims-1-2 transpose.
 *
 * Legend: R rows, Cx / Co row lengths of x / out, B batch, T time, H heads, da per-head columns,
 * ds shared columns, D head dim.
 *
 *     copyColumns:     out[r, oo + j] (+)= x[r, xo + j],  j < len  (zeroRest: 0 elsewhere)
 *     key build:       out[b, t, h, :] (+)= [a[b, t, h, :] ; shared[b, t, 0, :]]
 *     its backward:    dshared[b, t, 0, :] (+)= sum_h dout[b, t, h, da:]  (heads in order)
 *     transpose12:     out[a, c, b, :] (+)= x[a, b, c, :]
 *
 * Plain copies use `TypedArray.set` (a memcpy); the head sum runs in f64 in head order.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";

/** Rows shorter than this are copied element by element (a subarray costs an allocation). */
const SET_MIN = 32;

/** Head sums of the key build's backward, in f64 (grown, never shrunk). */
let headSums = new Float64Array(0);

/** Copies `len` floats from `x[xi..]` to `o[oi..]`, or adds them. */
function copyRun(
  o: Float32Array,
  oi: number,
  x: Float32Array,
  xi: number,
  len: number,
  acc: boolean,
): void {
  if (acc) { for (let j = 0; j < len; j++) o[oi + j] = o[oi + j] + x[xi + j]; }
  else if (len >= SET_MIN) o.set(x.subarray(xi, xi + len), oi);
  else for (let j = 0; j < len; j++) o[oi + j] = x[xi + j];
}

/** `out[r, oo + j] (+)= x[r, xo + j]` for j < len; `zeroRest` zeroes the rest of out's rows. */
export function hostCopyColumns(
  out: Tensor,
  x: Tensor,
  l: { rows: number; cx: number; co: number; xo: number; oo: number; len: number },
  opts: { accumulate: boolean; zeroRest: boolean },
): void {
  const o = f32(out), xs = f32(x), { rows, cx, co, xo, oo, len } = l, acc = opts.accumulate;
  if (!acc && xo === 0 && oo === 0 && len === cx && len === co) {
    o.set(xs.subarray(0, rows * len)); // whole rows: one contiguous copy
    return;
  }
  for (let r = 0; r < rows; r++) {
    const ob = r * co;
    if (opts.zeroRest) {
      o.fill(0, ob, ob + oo);
      o.fill(0, ob + oo + len, ob + co);
    }
    copyRun(o, ob + oo, xs, r * cx + xo, len, acc);
  }
}

/** `out[b, t, h, :] (+)= [a[b, t, h, :] ; shared[b, t, 0, :]]`. */
export function hostConcatBroadcastHeads(
  out: Tensor,
  a: Tensor,
  shared: Tensor,
  l: { BT: number; H: number; da: number; ds: number; accumulate: boolean },
): void {
  const o = f32(out), as = f32(a), sh = f32(shared), { BT, H, da, ds, accumulate: acc } = l;
  const s = da + ds;
  for (let q = 0; q < BT; q++) {
    for (let h = 0; h < H; h++) {
      const row = q * H + h;
      copyRun(o, row * s, as, row * da, da, acc);
      copyRun(o, row * s + da, sh, q * ds, ds, acc);
    }
  }
}

/** `dshared[q, :] (+)= sum_h dout[q, h, da + j]` over rows q = (b, t), heads in order. */
export function hostConcatBroadcastHeadsBackward(
  dshared: Tensor,
  dout: Tensor,
  l: { BT: number; H: number; s: number; ds: number; accumulate: boolean },
): void {
  const g = f32(dshared), d = f32(dout), { BT, H, s, ds, accumulate: acc } = l, da = s - ds;
  if (headSums.length < ds) headSums = new Float64Array(ds);
  const sum = headSums;
  for (let q = 0; q < BT; q++) {
    sum.fill(0, 0, ds);
    for (let h = 0; h < H; h++) {
      const base = (q * H + h) * s + da;
      for (let j = 0; j < ds; j++) sum[j] += d[base + j];
    }
    const gb = q * ds;
    if (acc) { for (let j = 0; j < ds; j++) g[gb + j] = g[gb + j] + sum[j]; }
    else for (let j = 0; j < ds; j++) g[gb + j] = sum[j];
  }
}

/** `out[a, c, b, :] (+)= x[a, b, c, :]` for x [A, B, C, D]. */
export function hostTranspose12(
  out: Tensor,
  x: Tensor,
  l: { A: number; B: number; C: number; D: number; accumulate: boolean },
): void {
  const o = f32(out), xs = f32(x), { A, B, C, D, accumulate: acc } = l;
  for (let a = 0; a < A; a++) {
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        copyRun(o, ((a * C + c) * B + b) * D, xs, ((a * B + b) * C + c) * D, D, acc);
      }
    }
  }
}
