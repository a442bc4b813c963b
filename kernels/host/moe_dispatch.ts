/**
 * CPU-backend implementations of the MoE token dispatch (`../moe_dispatch.ts`): the inverse
 * permutation, routed rows from token rows (the gather, and the weighted scatter's row gradient),
 * token rows from routed rows (the weighted scatter, and the gather's gradient), and the gate
 * weights' gradient.
 *
 * Legend: N tokens, K slots per token, P = N * K routed rows, D features.
 *
 *     invert:           inv [P] = p at perm[p]
 *     rowsFromTokens:   out [P, D] (+)= (w[perm[p]] *) src[perm[p] / K]
 *     tokensFromRows:   out [N, D] (+)= sum_s (w[t, s] *) src[inv[t K + s]]   (slot order)
 *     weightGrad:       dw [N, K] (+)= dot(dy[t], ys[inv[t K + s]])
 *
 * Sums run in f64 in slot order (a token's rows) or, for the dots, as four interleaved partial
 * sums over the features; the orders are fixed, so the same inputs give the same bits.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/** `inv[perm[p]] = p`. */
export function hostInvertPermutation(inv: Tensor, perm: Tensor): void {
  const pv = i32(perm), iv = i32(inv), n = pv.length;
  for (let p = 0; p < n; p++) iv[pv[p]] = p;
}

/** Sizes of a dispatch and whether to add into the output. */
export interface HostDispatch {
  N: number;
  K: number;
  D: number;
  accumulate: boolean;
}

/** `out[p] (+)= (w[perm[p]] *) src[perm[p] / K]` over P rows of D. */
export function hostRowsFromTokens(
  out: Tensor,
  src: Tensor,
  perm: Tensor,
  w: Tensor | null,
  sh: HostDispatch,
): void {
  const { K, D } = sh, o = f32(out), x = f32(src), pv = i32(perm), P = sh.N * K;
  const wv = w ? f32(w) : null;
  for (let p = 0; p < P; p++) {
    const j = pv[p], from = ((j / K) | 0) * D, to = p * D;
    if (wv) {
      const g = wv[j];
      if (sh.accumulate) { for (let d = 0; d < D; d++) o[to + d] += g * x[from + d]; }
      else for (let d = 0; d < D; d++) o[to + d] = g * x[from + d];
    } else if (sh.accumulate) {
      for (let d = 0; d < D; d++) o[to + d] += x[from + d];
    } else {
      o.set(x.subarray(from, from + D), to);
    }
  }
}

let rowAcc = new Float64Array(0);

/** `out[t] (+)= sum_s (w[t, s] *) src[inv[t K + s]]` over N rows of D, slots in order. */
export function hostTokensFromRows(
  out: Tensor,
  src: Tensor,
  inv: Tensor,
  w: Tensor | null,
  sh: HostDispatch,
): void {
  const { N, K, D } = sh, o = f32(out), x = f32(src), iv = i32(inv);
  const wv = w ? f32(w) : null;
  if (rowAcc.length < D) rowAcc = new Float64Array(D);
  const acc = rowAcc;
  for (let t = 0; t < N; t++) {
    const first = iv[t * K] * D, g0 = wv ? wv[t * K] : 1;
    for (let d = 0; d < D; d++) acc[d] = g0 * x[first + d];
    for (let s = 1; s < K; s++) {
      const from = iv[t * K + s] * D, g = wv ? wv[t * K + s] : 1;
      for (let d = 0; d < D; d++) acc[d] += g * x[from + d];
    }
    const to = t * D;
    if (sh.accumulate) { for (let d = 0; d < D; d++) o[to + d] += acc[d]; }
    else for (let d = 0; d < D; d++) o[to + d] = acc[d];
  }
}

/** `dw[t, s] (+)= dot(dy[t], ys[inv[t K + s]])`. */
export function hostScatterWeightGrad(
  dw: Tensor,
  dy: Tensor,
  ys: Tensor,
  inv: Tensor,
  sh: HostDispatch,
): void {
  const { N, K, D } = sh, o = f32(dw), g = f32(dy), y = f32(ys), iv = i32(inv);
  const D4 = D & ~3;
  for (let j = 0; j < N * K; j++) {
    const a = ((j / K) | 0) * D, b = iv[j] * D;
    // four partial sums in a fixed order: no single loop-carried add chain
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, d = 0;
    for (; d < D4; d += 4) {
      s0 += g[a + d] * y[b + d];
      s1 += g[a + d + 1] * y[b + d + 1];
      s2 += g[a + d + 2] * y[b + d + 2];
      s3 += g[a + d + 3] * y[b + d + 3];
    }
    for (; d < D; d++) s0 += g[a + d] * y[b + d];
    const dot = (s0 + s1) + (s2 + s3);
    o[j] = sh.accumulate ? o[j] + dot : dot;
  }
}
