/**
 * The DeepSeek-V3 model on the GPU: parameters in a {@linkcode ParamArena}, a full forward with
 * every loss term recorded on the autograd tape, and the aux-loss-free bias update.
 *
 * Legend: B batch, T time, N = B*T, D dim, V vocab, E routed experts, Dm MTP depth.
 *
 *     x = Emb(tokens)                                           [N, D]
 *     for each block: x = x + MLA(RMSNorm(x)); x = x + FFN(RMSNorm(x))
 *     logits = lm_head(RMSNorm(x))                              [N, V]
 *     MTP k = 1..Dm:  h_k = Block_k(eh_proj [hnorm(h_{k-1}) ; enorm(Emb(tokens shifted by k))])
 *                     logits_k = lm_head(shared_head.norm(h_k))
 *     total = CE(main) + (lambda / Dm) sum_k CE_k + sum over MoE blocks of the balance loss
 *
 * MTP alignment (as `reference.ts`): position i of depth k embeds token i+k and predicts target
 * i+k; the last k positions of each sequence embed token 0 and are ignored by the loss.
 *
 * @module
 */
import { ParamArena } from "../kernels/arena.ts";
import { concatLastDim } from "../kernels/copy.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { add, scale } from "../kernels/elementwise.ts";
import { embedding } from "../kernels/embedding.ts";
import type { Device } from "../kernels/backend.ts";
import { linear } from "../kernels/matmul.ts";
import { biasUpdate } from "../kernels/moe_bias.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { ropeFrequencies, ropeTables } from "../kernels/rope_freqs.ts";
import { Tensor, unscoped } from "../kernels/tensor.ts";
import { deriveSizes, type ModelConfig, ropeOptions } from "./config.ts";
import { type MlaContext, mlaForward } from "./mla.ts";
import { moeForward, swigluMlp } from "./ffn.ts";
import { initParameters, parameterTable } from "./params.ts";
import { linearFor, type Precision } from "./precision.ts";

/** One batch of token ids on the host. */
export interface HostBatch {
  /** i32 [B*T] input ids. */
  tokens: Int32Array;
  /** i32 [B*T] next-token targets, negative = ignored. */
  targets: Int32Array;
  /** Sequences in the batch. */
  B: number;
  /** Positions per sequence. */
  T: number;
  /** Optional i32 [B*T] segment ids: attention stays inside a segment (packed conversations). */
  seg?: Int32Array;
  /** Optional f32 [B*T] per-target loss weights (SFT masks use 0/1). */
  weights?: Float32Array;
}

/** Options of {@linkcode DeepSeekV3.upload}. */
export interface UploadOptions {
  /**
   * Which positions get logits: `"all"` (default; pretraining, where every position has a
   * target) or `"targets"`: only the positions whose target is not ignored, gathered before
   * the final norm and the head. SFT and DPO batches have targets on ~10% of their positions
   * and the head is the largest GEMM of a small model, so this skips most of the step's work.
   * The losses and gradients are the same; the returned logits then have one row per target.
   */
  logitRows?: "all" | "targets";
}

/** Options of {@linkcode DeepSeekV3.forward}. */
export interface ForwardOptions {
  /**
   * Divide summed token losses by this instead of each batch's own count of non-ignored
   * targets: the whole step's target count when gradients accumulate over micro-batches.
   */
  denominator?: number;
  /** Skip the loss terms (inference); `targets` may then be empty. */
  logitsOnly?: boolean;
}

/** What a forward returns; every tensor lives in the caller's scope. */
export interface ForwardResult {
  /** [N, V] main-model logits; [M, V] for the batch's `rows` when it has them. */
  logits: Tensor;
  /** Final hidden state before the final norm, [N, D] (MTP input; decoding). */
  hidden: Tensor;
  /** Loss terms as [1] tensors (absent with `logitsOnly`). */
  losses?: {
    main: Tensor;
    /** Unweighted CE of each MTP depth. */
    mtpPerDepth: Tensor[];
    /** (lambda / Dm) * sum CE_k, or null without MTP. */
    mtp: Tensor | null;
    /** Sum of every MoE block's balance loss, or null without MoE blocks. */
    balance: Tensor | null;
    /** The differentiated total. */
    total: Tensor;
  };
  /** Per MoE block (main layers, then MTP blocks): tokens routed per expert, i32 [E]. */
  loads: Tensor[];
}

