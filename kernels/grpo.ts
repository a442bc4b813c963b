/**
 * The GRPO loss (Shao et al. 2024, "DeepSeekMath", eq. 3; the clipped surrogate of PPO with a k3
 * KL penalty against a frozen reference) from per-token log-probabilities, with the TRL-named
 * metrics and the backward into the policy's log-probabilities; CPU twins.
 *
 * Legend, per token i of N (all f32 [N]; only `lp` is differentiable):
 *
 *     lp_i    the policy's log-probability of the sampled token (`tokenLogprobs`)
 *     old_i   the sampling policy's log-probability of it
 *     ref_i   the frozen reference's (absent when beta = 0)
 *     A_i     the advantage of the token's completion
 *     w_i     the token's weight: 1 / (len_s S) for the paper's per-sequence mean, 1 / tokens
 *             for DAPO's token-level mean; <= 0 (prompt, padding) = not counted anywhere
 *     r_i = exp(lp_i - old_i),  s_i = min(r_i A_i, clamp(r_i, 1 - epsLow, 1 + epsHigh) A_i)
 *     kl_i = exp(ref_i - lp_i) - (ref_i - lp_i) - 1                  (k3, >= 0)
 *     loss [1] = sum_i w_i (-s_i + beta kl_i)
 *     low_i = r_i < 1 - epsLow and A_i < 0,  high_i = r_i > 1 + epsHigh and A_i > 0
 *     dloss/dlp_i = w_i (low_i or high_i ? 0 : -A_i r_i) + w_i beta (1 - exp(ref_i - lp_i))
 *
 * Metrics (means over the counted tokens, TRL `GRPOTrainer`'s names; 0 when none counts): kl
 * (mean kl_i, 0 without a reference), clip_ratio/low_mean, clip_ratio/high_mean and
 * clip_ratio/region_mean (low or high). Each lands in its own 256-byte-aligned slot of one
 * `stats` buffer so that a [1] view of it can be bound or copied directly.
 *
 * One workgroup does the forward: thread t folds tokens t, t + WG, ... in order and a fixed tree
 * combines the threads, so the sums need no atomics and the same inputs give the same bits. The
 * backward recomputes each token's derivative from the inputs (one thread per token) instead of
 * saving an [N] buffer. Near ref = lp, e^d - 1 and e^d - d - 1 come from their Taylor series,
 * since the f32 differences would cancel the small KL of a policy close to its reference.
 * Counts are summed in f32: exact up to 2^24 counted tokens.
 *
 * Left out: the sequence-level importance ratio (GSPO), the two-sided clip of negative
 * advantages (delta), Dr. GRPO's constant normalizer (the caller's `w` expresses it).
 *
 * On the CPU backend each launcher calls its implementation in `host/grpo.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import type { Binding } from "./device.ts";
import type { Params } from "./gpu.ts";
import { wgslRowHelpers } from "./_rows.ts";
import { Tensor } from "./tensor.ts";
import { hostGrpoBackward, hostGrpoForward } from "./host/grpo.ts";

/** The metric names, in their `stats` slot order (TRL's names). */
export const GRPO_METRICS = [
  "kl",
  "clip_ratio/low_mean",
  "clip_ratio/high_mean",
  "clip_ratio/region_mean",
] as const;

/** One of {@linkcode GRPO_METRICS}. */
export type GrpoMetric = typeof GRPO_METRICS[number];

/** f32 elements between two metric slots of `stats`: 64 * 4 B = the 256 B binding alignment. */
export const GRPO_STATS_STRIDE = 64;

const WG = 256;

