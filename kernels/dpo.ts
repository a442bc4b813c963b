/**
 * The DPO loss (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7) from per-token
 * log-probabilities: per-sequence sums, the sigmoid loss against cached reference sums, the
 * TRL-named metrics, and the backward into the per-token log-probabilities; CPU twins.
 *
 * Legend: N tokens (rows of the logits), P preference pairs, S = 2P sequences. Sequence 2p is
 * pair p's chosen response, 2p + 1 its rejected one.
 *
 *     seqIds [N] i32     sequence of the token's target (a response token), -1 = not counted
 *     pi [S]             pi_s = sum over tokens i with seqIds[i] = s of logprobs[i]
 *     ref [S]            the frozen reference's sums, computed once before training
 *     r_c = beta (pi_2p - ref_2p),  r_r = beta (pi_2p+1 - ref_2p+1),  z_p = r_c - r_r
 *     loss [1]           mean_p -log sigmoid(z_p) = mean_p softplus(-z_p)
 *     coef [P]           dloss/dz_p = -sigmoid(-z_p) / P           (saved for the backward)
 *     dlogprobs[i]       = dloss * beta * coef[p] * (+1 chosen, -1 rejected), 0 if seqIds[i] < 0
 *
 * Metrics (means over the P pairs, as TRL's `DPOTrainer` logs them): rewards/chosen (r_c),
 * rewards/rejected (r_r), rewards/margins (r_c - r_r), rewards/accuracies (share with r_c > r_r),
 * logps/chosen (pi_2p), logps/rejected (pi_2p+1). Each lands in its own 256-byte-aligned slot of
 * one `stats` buffer so that a [1] view of it can be bound or copied directly.
 *
 * One workgroup does the forward: thread q folds pairs q, q + WG, ... and each pair scans the N
 * tokens in order, so the sums have a fixed order (same inputs, same bits) and need no atomics.
 * N S / WG reads is nothing next to the logits that produced the log-probabilities.
 *
 * Left out: label smoothing (cDPO), IPO and the other TRL loss types, reference-free DPO.
 *
 * On the CPU backend each launcher calls its implementation in `host/dpo.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import { type Floats, wgslRowHelpers } from "./_rows.ts";
import { Tensor } from "./tensor.ts";
import { hostDpoBackward, hostDpoForward } from "./host/dpo.ts";

/** The metric names, in their `stats` slot order (TRL's names). */
export const DPO_METRICS = [
  "rewards/chosen",
  "rewards/rejected",
  "rewards/margins",
  "rewards/accuracies",
  "logps/chosen",
  "logps/rejected",
] as const;

/** One of {@linkcode DPO_METRICS}. */
export type DpoMetric = typeof DPO_METRICS[number];

/** f32 elements between two metric slots of `stats`: 64 * 4 B = the 256 B binding alignment. */
export const DPO_STATS_STRIDE = 64;

const WG = 64;

