/**
 * Incremental decoding on the GPU with MLA's latent KV cache and absorbed attention, batched over
 * sequences of different lengths, plus MTP self-speculative drafting (DeepSeek-V2 section 2.1,
 * V3 sections 2.1.1 and 2.2 / 5.4.3).
 *
 * Legend: S cache slots (open sequences), L positions per slot (maxSeqLen), N new tokens of a
 * step (all items together), I items of a step, D dim, V vocab, H heads, dn qk_nope_head_dim,
 * dr qk_rope_head_dim, dv v_head_dim, rkv kv_lora_rank, W = rkv + dr.
 *
 *     per main layer:   cache [S, L, W] = per token [c = RMSNorm_kv(c_kv) ; k_pe = RoPE(k_pe_raw)]
 *     W_kvb viewed [H, dn + dv, rkv]:  W_UK [H, dn, rkv] (first dn rows), W_UV [H, dv, rkv]
 *     q~   = q_nope @ W_UK               [H, N, rkv]   (q~_h = W_UK_h^T q_nope_h)
 *     z    = latent attention            [H, N, rkv]   (kernels/latent_attention.ts)
 *     o    = z @ W_UV^T                  [H, N, dv]  -> [N, H * dv] -> o_proj
 *
 * So a token costs `n_layers * (rkv + dr)` cached floats instead of `n_layers * H * (dn + dr + dv)`
 * (`kvCacheBytesPerToken` in config.ts), and the keys and values of past tokens are never
 * re-expanded: the up-projection is folded into the query and the output instead. The rest of a
 * block (norms, dense SwiGLU or MoE) runs on the N new tokens only, with the same kernels as
 * training (`model/ffn.ts`, under `noGrad`); MoE routing is per token, so a token's output does
 * not depend on what else is in the batch.
 *
 * {@linkcode Decoder} implements the server's `LanguageModel` (`serve/model_api.ts`) structurally:
 * `newSequence`, `release` and `step(items)` returning each item's last-token logits. A step's
 * items may mix prefill chunks (many tokens) and decode tokens (one); each new token sits at the
 * next position of its sequence and attends to every earlier position and to itself.
 *
 * MTP drafting (optional, `{ mtp: true }`): the decoder also keeps every position's final hidden
 * state (before the final norm) and a latent cache for the MTP block. {@linkcode Decoder.mtpStep}
 * runs the MTP module at the positions whose next token is known,
 * `h' = eh_proj [hnorm(h_j) ; enorm(Emb(t_{j+1}))]`, one block, `shared_head.norm`, the shared
 * head, and returns logits for token j + 2: a draft that the next main step verifies.
 * {@linkcode Decoder.greedyStep} is the fused steady state of greedy self-speculation: it verifies
 * drafts, picks the greedy tokens on the GPU, runs the MTP at the same positions and reads back
 * only token ids, one readback per step (a readback costs about as much as a nano decode step's
 * compute on lavapipe). {@linkcode generateGreedy} puts it together; its output equals
 * plain greedy decoding token for token. Only the first MTP module is used for drafting.
 *
 * Weights: W_UK / W_UV are copied out of `kv_b_proj` when the decoder is made; call
 * {@linkcode Decoder.syncWeights} after changing the model's parameters.
 *
 * Left out: sampling other than greedy in the helpers (the server samples from `step`'s logits),
 * paged or shared (prefix) caches, f16/FP8 caches, drafting more than one token ahead
 * (`greedyStep` verifies several drafts; the MTP module drafts one).
 *
 * @module
 */
import { noGrad } from "../kernels/autograd.ts";
import { concatLastDim, copyColumns, sliceLastDim, transpose12 } from "../kernels/copy.ts";
import { add } from "../kernels/elementwise.ts";
import { embedding } from "../kernels/embedding.ts";
import type { Device } from "../kernels/backend.ts";
import { roundUp } from "../kernels/device.ts";
import { latentAttentionForward, latentCacheWrite } from "../kernels/latent_attention.ts";
import { linear, matmul } from "../kernels/matmul.ts";
import { reduceForward } from "../kernels/reduce.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { ropeForward } from "../kernels/rope.ts";
import { Scope, Tensor, unscoped } from "../kernels/tensor.ts";
import type { ModelConfig } from "./config.ts";
import { moeForward, swigluMlp } from "./ffn.ts";
import type { DeepSeekV3 } from "./transformer.ts";

/**
 * An open sequence of a {@linkcode Decoder}, or of any model behind the server's
 * `LanguageModel`: an opaque number the model chose (a KV-cache slot, say). Only meaningful to
 * the model that returned it.
 */
export type SeqHandle = number;

/** One sequence's share of a step: the tokens appended to it, in order (never empty). */
export interface DecodeItem {
  /** The sequence, from {@linkcode Decoder.newSequence}. */
  seq: SeqHandle;
  /** Token ids, each in [0, vocabSize). */
  tokens: readonly number[];
}

