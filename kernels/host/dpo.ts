/**
 * CPU-backend implementations of the DPO loss and its backward (`../dpo.ts`).
 *
 * Legend: N tokens, P pairs, S = 2P sequences (2p chosen, 2p + 1 rejected).
 *
 *     forward:   sums [S], loss [1], stats [6 slots], coef [P]  from logprobs [N], seqIds [N]
 *     backward:  dlogprobs [N] (+)= dloss beta coef[s / 2] (+1 | -1),  0 where seqIds < 0
 *
 * The sums run in f64 in token order (one pass over the N tokens, not one per pair as on the GPU:
 * the per-sequence order is the same). Ids outside [0, S) count nowhere, as in the kernel.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

let scratch = new Float64Array(0);

/**
 * The DPO forward: per-sequence sums, the mean loss, the TRL metrics (metric j at element
 * `j * stride` of `stats`) and `coef`.
 */
export function hostDpoForward(
  out: { sums: Tensor; loss: Tensor; stats: Tensor; coef: Tensor },
  logprobs: Tensor,
  seqIds: Tensor,
  refLogps: Tensor,
  opts: { pairs: number; beta: number; stride: number },
): void {
  const P = opts.pairs, S = 2 * P, beta = Math.fround(opts.beta);
  if (scratch.length < S) scratch = new Float64Array(S);
  const acc = scratch;
  acc.fill(0, 0, S);
  const lp = f32(logprobs), seq = i32(seqIds), n = lp.length;
  for (let i = 0; i < n; i++) {
    const s = seq[i];
    if (s >= 0 && s < S) acc[s] += lp[i];
  }
  const ref = f32(refLogps), sums = f32(out.sums), coef = f32(out.coef);
  let l = 0, rc = 0, rr = 0, accs = 0, lc = 0, lr = 0;
  for (let q = 0; q < P; q++) {
    const c = acc[2 * q], r = acc[2 * q + 1];
    sums[2 * q] = c;
    sums[2 * q + 1] = r;
    const cr = beta * (c - ref[2 * q]), rj = beta * (r - ref[2 * q + 1]);
    const z = cr - rj;
    // -log sigmoid(z) = softplus(-z) without overflow or cancellation
    l += Math.max(-z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
    coef[q] = -1 / (1 + Math.exp(Math.min(z, 80))) / P;
    rc += cr;
    rr += rj;
    if (cr > rj) accs += 1;
    lc += c;
    lr += r;
  }
  f32(out.loss)[0] = l / P;
  const st = f32(out.stats), k = opts.stride;
  st[0] = rc / P;
  st[k] = rr / P;
  st[2 * k] = (rc - rr) / P;
  st[3 * k] = accs / P;
  st[4 * k] = lc / P;
  st[5 * k] = lr / P;
}

/** `dlogprobs (+)= dloss * beta * coef[s >> 1] * (+1 even s | -1 odd s)`, 0 where s < 0. */
export function hostDpoBackward(
  dlogprobs: Tensor,
  dloss: Tensor,
  saved: { seqIds: Tensor; coef: Tensor },
  opts: { beta: number; accumulate: boolean },
): void {
  const d = f32(dlogprobs), seq = i32(saved.seqIds), coef = f32(saved.coef);
  const gb = f32(dloss)[0] * Math.fround(opts.beta), P = coef.length, n = d.length;
  for (let i = 0; i < n; i++) {
    const s = seq[i], q = s >> 1;
    // an id past the pairs has no coefficient (the kernel would read out of range): 0
    const v = s >= 0 && q < P ? ((s & 1) === 0 ? gb * coef[q] : -gb * coef[q]) : 0;
    d[i] = opts.accumulate ? d[i] + v : v;
  }
}
