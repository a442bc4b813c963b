/**
 * Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath; the RL of DeepSeek-R1) as a
 * {@linkcode TrainTask}: no value model; each prompt's G completions, sampled from the current
 * policy, are scored by rule-based rewards and their rewards normalized within the group.
 *
 * Legend: P prompts per generation batch, G completions per prompt, C = P G, M micro-batches per
 * optimizer step (gradient accumulation; C/M completions each), mu optimizer steps per batch.
 *
 *     every mu steps (prepare): sample C completions with the latent-cache decoder (temperature,
 *       top-p, max tokens; one seeded sampler per completion) -> rewards r (weighted sum of the
 *       reward functions) -> advantages A = (r - mean_group) / (std_group + 1e-4)
 *       -> per micro-batch, no gradient: old log-probs (this policy) and reference log-probs
 *       (the frozen model, when beta > 0), row-aligned with the packed batch
 *     each step, per micro-batch: pack prompt + completion (targets on the completion only)
 *       -> logits / temperature -> tokenLogprobs -> grpoLoss (clipped ratio, k3 KL) -> loss
 *
 * Per-token weights set the loss aggregation: `grpo` averages each completion's tokens, then the
 * completions (the paper's); `dapo` averages all completion tokens of the micro-batch (TRL's
 * default); `dr_grpo` divides by completions x max tokens (Dr. GRPO, no length bias). The sampled
 * batch, its advantages and log-probabilities are part of the checkpointed state, so a run
 * resumed between the mu steps of one batch continues with the same batch, bit for bit.
 *
 * @module
 */
import { hash32 } from "../random/rng.ts";
import { EpochOrder, type EpochPosition } from "./epoch_order.ts";
import { noGrad } from "../kernels/autograd.ts";
import { tokenLogprobs } from "../kernels/cross_entropy.ts";
import { scale } from "../kernels/elementwise.ts";
import { GRPO_METRICS, grpoLoss } from "../kernels/grpo.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { Decoder, type SeqHandle } from "../model/decode.ts";
import { Sampler } from "../model/sampling.ts";
import { type DeepSeekV3, targetRows } from "../model/transformer.ts";
import type { TaskOutput, TrainTask } from "./loop.ts";
import { type ChatExample, packSequences, withIdleLoads } from "./sft.ts";

/** What a reward function learns about a completion besides its text. */
export interface CompletionInfo {
  /** Completion tokens (the stop token included when one came). */
  tokens: number;
  /** The most a completion may have. */
  maxTokens: number;
  /** True when the completion ended at `maxTokens` without a stop token. */
  truncated: boolean;
}

/** One weighted reward of {@linkcode GrpoTask}. */
export interface GrpoReward {
  /** Name in the metrics (`rewards/<name>/mean`). */
  name: string;
  /** Weight in the summed reward. */
  weight: number;
  /**
   * Scores a completion of prompt `prompt` (an index into the task's prompts): a number, or null
   * when the reward does not apply to that prompt (it then adds 0 and is left out of its mean).
   */
  fn: (reply: string, prompt: number, info: CompletionInfo) => number | null;
}

/** A prompt, tokenized for generation (it ends with the assistant's header). */
export interface GrpoPromptIds {
  /** Token ids. */
  ids: readonly number[];
  /** `file:line` or another label, for messages. */
  source: string;
}

/** How the per-token loss is averaged (see the module doc). */
export type GrpoLossType = "grpo" | "dapo" | "dr_grpo";

/** Settings of {@linkcode GrpoTask}. */
export interface GrpoTaskOptions {
  /** P, prompts per generation batch. */
  prompts: number;
  /** G, completions per prompt. */
  group: number;
  /** M, micro-batches per optimizer step (the loop's gradient accumulation); divides P G. */
  micro: number;
  /** mu, optimizer steps on each generation batch (TRL's `num_iterations`). */
  iterations: number;
  /** Most tokens per completion. */
  maxTokens: number;
  /** Sampling temperature (> 0); the log-probabilities of the loss use it too. */
  temperature: number;
  /** Nucleus sampling mass (1: off). */
  topP: number;
  /** KL penalty weight (0: no reference model is needed). */
  beta: number;
  /** Lower clip range: the ratio may go down to 1 - epsLow. */
  epsLow: number;
  /** Upper clip range: the ratio may go up to 1 + epsHigh. */
  epsHigh: number;
  /** Loss aggregation. */
  lossType: GrpoLossType;
  /** Divide advantages by the group's reward std (`group`) or not (`none`, Dr. GRPO). */
  scaleRewards: "group" | "none";
  /** Positions per packed row; every prompt + completion must fit. */
  T: number;
  /** Seed of the prompt order and of the samplers. */
  seed: number;
  /** Token ids that end a completion (kept in it, and trained on). */
  stop: readonly number[];
  /** Padding token id. */
  padId?: number;
  /** Only ids below it are sampled (the tokenizer's vocabulary). */
  vocabLimit?: number;
  /** Completion tokens -> the text the rewards read (the stop token dropped). */
  decode: (tokens: readonly number[]) => string;
}