/** Options of the {@linkcode Decoder} constructor. */
export interface DecoderOptions {
  /** Cache slots: the most sequences open at once (default 4). */
  maxBatch?: number;
  /**
   * Keep what MTP drafting needs: each position's final hidden state ([S, L, D] floats) and the
   * MTP block's latent cache. Default false; needs a model with `mtp_depth >= 1`.
   */
  mtp?: boolean;
  /** Positions per slot, at most the model's max_seq_len (default: max_seq_len). */
  maxSeqLen?: number;
  /** Name reported as the `LanguageModel` id (default `minideepseek`). */
  id?: string;
}

/** What {@linkcode Decoder.greedyStep} settled for one item. */
export interface GreedyStepResult {
  /** How many of the item's drafts (`tokens[1..]`) the main model's greedy tokens confirmed. */
  accepted: number;
  /**
   * The tokens this step settled, in order: the accepted drafts, then the main model's greedy
   * token after them (the next pending token).
   */
  tokens: number[];
  /** The MTP module's greedy draft of the token after `tokens`' last; -1 without drafting. */
  draft: number;
}

/** The absorbed halves of one layer's `kv_b_proj`. */
interface Absorbed {
  /** W_UK [H, dn, rkv]. */
  uk: Tensor;
  /** W_UV [H, dv, rkv]. */
  uv: Tensor;
}

/** A validated step: host index arrays of its N tokens. */
interface Plan {
  /** i32 [N] token ids. */
  ids: Int32Array;
  /** i32 [N, 2] (slot, position). */
  where: Int32Array;
  /** i32 [N] positions (the RoPE table rows). */
  pos: Int32Array;
  /** i32 [N] flat cache rows slot * L + position (the hidden-state store's rows). */
  flat: Int32Array;
  /** i32 [I] index of each item's last token among the N. */
  last: Int32Array;
  /** Per item: its slot and token count. */
  items: { slot: number; count: number }[];
}

/** A plan on the GPU, plus the RoPE rows of its tokens. */
interface StepTensors {
  ids: Tensor;
  where: Tensor;
  flat: Tensor;
  last: Tensor;
  /** [N, dr/2] the cos / sin table rows at each token's position. */
  cos: Tensor;
  sin: Tensor;
}

/**
 * Batched incremental decoder over a {@linkcode DeepSeekV3} model: one latent-cache slot per open
 * sequence, `maxSeqLen` positions each.
 *
 * @example
 * ```ts ignore
 * const dec = new Decoder(model, { maxBatch: 4 });
 * const seq = dec.newSequence();
 * let [logits] = await dec.step([{ seq, tokens: promptIds }]); // prefill
 * [logits] = await dec.step([{ seq, tokens: [argmax(logits)] }]); // decode
 * dec.release(seq);
 * ```
 */
export class Decoder {
  /** Model name for the server's `/v1/models`. */
  readonly id: string;
  /** Length of each logits vector. */
  readonly vocabSize: number;
  /** Most tokens one sequence holds (the model's max_seq_len unless made smaller). */
  readonly maxSeqLen: number;
  /** Cache slots: the most sequences open at once. */
  readonly maxSequences: number;
  /** Length of {@linkcode Decoder.stepHidden}'s vectors: the model's dim. */
  readonly hiddenSize: number;
  /** Whether MTP drafting ({@linkcode Decoder.mtpStep}) is available. */
  readonly hasMtp: boolean;
  /** Bytes of the main model's latent cache per token: `n_layers * (rkv + dr) * 4`. */
  readonly cacheBytesPerToken: number;
  readonly #model: DeepSeekV3;
  readonly #cfg: ModelConfig;
  readonly #device: Device;
  /** Per main layer: [S, L, W]. */
  readonly #caches: Tensor[];
  /** The MTP block's [S, L, W], or null. */
  readonly #mtpCache: Tensor | null;
  /** Final hidden state per slot and position [S, L, D] (MTP input), or null. */
  readonly #hidden: Tensor | null;
  /** Per layer index (main layers, then the first MTP block): W_UK, W_UV. */
  readonly #absorbed: Absorbed[];
  readonly #slotOf = new Map<SeqHandle, number>();
  readonly #freeSlots: number[];
  readonly #len: Int32Array;
  readonly #mtpLen: Int32Array;
  #nextHandle = 1;
  #disposed = false;

