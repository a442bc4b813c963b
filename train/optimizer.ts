/**
 * AdamW over a {@linkcode ParamArena}, with global-norm gradient clipping folded in on the GPU.
 *
 * One call to {@linkcode AdamW.update} encodes: the sum of squares of every gradient chunk (one
 * deterministic two-stage reduction), the clip scale `min(1, maxNorm / norm)`, and AdamW over
 * maximal runs of neighbouring tensors that share a weight-decay flag (norms and biases get no
 * decay, V3 section 4.2). Nothing is read back: the norm and the non-finite flag come back as
 * 1-element tensors for the caller to read when it logs.
 *
 * @module
 */
import type { ParamArena } from "../kernels/arena.ts";
import type { DeviceBuffer } from "../kernels/device.ts";
import { adamw, ADAMW_MOMENT_DEFAULTS, gradClip, type GradClipStats } from "../kernels/optim.ts";
import { Tensor } from "../kernels/tensor.ts";

/** AdamW hyperparameters (defaults: DeepSeek-V3's, section 4.2). */
export interface AdamWConfig {
  /** beta1 0.9. */
  beta1: number;
  /** beta2 0.95: shorter memory than 0.999, steadier for large-batch LM training. */
  beta2: number;
  /** eps 1e-8. */
  eps: number;
  /** Decoupled weight decay 0.1 on matrices. */
  weightDecay: number;
  /** Global gradient-norm clip 1.0; 0 or Infinity disables clipping. */
  maxGradNorm: number;
}

/** V3's AdamW settings (the betas and eps are the kernels' {@linkcode ADAMW_MOMENT_DEFAULTS}). */
export const ADAMW_DEFAULTS: Readonly<AdamWConfig> = Object.freeze({
  ...ADAMW_MOMENT_DEFAULTS,
  weightDecay: 0.1,
  maxGradNorm: 1.0,
});

/** A run of arena elements updated by one AdamW dispatch. */
interface Run {
  chunk: number;
  /** First element. */
  offset: number;
  /** Elements. */
  count: number;
  decay: boolean;
}

/** AdamW state: the step counter (moments live in the arena). */
export class AdamW {
  /** Optimizer steps taken (bias corrections use it); restored on resume. */
  step = 0;
  /** The settings in use (defaults filled in). */
  readonly config: AdamWConfig;
  private readonly runs: Run[];
  private readonly views: { params: Tensor; grads: Tensor; m: Tensor; v: Tensor }[];

  /**
   * Binds the optimizer to a model's arena (its params, grads and moments).
   *
   * @param arena The arena it updates.
   * @param config Settings; missing ones are V3's ({@linkcode ADAMW_DEFAULTS}).
   */
  constructor(readonly arena: ParamArena, config: Partial<AdamWConfig> = {}) {
    this.config = { ...ADAMW_DEFAULTS, ...config };
    this.runs = [];
    for (const e of arena.entries) {
      if (!e.trainable) continue;
      const offset = e.offset / 4, last = this.runs[this.runs.length - 1];
      // Padding between neighbours is zero in all four arenas and stays zero under AdamW.
      if (last && last.chunk === e.chunk && last.decay === e.decay) {
        last.count = offset + e.size - last.offset;
      } else {
        this.runs.push({ chunk: e.chunk, offset, count: e.size, decay: e.decay });
      }
    }
    this.views = arena.chunks.map((c) => {
      const n = c.bytes / 4;
      const view = (b: DeviceBuffer) => new Tensor(arena.device, b, [n]);
      return { params: view(c.params), grads: view(c.grads), m: view(c.m), v: view(c.v) };
    });
  }

  /**
   * Encodes one clipped AdamW step at learning rate `lr` and advances the step counter.
   * @returns the gradient norm (before clipping), the clip scale and the non-finite flag, as
   *   [1] tensors in the current scope.
   */
  update(lr: number): GradClipStats {
    const c = this.config;
    const clip = gradClip(this.views.map((v) => ({ t: v.grads })), {
      maxNorm: c.maxGradNorm > 0 ? c.maxGradNorm : Infinity,
    });
    this.step++;
    for (const r of this.runs) {
      const v = this.views[r.chunk];
      adamw(v.params, { grad: v.grads, m: v.m, v: v.v }, {
        lr,
        step: this.step,
        wd: r.decay ? c.weightDecay : 0,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        offset: r.offset,
        count: r.count,
        gradScale: clip.scale,
      });
    }
    return clip;
  }

  /** Number of AdamW dispatches per step (for benchmarks). */
  get dispatchesPerStep(): number {
    return this.runs.length;
  }
}