/** A sampled generation batch: everything its mu optimizer steps need. */
export interface GrpoBatch {
  /** Generation batch number (0, 1, ...): seeds its samplers. */
  index: number;
  /** Optimizer steps taken on it so far. */
  uses: number;
  /** Per completion: its prompt's index. */
  prompt: number[];
  /** Per completion: the completion's tokens. */
  completion: number[][];
  /** Per completion: the advantage. */
  advantage: number[];
  /** Per micro-batch: the sampling policy's log-prob of each target row. */
  old: number[][];
  /** Per micro-batch: the reference's log-prob of each target row (beta > 0 only). */
  ref: number[][] | null;
  /** Reward and completion statistics of the batch (TRL's names). */
  stats: Record<string, number>;
}

/** The data position of {@linkcode GrpoTask}, saved in checkpoints. */
export interface GrpoState extends EpochPosition {
  /** Generation batches sampled so far. */
  batches: number;
  /** The batch in use (null before the first). */
  batch: GrpoBatch | null;
}

/** Mean and (unbiased, as torch.std) standard deviation. */
function meanStd(x: readonly number[]): { mean: number; std: number } {
  const n = x.length;
  if (n === 0) return { mean: NaN, std: NaN };
  let s = 0;
  for (const v of x) s += v;
  const mean = s / n;
  let q = 0;
  for (const v of x) q += (v - mean) ** 2;
  return { mean, std: n > 1 ? Math.sqrt(q / (n - 1)) : 0 };
}

/**
 * Group-normalized advantages: each reward minus its group's mean, divided by the group's std
 * plus 1e-4 when `scale` (TRL's `scale_rewards="group"`).
 *
 * @param rewards [P G] rewards, group by group.
 * @param group G.
 * @example groupAdvantages([1, 0, 0, 0], 4, true); // ~[1.5, -0.5, -0.5, -0.5]
 */
export function groupAdvantages(
  rewards: readonly number[],
  group: number,
  scaleByStd: boolean,
): number[] {
  const out: number[] = [];
  for (let g = 0; g < rewards.length; g += group) {
    const r = rewards.slice(g, g + group);
    const { mean, std } = meanStd(r);
    for (const v of r) out.push(scaleByStd ? (v - mean) / (std + 1e-4) : v - mean);
  }
  return out;
}

/**
 * GRPO on prompts scored by reward functions. Call {@linkcode GrpoTask.prepare} before each
 * optimizer step (the loop does) and {@linkcode GrpoTask.dispose} at the end.
 */
export class GrpoTask implements TrainTask {
  /** Stage name. */
  readonly name = "grpo";
  private readonly order: EpochOrder;
  private batches = 0;
  private batch: GrpoBatch | null = null;
  private micro = 0;
  private decoder: Decoder | null = null;