  /**
   * Allocates the caches (zeroed) and the absorbed weights.
   *
   * @param model the model; its parameters are read on every step (W_UK / W_UV are copies, see
   *   {@linkcode Decoder.syncWeights}).
   * @throws when `mtp` is asked of a model without an MTP module, maxBatch is not a positive
   *   integer, or maxSeqLen is not in [1, max_seq_len].
   */
  constructor(model: DeepSeekV3, opts: DecoderOptions = {}) {
    const cfg = model.cfg;
    const S = opts.maxBatch ?? 4;
    if (!Number.isInteger(S) || S < 1) {
      throw new RangeError(`Decoder: maxBatch must be a positive integer, got ${S}`);
    }
    const L = opts.maxSeqLen ?? cfg.max_seq_len;
    if (!Number.isInteger(L) || L < 1 || L > cfg.max_seq_len) {
      throw new RangeError(
        `Decoder: maxSeqLen must be an integer in [1, ${cfg.max_seq_len}] (the model's ` +
          `max_seq_len), got ${L}`,
      );
    }
    if (opts.mtp && cfg.mtp_depth < 1) {
      throw new Error("Decoder: { mtp: true } needs a model with mtp_depth >= 1");
    }
    this.#model = model;
    this.#cfg = cfg;
    this.#device = model.device;
    this.id = opts.id ?? "minideepseek";
    this.vocabSize = cfg.vocab_size;
    this.hiddenSize = cfg.dim;
    this.maxSeqLen = L;
    this.maxSequences = S;
    this.hasMtp = Boolean(opts.mtp);
    const W = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
    const H = cfg.n_heads, dn = cfg.qk_nope_head_dim, dv = cfg.v_head_dim;
    const rkv = cfg.kv_lora_rank;
    const device = this.#device;
    // Everything here lives as long as the decoder, outside any caller's scope.
    const made = unscoped(() => {
      const caches = Array.from({ length: cfg.n_layers }, () => Tensor.zeros(device, [S, L, W]));
      const layers = cfg.n_layers + (this.hasMtp ? 1 : 0);
      const absorbed = Array.from({ length: layers }, () => ({
        uk: Tensor.empty(device, [H, dn, rkv]),
        uv: Tensor.empty(device, [H, dv, rkv]),
      }));
      return {
        caches,
        absorbed,
        mtpCache: this.hasMtp ? Tensor.zeros(device, [S, L, W]) : null,
        hidden: this.hasMtp ? Tensor.zeros(device, [S, L, cfg.dim]) : null,
      };
    });
    this.#caches = made.caches;
    this.#absorbed = made.absorbed;
    this.#mtpCache = made.mtpCache;
    this.#hidden = made.hidden;
    this.cacheBytesPerToken = this.#caches.reduce((a, c) => a + c.bytes, 0) / (S * L);
    this.#freeSlots = Array.from({ length: S }, (_, i) => S - 1 - i);
    this.#len = new Int32Array(S);
    this.#mtpLen = new Int32Array(S);
    this.syncWeights();
  }