/** The model: configuration, parameter arena and the constant RoPE tables. */
export class DeepSeekV3 {
  /** Parameters, gradients and AdamW moments. */
  readonly arena: ParamArena;
  /** RoPE cos/sin tables [max_seq_len, dr/2]. */
  readonly rope: { cos: Tensor; sin: Tensor };
  /** Softmax scale of attention (YaRN mscale included). */
  readonly scale: number;
  /** Number format of the projection GEMMs' inputs (`--precision`, model/precision.ts). */
  precision: Precision = "f32";

  /** Allocates the arena (zeros); see {@linkcode DeepSeekV3.create} for an initialized model. */
  constructor(readonly device: Device, readonly cfg: ModelConfig) {
    this.arena = new ParamArena(
      device,
      parameterTable(cfg).map((p) => ({
        name: p.name,
        shape: p.shape,
        decay: p.weightDecay,
        trainable: p.trainable,
        // A layer's routed experts share one binding: the grouped GEMM reads them as one range.
        group: /\.mlp\.experts\.\d+\./.test(p.name)
          ? p.name.replace(/\.experts\..*/, "")
          : undefined,
      })),
    );
    const { cos, sin } = ropeTables(ropeFrequencies(ropeOptions(cfg)), cfg.max_seq_len);
    const half = cfg.qk_rope_head_dim / 2;
    // The tables live as long as the model, outside any step's scope.
    this.rope = unscoped(() => ({
      cos: Tensor.from(device, cos, [cfg.max_seq_len, half]),
      sin: Tensor.from(device, sin, [cfg.max_seq_len, half]),
    }));
    this.scale = deriveSizes(cfg).softmax_scale;
  }

  /**
   * A model with freshly initialized parameters (deterministic in `seed`).
   * @example const model = DeepSeekV3.create(device, resolveConfig("tiny"), { seed: 1 });
   */
  static create(device: Device, cfg: ModelConfig, opts: { seed: number }): DeepSeekV3 {
    const m = new DeepSeekV3(device, cfg);
    m.load(initParameters(cfg, opts.seed));
    return m;
  }

  /**
   * Uploads parameters by HF name.
   * @throws naming the tensor when one is missing, unknown or of the wrong size.
   */
  load(params: ReadonlyMap<string, Float32Array>): void {
    for (const e of this.arena.entries) {
      const data = params.get(e.name);
      if (!data) throw new Error(`load: parameter ${e.name} [${e.shape}] is missing`);
      this.arena.upload(e.name, data);
    }
    for (const name of params.keys()) {
      if (!this.arena.has(name)) throw new Error(`load: unknown parameter ${name}`);
    }
  }

  /** Reads every parameter back by HF name. */
  weights(): Promise<Map<string, Float32Array>> {
    return this.arena.readAll("params");
  }

  /** Parameter `name` as a tensor (its `.grad` is its slice of the gradient arena). */
  param(name: string): Tensor {
    return this.arena.param(name);
  }

