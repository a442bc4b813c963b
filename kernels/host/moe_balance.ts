/**
 * CPU-backend implementations of the sequence-wise balance loss and its backward
 * (`../moe_balance.ts`).
 *
 * Legend: N tokens, B sequences, T tokens per sequence, E experts, K experts per token.
 *
 *     forward:  s [N, E], indices [N, K] -> f [B, E], stats [N, 2], loss [1]
 *     backward: ds [N, E] (+)= dloss * alpha / N * (f_e - c_t) / S_t
 *
 * The losses are accumulated in f64 and stored in f32; `f` is rounded as the kernel rounds it.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/**
 * The balance loss forward: `f` [B, E] (`E / (K T) * count`, rounded as the kernel does),
 * `stats` [N, 2] (`S_t`, `c_t`) and `loss = alpha / N * sum_t c_t`.
 */
export function hostBalanceForward(
  outs: { loss: Tensor; f: Tensor; stats: Tensor },
  ins: { s: Tensor; indices: Tensor },
  opts: { B: number; T: number; E: number; K: number; alpha: number },
): void {
  const { B, T, E, K } = opts, N = B * T, fr = Math.fround;
  const idx = i32(ins.indices), s = f32(ins.s), fv = f32(outs.f), st = f32(outs.stats);
  const unit = fr(fr(E) / fr(K * T));
  fv.fill(0, 0, B * E);
  // counts first (exact integers in f32 up to 2^24), then scaled like the kernel's f32 product
  for (let b = 0; b < B; b++) {
    for (let j = b * T * K; j < (b + 1) * T * K; j++) {
      const e = idx[j];
      if (e >= 0 && e < E) fv[b * E + e] += 1;
    }
    for (let e = 0; e < E; e++) fv[b * E + e] = unit * fv[b * E + e];
  }
  let total = 0;
  for (let n = 0; n < N; n++) {
    const row = n * E, fb = ((n / T) | 0) * E;
    let z = 0, fs = 0;
    for (let e = 0; e < E; e++) {
      const x = s[row + e];
      z += x;
      fs += fv[fb + e] * x;
    }
    st[2 * n] = z;
    st[2 * n + 1] = fs / z;
    total += st[2 * n + 1];
  }
  f32(outs.loss)[0] = fr(opts.alpha / N) * total;
}

/** `ds (+)= dloss * alpha / N * (f_e - c_t) / S_t` over [N, E]. */
export function hostBalanceBackward(
  ds: Tensor,
  ins: { f: Tensor; stats: Tensor; dloss: Tensor },
  opts: { N: number; T: number; E: number; alpha: number; accumulate: boolean },
): void {
  const { N, T, E } = opts;
  const out = f32(ds), fv = f32(ins.f), st = f32(ins.stats);
  const coef = f32(ins.dloss)[0] * Math.fround(opts.alpha / N);
  for (let n = 0; n < N; n++) {
    const row = n * E, fb = ((n / T) | 0) * E, c = st[2 * n + 1], k = coef / st[2 * n];
    if (opts.accumulate) {
      for (let e = 0; e < E; e++) out[row + e] += k * (fv[fb + e] - c);
    } else {
      for (let e = 0; e < E; e++) out[row + e] = k * (fv[fb + e] - c);
    }
  }
}