const FORWARD_SRC = /* wgsl */ `
${wgslRowHelpers(WG)}
@group(0) @binding(0) var<storage, read> lp: array<f32>;
@group(0) @binding(1) var<storage, read> seq: array<i32>;
@group(0) @binding(2) var<storage, read> ref_sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<f32>;
struct P { n: u32, pairs: u32, beta: f32, _a: u32 }
@group(0) @binding(7) var<storage, read> p: P;
const STRIDE: u32 = ${DPO_STATS_STRIDE}u;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var l = 0.0;
  var rc = 0.0;
  var rr = 0.0;
  var acc = 0.0;
  var lc = 0.0;
  var lr = 0.0;
  let np = f32(p.pairs);
  for (var q = li; q < p.pairs; q += WG) {
    let sc = i32(2u * q);
    var c = 0.0;
    var r = 0.0;
    for (var i = 0u; i < p.n; i++) {
      let s = seq[i];
      if (s == sc) { c += lp[i]; } else if (s == sc + 1) { r += lp[i]; }
    }
    sums[2u * q] = c;
    sums[2u * q + 1u] = r;
    let cr = p.beta * (c - ref_sums[2u * q]);
    let rj = p.beta * (r - ref_sums[2u * q + 1u]);
    let z = cr - rj;
    // -log sigmoid(z) = softplus(-z), in the form that neither overflows nor cancels.
    l += max(-z, 0.0) + log(1.0 + exp(-abs(z)));
    // sigmoid(-z); the clamp keeps exp finite (sigmoid(-80) is 0 in f32 anyway).
    coef[q] = -1.0 / (1.0 + exp(min(z, 80.0))) / np;
    rc += cr;
    rr += rj;
    acc += select(0.0, 1.0, cr > rj);
    lc += c;
    lr += r;
  }
  let tl = wg_sum(li, l);
  let trc = wg_sum(li, rc);
  let trr = wg_sum(li, rr);
  let tacc = wg_sum(li, acc);
  let tlc = wg_sum(li, lc);
  let tlr = wg_sum(li, lr);
  if (li == 0u) {
    loss[0] = tl / np;
    stats[0u] = trc / np;
    stats[STRIDE] = trr / np;
    stats[2u * STRIDE] = (trc - trr) / np;
    stats[3u * STRIDE] = tacc / np;
    stats[4u * STRIDE] = tlc / np;
    stats[5u * STRIDE] = tlr / np;
  }
}`;