/** Bindings 0..4 and the parameters (binding 7), shared by both kernels; `token(i)`. */
const TOKEN_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> lp: array<f32>;
@group(0) @binding(1) var<storage, read> old: array<f32>;
@group(0) @binding(2) var<storage, read> ref_lp: array<f32>;
@group(0) @binding(3) var<storage, read> adv: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
struct P { n: u32, has_ref: u32, beta: f32, lo: f32, hi: f32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(7) var<storage, read> p: P;
// (e^d - 1, e^d - d - 1); below |d| = 0.5 from the series to d^10 (truncation < 1e-10 relative).
fn em1_kl(d: f32) -> vec2<f32> {
  if (abs(d) < 0.5) {
    let q = 0.5 + d * (1.0 / 6.0 + d * (1.0 / 24.0 + d * (1.0 / 120.0 + d * (1.0 / 720.0 +
      d * (1.0 / 5040.0 + d * (1.0 / 40320.0 + d * (1.0 / 362880.0 + d / 3628800.0)))))));
    let k = d * d * q;
    return vec2<f32>(d + k, k);
  }
  let e = exp(d) - 1.0;
  return vec2<f32>(e, e - d);
}
struct Tok { surr: f32, kl: f32, dlp: f32, low: bool, high: bool }
// Token i's surrogate, KL, clip flags and dloss/dlp / w_i (the caller applies w_i).
fn token(i: u32) -> Tok {
  var t: Tok;
  let a = adv[i];
  let x = lp[i];
  let r = exp(x - old[i]);
  t.surr = min(r * a, clamp(r, 1.0 - p.lo, 1.0 + p.hi) * a);
  t.low = r < 1.0 - p.lo && a < 0.0;
  t.high = r > 1.0 + p.hi && a > 0.0;
  t.dlp = select(-a * r, 0.0, t.low || t.high);
  t.kl = 0.0;
  if (p.has_ref != 0u) {
    let e = em1_kl(ref_lp[i] - x);
    t.kl = e.y;
    if (p.beta > 0.0) { t.dlp -= p.beta * e.x; }
  }
  return t;
}`;

const FORWARD_SRC = /* wgsl */ `
${wgslRowHelpers(WG)}
${TOKEN_SRC}
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
const STRIDE: u32 = ${GRPO_STATS_STRIDE}u;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var l = 0.0;
  var cnt = 0.0;
  var kl = 0.0;
  var low = 0.0;
  var high = 0.0;
  for (var i = li; i < p.n; i += WG) {
    let wi = w[i];
    if (wi > 0.0) {
      let t = token(i);
      var v = -t.surr;
      if (p.beta > 0.0) { v += p.beta * t.kl; }
      l += wi * v;
      cnt += 1.0;
      kl += t.kl;
      low += select(0.0, 1.0, t.low);
      high += select(0.0, 1.0, t.high);
    }
  }
  let tl = wg_sum(li, l);
  let tc = wg_sum(li, cnt);
  let tkl = wg_sum(li, kl);
  let tlow = wg_sum(li, low);
  let thigh = wg_sum(li, high);
  if (li == 0u) {
    let c = max(tc, 1.0);
    loss[0] = tl;
    stats[0u] = tkl / c;
    stats[STRIDE] = tlow / c;
    stats[2u * STRIDE] = thigh / c;
    stats[3u * STRIDE] = (tlow + thigh) / c;
  }
}`;

const backwardSource = (acc: boolean) => /* wgsl */ `
${TOKEN_SRC}
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlp: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let wi = w[i];
  var d = 0.0;
  if (wi > 0.0) { d = g[0] * (wi * token(i).dlp); }
  ${acc ? "dlp[i] = dlp[i] + d;" : "dlp[i] = d;"}
}`;

/** The coefficients of a GRPO loss. */
export interface GrpoLossOptions {
  /** beta, the weight of the k3 KL penalty (0 drops it and the reference; DAPO uses 0). */
  beta: number;
  /** epsLow: ratios below 1 - epsLow stop the gradient of negative advantages (0.2). */
  epsLow: number;
  /** epsHigh: ratios above 1 + epsHigh stop the gradient of positive ones (0.2; DAPO 0.28). */
  epsHigh: number;
}

/** The per-token inputs of a GRPO loss besides the policy's log-probabilities: f32 [N] each. */
export interface GrpoLossInputs {
  /**
   * The sampling policy's log-probabilities (constant); may be `logprobs` itself when each batch
   * gets one update (r = 1, no clipping), as TRL does with one iteration.
   */
  oldLogprobs: Tensor;
  /** The frozen reference's log-probabilities (constant); null only when beta = 0. */
  refLogprobs: Tensor | null;
  /** Each token's completion advantage (constant). */
  advantages: Tensor;
  /** Each token's weight (constant); <= 0 for tokens that do not count. */
  weights: Tensor;
}

/** What {@linkcode grpoLossForward} writes. */
export interface GrpoLossBuffers {
  /** f32 [1]: the weighted loss. */
  loss: Tensor;
  /** f32 [4 * {@linkcode GRPO_STATS_STRIDE}]: metric k at element k * stride. */
  stats: Tensor;
}

function check(logprobs: Tensor, inputs: GrpoLossInputs, opts: GrpoLossOptions): void {
  const { beta, epsLow, epsHigh } = opts;
  if (!(Number.isFinite(beta) && beta >= 0)) {
    throw new Error(`grpoLoss: beta must be finite and >= 0, got ${beta}`);
  }
  if (!(epsLow >= 0 && epsLow <= 1)) {
    throw new Error(`grpoLoss: epsLow must be in [0, 1], got ${epsLow}`);
  }
  if (!(Number.isFinite(epsHigh) && epsHigh >= 0)) {
    throw new Error(`grpoLoss: epsHigh must be finite and >= 0, got ${epsHigh}`);
  }
  if (logprobs.dtype !== "f32") {
    throw new Error(`grpoLoss: logprobs must be f32, got ${logprobs.dtype}`);
  }
  const n = logprobs.size;
  if (n === 0) throw new Error(`grpoLoss: logprobs is empty`);
  if (inputs.refLogprobs === null && beta !== 0) {
    throw new Error(
      `grpoLoss: refLogprobs is null but beta = ${beta}; the KL penalty needs the reference's ` +
        `log-probabilities (pass them, or beta 0)`,
    );
  }
  const named: [string, Tensor | null][] = [
    ["oldLogprobs", inputs.oldLogprobs],
    ["refLogprobs", inputs.refLogprobs],
    ["advantages", inputs.advantages],
    ["weights", inputs.weights],
  ];
  for (const [name, t] of named) {
    if (t === null) continue;
    if (t.dtype !== "f32" || t.size !== n) {
      throw new Error(
        `grpoLoss: ${name} must be f32 with ${n} elements (one per log-probability), ` +
          `got ${t.dtype} [${t.shape}]`,
      );
    }
    if (t.device !== logprobs.device) {
      throw new Error(`grpoLoss: ${name} is on another device than logprobs`);
    }
  }
}