  /**
   * A GRPO task.
   *
   * @param prompts Training prompts.
   * @param val Held-out prompts scored greedily by {@linkcode validate} (may be empty).
   * @param rewards The reward functions; the first decides `accuracy`-style metrics only by name.
   * @param reference The frozen reference model (needed when `beta > 0`).
   * @param opts Sizes, sampling, loss settings.
   * @throws naming the setting for sizes that do not fit.
   */
  constructor(
    private readonly prompts: readonly GrpoPromptIds[],
    private readonly val: { prompts: readonly GrpoPromptIds[]; rewards: readonly GrpoReward[] },
    private readonly rewards: readonly GrpoReward[],
    private readonly reference: DeepSeekV3 | null,
    private readonly opts: GrpoTaskOptions,
  ) {
    if (prompts.length === 0) throw new Error("GRPO: no training prompts");
    if (rewards.length === 0) throw new Error("GRPO: no reward functions");
    const C = opts.prompts * opts.group;
    if (opts.group < 2) {
      throw new Error(`GRPO: --group ${opts.group}: needs at least 2 completions`);
    }
    if (C % opts.micro !== 0) {
      throw new Error(
        `GRPO: --batch-size ${opts.prompts} x --group ${opts.group} = ${C} completions do not ` +
          `split into --grad-accum ${opts.micro} equal micro-batches`,
      );
    }
    if (opts.beta > 0 && !reference) throw new Error("GRPO: beta > 0 needs a reference model");
    if (!(opts.temperature > 0)) throw new Error("GRPO: --temperature must be > 0");
    for (const p of [...prompts, ...val.prompts]) {
      if (p.ids.length + opts.maxTokens > opts.T + 1) {
        throw new Error(
          `GRPO: ${p.source}: ${p.ids.length} prompt tokens + --max-tokens ${opts.maxTokens} do ` +
            `not fit ${opts.T} positions`,
        );
      }
    }
    this.order = new EpochOrder(this.prompts.length, opts.seed);
  }

  /** The sampling decoder with room for `slots` sequences, holding the policy's current weights. */
  private decoderFor(model: DeepSeekV3, slots: number): Decoder {
    if (!this.decoder || this.decoder.maxSequences < slots) {
      this.decoder?.dispose();
      this.decoder = new Decoder(model, {
        maxBatch: slots,
        maxSeqLen: Math.min(this.opts.T + 1, model.cfg.max_seq_len),
      });
    } else {
      this.decoder.syncWeights(); // the policy has moved since the last batch
    }
    return this.decoder;
  }

  /**
   * Completions of `prompts` by `model`: sampled with one seeded sampler each, or greedy.
   *
   * @returns Per prompt its tokens (the stop token included when one came).
   */
  async generate(
    model: DeepSeekV3,
    prompts: readonly (readonly number[])[],
    sampling: { seeds: readonly number[] } | "greedy",
  ): Promise<number[][]> {
    const o = this.opts;
    const dec = this.decoderFor(model, prompts.length);
    const stop = new Set(o.stop);
    const samplers = sampling === "greedy" ? null : sampling.seeds.map((seed) =>
      new Sampler(
        { temperature: o.temperature, topP: o.topP, seed },
        { vocabLimit: o.vocabLimit },
      )
    );
    const greedy = new Sampler({ temperature: 0 }, { vocabLimit: o.vocabLimit });
    const out: number[][] = prompts.map(() => []);
    const seqs: SeqHandle[] = [];
    try {
      for (const _ of prompts) seqs.push(dec.newSequence());
      let active = [...prompts.keys()];
      let logits = await dec.step(active.map((i) => ({ seq: seqs[i], tokens: [...prompts[i]] })));
      while (active.length) {
        const next: number[] = [];
        const items: { seq: SeqHandle; tokens: number[] }[] = [];
        active.forEach((i, k) => {
          const t = (samplers ? samplers[i] : greedy).sample(logits[k]);
          out[i].push(t);
          if (!stop.has(t) && out[i].length < o.maxTokens) {
            next.push(i);
            items.push({ seq: seqs[i], tokens: [t] });
          }
        });
        active = next;
        if (active.length) logits = await dec.step(items);
      }
    } finally {
      for (const s of seqs) dec.release(s);
    }
    return out;
  }

  /** Scores completions: the summed reward of each, and per reward the applicable values. */
  private score(
    rewards: readonly GrpoReward[],
    prompt: readonly number[],
    completion: readonly number[][],
  ): { total: number[]; per: Record<string, number[]> } {
    const o = this.opts, stop = new Set(o.stop);
    const per: Record<string, number[]> = {};
    for (const r of rewards) per[r.name] = [];
    const total = completion.map((c, k) => {
      const ended = c.length > 0 && stop.has(c[c.length - 1]);
      const text = o.decode(ended ? c.slice(0, -1) : c);
      const info = { tokens: c.length, maxTokens: o.maxTokens, truncated: !ended };
      let sum = 0;
      for (const r of rewards) {
        const v = r.fn(text, prompt[k], info);
        if (v === null) continue;
        if (!Number.isFinite(v)) throw new Error(`GRPO: reward "${r.name}" returned ${v}`);
        per[r.name].push(v);
        sum += r.weight * v;
      }
      return sum;
    });
    return { total, per };
  }

