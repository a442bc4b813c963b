/**
 * The pretraining stage: next-token prediction (plus MTP and the balance loss) on token shards,
 * as a {@linkcode TrainTask} for the shared loop.
 *
 * Legend: B rows per micro-batch, T sequence length.
 *
 * @module
 */
import { Scope, type Tensor } from "../kernels/tensor.ts";
import type { DeepSeekV3, HostBatch } from "../model/transformer.ts";
import type { TaskOutput, TrainTask } from "./loop.ts";
import { type Batch, BatchSampler, type SamplerState, valBatches } from "./sampler.ts";

/** A sampler batch as the model's host batch: masked-out targets become -1 (ignored). */
export function toHostBatch(b: Batch, shape: { B: number; T: number }): HostBatch {
  const targets = new Int32Array(b.targets.length);
  for (let i = 0; i < targets.length; i++) targets[i] = b.mask[i] > 0 ? b.targets[i] : -1;
  return { tokens: Int32Array.from(b.inputs), targets, B: shape.B, T: shape.T };
}

/** Settings of {@linkcode PretrainTask}. */
export interface PretrainTaskOptions {
  /** Rows per micro-batch. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Shuffle seed of the training windows. */
  seed: number;
  /** Validation batches per evaluation (0: the whole val split). */
  evalBatches?: number;
}

/** Pretraining on a train split, validated on a val split (token id streams). */
export class PretrainTask implements TrainTask {
  readonly name = "pretrain";
  private readonly sampler: BatchSampler;

  /**
   * A pretraining task.
   *
   * @param train Token ids of the train split.
   * @param val Token ids of the validation split.
   * @param opts Batch shape, seed, validation batches.
   */
  constructor(
    train: ArrayLike<number>,
    private readonly val: ArrayLike<number>,
    private readonly opts: PretrainTaskOptions,
  ) {
    this.sampler = new BatchSampler(train, { B: opts.B, T: opts.T, seed: opts.seed });
  }

  /** Batches in one epoch of the train split. */
  get batchesPerEpoch(): number {
    return this.sampler.batchesPerEpoch;
  }

  forward(model: DeepSeekV3): TaskOutput {
    const b = this.sampler.next();
    const out = model.forward(model.upload(toHostBatch(b, this.opts)));
    const l = out.losses!;
    const terms: Record<string, Tensor> = { ce: l.main };
    if (l.mtp) terms.mtp = l.mtp;
    if (l.balance) terms.balance = l.balance;
    return { loss: l.total, terms, loads: out.loads, tokens: b.targetTokens };
  }

  /** Token-weighted mean CE of the main model over the val split, and its perplexity. */
  async validate(model: DeepSeekV3): Promise<Record<string, number>> {
    return { ...(await evaluateLoss(model, this.val, this.opts)) };
  }

  state(): SamplerState {
    return this.sampler.state();
  }

  restore(state: unknown): void {
    this.sampler.restore(state as SamplerState);
  }
}

/**
 * Mean next-token cross-entropy of the main model over a token stream (fixed order, no grad).
 * @returns `loss` (nats per token), `ppl` and `tokens` evaluated.
 */
export async function evaluateLoss(
  model: DeepSeekV3,
  tokens: ArrayLike<number>,
  opts: { B: number; T: number; evalBatches?: number },
): Promise<{ loss: number; ppl: number; tokens: number }> {
  let sum = 0, count = 0;
  for (
    const b of valBatches(tokens, {
      B: opts.B,
      T: opts.T,
      maxBatches: opts.evalBatches || undefined,
    })
  ) {
    if (b.targetTokens === 0) continue;
    const scope = new Scope();
    const out = model.forward(model.upload(toHostBatch(b, opts)));
    const ce = (await out.losses!.main.readF32())[0];
    scope.dispose();
    sum += ce * b.targetTokens;
    count += b.targetTokens;
  }
  const loss = count ? sum / count : NaN;
  return { loss, ppl: Math.exp(loss), tokens: count };
}