/** The five per-token bindings (logprobs stands in for an absent reference; never read then). */
function tokenBindings(logprobs: Tensor, inputs: GrpoLossInputs): Binding[] {
  return [
    logprobs.binding,
    inputs.oldLogprobs.binding,
    (inputs.refLogprobs ?? logprobs).binding,
    inputs.advantages.binding,
    inputs.weights.binding,
  ];
}

/**
 * Encodes the GRPO forward: the loss and the metrics.
 *
 * @param out Buffers of the sizes in {@linkcode GrpoLossBuffers}.
 * @param logprobs f32 [N] the policy's per-token log-probabilities of the sampled tokens.
 * @param inputs The constant per-token inputs, f32 [N] each.
 * @param opts `beta`, `epsLow`, `epsHigh`.
 * @throws when sizes, dtypes or coefficients are invalid, or `refLogprobs` is null with beta > 0,
 *   naming the argument.
 * @example grpoLossForward(bufs, lp, { oldLogprobs, refLogprobs, advantages, weights }, opts);
 */
export function grpoLossForward(
  out: GrpoLossBuffers,
  logprobs: Tensor,
  inputs: GrpoLossInputs,
  opts: GrpoLossOptions,
): void {
  check(logprobs, inputs, opts);
  if (out.loss.size !== 1 || out.stats.size < GRPO_METRICS.length * GRPO_STATS_STRIDE) {
    throw new Error(
      `grpoLoss: out.loss must hold 1 and out.stats ${GRPO_METRICS.length} * ` +
        `${GRPO_STATS_STRIDE} elements, got ${out.loss.size} and ${out.stats.size}`,
    );
  }
  if (logprobs.device.kind === "cpu") {
    hostGrpoForward(out, logprobs, inputs, { ...opts, stride: GRPO_STATS_STRIDE });
    return;
  }
  launch(
    logprobs.device,
    "grpo_loss",
    "",
    () => FORWARD_SRC,
    [...tokenBindings(logprobs, inputs), out.loss.binding, out.stats.binding],
    [1, 1, 1],
    (p) => params(p, logprobs.size, inputs, opts),
  );
}

