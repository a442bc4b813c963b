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
    const s = sum(xs, base, base + C) * k;
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
  const s = (opts.square ? sumSquares(xs) : sum(xs, 0, n)) * opts.scale;
  o[0] = opts.accumulate ? o[0] + s : s;
}

/**
 * The sum of `xs[start..end)`: four interleaved f64 partial sums (independent adds pipeline),
 * combined in a fixed order.
 */
function sum(xs: Float32Array, start: number, end: number): number {
  const end4 = end - (end - start) % 4;
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = start;
  for (; i < end4; i += 4) {
    s0 += xs[i];
    s1 += xs[i + 1];
    s2 += xs[i + 2];
    s3 += xs[i + 3];
  }
  for (; i < end; i++) s0 += xs[i];
  return (s0 + s1) + (s2 + s3);
}

/** The sum of squares of all of `xs`, as {@linkcode sum}. */
function sumSquares(xs: Float32Array): number {
  const n = xs.length, n4 = n - n % 4;
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
  for (; i < n4; i += 4) {
    const a = xs[i], b = xs[i + 1], c = xs[i + 2], d = xs[i + 3];
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += d * d;
  }
  for (; i < n; i++) s0 += xs[i] * xs[i];
  return (s0 + s1) + (s2 + s3);
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