  /**
   * Uploads a host batch: ids, targets, and the shifted ids/targets of each MTP depth.
   * The tensors belong to the current scope.
   */
  upload(batch: HostBatch, opts: UploadOptions = {}): DeviceBatch {
    const { B, T } = batch;
    const N = B * T;
    if (batch.tokens.length !== N) {
      throw new Error(`batch: tokens has ${batch.tokens.length} ids, want B*T = ${N}`);
    }
    if (T > this.cfg.max_seq_len) {
      throw new Error(`batch: T = ${T} exceeds max_seq_len ${this.cfg.max_seq_len}`);
    }
    const V = this.cfg.vocab_size;
    for (let i = 0; i < N; i++) {
      const t = batch.tokens[i];
      if (t < 0 || t >= V) throw new Error(`batch: token ${t} at ${i} outside the vocab [0, ${V})`);
    }
    const device = this.device;
    const hasTargets = batch.targets.length === N;
    if (opts.logitRows === "targets" && !hasTargets) {
      throw new Error(`batch: logitRows "targets" needs targets for all B*T = ${N} positions`);
    }
    // Rows whose logits are computed, with their targets (and weights) gathered to match.
    const rowsOf = (targets: Int32Array, weights?: Float32Array) => {
      if (opts.logitRows !== "targets") {
        return {
          rows: null,
          targets: Tensor.from(device, targets, [N], "i32"),
          weights: weights ? Tensor.from(device, weights, [N]) : null,
        };
      }
      const rows = targetRows(targets);
      return {
        rows: Tensor.from(device, rows, [rows.length], "i32"),
        targets: Tensor.from(device, rows.map((r) => targets[r]), [rows.length], "i32"),
        weights: weights
          ? Tensor.from(device, Float32Array.from(rows, (r) => weights[r]), [rows.length])
          : null,
      };
    };
    const mtp: DeviceBatch["mtp"] = [];
    for (let k = 1; k <= this.cfg.mtp_depth && hasTargets; k++) {
      const tok = new Int32Array(N), tgt = new Int32Array(N).fill(-1);
      const seg = batch.seg;
      for (let b = 0; b < B; b++) {
        for (let i = 0; i + k < T; i++) {
          const at = b * T + i;
          tok[at] = batch.tokens[at + k];
          // Packed sequences: a target k tokens ahead in another segment is not this one's.
          tgt[at] = seg && seg[at + k] !== seg[at] ? -1 : batch.targets[at + k];
        }
      }
      // The weights stay per position, as the main loss's (the all-rows forward's semantics).
      const { rows, targets, weights } = rowsOf(tgt, batch.weights);
      mtp.push({ tokens: Tensor.from(device, tok, [N], "i32"), targets, rows, weights });
    }
    const main = hasTargets ? rowsOf(batch.targets, batch.weights) : null;
    return {
      B,
      T,
      tokens: Tensor.from(device, batch.tokens, [N], "i32"),
      targets: main?.targets ?? null,
      rows: main?.rows ?? null,
      seg: batch.seg ? Tensor.from(device, batch.seg, [B, T], "i32") : null,
      weights: main
        ? main.weights
        : (batch.weights ? Tensor.from(device, batch.weights, [N]) : null),
      mtp,
    };
  }

  /**
   * The full forward (recorded on the active tape, if any).
   * @example
   * const tape = new Tape().start();
   * const out = model.forward(model.upload(batch));
   * tape.backward(out.losses!.total);
   */
  forward(batch: DeviceBatch, opts: ForwardOptions = {}): ForwardResult {
    const cfg = this.cfg, { B, T } = batch;
    const p = (n: string) => this.arena.param(n);
    const lin = linearFor(this.precision);
    const ctx: MlaContext = {
      cfg,
      param: p,
      rope: this.rope,
      scale: this.scale,
      seg: batch.seg,
      shape: { B, T },
      linear: lin,
    };
    const loads: Tensor[] = [];
    const balances: Tensor[] = [];
    const block = (i: number, x: Tensor): Tensor => {
      const pre = `model.layers.${i}`, eps = cfg.norm_eps;
      const a = mlaForward(
        ctx,
        `${pre}.self_attn`,
        rmsnorm(x, p(`${pre}.input_layernorm.weight`), { eps }),
      );
      const h = add(x, a);
      const u = rmsnorm(h, p(`${pre}.post_attention_layernorm.weight`), { eps });
      if (i < cfg.n_dense_layers) return add(h, swigluMlp(p, `${pre}.mlp`, u, lin));
      const moe = moeForward(this.arena, cfg, `${pre}.mlp`, u, { B, linear: lin });
      loads.push(moe.loads);
      balances.push(moe.balance);
      return add(h, moe.y);
    };

    const emb = p("model.embed_tokens.weight");
    let x = embedding(emb, batch.tokens); // [N, D]
    for (let i = 0; i < cfg.n_layers; i++) x = block(i, x);
    const hidden = x;
    // [N, V], or [M, V] for the gathered rows (an embedding lookup is a differentiable gather).
    const head = (h: Tensor, norm: string, rows: Tensor | null) =>
      linear(
        rmsnorm(rows ? embedding(h, rows) : h, p(norm), { eps: cfg.norm_eps }),
        p("lm_head.weight"),
      );
    const logits = head(hidden, "model.norm.weight", batch.rows);
    if (opts.logitsOnly || !batch.targets) return { logits, hidden, loads };

    const ce = (lg: Tensor, targets: Tensor, weights: Tensor | null) =>
      crossEntropy(lg, targets, {
        weights: weights ?? undefined,
        denominator: opts.denominator,
      }).loss;
    const main = ce(logits, batch.targets, batch.weights);
    const mtpPerDepth: Tensor[] = [];
    let h = hidden;
    batch.mtp.forEach((m, j) => {
      const L = cfg.n_layers + j, pre = `model.layers.${L}`, eps = cfg.norm_eps;
      const e = rmsnorm(embedding(emb, m.tokens), p(`${pre}.enorm.weight`), { eps });
      const hn = rmsnorm(h, p(`${pre}.hnorm.weight`), { eps });
      h = block(L, lin(concatLastDim([hn, e]), p(`${pre}.eh_proj.weight`)));
      mtpPerDepth.push(
        ce(head(h, `${pre}.shared_head.norm.weight`, m.rows), m.targets, m.weights),
      );
    });
    let total = main;
    let mtp: Tensor | null = null;
    if (mtpPerDepth.length) {
      mtp = mtpPerDepth.reduce((a, b) => add(a, b));
      mtp = scale(mtp, cfg.mtp_lambda / mtpPerDepth.length);
      total = add(total, mtp);
    }
    let balance: Tensor | null = null;
    if (balances.length) {
      balance = balances.reduce((a, b) => add(a, b));
      total = add(total, balance);
    }
    return { logits, hidden, losses: { main, mtpPerDepth, mtp, balance, total }, loads };
  }