  /** The examples of micro-batch m: prompt + completion, targets on the completion. */
  private examples(batch: GrpoBatch, m: number): ChatExample[] {
    const n = batch.completion.length / this.opts.micro;
    const out: ChatExample[] = [];
    for (let k = m * n; k < (m + 1) * n; k++) {
      const p = this.prompts[batch.prompt[k]].ids, c = batch.completion[k];
      const ids = new Int32Array(p.length + c.length);
      ids.set(p);
      ids.set(c, p.length);
      const mask = new Uint8Array(ids.length);
      mask.fill(1, p.length);
      out.push({ ids, mask, source: this.prompts[batch.prompt[k]].source });
    }
    return out;
  }

  /** Log-probabilities of micro-batch m's target rows under `model`, without a gradient. */
  private async rowLogprobs(model: DeepSeekV3, batch: GrpoBatch, m: number): Promise<number[]> {
    return await noGrad(async () => {
      const scope = new Scope();
      try {
        const b = packSequences(this.examples(batch, m), {
          T: this.opts.T,
          padId: this.opts.padId,
        });
        return Array.from(await this.policyLogprobs(model, b).lp.readF32());
      } finally {
        scope.dispose();
      }
    });
  }

  /** Log-probs of a packed batch's targets, from logits divided by the temperature. */
  private policyLogprobs(
    model: DeepSeekV3,
    b: ReturnType<typeof packSequences>,
  ): { lp: Tensor; loads: Tensor[] } {
    const dev = model.upload(b, { logitRows: "targets" });
    const out = model.forward(dev, { logitsOnly: true });
    const t = this.opts.temperature;
    const logits = t === 1 ? out.logits : scale(out.logits, 1 / t);
    return { lp: tokenLogprobs(logits, dev.targets!), loads: out.loads };
  }

  /**
   * Samples a new generation batch when the current one has had its mu steps. The loop calls it
   * before each optimizer step, with no tape active.
   */
  async prepare(model: DeepSeekV3): Promise<void> {
    this.micro = 0;
    if (this.batch && this.batch.uses < this.opts.iterations) {
      this.batch.uses++;
      return;
    }
    const o = this.opts;
    const index = this.batches++;
    const picked = this.order.take(this.opts.prompts);
    const prompt = picked.flatMap((p) => Array<number>(o.group).fill(p));
    const completion = await this.generate(
      model,
      prompt.map((p) => this.prompts[p].ids),
      { seeds: prompt.map((_, k) => hash32(o.seed, index, k)) },
    );
    const { total, per } = this.score(this.rewards, prompt, completion);
    const advantage = groupAdvantages(total, o.group, o.scaleRewards === "group");
    const batch: GrpoBatch = {
      index,
      uses: 1,
      prompt,
      completion,
      advantage,
      old: [],
      ref: o.beta > 0 ? [] : null,
      stats: this.batchStats(total, per, completion),
    };
    for (let m = 0; m < o.micro; m++) {
      batch.old.push(await this.rowLogprobs(model, batch, m));
      if (batch.ref) batch.ref.push(await this.rowLogprobs(this.reference!, batch, m));
    }
    this.batch = batch;
  }

  /** TRL's reward and completion metrics of one batch. */
  private batchStats(
    total: readonly number[],
    per: Record<string, number[]>,
    completion: readonly number[][],
  ): Record<string, number> {
    const o = this.opts, stop = new Set(o.stop);
    const s: Record<string, number> = {};
    for (const [name, v] of Object.entries(per)) {
      const { mean, std } = meanStd(v);
      if (v.length === 0) continue;
      s[`rewards/${name}/mean`] = mean;
      s[`rewards/${name}/std`] = std;
    }
    s.reward = meanStd(total).mean;
    let stdSum = 0, zero = 0;
    for (let g = 0; g < total.length; g += o.group) {
      const { std } = meanStd(total.slice(g, g + o.group));
      stdSum += std;
      if (std === 0) zero++;
    }
    const groups = total.length / o.group;
    s.reward_std = stdSum / groups;
    s.frac_reward_zero_std = zero / groups;
    const len = completion.map((c) => c.length);
    const done = completion.filter((c) => c.length > 0 && stop.has(c[c.length - 1]));
    s["completions/mean_length"] = meanStd(len).mean;
    s["completions/min_length"] = Math.min(...len);
    s["completions/max_length"] = Math.max(...len);
    s["completions/clipped_ratio"] = 1 - done.length / completion.length;
    if (done.length) {
      s["completions/mean_terminated_length"] = meanStd(done.map((c) => c.length)).mean;
    }
    return s;
  }

