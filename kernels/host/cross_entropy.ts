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
 * Each row is read twice per pass (max, then the exps) while it sits in L1; sums run in f64 in a
 * fixed order (four interleaved partial sums), so the same inputs give the same bits. The exps go
 * through `fastExp` (`_exp.ts`), accurate to 6e-10 relative (far below f32 rounding) and several
 * times cheaper than `Math.exp` in V8's loops. Rows are split over the host pool's
 * threads (`_pool.ts`), each row computed whole by one thread, so the bits do not depend on the
 * thread count.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { fastExp } from "./_exp.ts";
import { defineJob, runJob } from "./_pool.ts";
import { f32, i32 } from "./_views.ts";

/**
 * `log sum exp x[base, base + C)` in f64. Four running maxima and sums, combined in a fixed
 * order, break the loop-carried dependency of a single running value.
 */
function rowLse(x: Float32Array, base: number, C: number): number {
  const end = base + C, end4 = base + (C & ~3);
  let m0 = -Infinity, m1 = -Infinity, m2 = -Infinity, m3 = -Infinity, i = base;
  for (; i < end4; i += 4) {
    const a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
    if (a > m0) m0 = a;
    if (b > m1) m1 = b;
    if (c > m2) m2 = c;
    if (d > m3) m3 = d;
  }
  for (; i < end; i++) if (x[i] > m0) m0 = x[i];
  const m = Math.max(Math.max(m0, m1), Math.max(m2, m3));
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (i = base; i < end4; i += 4) {
    s0 += fastExp(x[i] - m);
    s1 += fastExp(x[i + 1] - m);
    s2 += fastExp(x[i + 2] - m);
    s3 += fastExp(x[i + 3] - m);
  }
  for (; i < end; i++) s0 += fastExp(x[i] - m);
  return m + Math.log((s0 + s1) + (s2 + s3));
}

/**
 * The row pass: `lse[n]` for every row and `out[n]` = the weighted loss ("ce") or the target's
 * log-probability ("logprob"), 0 for ignored rows. Rows split over the host pool's threads.
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
  const t = i32(targets), w = weights ? f32(weights) : null;
  const args = [f32(logits), t, f32(out), f32(lse), w, C, mode === "ce" ? 1 : 0];
  runJob(ROWS, t.length, args, rowChunk(C));
}

/** Rows per chunk: about 64K logits, so a chunk outweighs waking a worker. */
function rowChunk(C: number): number {
  return Math.max(1, Math.ceil(65536 / C));
}

/** Rows [r0, r1) of the row pass. Args: x, t, o, l, w | null, C, ce (1 | 0). */
const ROWS = defineJob("ce_rows", (a, r0, r1) => {
  const x = a[0] as Float32Array, t = a[1] as Int32Array, o = a[2] as Float32Array;
  const l = a[3] as Float32Array, w = a[4] as Float32Array | null, C = a[5] as number;
  const ce = a[6] === 1;
  for (let r = r0; r < r1; r++) {
    const v = rowLse(x, r * C, C);
    const base = r * C;
    l[r] = v;
    const tr = t[r];
    if (tr >= 0 && tr < C) {
      const zt = x[base + tr];
      o[r] = ce ? (v - zt) * (w ? w[r] : 1) : zt - v;
    } else {
      o[r] = 0;
    }
  }
});

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
 * Rows split over the host pool's threads.
 */
export function hostCeBackward(
  mode: "ce" | "logprob",
  dx: Tensor,
  g: Tensor,
  saved: { logits: Tensor; targets: Tensor; lse: Tensor; stats?: Tensor; weights?: Tensor },
  opts: { C: number; accumulate: boolean },
): void {
  const gs = f32(g), t = i32(saved.targets), ce = mode === "ce";
  // "ce": k = c w[r] (or c) with c in f64; "logprob": k = -g[r]
  const c = ce ? gs[0] / f32(saved.stats!)[1] : 0;
  const w = ce && saved.weights ? f32(saved.weights) : null;
  const args = [f32(dx), f32(saved.logits), t, f32(saved.lse), ce ? null : gs, w, c, opts.C];
  runJob(opts.accumulate ? GRAD_ADD : GRAD, t.length, args, rowChunk(opts.C));
}

/** Row r's coefficient k: `-g[r]` when g is given ("logprob"), else `c w[r]` or `c` ("ce"). */
function coef(g: Float32Array | null, w: Float32Array | null, c: number, r: number): number {
  return g ? -g[r] : w ? c * w[r] : c;
}

/**
 * Rows [r0, r1) of `d = k (exp(x - l[r]) - onehot(t[r]))`, 0 for ignored rows. Args: d, x, t,
 * l, g | null, w | null, c, C. The overwriting and the accumulating passes are two jobs so that
 * each stays a small monomorphic loop.
 */
const GRAD = defineJob("ce_grad", (a, r0, r1) => {
  const d = a[0] as Float32Array, x = a[1] as Float32Array, t = a[2] as Int32Array;
  const l = a[3] as Float32Array, g = a[4] as Float32Array | null, w = a[5] as Float32Array | null;
  const c = a[6] as number, C = a[7] as number;
  for (let r = r0; r < r1; r++) {
    const base = r * C, end = base + C, tr = t[r];
    if (!(tr >= 0 && tr < C)) {
      d.fill(0, base, end);
      continue;
    }
    const kr = coef(g, w, c, r), lr = l[r], at = base + tr;
    for (let i = base; i < end; i++) d[i] = kr * fastExp(x[i] - lr);
    // the target's element as the kernel forms it: k e - k
    d[at] = kr * fastExp(x[at] - lr) - kr;
  }
});

/** Rows [r0, r1) of `d += k (exp(x - l[r]) - onehot(t[r]))` per counted row (args as GRAD). */
const GRAD_ADD = defineJob("ce_grad_add", (a, r0, r1) => {
  const d = a[0] as Float32Array, x = a[1] as Float32Array, t = a[2] as Int32Array;
  const l = a[3] as Float32Array, g = a[4] as Float32Array | null, w = a[5] as Float32Array | null;
  const c = a[6] as number, C = a[7] as number;
  for (let r = r0; r < r1; r++) {
    const base = r * C, end = base + C, tr = t[r];
    if (!(tr >= 0 && tr < C)) continue;
    const kr = coef(g, w, c, r), lr = l[r], at = base + tr, prior = d[at];
    for (let i = base; i < end; i++) d[i] += kr * fastExp(x[i] - lr);
    // the target's element as the kernel forms it: the prior value + (k e - k)
    d[at] = prior + (kr * fastExp(x[at] - lr) - kr);
  }
});
