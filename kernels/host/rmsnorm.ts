/**
 * CPU-backend implementations of RMSNorm and its backward (`../rmsnorm.ts`).
 *
 * Legend: R rows, C columns (the normalized dim).
 *
 *     forward:  rrms [R] = 1 / sqrt(mean_c x^2 + eps);   y [R, C] = x * rrms * w
 *     backward: dx [R, C] (+)= rrms * w * dy - x * rrms^3 * mean_c(w * dy * x)
 *               dw [C]    (+)= sum_r dy * x * rrms
 *
 * Row sums and the dw column sums run in f64 in index order (rows in order for dw), stored as
 * f32; the f32 rrms the forward stores is the one y and the backward use.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";

/** dw column sums in f64 (grown, never shrunk). */
let colSums = new Float64Array(0);

/** `y = x * rrms * w`, `rrms[r] = 1 / sqrt(mean(x[r]^2) + eps)`. */
export function hostRmsnorm(
  y: Tensor,
  rrms: Tensor,
  x: Tensor,
  w: Tensor,
  eps: number,
): void {
  const ys = f32(y), rs = f32(rrms), xs = f32(x), ws = f32(w);
  const C = ws.length, rows = rs.length;
  for (let r = 0, base = 0; r < rows; r++, base += C) {
    let s = 0;
    for (let j = 0; j < C; j++) {
      const v = xs[base + j];
      s += v * v;
    }
    const k = Math.fround(1 / Math.sqrt(s / C + eps));
    rs[r] = k;
    for (let j = 0; j < C; j++) ys[base + j] = xs[base + j] * k * ws[j];
  }
}

/** The RMSNorm gradients into `dx` and / or `dw` (null: not needed). */
export function hostRmsnormBackward(
  dx: Tensor | null,
  dw: Tensor | null,
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  rrms: Tensor,
  opts: { accumulateX: boolean; accumulateW: boolean },
): void {
  const d = f32(dy), xs = f32(x), ws = f32(w), rs = f32(rrms);
  const C = ws.length, rows = rs.length;
  if (dx) {
    const g = f32(dx), acc = opts.accumulateX;
    for (let r = 0, base = 0; r < rows; r++, base += C) {
      let s = 0;
      for (let j = 0; j < C; j++) s += ws[j] * d[base + j] * xs[base + j];
      // d/dx of x * r(x): r * w dy - x * r^3 * mean(w dy x)
      const k = rs[r], k3 = k * k * k * s / C;
      if (acc) {
        for (let j = 0; j < C; j++) {
          g[base + j] = g[base + j] + (k * ws[j] * d[base + j] - xs[base + j] * k3);
        }
      } else {
        for (let j = 0; j < C; j++) g[base + j] = k * ws[j] * d[base + j] - xs[base + j] * k3;
      }
    }
  }
  if (dw) {
    const o = f32(dw);
    if (colSums.length < C) colSums = new Float64Array(C);
    const s = colSums;
    s.fill(0, 0, C);
    for (let r = 0, base = 0; r < rows; r++, base += C) {
      const k = rs[r];
      for (let j = 0; j < C; j++) s[j] += d[base + j] * xs[base + j] * k;
    }
    if (opts.accumulateW) { for (let j = 0; j < C; j++) o[j] = o[j] + s[j]; }
    else for (let j = 0; j < C; j++) o[j] = s[j];
  }
}