  /** Encodes micro-batch `m` of the current batch: the policy forward and the GRPO loss. */
  forward(model: DeepSeekV3): TaskOutput {
    const batch = this.batch;
    if (!batch) throw new Error("GRPO: forward() before prepare(): no sampled batch");
    const o = this.opts, m = this.micro++ % o.micro;
    const examples = this.examples(batch, m);
    const b = packSequences(examples, { T: o.T, padId: o.padId });
    const rows = targetRows(b.targets);
    const n = examples.length, first = m * n;
    const adv = new Float32Array(rows.length), w = new Float32Array(rows.length);
    rows.forEach((r, j) => {
      if (b.targets[r] < 0) return;
      const k = b.item[r]; // index into this micro-batch's examples
      adv[j] = batch.advantage[first + k];
      const tokens = examples[k].mask.reduce((a, v) => a + v, 0);
      w[j] = o.lossType === "grpo"
        ? 1 / (tokens * n)
        : o.lossType === "dr_grpo"
        ? 1 / (n * o.maxTokens)
        : 1 / b.targetTokens;
    });
    const device = model.device;
    const { lp, loads } = this.policyLogprobs(model, b);
    const old = batch.old[m], ref = batch.ref?.[m];
    if (old.length !== rows.length || (ref && ref.length !== rows.length)) {
      throw new Error("GRPO: the packed batch differs from the one the log-probs were taken on");
    }
    const { loss, metrics } = grpoLoss(lp, {
      oldLogprobs: Tensor.from(device, Float32Array.from(old), [rows.length]),
      refLogprobs: ref ? Tensor.from(device, Float32Array.from(ref), [rows.length]) : null,
      advantages: Tensor.from(device, adv, [rows.length]),
      weights: Tensor.from(device, w, [rows.length]),
    }, { beta: o.beta, epsLow: o.epsLow, epsHigh: o.epsHigh });
    const terms: Record<string, Tensor> = {};
    for (const k of GRPO_METRICS) terms[k] = metrics[k];
    return {
      loss,
      terms,
      loads: withIdleLoads(model, loads),
      tokens: b.targetTokens,
      stats: batch.stats,
    };
  }

  /**
   * Greedy replies to the held-out prompts, scored: `reward` (the weighted sum's mean) and each
   * reward's mean (`rewards/<name>/mean`).
   */
  async validate(model: DeepSeekV3): Promise<Record<string, number>> {
    const val = this.val;
    if (val.prompts.length === 0) return {};
    const slots = this.opts.prompts * this.opts.group;
    const completion: number[][] = [];
    for (let i = 0; i < val.prompts.length; i += slots) {
      const chunk = val.prompts.slice(i, i + slots).map((p) => p.ids);
      completion.push(...await this.generate(model, chunk, "greedy"));
    }
    const idx = [...val.prompts.keys()];
    const { total, per } = this.score(val.rewards, idx, completion);
    const out: Record<string, number> = { reward: meanStd(total).mean };
    for (const [name, v] of Object.entries(per)) {
      if (v.length) out[`rewards/${name}/mean`] = meanStd(v).mean;
    }
    out["completions/mean_length"] = meanStd(completion.map((c) => c.length)).mean;
    return out;
  }

  /** The data position and the batch in use. */
  state(): GrpoState {
    return { ...this.order.position(), batches: this.batches, batch: this.batch };
  }

  /** Restores {@linkcode state}'s value. */
  restore(state: unknown): void {
    const s = state as GrpoState;
    this.order.seek(s);
    this.batches = s.batches;
    this.batch = s.batch;
  }

  /** Frees the decoder's caches. */
  dispose(): void {
    this.decoder?.dispose();
    this.decoder = null;
  }
}
