/**
 * CPU-backend implementations of the reductions (`../reduce.ts`): row sum / mean / max with
 * argmax, their backwards, and the full reduction to a scalar.
 *
 * Legend: R rows, C columns (the last dim), N elements.
 *
 * Sums run in f64 in index order and are stored as f32; the max keeps the first maximum (strict
 * `>` from the WGSL kernels' NEG_MAX start, so a row of -inf gives NEG_MAX at index 0, as there).
 * One thread, a fixed order: the same inputs give the same bits.
 *
 * @module
 */
import type { RowReduceOp } from "../reduce.ts";
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/** The most negative finite f32: the WGSL kernels' starting maximum. */
const NEG_MAX = -3.4028234663852886e38;

/** `out[r] (+)= op(x[r, :])`, and `argmax[r]` for "max" when given. */
export function hostReduce(
  out: Tensor,
  x: Tensor,
  opts: { op: RowReduceOp; C: number; accumulate: boolean; argmax?: Tensor },
): void {
  const o = f32(out), xs = f32(x), rows = o.length, C = opts.C, acc = opts.accumulate;
  if (opts.op === "max") {
    const arg = opts.argmax ? i32(opts.argmax) : null;
    for (let r = 0, base = 0; r < rows; r++, base += C) {
      let best = NEG_MAX, bi = 0;
      for (let j = 0; j < C; j++) {
        const v = xs[base + j];
        if (v > best) {
          best = v;
          bi = j;
        }
      }
      o[r] = acc ? o[r] + best : best;
      if (arg) arg[r] = bi;
    }
    return;
  }
  const k = opts.op === "mean" ? Math.fround(1 / C) : 1;
  for (let r = 0, base = 0; r < rows; r++, base += C) {
    let s = 0;
    for (let j = 0; j < C; j++) s += xs[base + j];
    s *= k;
    o[r] = acc ? o[r] + s : s;
  }
}

/** `dx[r, c] (+)= dout[r]` (sum), `dout[r] / C` (mean), or dout[r] at the argmax only (max). */
export function hostReduceBackward(
  dx: Tensor,
  dout: Tensor,
  opts: { op: RowReduceOp; C: number; accumulate: boolean; argmax?: Tensor },
): void {
  const g = f32(dx), d = f32(dout), rows = d.length, C = opts.C, acc = opts.accumulate;
  if (opts.op === "max") {
    const arg = i32(opts.argmax!);
    for (let r = 0, base = 0; r < rows; r++, base += C) {
      const a = arg[r], v = d[r];
      if (acc) {
        if (a >= 0 && a < C) g[base + a] = g[base + a] + v;
      } else {
        g.fill(0, base, base + C);
        if (a >= 0 && a < C) g[base + a] = v;
      }
    }
    return;
  }
  const k = opts.op === "mean" ? Math.fround(1 / C) : 1;
  for (let r = 0, base = 0; r < rows; r++, base += C) {
    const v = Math.fround(d[r] * k);
    if (acc) { for (let j = 0; j < C; j++) g[base + j] = g[base + j] + v; }
    else g.fill(v, base, base + C);
  }
}

/** `out[0] (+)= scale * sum_i x_i` (or of `x_i^2`), summed in f64 in index order. */
export function hostSumAll(
  out: Tensor,
  x: Tensor,
  opts: { square: boolean; scale: number; accumulate: boolean },
): void {
  const xs = f32(x), n = xs.length, o = f32(out);
  let s = 0;
  if (opts.square) {
    for (let i = 0; i < n; i++) {
      const v = xs[i];
      s += v * v;
    }
  } else {
    for (let i = 0; i < n; i++) s += xs[i];
  }
  s *= opts.scale;
  o[0] = opts.accumulate ? o[0] + s : s;
}

/** `dx (+)= scale * dout[0]`, or `2 scale x dout[0]` for a sum of squares. */
export function hostSumAllBackward(
  dx: Tensor,
  dout: Tensor,
  opts: { square: boolean; scale: number; accumulate: boolean; x?: Tensor },
): void {
  const g = f32(dx), n = g.length, acc = opts.accumulate;
  const k = f32(dout)[0] * opts.scale;
  if (opts.square) {
    const xs = f32(opts.x!), k2 = 2 * k;
    for (let i = 0; i < n; i++) {
      const v = k2 * xs[i];
      g[i] = acc ? g[i] + v : v;
    }
  } else {
    const v = Math.fround(k);
    if (acc) { for (let i = 0; i < n; i++) g[i] = g[i] + v; }
    else g.fill(v);
  }
}
