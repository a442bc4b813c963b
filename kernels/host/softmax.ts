/**
 * CPU-backend implementations of the row softmax and its backward (`../softmax.ts`).
 *
 * Legend: R rows, C columns (the last dim).
 *
 *     forward:  y [R, C] = exp(x - max_c x) / sum_c exp(x - max_c x)   (a row of -inf: zeros)
 *     backward: dx [R, C] (+)= y * (dy - sum_c dy * y)
 *
 * Row sums in f64, in column order; the forward writes exp(x - max) into y and scales it in a
 * second pass, so each row's exps are computed once.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { fastExp } from "./_exp.ts";
import { f32 } from "./_views.ts";

/** `y = softmax(x)` over rows of `C`. */
export function hostSoftmax(y: Tensor, x: Tensor, C: number): void {
  const ys = f32(y), xs = f32(x), n = xs.length;
  for (let base = 0; base < n; base += C) {
    const end = base + C;
    let m = -Infinity;
    for (let i = base; i < end; i++) if (xs[i] > m) m = xs[i];
    if (m === -Infinity) {
      ys.fill(0, base, end); // a fully masked row
      continue;
    }
    let s = 0;
    for (let i = base; i < end; i++) {
      const e = fastExp(xs[i] - m);
      ys[i] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let i = base; i < end; i++) ys[i] *= inv;
  }
}

/** `dx (+)= y * (dy - sum_c dy * y)` over rows of `C`. */
export function hostSoftmaxBackward(
  dx: Tensor,
  dy: Tensor,
  y: Tensor,
  opts: { C: number; accumulate: boolean },
): void {
  const g = f32(dx), d = f32(dy), ys = f32(y), n = g.length, C = opts.C;
  for (let base = 0; base < n; base += C) {
    const end = base + C;
    let s = 0;
    for (let i = base; i < end; i++) s += d[i] * ys[i];
    if (opts.accumulate) { for (let i = base; i < end; i++) g[i] = g[i] + ys[i] * (d[i] - s); }
    else for (let i = base; i < end; i++) g[i] = ys[i] * (d[i] - s);
  }
}