  /**
   * Encodes the aux-loss-free bias update of every MoE block from the loads of a forward
   * (V3 section 2.1.2): `b_i += gamma * sign(mean(load) - load_i)`.
   */
  updateBiases(loads: Tensor[]): void {
    const names = this.moeLayers().map((i) => `model.layers.${i}.mlp.gate.e_score_correction_bias`);
    if (loads.length !== names.length) {
      throw new Error(`updateBiases: ${loads.length} load tensors for ${names.length} MoE blocks`);
    }
    names.forEach((n, j) =>
      biasUpdate(this.arena.param(n), loads[j], { gamma: this.cfg.bias_update_speed })
    );
  }

  /** Indices of the MoE blocks in forward order (main layers, then MTP blocks). */
  moeLayers(): number[] {
    const total = this.cfg.n_layers + this.cfg.mtp_depth;
    const out: number[] = [];
    for (let i = this.cfg.n_dense_layers; i < total; i++) out.push(i);
    return out;
  }
}

/** A batch on the GPU, made by {@linkcode DeepSeekV3.upload}. */
export interface DeviceBatch {
  /** Sequences in the batch. */
  B: number;
  /** Positions per sequence. */
  T: number;
  /** i32 [N] */
  tokens: Tensor;
  /** i32 [N] (or [M], one per row of `rows`), or null for inference. */
  targets: Tensor | null;
  /** i32 [M]: the positions that get logits (`logitRows: "targets"`), or null for all. */
  rows: Tensor | null;
  /** i32 [B, T] or null. */
  seg: Tensor | null;
  /** f32 [N] (or [M], like `targets`) or null. */
  weights: Tensor | null;
  /** Shifted ids and targets per MTP depth (targets and rows as in the main ones). */
  mtp: { tokens: Tensor; targets: Tensor; rows: Tensor | null; weights: Tensor | null }[];
}

/**
 * The positions with a target (>= 0), ascending; `[0]` when there is none, so a batch without
 * targets still has a (fully ignored) row.
 *
 * @example targetRows(Int32Array.of(-1, 5, -1, 7)); // Int32Array [1, 3]
 */
export function targetRows(targets: Int32Array): Int32Array {
  const rows: number[] = [];
  for (let i = 0; i < targets.length; i++) if (targets[i] >= 0) rows.push(i);
  return Int32Array.from(rows.length ? rows : [0]);
}