  /**
   * Re-copies W_UK and W_UV out of every layer's `kv_b_proj` (encoded, not waited for). Call it
   * after training or loading new parameters into the model; other weights are read live.
   */
  syncWeights(): void {
    const cfg = this.#cfg, H = cfg.n_heads, rkv = cfg.kv_lora_rank;
    const nk = cfg.qk_nope_head_dim * rkv, nv = cfg.v_head_dim * rkv;
    this.#absorbed.forEach((a, i) => {
      const w = this.#model.param(`model.layers.${i}.self_attn.kv_b_proj.weight`)
        .reshape([H, nk + nv]); // [H, (dn + dv) * rkv]: per head [W_UK_h ; W_UV_h]
      copyColumns(a.uk.reshape([H, nk]), w, { xOffset: 0, len: nk });
      copyColumns(a.uv.reshape([H, nv]), w, { xOffset: nk, len: nv });
    });
  }

  /**
   * Opens an empty sequence in a free cache slot.
   * @returns Its handle.
   * @throws {Error} When all `maxSequences` slots are in use.
   */
  newSequence(): SeqHandle {
    this.#assertLive();
    const slot = this.#freeSlots.pop();
    if (slot === undefined) {
      throw new Error(
        `Decoder: all ${this.maxSequences} sequences are in use; release one or make the ` +
          "decoder with a larger maxBatch",
      );
    }
    const h = this.#nextHandle++;
    this.#slotOf.set(h, slot);
    this.#len[slot] = 0;
    this.#mtpLen[slot] = 0;
    return h;
  }

  /** Closes a sequence and frees its slot; unknown or released handles are ignored. */
  release(seq: SeqHandle): void {
    const slot = this.#slotOf.get(seq);
    if (slot === undefined) return;
    this.#slotOf.delete(seq);
    this.#freeSlots.push(slot);
  }

  /** Tokens in the sequence's cache. @throws for an unknown handle. */
  length(seq: SeqHandle): number {
    return this.#len[this.#slot(seq)];
  }

  /** Positions the MTP cache holds (at most {@linkcode length}). @throws for an unknown handle. */
  mtpLength(seq: SeqHandle): number {
    return this.#mtpLen[this.#slot(seq)];
  }

  /**
   * Rolls a sequence back to its first `len` tokens (a rejected draft): later positions are
   * ignored from now on and overwritten by the next step. The MTP cache is cut to match.
   * @throws for an unknown handle or `len` outside [0, length].
   */
  truncate(seq: SeqHandle, len: number): void {
    const slot = this.#slot(seq);
    if (!Number.isInteger(len) || len < 0 || len > this.#len[slot]) {
      throw new RangeError(`truncate: length ${len} outside [0, ${this.#len[slot]}]`);
    }
    this.#len[slot] = len;
    this.#mtpLen[slot] = Math.min(this.#mtpLen[slot], len);
  }

  /**
   * Appends tokens to several sequences at once and returns each item's next-token logits.
   *
   * @param items At most one per sequence, each with at least one token; positions continue
   *   from each sequence's length.
   * @returns One `Float32Array(vocabSize)` per item: the logits after its last token.
   * @throws {Error} For an unknown or released handle, a repeated sequence, an empty token list,
   *   an id outside the vocabulary, or a sequence that would pass `maxSeqLen`. Nothing is
   *   appended then.
   */
  async step(items: readonly DecodeItem[]): Promise<Float32Array[]> {
    return (await this.#mainStep(items, false)).map((l) => l[0]);
  }

  /**
   * {@linkcode step}, returning the logits after EVERY new token of each item (what verifying a
   * draft needs): item i gets `tokens.length` arrays, the k-th predicting the token after
   * `tokens[k]`.
   * @throws as {@linkcode step}.
   */
  stepAll(items: readonly DecodeItem[]): Promise<Float32Array[][]> {
    return this.#mainStep(items, true);
  }

  /**
   * {@linkcode step}, returning the final hidden state after every new token of each item (the
   * output head's input: the last block's output after the final RMSNorm) instead of logits; the
   * server pools them into embeddings.
   * @returns Item i gets `tokens.length` arrays of `dim` floats.
   * @throws as {@linkcode step}.
   */
  async stepHidden(items: readonly DecodeItem[]): Promise<Float32Array[][]> {
    const plan = this.#plan(items, this.#len, null, "stepHidden");
    if (plan.items.length === 0) return [];
    const D = this.#cfg.dim, eps = this.#cfg.norm_eps;
    const h = await this.#run(
      plan,
      (t) => rmsnorm(this.#mainBody(t), this.#model.param("model.norm.weight"), { eps }),
    ) as Float32Array; // [N, D]
    for (const it of plan.items) this.#len[it.slot] += it.count;
    let row = 0;
    return plan.items.map((it) =>
      Array.from({ length: it.count }, () => h.subarray(D * row, D * ++row))
    );
  }

  /**
   * Runs the MTP module at the next positions of each item's MTP cache and returns the logits of
   * the token two ahead of the last one: with MTP length m, `tokens[k]` must be the token at
   * position m + k + 1 (the one after the main-model position m + k, whose hidden state is
   * used), and the returned logits predict position m + tokens.length + 1.
   *
   * @param items Per sequence the known next tokens; m + tokens.length must not pass the main
   *   cache's length.
   * @returns One `Float32Array(vocabSize)` per item.
   * @throws {Error} Without `{ mtp: true }`, or for items as {@linkcode step} refuses, or that run
   *   ahead of the main model.
   */
  async mtpStep(items: readonly DecodeItem[]): Promise<Float32Array[]> {
    if (!this.#hidden || !this.#mtpCache) {
      throw new Error("mtpStep: make the Decoder with { mtp: true } to draft with MTP");
    }
    const plan = this.#plan(items, this.#mtpLen, this.#len, "mtpStep");
    if (plan.items.length === 0) return [];
    const cfg = this.#cfg, S = this.maxSequences, L = this.maxSeqLen, hidden = this.#hidden;
    const logits = await this.#run(plan, (t) => {
      const h = embedding(hidden.reshape([S * L, cfg.dim]), t.flat); // [N, D] stored states
      const x = this.#mtpBody(h, t.ids, t);
      return this.#head(
        embedding(x, t.last),
        `model.layers.${cfg.n_layers}.shared_head.norm.weight`,
      );
    }) as Float32Array;
    for (const it of plan.items) this.#mtpLen[it.slot] += it.count;
    return this.#split(logits, plan, false).map((l) => l[0]);
  }

  /** Frees the caches. The decoder is unusable afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const t of this.#caches) t.dispose();
    for (const a of this.#absorbed) {
      a.uk.dispose();
      a.uv.dispose();
    }
    this.#mtpCache?.dispose();
    this.#hidden?.dispose();
  }

  /**
   * One greedy step with drafts verified on the GPU, and (with MTP) the next draft made in the
   * same submission: the main model runs on every item's tokens, its greedy token at each
   * position is picked on the GPU (row argmax), and the MTP module runs at the same positions
   * with those tokens as the next ones. One small readback per step, no logits leave the GPU.
   *
   * Per item, `tokens[0]` is the pending token (already settled: sampled but not yet in the
   * cache) and `tokens[1..]` are drafts of the tokens after it. Draft i is accepted when it
   * equals the main model's greedy token after position i - 1 and every draft before it was
   * accepted; the cache keeps the pending token and the accepted drafts, the rest is rolled back.
   *
   * @param items Per sequence `[pending, ...drafts]`.
   * @param opts.draft Run the MTP module for the next draft (default: whether the decoder has
   *   MTP). Needs the MTP cache level with the main one ({@linkcode mtpStep} after a prefill).
   * @returns Per item what the step settled.
   * @throws {Error} As {@linkcode step}; when drafting without `{ mtp: true }`, or with an MTP
   *   cache behind the main one.
   */
  async greedyStep(
    items: readonly DecodeItem[],
    opts: { draft?: boolean } = {},
  ): Promise<GreedyStepResult[]> {
    const draft = opts.draft ?? this.hasMtp;
    if (draft && !this.hasMtp) {
      throw new Error("greedyStep: drafting needs a Decoder made with { mtp: true }");
    }
    const plan = this.#plan(items, this.#len, null, "greedyStep");
    if (draft) {
      for (const [k, it] of plan.items.entries()) {
        if (this.#mtpLen[it.slot] !== this.#len[it.slot]) {
          throw new Error(
            `greedyStep: sequence ${items[k].seq} has ${this.#mtpLen[it.slot]} MTP positions ` +
              `but ${this.#len[it.slot]} main ones; bring the MTP cache level with mtpStep first`,
          );
        }
      }
    }
    if (plan.items.length === 0) return [];
    const N = plan.ids.length, Np = roundUp(N, 64); // two i32 halves 256-byte aligned
    const cfg = this.#cfg, device = this.#device;
    const picks = await this.#run(plan, (t) => {
      const x = this.#mainBody(t); // [N, D]
      const picked = Tensor.empty(device, [2 * Np], "i32");
      const greedy = picked.view([N], 0), drafts = picked.view([N], Np);
      const rowMax = (logits: Tensor, arg: Tensor) =>
        reduceForward(Tensor.empty(device, [N]), logits, { op: "max", argmax: arg });
      rowMax(this.#head(x, "model.norm.weight"), greedy);
      if (draft) {
        // MTP position j takes token j + 1: the main model's greedy pick at j, which is right
        // for every position the step keeps (the pending token's and the accepted drafts').
        const m = this.#mtpBody(x, greedy, t);
        rowMax(this.#head(m, `model.layers.${cfg.n_layers}.shared_head.norm.weight`), drafts);
      }
      return picked;
    }) as Int32Array;
    let row = 0;
    return plan.items.map((it, k) => {
      const toks = items[k].tokens;
      let a = 0;
      while (a + 1 < it.count && toks[a + 1] === picks[row + a]) a++;
      const res: GreedyStepResult = {
        accepted: a,
        tokens: [...toks.slice(1, a + 1), picks[row + a]],
        draft: draft ? picks[Np + row + a] : -1,
      };
      this.#len[it.slot] += a + 1;
      if (draft) this.#mtpLen[it.slot] = this.#len[it.slot];
      row += it.count;
      return res;
    });
  }

  async #mainStep(items: readonly DecodeItem[], all: boolean): Promise<Float32Array[][]> {
    const plan = this.#plan(items, this.#len, null, "step");
    if (plan.items.length === 0) return [];
    const logits = await this.#run(plan, (t) => {
      const x = this.#mainBody(t);
      return this.#head(all ? x : embedding(x, t.last), "model.norm.weight"); // [N or I, V]
    }) as Float32Array;
    for (const it of plan.items) this.#len[it.slot] += it.count;
    return this.#split(logits, plan, all);
  }

  /**
   * The main model on the step's tokens, appending to every layer's cache (and the hidden-state
   * store): returns the final hidden states [N, D], before the final norm.
   */
  #mainBody(t: StepTensors): Tensor {
    let x = embedding(this.#model.param("model.embed_tokens.weight"), t.ids); // [N, D]
    for (let i = 0; i < this.#cfg.n_layers; i++) x = this.#block(i, x, this.#caches[i], t);
    if (this.#hidden) latentCacheWrite(this.#hidden, { c: x, where: t.where });
    return x;
  }

  /**
   * The first MTP module at the step's positions, appending to its cache: `h` [N, D] the main
   * model's hidden states there, `next` i32 [N] the token after each. Returns [N, D] before
   * `shared_head.norm`.
   */
  #mtpBody(h: Tensor, next: Tensor, t: StepTensors): Tensor {
    const cfg = this.#cfg, Lm = cfg.n_layers, pre = `model.layers.${Lm}`, eps = cfg.norm_eps;
    const p = (n: string) => this.#model.param(n);
    const e = rmsnorm(embedding(p("model.embed_tokens.weight"), next), p(`${pre}.enorm.weight`), {
      eps,
    });
    const hn = rmsnorm(h, p(`${pre}.hnorm.weight`), { eps });
    const x = linear(concatLastDim([hn, e]), p(`${pre}.eh_proj.weight`)); // [N, D]
    return this.#block(Lm, x, this.#mtpCache!, t);
  }

  /** Uploads the plan, encodes `body` under noGrad in a scope, and reads its result back. */
  async #run(plan: Plan, body: (t: StepTensors) => Tensor): Promise<Float32Array | Int32Array> {
    const scope = new Scope();
    try {
      const device = this.#device, N = plan.ids.length;
      const pos = Tensor.from(device, plan.pos, [N], "i32");
      const t: StepTensors = {
        ids: Tensor.from(device, plan.ids, [N], "i32"),
        where: Tensor.from(device, plan.where, [N, 2], "i32"),
        flat: Tensor.from(device, plan.flat, [N], "i32"),
        last: Tensor.from(device, plan.last, [plan.last.length], "i32"),
        cos: embedding(this.#model.rope.cos, pos),
        sin: embedding(this.#model.rope.sin, pos),
      };
      const out = noGrad(() => body(t));
      return (await out.read()) as Float32Array | Int32Array;
    } finally {
      scope.dispose();
    }
  }

  /** Splits [rows, V] logits into per-item views (all rows, or one per item). */
  #split(data: Float32Array, plan: Plan, all: boolean): Float32Array[][] {
    const V = this.vocabSize;
    let row = 0;
    return plan.items.map((it) => {
      const n = all ? it.count : 1;
      const out = Array.from(
        { length: n },
        (_, k) => data.subarray((row + k) * V, (row + k + 1) * V),
      );
      row += n;
      return out;
    });
  }

  /** One transformer block on the new tokens: x [N, D] -> [N, D]. */
  #block(i: number, x: Tensor, cache: Tensor, t: StepTensors): Tensor {
    const cfg = this.#cfg, pre = `model.layers.${i}`, eps = cfg.norm_eps;
    const p = (n: string) => this.#model.param(n);
    const a = this.#attention(i, rmsnorm(x, p(`${pre}.input_layernorm.weight`), { eps }), cache, t);
    const h = add(x, a);
    const u = rmsnorm(h, p(`${pre}.post_attention_layernorm.weight`), { eps });
    const f = i < cfg.n_dense_layers
      ? swigluMlp(p, `${pre}.mlp`, u)
      // B = 1: the balance loss it also computes is unused at inference.
      : moeForward(this.#model.arena, cfg, `${pre}.mlp`, u, { B: 1 }).y;
    return add(h, f);
  }

  /** Absorbed MLA of layer `i` on the new tokens: x [N, D] -> [N, D], appending to `cache`. */
  #attention(i: number, x: Tensor, cache: Tensor, t: StepTensors): Tensor {
    const cfg = this.#cfg, N = x.shape[0], eps = cfg.norm_eps;
    const H = cfg.n_heads, dn = cfg.qk_nope_head_dim, dr = cfg.qk_rope_head_dim;
    const dv = cfg.v_head_dim, rkv = cfg.kv_lora_rank;
    const w = (n: string) => this.#model.param(`model.layers.${i}.self_attn.${n}.weight`);
    const { uk, uv } = this.#absorbed[i];

    const qFlat = cfg.q_lora_rank > 0
      ? linear(rmsnorm(linear(x, w("q_a_proj")), w("q_a_layernorm"), { eps }), w("q_b_proj"))
      : linear(x, w("q_proj")); // [N, H * (dn + dr)]
    const q = qFlat.reshape([1, N, H, dn + dr]);
    ropeForward(q, q, t.cos, t.sin); // in place on each head's last dr (row n at table row n)
    const qh = transpose12(q).reshape([H, N, dn + dr]);
    const qt = matmul(sliceLastDim(qh, 0, dn), uk); // [H, N, rkv]

    const kva = linear(x, w("kv_a_proj_with_mqa")); // [N, rkv + dr] = [c_kv ; k_pe_raw]
    const kva4 = kva.reshape([1, N, 1, rkv + dr]);
    ropeForward(kva4, kva4, t.cos, t.sin); // k_pe rotated in place
    const c = rmsnorm(sliceLastDim(kva, 0, rkv), w("kv_a_layernorm"), { eps }); // [N, rkv]
    latentCacheWrite(cache, { c, kPe: kva, where: t.where });

    const z = Tensor.empty(this.#device, [H, N, rkv]);
    latentAttentionForward(z, { qt, q: qh, cache, where: t.where }, { scale: this.#model.scale });
    const o = matmul(z, uv, { transB: true }); // [H, N, dv]
    const on = transpose12(o.reshape([1, H, N, dv])).reshape([N, H * dv]);
    return linear(on, w("o_proj"));
  }

  /** logits [rows, V] = lm_head(RMSNorm(h)). */
  #head(h: Tensor, norm: string): Tensor {
    const p = (n: string) => this.#model.param(n);
    return linear(rmsnorm(h, p(norm), { eps: this.#cfg.norm_eps }), p("lm_head.weight"));
  }

  /**
   * Validates items against `lens` (and `limit`, which the new positions must stay within) and
   * lays out their tokens.
   */
  #plan(
    items: readonly DecodeItem[],
    lens: Int32Array,
    limit: Int32Array | null,
    what: string,
  ): Plan {
    this.#assertLive();
    const seen = new Set<number>();
    let N = 0;
    const parts = items.map((it, k) => {
      const slot = this.#slotOf.get(it.seq);
      if (slot === undefined) {
        throw new Error(`${what}: item ${k} names sequence ${it.seq}, which is not open`);
      }
      if (seen.has(slot)) throw new Error(`${what}: sequence ${it.seq} appears twice in one step`);
      seen.add(slot);
      const n = it.tokens.length;
      if (n === 0) throw new Error(`${what}: item ${k} (sequence ${it.seq}) has no tokens`);
      const end = lens[slot] + n;
      if (end > this.maxSeqLen) {
        throw new Error(
          `${what}: sequence ${it.seq} would hold ${end} tokens, past maxSeqLen ${this.maxSeqLen}`,
        );
      }
      if (limit && end > limit[slot]) {
        throw new Error(
          `${what}: sequence ${it.seq} would reach position ${end - 1}, but the main model has ` +
            `only ${limit[slot]} positions; step the main model first`,
        );
      }
      for (const id of it.tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
          throw new Error(
            `${what}: token ${id} of sequence ${it.seq} is outside the vocabulary [0, ` +
              `${this.vocabSize})`,
          );
        }
      }
      N += n;
      return { slot, count: n, tokens: it.tokens };
    });
    const ids = new Int32Array(N), where = new Int32Array(2 * N);
    const pos = new Int32Array(N), flat = new Int32Array(N), last = new Int32Array(parts.length);
    let n = 0;
    parts.forEach((it, k) => {
      for (let j = 0; j < it.count; j++, n++) {
        const p = lens[it.slot] + j;
        ids[n] = it.tokens[j];
        where[2 * n] = it.slot;
        where[2 * n + 1] = p;
        pos[n] = p;
        flat[n] = it.slot * this.maxSeqLen + p;
      }
      last[k] = n - 1;
    });
    return {
      ids,
      where,
      pos,
      flat,
      last,
      items: parts.map(({ slot, count }) => ({ slot, count })),
    };
  }

  #slot(seq: SeqHandle): number {
    const slot = this.#slotOf.get(seq);
    if (slot === undefined) throw new Error(`Decoder: sequence ${seq} is not open`);
    return slot;
  }

  #assertLive(): void {
    if (this.#disposed) throw new Error("Decoder: used after dispose()");
  }
}

/**
 * Index of the largest value; the lowest index wins ties. `-Infinity` everywhere gives 0. The
 * one host argmax: greedy decoding here, temperature 0 in `serve/sampling.ts`.
 *
 * @param x Values.
 * @returns The index.
 * @throws {RangeError} If `x` is empty.
 * @example
 * ```ts
 * argmax(Float32Array.of(1, 3, 3)); // 1
 * ```
 */
export function argmax(x: ArrayLike<number>): number {
  if (x.length === 0) throw new RangeError("argmax of an empty array");
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Options of {@linkcode generateGreedy}. */
export interface GenerateOptions {
  /** Tokens to generate per prompt (fewer if a stop token comes or the context fills). */
  maxTokens: number;
  /** Draft each next-but-one token with the MTP module and verify it (needs `{ mtp: true }`). */
  speculative?: boolean;
  /** Token ids that end a sequence; the stop token is included in the output. */
  stop?: readonly number[];
  /** Called with each prompt's newly settled tokens, in order, as soon as a step settles them. */
  onTokens?: (index: number, tokens: readonly number[]) => void;
  /**
   * Replaces each MTP draft before it is verified (tests force acceptance or rejection with it):
   * gets the prompt index, the draft's position and the MTP's draft; returns the token to feed.
   */
  draftOverride?: (index: number, position: number, draft: number) => number;
}

/** What {@linkcode generateGreedy} counts. */
export interface GenerateStats {
  /** Main-model steps, the prefill included. */
  steps: number;
  /** Separate MTP calls: the catch-up after the prefill (later drafts ride on the main steps). */
  mtpSteps: number;
  /** Drafts fed to the main model for verification. */
  drafted: number;
  /** Drafts the main model's greedy token confirmed. */
  accepted: number;
}

/** Per prompt the generated tokens, and the counts. */
export interface GenerateResult {
  /** Generated tokens per prompt (the prompt excluded). */
  tokens: number[][];
  /** Steps, MTP calls, drafts and accepted drafts. */
  stats: GenerateStats;
}

/**
 * Greedy generation for a batch of prompts, one sequence each, decoded together; with
 * `speculative`, MTP self-speculative decoding (V3 section 5.4.3): each step feeds the pending
 * token and the MTP's draft of the one after it; a draft equal to the main model's greedy token
 * is accepted (two tokens for one step), otherwise the cache is rolled back one position. The
 * output equals plain greedy decoding token for token.
 *
 * @param decoder a decoder with enough free slots (and `{ mtp: true }` for `speculative`).
 * @param prompts token ids, each non-empty and shorter than `maxSeqLen`.
 * @returns the tokens and {@linkcode GenerateStats}; every sequence opened is released.
 * @throws when `speculative` is asked of a decoder without MTP, or for prompts `step` refuses.
 * @example
 * ```ts ignore
 * const { tokens, stats } = await generateGreedy(dec, [prompt], { maxTokens: 32, speculative: true });
 * console.log(stats.accepted / stats.drafted);
 * ```
 */
export async function generateGreedy(
  decoder: Decoder,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const spec = Boolean(opts.speculative);
  if (spec && !decoder.hasMtp) {
    throw new Error("generateGreedy: speculative decoding needs a Decoder made with { mtp: true }");
  }
  const stop = new Set(opts.stop ?? []);
  const stats: GenerateStats = { steps: 0, mtpSteps: 0, drafted: 0, accepted: 0 };
  const out: number[][] = prompts.map(() => []);
  if (prompts.length === 0 || opts.maxTokens <= 0) return { tokens: out, stats };
  const seqs: SeqHandle[] = [];
  try {
    for (const _ of prompts) seqs.push(decoder.newSequence());
    // history: prompt + settled tokens; its last token is pending (settled, not yet in the cache)
    const hist = prompts.map((p) => [...p]);
    const draft: (number | null)[] = prompts.map(() => null);
    const active = new Set<number>(prompts.keys());
    const settle = (i: number, toks: number[]) => {
      const took: number[] = [];
      for (const tok of toks) {
        if (!active.has(i)) break;
        took.push(tok);
        out[i].push(tok);
        hist[i].push(tok);
        if (stop.has(tok) || out[i].length >= opts.maxTokens) active.delete(i);
      }
      if (hist[i].length > decoder.maxSeqLen) active.delete(i); // the pending token cannot go in
      if (took.length) opts.onTokens?.(i, took);
    };
    const setDraft = (i: number, d: number) => {
      const position = hist[i].length; // the drafted token's position
      draft[i] = opts.draftOverride ? opts.draftOverride(i, position, d) : d;
    };

    const first = await decoder.step(prompts.map((p, i) => ({ seq: seqs[i], tokens: p })));
    stats.steps++;
    prompts.forEach((_, i) => settle(i, [argmax(first[i])]));
    if (spec) {
      // the MTP catches up with the prompt (positions 0..n-1, the last one's next token being
      // the one just settled) and drafts the token after it
      const idx = [...active];
      if (idx.length) {
        const logits = await decoder.mtpStep(
          idx.map((i) => ({ seq: seqs[i], tokens: hist[i].slice(1) })),
        );
        stats.mtpSteps++;
        idx.forEach((i, k) => setDraft(i, argmax(logits[k])));
      }
    }
    while (active.size) {
      const idx = [...active];
      const items = idx.map((i) => {
        const pending = hist[i][hist[i].length - 1];
        const d = draft[i];
        // a draft needs room for two positions and two more tokens to be worth verifying
        const useDraft = d !== null && hist[i].length + 1 <= decoder.maxSeqLen &&
          out[i].length + 1 < opts.maxTokens;
        return { seq: seqs[i], tokens: useDraft ? [pending, d!] : [pending] };
      });
      const res = await decoder.greedyStep(items, { draft: spec });
      stats.steps++;
      idx.forEach((i, k) => {
        if (items[k].tokens.length > 1) {
          stats.drafted++;
          stats.accepted += res[k].accepted;
        }
        settle(i, res[k].tokens);
        if (spec) setDraft(i, res[k].draft);
      });
    }
  } finally {
    for (const s of seqs) decoder.release(s);
  }
  return { tokens: out, stats };
}