const backwardSource = (acc: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> seq: array<i32>;
@group(0) @binding(1) var<storage, read> coef: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlp: array<f32>;
struct P { n: u32, beta: f32, _a: u32, _b: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let s = seq[i];
  var d = 0.0;
  if (s >= 0) {
    let sign = select(-1.0, 1.0, (s & 1) == 0);
    d = g[0] * p.beta * coef[u32(s) / 2u] * sign;
  }
  ${acc ? "dlp[i] = dlp[i] + d;" : "dlp[i] = d;"}
}`;

/** Sizes and the temperature of a DPO loss. */
export interface DpoLossOptions {
  /** P, preference pairs in the batch (sequences 0 .. 2P-1). */
  pairs: number;
  /** beta, the KL-penalty temperature (TRL's default 0.1). */
  beta: number;
}

/** What {@linkcode dpoLossForward} writes. */
export interface DpoLossBuffers {
  /** f32 [2P]: the policy's per-sequence summed log-probabilities. */
  sums: Tensor;
  /** f32 [1]: the mean loss. */
  loss: Tensor;
  /** f32 [6 * {@linkcode DPO_STATS_STRIDE}]: metric k at element k * stride. */
  stats: Tensor;
  /** f32 [P]: dloss/dz per pair, for the backward. */
  coef: Tensor;
}

function check(logprobs: Tensor, seqIds: Tensor, ref: Tensor, opts: DpoLossOptions): void {
  const { pairs, beta } = opts;
  if (!Number.isInteger(pairs) || pairs < 1) {
    throw new Error(`dpoLoss: pairs must be a positive integer, got ${pairs}`);
  }
  if (!Number.isFinite(beta)) throw new Error(`dpoLoss: beta must be finite, got ${beta}`);
  if (logprobs.dtype !== "f32") throw new Error(`dpoLoss: logprobs must be f32`);
  if (seqIds.dtype !== "i32" || seqIds.size !== logprobs.size) {
    throw new Error(
      `dpoLoss: seqIds must be i32 with ${logprobs.size} elements (one per log-probability), ` +
        `got ${seqIds.dtype} [${seqIds.shape}]`,
    );
  }
  if (ref.size !== 2 * pairs) {
    throw new Error(`dpoLoss: refLogps must hold 2 * pairs = ${2 * pairs} sums, got ${ref.size}`);
  }
}

/**
 * Encodes the DPO forward: per-sequence sums, the loss, the metrics and the saved coefficients.
 *
 * @param out Buffers of the sizes in {@linkcode DpoLossBuffers}.
 * @param logprobs f32 [N] per-token log-probabilities of the targets.
 * @param seqIds i32 [N] sequence per token (2p chosen, 2p + 1 rejected), -1 for none.
 * @param refLogps f32 [2P] reference sums in the same sequence order.
 * @param opts `pairs` and `beta`.
 * @throws when sizes or dtypes disagree, naming the tensor.
 * @example dpoLossForward(bufs, logprobs, seqIds, refLogps, { pairs: 4, beta: 0.1 });
 */
export function dpoLossForward(
  out: DpoLossBuffers,
  logprobs: Tensor,
  seqIds: Tensor,
  refLogps: Tensor,
  opts: DpoLossOptions,
): void {
  check(logprobs, seqIds, refLogps, opts);
  if (logprobs.device.kind === "cpu") {
    hostDpoForward(out, logprobs, seqIds, refLogps, { ...opts, stride: DPO_STATS_STRIDE });
    return;
  }
  launch(
    logprobs.device,
    "dpo_loss",
    "",
    () => FORWARD_SRC,
    [
      logprobs.binding,
      seqIds.binding,
      refLogps.binding,
      out.sums.binding,
      out.loss.binding,
      out.stats.binding,
      out.coef.binding,
    ],
    [1, 1, 1],
    (p) => p.u32(logprobs.size).u32(opts.pairs).f32(opts.beta).u32(0),
  );
}

/**
 * Encodes `dlogprobs (+)= dloss * beta * coef[p] * (+1 | -1)` per counted token, 0 elsewhere.
 *
 * @param dlogprobs f32 [N]; every element is written.
 * @param dloss f32 [1].
 * @param saved `seqIds` and the forward's `coef`.
 * @param opts `beta`, and `accumulate` to add into `dlogprobs`.
 * @example dpoLossBackward(dlp, loss.grad, { seqIds, coef }, { beta: 0.1 });
 */
export function dpoLossBackward(
  dlogprobs: Tensor,
  dloss: Tensor,
  saved: { seqIds: Tensor; coef: Tensor },
  opts: { beta: number; accumulate?: boolean },
): void {
  const n = dlogprobs.size;
  if (dlogprobs.device.kind === "cpu") {
    hostDpoBackward(dlogprobs, dloss, saved, {
      beta: opts.beta,
      accumulate: Boolean(opts.accumulate),
    });
    return;
  }
  launch1d(
    dlogprobs.device,
    "dpo_loss_bwd",
    String(Boolean(opts.accumulate)),
    () => backwardSource(Boolean(opts.accumulate)),
    [saved.seqIds.binding, saved.coef.binding, dloss.binding, dlogprobs.binding],
    n,
    (p) => p.u32(n).f32(opts.beta).u32(0).u32(0),
  );
}

/** What {@linkcode dpoLoss} returns. */
export interface DpoLossResult {
  /** f32 [1], differentiable into the log-probabilities. */
  loss: Tensor;
  /** f32 [2P] policy sums (no gradient; for logging). */
  sums: Tensor;
  /** Each metric as an f32 [1] view (no gradient). */
  metrics: Record<DpoMetric, Tensor>;
}

/**
 * The DPO loss with autograd into `logprobs`.
 *
 * @param logprobs f32 [N] from `tokenLogprobs(logits, targets)`.
 * @param opts `seqIds` i32 [N], `refLogps` f32 [2P], `pairs`, `beta`.
 * @returns The loss, the policy sums and the TRL metrics.
 * @throws when sizes or dtypes disagree.
 * @example
 * const lp = tokenLogprobs(logits, targets);
 * const { loss, metrics } = dpoLoss(lp, { seqIds, refLogps, pairs: 4, beta: 0.1 });
 * tape.backward(loss);
 */
export function dpoLoss(
  logprobs: Tensor,
  opts: DpoLossOptions & { seqIds: Tensor; refLogps: Tensor },
): DpoLossResult {
  const gpu = logprobs.device;
  const flat = logprobs.reshape([logprobs.size]);
  const bufs: DpoLossBuffers = {
    sums: Tensor.empty(gpu, [2 * opts.pairs]),
    loss: Tensor.empty(gpu, [1]),
    stats: Tensor.empty(gpu, [DPO_METRICS.length * DPO_STATS_STRIDE]),
    coef: Tensor.empty(gpu, [opts.pairs]),
  };
  dpoLossForward(bufs, flat, opts.seqIds, opts.refLogps, opts);
  if (needsGrad(logprobs)) {
    record("dpo_loss", [bufs.loss], () => {
      if (!bufs.loss.grad) return;
      const { grad, accumulate } = gradFor(logprobs);
      dpoLossBackward(grad.reshape([logprobs.size]), bufs.loss.grad, {
        seqIds: opts.seqIds,
        coef: bufs.coef,
      }, { beta: opts.beta, accumulate });
    });
  }
  const metrics = Object.fromEntries(
    DPO_METRICS.map((name, k) => [name, bufs.stats.view([1], k * DPO_STATS_STRIDE)]),
  ) as Record<DpoMetric, Tensor>;
  return { loss: bufs.loss, sums: bufs.sums, metrics };
}

/** What {@linkcode dpoLossCpu} computes. */
export interface DpoLossCpu {
  /** The mean loss. */
  loss: number;
  /** [2P] policy sums. */
  sums: Float64Array;
  /** [P] dloss/dz per pair. */
  coef: Float64Array;
  /** The TRL metrics. */
  metrics: Record<DpoMetric, number>;
}

/**
 * CPU twin of {@linkcode dpoLossForward} (in f64).
 *
 * @example
 * dpoLossCpu([-1, -2, -3], [0, 0, 1], [-3, -3], { pairs: 1, beta: 0.1 }).loss; // ln 2
 */
export function dpoLossCpu(
  logprobs: ArrayLike<number>,
  seqIds: ArrayLike<number>,
  refLogps: ArrayLike<number>,
  opts: DpoLossOptions,
): DpoLossCpu {
  const P = opts.pairs, beta = opts.beta;
  const sums = new Float64Array(2 * P);
  for (let i = 0; i < seqIds.length; i++) if (seqIds[i] >= 0) sums[seqIds[i]] += logprobs[i];
  const coef = new Float64Array(P);
  let loss = 0, rc = 0, rr = 0, acc = 0, lc = 0, lr = 0;
  for (let p = 0; p < P; p++) {
    const c = beta * (sums[2 * p] - refLogps[2 * p]);
    const r = beta * (sums[2 * p + 1] - refLogps[2 * p + 1]);
    const z = c - r;
    loss += Math.max(-z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
    coef[p] = -1 / (1 + Math.exp(z)) / P;
    rc += c;
    rr += r;
    acc += c > r ? 1 : 0;
    lc += sums[2 * p];
    lr += sums[2 * p + 1];
  }
  return {
    loss: loss / P,
    sums,
    coef,
    metrics: {
      "rewards/chosen": rc / P,
      "rewards/rejected": rr / P,
      "rewards/margins": (rc - rr) / P,
      "rewards/accuracies": acc / P,
      "logps/chosen": lc / P,
      "logps/rejected": lr / P,
    },
  };
}

/**
 * CPU twin of {@linkcode dpoLossBackward}: dlogprobs [N] from the saved coefficients.
 *
 * @example dpoLossBackwardCpu([0, 1, -1], cpu.coef, 1, { beta: 0.1 }); // [+, -, 0]
 */
export function dpoLossBackwardCpu(
  seqIds: ArrayLike<number>,
  coef: Floats,
  dloss: number,
  opts: { beta: number },
): Float64Array {
  const out = new Float64Array(seqIds.length);
  for (let i = 0; i < seqIds.length; i++) {
    const s = seqIds[i];
    if (s >= 0) out[i] = dloss * opts.beta * coef[s >> 1] * (s % 2 === 0 ? 1 : -1);
  }
  return out;
}
