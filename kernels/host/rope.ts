/**
 * CPU-backend implementation of RoPE (`../rope.ts`), interleaved pairs, forward or inverse.
 *
 * Legend: R rows (B T H), T time, H heads, Sx / So row lengths of x / out, xo / oo first rope
 * column of each row, half = dr/2 frequency pairs.
 *
 *     out[oo + 2i]     (+)= x0 cos(p, i) - x1 sgn sin(p, i)      x0 = x[xo + 2i]
 *     out[oo + 2i + 1] (+)= x0 sgn sin(p, i) + x1 cos(p, i)      x1 = x[xo + 2i + 1]
 *
 * with p = pos0 + t for row (b, t, h). `out` may be `x` itself (each pair is read before it is
 * written) or a disjoint range of the same buffer; `copyRest` also copies the row's other columns.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";

/** The layout the launcher validated (see the legend). */
export interface HostRopeLayout {
  /** Time steps of this call. */
  T: number;
  /** Heads. */
  H: number;
  /** Row length of x. */
  Sx: number;
  /** Row length of out. */
  So: number;
  /** First rope column in each row of x. */
  xo: number;
  /** First rope column in each row of out. */
  oo: number;
  /** Frequency pairs (dr / 2). */
  half: number;
  /** Position of t = 0. */
  pos0: number;
  /** -1 for the inverse rotation (the backward), else 1. */
  sgn: number;
  /** Also copy the non-rope columns. */
  copyRest: boolean;
  /** Add into out. */
  accumulate: boolean;
}

/** RoPE of x's rope columns into out's (see the module doc). */
export function hostRope(
  out: Tensor,
  x: Tensor,
  cos: Tensor,
  sin: Tensor,
  l: HostRopeLayout,
): void {
  const o = f32(out), xs = f32(x), ct = f32(cos), st = f32(sin);
  const { T, H, Sx, So, xo, oo, half, pos0, sgn, copyRest, accumulate: acc } = l;
  const rows = o.length / So, dr = 2 * half;
  for (let row = 0; row < rows; row++) {
    const pos = pos0 + Math.floor(row / H) % T;
    const xr = row * Sx + xo, orow = row * So + oo, tb = pos * half;
    for (let i = 0; i < half; i++) {
      const c = ct[tb + i], s = st[tb + i] * sgn;
      const x0 = xs[xr + 2 * i], x1 = xs[xr + 2 * i + 1];
      const r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
      const k = orow + 2 * i;
      if (acc) {
        o[k] = o[k] + r0;
        o[k + 1] = o[k + 1] + r1;
      } else {
        o[k] = r0;
        o[k + 1] = r1;
      }
    }
    if (copyRest) {
      // columns [0, oo) and [oo + dr, S) (Sx == So and xo == oo here)
      const xb = row * Sx, ob = row * So;
      for (let j = 0; j < oo; j++) o[ob + j] = acc ? o[ob + j] + xs[xb + j] : xs[xb + j];
      for (let j = oo + dr; j < Sx; j++) o[ob + j] = acc ? o[ob + j] + xs[xb + j] : xs[xb + j];
    }
  }
}