/** The kernels' `P`: n, has_ref, beta, epsLow, epsHigh. */
function params(p: Params, n: number, inputs: GrpoLossInputs, opts: GrpoLossOptions): Params {
  return p.u32(n).u32(inputs.refLogprobs ? 1 : 0).f32(opts.beta).f32(opts.epsLow)
    .f32(opts.epsHigh).u32(0).u32(0).u32(0);
}

/**
 * Encodes `dlogprobs (+)= dloss * dloss/dlp` per token (0 where the weight is <= 0), recomputing
 * each token's derivative from the forward's inputs.
 *
 * @param dlogprobs f32 [N]; every element is written.
 * @param dloss f32 [1].
 * @param logprobs f32 [N] the forward's log-probabilities.
 * @param inputs The forward's constant inputs.
 * @param opts The forward's coefficients, and `accumulate` to add into `dlogprobs`.
 * @throws as {@linkcode grpoLossForward} does, and when `dlogprobs` or `dloss` has the wrong size.
 * @example grpoLossBackward(dlp, loss.grad, lp, inputs, { ...opts, accumulate: true });
 */
export function grpoLossBackward(
  dlogprobs: Tensor,
  dloss: Tensor,
  logprobs: Tensor,
  inputs: GrpoLossInputs,
  opts: GrpoLossOptions & { accumulate?: boolean },
): void {
  check(logprobs, inputs, opts);
  const n = logprobs.size;
  if (dlogprobs.dtype !== "f32" || dlogprobs.size !== n || dloss.size !== 1) {
    throw new Error(
      `grpoLoss backward: dlogprobs must be f32 [${n}] and dloss [1], got ` +
        `${dlogprobs.dtype} [${dlogprobs.shape}] and [${dloss.shape}]`,
    );
  }
  const accumulate = Boolean(opts.accumulate);
  if (dlogprobs.device.kind === "cpu") {
    hostGrpoBackward(dlogprobs, dloss, logprobs, inputs, { ...opts, accumulate });
    return;
  }
  launch1d(
    dlogprobs.device,
    "grpo_loss_bwd",
    String(accumulate),
    () => backwardSource(accumulate),
    [...tokenBindings(logprobs, inputs), dloss.binding, dlogprobs.binding],
    n,
    (p) => params(p, n, inputs, opts),
  );
}

/** What {@linkcode grpoLoss} returns. */
export interface GrpoLossResult {
  /** f32 [1], differentiable into the log-probabilities. */
  loss: Tensor;
  /** Each metric as an f32 [1] view (no gradient). */
  metrics: Record<GrpoMetric, Tensor>;
}

/**
 * The GRPO loss with autograd into `logprobs`.
 *
 * @param logprobs f32 [N] (any shape of N elements) from `tokenLogprobs(logits, targets)`.
 * @param inputs `oldLogprobs`, `refLogprobs` (null only when beta = 0), `advantages` and
 *   `weights`, f32 with N elements each.
 * @param opts `beta`, `epsLow`, `epsHigh`.
 * @returns The loss and the TRL metrics.
 * @throws when sizes, dtypes or coefficients are invalid, or `refLogprobs` is null with beta > 0.
 * @example
 * const lp = tokenLogprobs(logits, targets);
 * const { loss, metrics } = grpoLoss(lp, { oldLogprobs, refLogprobs, advantages, weights }, {
 *   beta: 0.04,
 *   epsLow: 0.2,
 *   epsHigh: 0.2,
 * });
 * tape.backward(loss);
 */
