/**
 * CPU-backend implementations of the GRPO loss and its backward (`../grpo.ts`).
 *
 * Legend, per token i of N: lp, old, ref (may be absent), A, w, r = e^(lp - old), d = ref - lp.
 *
 *     forward:   loss [1] = sum_{w > 0} w (-min(r A, clamp(r) A) + beta (e^d - d - 1)),
 *                stats [4 slots]: mean KL and the low / high / region clip shares
 *     backward:  dlogprobs [N] (+)= dloss w ((clipped ? 0 : -A r) - beta (e^d - 1)),
 *                0 where w <= 0
 *
 * Per-token values in f64 (`Math.expm1` keeps the small KL of a policy near its reference); the
 * sums in f64 in token order, so the same inputs give the same bits.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";

/** The constant per-token inputs, as the launcher passes them. */
interface Inputs {
  oldLogprobs: Tensor;
  refLogprobs: Tensor | null;
  advantages: Tensor;
  weights: Tensor;
}

/** The coefficients. */
interface Coefs {
  beta: number;
  epsLow: number;
  epsHigh: number;
}

/** The clip bounds as the kernel sees them (f32). */
function bounds(opts: Coefs): { lo: number; hi: number; beta: number } {
  return {
    lo: Math.fround(1 - Math.fround(opts.epsLow)),
    hi: Math.fround(1 + Math.fround(opts.epsHigh)),
    beta: Math.fround(opts.beta),
  };
}

/** The GRPO forward: the loss and the metrics (metric j at element `j * stride` of `stats`). */
export function hostGrpoForward(
  out: { loss: Tensor; stats: Tensor },
  logprobs: Tensor,
  inputs: Inputs,
  opts: Coefs & { stride: number },
): void {
  const lp = f32(logprobs), old = f32(inputs.oldLogprobs), adv = f32(inputs.advantages);
  const w = f32(inputs.weights), ref = inputs.refLogprobs ? f32(inputs.refLogprobs) : null;
  const { lo, hi, beta } = bounds(opts);
  let l = 0, count = 0, kl = 0, low = 0, high = 0;
  for (let i = 0; i < lp.length; i++) {
    const wi = w[i];
    if (!(wi > 0)) continue;
    const a = adv[i], r = Math.exp(lp[i] - old[i]);
    const rc = r < lo ? lo : r > hi ? hi : r;
    let v = -Math.min(r * a, rc * a);
    if (r < lo && a < 0) low++;
    if (r > hi && a > 0) high++;
    if (ref) {
      const d = ref[i] - lp[i], k = Math.expm1(d) - d;
      kl += k;
      if (beta > 0) v += beta * k;
    }
    l += wi * v;
    count++;
  }
  const c = Math.max(count, 1), st = f32(out.stats), s = opts.stride;
  f32(out.loss)[0] = l;
  st[0] = kl / c;
  st[s] = low / c;
  st[2 * s] = high / c;
  st[3 * s] = (low + high) / c;
}

/** `dlogprobs (+)= dloss * dloss/dlp` per token, 0 where the weight is <= 0. */
export function hostGrpoBackward(
  dlogprobs: Tensor,
  dloss: Tensor,
  logprobs: Tensor,
  inputs: Inputs,
  opts: Coefs & { accumulate: boolean },
): void {
  const lp = f32(logprobs), old = f32(inputs.oldLogprobs), adv = f32(inputs.advantages);
  const w = f32(inputs.weights), ref = inputs.refLogprobs ? f32(inputs.refLogprobs) : null;
  const d = f32(dlogprobs), g = f32(dloss)[0];
  const { lo, hi, beta } = bounds(opts);
  for (let i = 0; i < d.length; i++) {
    const wi = w[i];
    let v = 0;
    if (wi > 0) {
      const a = adv[i], r = Math.exp(lp[i] - old[i]);
      const clipped = (r < lo && a < 0) || (r > hi && a > 0);
      let dv = clipped ? 0 : -a * r;
      if (ref !== null && beta > 0) dv -= beta * Math.expm1(ref[i] - lp[i]);
      v = g * wi * dv;
    }
    d[i] = opts.accumulate ? d[i] + v : v;
  }
}
