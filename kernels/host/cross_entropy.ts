/**
 * CPU-backend implementations of the fused cross-entropy and per-token log-probabilities
 * (`../cross_entropy.ts`): the row pass (lse and the per-row value), the mean, and the backwards.
 *
 * Legend: N rows, V classes. A target outside [0, V) marks an ignored row.
 *
 *     rows:      lse [N] = log sum_c exp(x[n, c]);  out [N] = w (lse - x[n, t]) | x[n, t] - lse
 *     mean:      loss [1] = sum_n rowLoss[n] / d;   stats [2] = [count, d]
 *     backward:  dx [N, V] (+)= k (exp(x - lse) - onehot(t)),  k = g w / d  |  -g[n]
 *
 * Each row is read twice per pass (max, then the exps) while it sits in L1; sums run in f64 in
 * column order, so the same inputs give the same bits. The exps go through {@linkcode expNeg}, a
 * table-driven exp for arguments <= 0 (every `x - max` and `x - lse` here) that is about three
 * times faster than `Math.exp` in V8 and accurate to 1e-9 relative, far below f32 rounding.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

const LOG2E_64 = 64 * Math.LOG2E;
const LN2_64 = Math.LN2 / 64;
/** 2^(j / 64) for j in [0, 64). */
const FRAC = Float64Array.from({ length: 64 }, (_, j) => 2 ** (j / 64));
/** 2^-k for k in [0, 160]: covers every exponent down to the f32 denormals. */
const POW = Float64Array.from({ length: 161 }, (_, k) => 2 ** -k);

/**
 * `exp(t)` for `t` in [-104, 0.5], else `Math.exp(t)` (NaN, -inf and anything else too).
 * `t log2(e) = n / 64 + f` with n an integer: `exp(t) = 2^(n >> 6) 2^((n & 63) / 64) e^(f ln 2)`,
 * the last factor a cubic (its error f^4 / 24 < 6e-10 for f ln 2 < ln 2 / 64).
 * @example expNeg(-1) // 0.36787944...
 */
export function expNeg(t: number): number {
  if (!(t >= -104 && t <= 0.5)) return Math.exp(t);
  const y = t * LOG2E_64;
  const n = Math.floor(y);
  const f = (y - n) * LN2_64;
  return POW[-(n >> 6) | 0] * FRAC[n & 63] * (1 + f * (1 + f * (0.5 + f * (1 / 6))));
}

/**
 * The row pass: `lse[n]` for every row and `out[n]` = the weighted loss ("ce") or the target's
 * log-probability ("logprob"), 0 for ignored rows.
 */
export function hostCeRows(
  mode: "ce" | "logprob",
  out: Tensor,
  lse: Tensor,
  logits: Tensor,
  targets: Tensor,
  weights: Tensor | undefined,
  C: number,
): void {
  const x = f32(logits), t = i32(targets), o = f32(out), l = f32(lse);
  const w = weights ? f32(weights) : null, ce = mode === "ce", rows = t.length;
  for (let r = 0; r < rows; r++) {
    const base = r * C, end = base + C;
    let m = -Infinity;
    for (let i = base; i < end; i++) if (x[i] > m) m = x[i];
    let s = 0;
    for (let i = base; i < end; i++) s += expNeg(x[i] - m);
    const v = m + Math.log(s);
    l[r] = v;
    const tr = t[r];
    if (tr >= 0 && tr < C) {
      const zt = x[base + tr];
      o[r] = ce ? (v - zt) * (w ? w[r] : 1) : zt - v;
    } else {
      o[r] = 0;
    }
  }
}

/** The mean: `loss = sum rowLoss / d`, `stats = [count, d]`, d = denominator or max(count, 1). */
export function hostCeMean(
  loss: Tensor,
  stats: Tensor,
  rowLoss: Tensor,
  targets: Tensor,
  opts: { C: number; denominator: number },
): void {
  const rl = f32(rowLoss), t = i32(targets), C = opts.C, n = t.length;
  let sum = 0, count = 0;
  for (let i = 0; i < n; i++) {
    sum += rl[i];
    const tr = t[i];
    if (tr >= 0 && tr < C) count++;
  }
  const d = opts.denominator > 0 ? opts.denominator : Math.max(count, 1);
  f32(loss)[0] = sum / d;
  const st = f32(stats);
  st[0] = count;
  st[1] = d;
}

/**
 * The backwards: `dx (+)= k (softmax - onehot)` per counted row with `k = g[0] w[n] / stats[1]`
 * ("ce") or `k = -g[n]` ("logprob"); ignored rows are zeroed (left alone when accumulating).
 */
export function hostCeBackward(
  mode: "ce" | "logprob",
  dx: Tensor,
  g: Tensor,
  saved: { logits: Tensor; targets: Tensor; lse: Tensor; stats?: Tensor; weights?: Tensor },
  opts: { C: number; accumulate: boolean },
): void {
  const x = f32(saved.logits), t = i32(saved.targets), l = f32(saved.lse), d = f32(dx);
  const gs = f32(g), w = saved.weights ? f32(saved.weights) : null;
  const C = opts.C, acc = opts.accumulate, rows = t.length, ce = mode === "ce";
  const ceCoef = ce ? gs[0] / f32(saved.stats!)[1] : 0;
  for (let r = 0; r < rows; r++) {
    const base = r * C, end = base + C, tr = t[r];
    if (!(tr >= 0 && tr < C)) {
      if (!acc) d.fill(0, base, end);
      continue;
    }
    const k = ce ? (w ? ceCoef * w[r] : ceCoef) : -gs[r];
    const lr = l[r], at = base + tr, prior = acc ? d[at] : 0;
    if (acc) {
      for (let i = base; i < end; i++) d[i] += k * expNeg(x[i] - lr);
    } else {
      for (let i = base; i < end; i++) d[i] = k * expNeg(x[i] - lr);
    }
    // the target's element as the kernel forms it: (k e - k), then the prior value added
    d[at] = prior + (k * expNeg(x[at] - lr) - k);
  }
}