export function grpoLoss(
  logprobs: Tensor,
  inputs: GrpoLossInputs,
  opts: GrpoLossOptions,
): GrpoLossResult {
  const device = logprobs.device;
  const flat = logprobs.reshape([logprobs.size]);
  const bufs: GrpoLossBuffers = {
    loss: Tensor.empty(device, [1]),
    stats: Tensor.empty(device, [GRPO_METRICS.length * GRPO_STATS_STRIDE]),
  };
  grpoLossForward(bufs, flat, inputs, opts);
  if (needsGrad(logprobs)) {
    const saved = { ...inputs };
    record("grpo_loss", [bufs.loss], () => {
      if (!bufs.loss.grad) return;
      const { grad, accumulate } = gradFor(logprobs);
      grpoLossBackward(grad.reshape([logprobs.size]), bufs.loss.grad, flat, saved, {
        ...opts,
        accumulate,
      });
    });
  }
  const metrics = Object.fromEntries(
    GRPO_METRICS.map((name, k) => [name, bufs.stats.view([1], k * GRPO_STATS_STRIDE)]),
  ) as Record<GrpoMetric, Tensor>;
  return { loss: bufs.loss, metrics };
}

/** What {@linkcode grpoLossCpu} computes. */
export interface GrpoLossCpu {
  /** The weighted loss. */
  loss: number;
  /** [N] dloss/dlogprobs. */
  grad: Float64Array;
  /** The TRL metrics. */
  metrics: Record<GrpoMetric, number>;
}

/**
 * CPU twin of {@linkcode grpoLoss} in f64: the loss, its gradient (for dloss = 1) and the metrics.
 *
 * @param lp The policy's log-probabilities [N].
 * @param old The sampling policy's [N].
 * @param ref The reference's [N], or null (only when beta = 0).
 * @param adv The advantages [N].
 * @param w The weights [N] (<= 0: not counted).
 * @param opts `beta`, `epsLow`, `epsHigh`.
 * @throws when lengths differ or `ref` is null with beta > 0.
 * @example
 * // r = e^0.5 > 1.2 with A > 0: clipped to 1.2 A, no gradient
 * grpoLossCpu([-1], [-1.5], null, [2], [1], { beta: 0, epsLow: 0.2, epsHigh: 0.2 }).loss; // -2.4
 */
export function grpoLossCpu(
  lp: ArrayLike<number>,
  old: ArrayLike<number>,
  ref: ArrayLike<number> | null,
  adv: ArrayLike<number>,
  w: ArrayLike<number>,
  opts: GrpoLossOptions,
): GrpoLossCpu {
  const n = lp.length, { beta, epsLow, epsHigh } = opts;
  for (const [name, a] of [["old", old], ["ref", ref], ["adv", adv], ["w", w]] as const) {
    if (a !== null && a.length !== n) {
      throw new Error(`grpoLossCpu: ${name} has ${a.length} elements, lp ${n}`);
    }
  }
  if (ref === null && beta !== 0) throw new Error(`grpoLossCpu: ref is null but beta = ${beta}`);
  const grad = new Float64Array(n);
  let loss = 0, count = 0, kl = 0, low = 0, high = 0;
  for (let i = 0; i < n; i++) {
    if (!(w[i] > 0)) continue;
    const a = adv[i], r = Math.exp(lp[i] - old[i]);
    const s = Math.min(r * a, Math.min(Math.max(r, 1 - epsLow), 1 + epsHigh) * a);
    const isLow = r < 1 - epsLow && a < 0, isHigh = r > 1 + epsHigh && a > 0;
    let k = 0, dk = 0;
    if (ref !== null) {
      const d = ref[i] - lp[i];
      k = Math.expm1(d) - d;
      dk = -Math.expm1(d);
    }
    loss += w[i] * (-s + (beta > 0 ? beta * k : 0));
    grad[i] = w[i] * (isLow || isHigh ? 0 : -a * r) + (beta > 0 ? w[i] * beta * dk : 0);
    count++;
    kl += k;
    if (isLow) low++;
    if (isHigh) high++;
  }
  const c = Math.max(count, 1);
  return {
    loss,
    grad,
    metrics: {
      "kl": kl / c,
      "clip_ratio/low_mean": low / c,
      "clip_ratio/high_mean": high / c,
      "clip_ratio/region_mean": (low + high) / c,
    },
  };
}
