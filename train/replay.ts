/**
 * Replay of pretraining text during post-training (SFT, DPO): each micro-batch adds B windows of
 * T tokens of the pretraining shard and `weight` times their mean next-token CE to the stage's
 * loss, so chat tuning does not wipe what pretraining taught (knowledge learned only from
 * pretraining text is what held-out questions ask). The `--replay-*` flags and their loader are
 * in `stage.ts`.
 *
 * @module
 */
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { add, scale } from "../kernels/elementwise.ts";
import type { DeepSeekV3 } from "../model/transformer.ts";
import type { TaskOutput } from "./loop.ts";
import { toHostBatch } from "./pretrain.ts";
import { BatchSampler, type SamplerState } from "./sampler.ts";

/** What to replay and how much. */
export interface ReplaySpec {
  /** The pretraining token stream (a prepared `train.bin`). */
  tokens: ArrayLike<number>;
  /** Windows per micro-batch. */
  B: number;
  /** Tokens per window. */
  T: number;
  /** Weight of their mean next-token CE in the loss. */
  weight: number;
}

/** Replayed pretraining windows, sampled in shuffled epochs as pretraining samples them. */
export class Replay {
  private readonly sampler: BatchSampler;

  /**
   * Replay of `spec.tokens`.
   *
   * @param spec The replayed tokens, window shape and weight.
   * @param seed Its own seed stream, so the stage's own data order is the same with or without
   *   replay.
   * @throws when B or T is below 1 or the weight is negative.
   */
  constructor(readonly spec: ReplaySpec, seed: number) {
    if (!(spec.weight >= 0 && spec.B >= 1 && spec.T >= 1)) {
      const { B, T, weight } = spec;
      throw new Error(
        `replay: need B, T >= 1 and weight >= 0, got ${JSON.stringify({ B, T, weight })}`,
      );
    }
    this.sampler = new BatchSampler(spec.tokens, { B: spec.B, T: spec.T, seed });
  }

  /**
   * Encodes the next windows' forward and adds `weight x` their CE to `out.loss` (and the CE as
   * the `replay_ce` term, their tokens to `out.tokens`). Its routing loads are not added: replay
   * does not move the router biases.
   */
  addTo(model: DeepSeekV3, out: TaskOutput): void {
    const rb = this.sampler.next();
    const dev = model.upload(toHostBatch(rb, this.spec));
    const ce = crossEntropy(model.forward(dev, { logitsOnly: true }).logits, dev.targets!).loss;
    out.terms.replay_ce = ce;
    out.loss = add(out.loss, scale(ce, this.spec.weight));
    out.tokens += rb.targetTokens;
  }

  /** The sampler position. */
  state(): SamplerState {
    return this.sampler.state();
  }

  /** Restores {@linkcode state}'s value. */
  restore(s: SamplerState): void {
    this.sampler.restore(s);
  }
}
