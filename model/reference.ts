/**
 * A CPU reference of the whole DeepSeek-V3 model, forward and backward, in f64: the spec the
 * WebGPU model is tested against (DESIGN.md, Testing). Slow; meant for the `tiny` preset and
 * batches of a few short sequences.
 *
 * What it computes (docs/deepseek-v3.md is the source of every formula):
 * - Embedding, `n_layers` pre-norm blocks: `x += MLA(RMSNorm(x))`, `x += FFN(RMSNorm(x))`, dense
 *   SwiGLU for the first `n_dense_layers` blocks and DeepSeekMoE after, final RMSNorm, untied head.
 * - MLA with q compression (`q_a_proj`, `q_a_layernorm`, `q_b_proj`) or a plain `q_proj`;
 *   `kv_a_proj_with_mqa` -> `[c_kv (rkv) ; k_pe_raw (dr)]`, RMSNorm on c_kv only, `kv_b_proj` ->
 *   per head `[k_nope ; v]`; interleaved RoPE on q_pe and the one shared k_pe; causal softmax
 *   with `deriveSizes(cfg).softmax_scale` (YaRN mscale rule included); `o_proj`.
 * - MoE: s = sigmoid(W_g u), selection on s + b with group-limited top-k (`routeTokens`),
 *   weights from the unbiased s normalized to 1 times route_scale, shared experts ungated, no
 *   token dropping.
 * - Losses: main = mean cross-entropy over targets >= 0 (target -1 is ignored);
 *   MTP = (lambda / D) * sum_k CE_k; balance = sum over every MoE block (the MTP modules' blocks
 *   included) of the sequence-wise loss averaged over the B sequences (`referenceBalanceLoss`);
 *   total = main + MTP + balance.
 * - MTP module k (layer index n_layers + k - 1), per position i:
 *   `h'_i = eh_proj([hnorm(h^{k-1}_i) ; enorm(Emb(tokens[i + k]))])` (concat order of
 *   docs/deepseek-v3.md: hidden first, embedding second), one full block (MLA + MoE), the
 *   shared head after the module's own `shared_head.norm`; target `targets[i + k]`. Positions
 *   i >= T - k have no token i + k: they embed token 0 and their target is ignored. They still
 *   run through the block (causal attention keeps them from touching earlier positions) and so
 *   count in that block's expert loads and balance loss, exactly as a GPU implementation that
 *   keeps all T positions would.
 *
 * Left out: dropout (V3 has none), KV caching and absorbed decoding (see `model/decode.ts`),
 * FP8 emulation.
 *
 * Shape legend: B batch, T time, N = B*T tokens, D dim, V vocab, H heads, dn nope dims,
 * dr rope dims, dv value dims, rq q rank, rkv kv rank, E routed experts, K activated experts,
 * G expert groups.
 *
 * @module
 */

import { deriveSizes, type ModelConfig, ropeOptions } from "./config.ts";
import { parameterTable } from "./params.ts";
import { CpuTape, type Node } from "./_cpu_autograd.ts";
import { ropeFrequencies, ropeTables } from "../kernels/rope_freqs.ts";

/** Options of `routeTokens`. */
export interface RouteOptions {
  /** `{ N, E }`: tokens and routed experts; scores are [N, E]. */
  shape: { N: number; E: number };
  /** K, experts per token. */
  topK: number;
  /** G, contiguous expert groups (1 = no group limiting). */
  nGroups: number;
  /** Groups kept per token. */
  nLimitedGroups: number;
  /** Multiplies the normalized weights. */
  routeScale: number;
  /** b [E], the aux-loss-free balancing bias (selection only); zeros when omitted. */
  bias?: ArrayLike<number>;
}

/**
 * Indices of the k largest values, largest first; ties go to the lower index, so the result is
 * the same on every platform.
 */
function topKIndices(
  values: ArrayLike<number>,
  k: number,
  allowed?: (i: number) => boolean,
): number[] {
  const idx: number[] = [];
  for (let i = 0; i < values.length; i++) if (!allowed || allowed(i)) idx.push(i);
  idx.sort((a, b) => (values[b] - values[a]) || (a - b));
  return idx.slice(0, k);
}

/**
 * DeepSeek-V3 routing for each token (the CPU twin of the GPU router): biased scores s + b pick
 * the experts, group-limited (group score = sum of the group's top-2 biased scores, keep
 * `nLimitedGroups` groups, then the top K of their experts); the weights are the UNBIASED s at
 * the chosen experts, normalized to sum 1, times routeScale.
 *
 * @param scores Sigmoid scores s [N, E].
 * @param options See `RouteOptions`.
 * @returns `selected` Int32Array [N, K] (descending biased score, ties to the lower index) and
 *   `weights` Float64Array [N, K].
 * @throws {RangeError} If E is not divisible by G, or K exceeds the kept experts.
 * @example
 * ```ts
 * routeTokens(new Float64Array([0.9, 0.1, 0.8, 0.7]), {
 *   shape: { N: 1, E: 4 }, topK: 1, nGroups: 2, nLimitedGroups: 1, routeScale: 1,
 * }); // group 1 (0.8 + 0.7) beats group 0 (0.9 + 0.1): selected [2], weights [1]
 * ```
 */
export function routeTokens(
  scores: ArrayLike<number>,
  options: RouteOptions,
): { selected: Int32Array; weights: Float64Array } {
  const { N, E } = options.shape;
  const K = options.topK, G = options.nGroups;
  if (E % G !== 0) throw new RangeError(`routeTokens: E = ${E} not divisible by nGroups = ${G}`);
  const per = E / G;
  if (K > options.nLimitedGroups * per) {
    throw new RangeError(
      `routeTokens: topK = ${K} exceeds the ${options.nLimitedGroups * per} kept experts`,
    );
  }
  const selected = new Int32Array(N * K); // [N, K]
  const weights = new Float64Array(N * K); // [N, K]
  const biased = new Float64Array(E); // [E]
  const groupScore = new Float64Array(G); // [G]
  for (let n = 0; n < N; n++) {
    for (let e = 0; e < E; e++) {
      biased[e] = scores[n * E + e] + (options.bias ? options.bias[e] : 0);
    }
    let allowed: ((e: number) => boolean) | undefined;
    if (G > 1) {
      for (let g = 0; g < G; g++) {
        const top2 = topKIndices(biased.subarray(g * per, (g + 1) * per), 2);
        groupScore[g] = top2.reduce((acc, i) => acc + biased[g * per + i], 0);
      }
      const keep = new Set(topKIndices(groupScore, options.nLimitedGroups));
      allowed = (e) => keep.has(Math.floor(e / per));
    }
    const chosen = topKIndices(biased, K, allowed);
    let sum = 0;
    for (const e of chosen) sum += scores[n * E + e];
    chosen.forEach((e, k) => {
      selected[n * K + k] = e;
      weights[n * K + k] = (scores[n * E + e] / sum) * options.routeScale;
    });
  }
  return { selected, weights };
}

/** Options of `balanceCoefficients` and `referenceBalanceLoss`. */
export interface ReferenceBalanceOptions {
  /** `{ B, T, E, K }`: sequences, tokens per sequence, routed experts, experts per token. */
  shape: { B: number; T: number; E: number; K: number };
  /** alpha, the loss weight. */
  alpha: number;
}

/**
 * The constant coefficients c[b, t, i] = alpha * f_{b,i} / (T * B) with
 * f_{b,i} = E / (K * T) * count_t(i in TopK(b, t)), so that the batch balance loss is
 * sum_{b,t,i} c[b,t,i] * s'_{b,t,i} (f carries no gradient, V3 eq. 17-20).
 *
 * @param selected Int32Array [B, T, K] of chosen experts.
 * @param options See `ReferenceBalanceOptions`.
 * @returns Float64Array [B, T, E].
 */
export function balanceCoefficients(
  selected: Int32Array,
  options: ReferenceBalanceOptions,
): Float64Array {
  const { B, T, E, K } = options.shape;
  const c = new Float64Array(B * T * E); // [B, T, E]
  const count = new Float64Array(E); // [E]
  for (let b = 0; b < B; b++) {
    count.fill(0);
    for (let i = 0; i < T * K; i++) count[selected[b * T * K + i]]++;
    for (let e = 0; e < E; e++) {
      const f = (E / (K * T)) * count[e];
      const coef = (options.alpha * f) / (T * B);
      for (let t = 0; t < T; t++) c[(b * T + t) * E + e] = coef;
    }
  }
  return c;
}

/**
 * The complementary sequence-wise balance loss (V3 eq. 17-20), averaged over the B sequences:
 * per sequence `alpha * sum_i f_i P_i`, `f_i = E / (K T) * count_t(i in TopK(t))`,
 * `P_i = mean_t s_{i,t} / sum_j s_{j,t}`.
 *
 * @param scores Unbiased sigmoid scores s [B, T, E].
 * @param selected Int32Array [B, T, K] of chosen experts.
 * @param options See `ReferenceBalanceOptions`.
 * @returns The loss.
 * @example
 * ```ts
 * // One sequence, T = 1, E = 2, K = 1, expert 0 chosen, s = [0.6, 0.2]:
 * referenceBalanceLoss(new Float64Array([0.6, 0.2]), new Int32Array([0]),
 *   { shape: { B: 1, T: 1, E: 2, K: 1 }, alpha: 1 }); // f = [2, 0], P = [0.75, 0.25] -> 1.5
 * ```
 */
export function referenceBalanceLoss(
  scores: ArrayLike<number>,
  selected: Int32Array,
  options: ReferenceBalanceOptions,
): number {
  const { B, T, E } = options.shape;
  const c = balanceCoefficients(selected, options);
  let loss = 0;
  for (let n = 0; n < B * T; n++) {
    let sum = 0;
    for (let e = 0; e < E; e++) sum += scores[n * E + e];
    for (let e = 0; e < E; e++) loss += c[n * E + e] * (scores[n * E + e] / sum);
  }
  return loss;
}

/**
 * The auxiliary-loss-free bias update, in place (the CPU twin of the GPU kernel):
 * `b_i += gamma * sign(mean(load) - load_i)`. The sign is taken in exact integer arithmetic as
 * `sign(sum(load) - E * load_i)` so that the GPU (u32 counts) gets the same bits; each sum is
 * rounded to f32 once, as the f32 bias buffer stores it.
 *
 * @param bias Float32Array [E], updated in place.
 * @param loads [E] tokens routed to each expert over the whole batch (integers).
 * @param options `{ gamma }`, the bias update speed.
 * @returns `bias`.
 * @throws {RangeError} If the lengths differ.
 * @example
 * ```ts
 * auxFreeBiasUpdate(new Float32Array(3), [5, 1, 3], { gamma: 0.001 });
 * // mean 3 -> [-0.001, +0.001, 0]
 * ```
 */
export function auxFreeBiasUpdate(
  bias: Float32Array,
  loads: ArrayLike<number>,
  options: { gamma: number },
): Float32Array {
  const E = bias.length;
  if (loads.length !== E) {
    throw new RangeError(`auxFreeBiasUpdate: ${loads.length} loads for ${E} experts`);
  }
  let sum = 0;
  for (let i = 0; i < E; i++) sum += loads[i];
  for (let i = 0; i < E; i++) bias[i] = bias[i] + options.gamma * Math.sign(sum - E * loads[i]);
  return bias;
}

/** Input of `referenceForwardBackward`. */
export interface ReferenceInput {
  /** Every tensor of `parameterTable(cfg)` by HF name (f32 or f64 values, row-major). */
  params: ReadonlyMap<string, ArrayLike<number>>;
  /** Int32Array [B, T] token ids. */
  tokens: Int32Array;
  /** Int32Array [B, T] next-token targets; -1 (any negative) is ignored. */
  targets: Int32Array;
  /** `{ B, T }` with T <= cfg.max_seq_len. */
  shape: { B: number; T: number };
  /** Compute gradients (default true); false runs the forward only. */
  backward?: boolean;
}

/** Routing statistics of one MoE block. */
export interface MoeStats {
  /** Block index (n_layers + k - 1 for MTP module k). */
  layer: number;
  /** Int32Array [E], tokens routed to each expert in the batch. */
  loads: Int32Array;
  /** Int32Array [N, K], chosen experts (descending biased score). */
  selected: Int32Array;
  /** Float64Array [N, K], gate weights of the chosen experts. */
  weights: Float64Array;
  /** This block's balance loss (already in `losses.balance`). */
  balance: number;
}

/** Output of `referenceForwardBackward`. */
export interface ReferenceResult {
  /** Float64Array [B, T, V], main-model logits. */
  logits: Float64Array;
  /** One Float64Array [B, T, V] per MTP module. */
  mtpLogits: Float64Array[];
  /** Every loss term. */
  losses: {
    /** Mean CE of the main model over non-ignored targets. */
    main: number;
    /** (lambda / D) * sum_k CE_k; 0 when mtp_depth = 0. */
    mtp: number;
    /** CE_k of each MTP module (unweighted). */
    mtpPerDepth: number[];
    /** Sum over MoE blocks of the batch-averaged sequence-wise balance loss. */
    balance: number;
    /** main + mtp + balance: the loss the gradients are of. */
    total: number;
  };
  /** d(total)/d(param) for every trainable parameter (empty when backward is false). */
  grads: Map<string, Float64Array>;
  /** Per MoE block, in layer order. */
  moe: MoeStats[];
}

/**
 * Runs the whole model forward (and backward) in f64 on the CPU.
 *
 * @param cfg A validated config (use `tiny`: this is slow).
 * @param input Parameters, tokens [B, T], targets [B, T], shape `{ B, T }`.
 * @returns Logits, every loss term, gradients of the total loss, per-block routing stats.
 * @throws {RangeError} Naming the tensor when a parameter is missing or has the wrong size,
 *   or when tokens/targets do not match the shape.
 * @example
 * ```ts
 * const cfg = resolveConfig("tiny");
 * const params = initParameters(cfg, 1);
 * const B = 2, T = 8;
 * const tokens = new Int32Array(B * T).map((_, i) => i % cfg.vocab_size);
 * const targets = tokens.map((_, i) => (i % T === T - 1 ? -1 : tokens[i + 1]));
 * const r = referenceForwardBackward(cfg, { params, tokens, targets, shape: { B, T } });
 * r.losses.total; // ~ ln(128) for an untrained model
 * ```
 */
export function referenceForwardBackward(cfg: ModelConfig, input: ReferenceInput): ReferenceResult {
  const { B, T } = input.shape;
  const N = B * T;
  const sz = deriveSizes(cfg);
  const H = cfg.n_heads, V = cfg.vocab_size, E = cfg.n_routed_experts;
  const K = cfg.n_activated_experts;
  const dn = cfg.qk_nope_head_dim, dr = cfg.qk_rope_head_dim, dv = cfg.v_head_dim;
  const rkv = cfg.kv_lora_rank, eps = cfg.norm_eps;
  if (input.tokens.length !== N || input.targets.length !== N) {
    throw new RangeError(
      `referenceForwardBackward: tokens (${input.tokens.length}) and targets ` +
        `(${input.targets.length}) must both have B*T = ${N} entries`,
    );
  }
  if (T > cfg.max_seq_len) {
    throw new RangeError(
      `referenceForwardBackward: T = ${T} exceeds max_seq_len = ${cfg.max_seq_len}`,
    );
  }
  for (const id of input.tokens) {
    if (!(id >= 0 && id < V)) {
      throw new RangeError(`referenceForwardBackward: token id ${id} outside [0, ${V})`);
    }
  }
  const tape = new CpuTape(input.backward ?? true);

  // Parameters as f64 leaves; 1-D tensors become [1, n].
  const P = new Map<string, Node>();
  const table = parameterTable(cfg);
  for (const spec of table) {
    const src = input.params.get(spec.name);
    if (src === undefined) {
      throw new RangeError(`referenceForwardBackward: missing parameter '${spec.name}'`);
    }
    if (src.length !== spec.size) {
      throw new RangeError(
        `referenceForwardBackward: parameter '${spec.name}' has ${src.length} values, ` +
          `expected ${spec.size} for shape [${spec.shape.join(", ")}]`,
      );
    }
    const rows = spec.shape.length === 2 ? spec.shape[0] : 1;
    P.set(
      spec.name,
      tape.leaf(
        Float64Array.from(src),
        { rows, cols: spec.size / rows },
        spec.trainable && tape.record,
      ),
    );
  }
  const W = (name: string): Node => P.get(name)!;

  // RoPE tables from the same f32 code the GPU uses. Rows (b, t) have position t; per-head rows
  // (b, t, h) too.
  const tables = ropeTables(ropeFrequencies(ropeOptions(cfg)), T);
  const posTok = new Int32Array(N).map((_, n) => n % T); // [N]
  const posHead = new Int32Array(N * H).map((_, r) => Math.floor(r / H) % T); // [N*H]

  const attention = (l: number, x: Node): Node => {
    const a = `model.layers.${l}.self_attn`;
    let q: Node; // [N, H*(dn+dr)]
    if (cfg.q_lora_rank > 0) {
      const cq = tape.rmsnorm(
        tape.linear(x, W(`${a}.q_a_proj.weight`)),
        W(`${a}.q_a_layernorm.weight`),
        eps,
      ); // [N, rq]
      q = tape.linear(cq, W(`${a}.q_b_proj.weight`));
    } else {
      q = tape.linear(x, W(`${a}.q_proj.weight`));
    }
    const qh = tape.reshape(q, { rows: N * H, cols: dn + dr }); // [N*H, dn+dr]
    const qNope = tape.sliceCols(qh, { start: 0, end: dn }); // [N*H, dn]
    const qPe = tape.rope(tape.sliceCols(qh, { start: dn, end: dn + dr }), posHead, tables); // [N*H, dr]
    const kva = tape.linear(x, W(`${a}.kv_a_proj_with_mqa.weight`)); // [N, rkv+dr] = [c_kv ; k_pe_raw]
    const c = tape.rmsnorm(
      tape.sliceCols(kva, { start: 0, end: rkv }),
      W(`${a}.kv_a_layernorm.weight`),
      eps,
    ); // [N, rkv]
    const kPe = tape.rope(tape.sliceCols(kva, { start: rkv, end: rkv + dr }), posTok, tables); // [N, dr]
    const kv = tape.reshape(tape.linear(c, W(`${a}.kv_b_proj.weight`)), {
      rows: N * H,
      cols: dn + dv,
    }); // [N*H, dn+dv]
    const kNope = tape.sliceCols(kv, { start: 0, end: dn }); // [N*H, dn]
    const v = tape.sliceCols(kv, { start: dn, end: dn + dv }); // [N*H, dv]
    const qFull = tape.concatCols(qNope, qPe); // [N*H, dn+dr]
    const kFull = tape.concatCols(kNope, tape.repeatRows(kPe, H)); // [N*H, dn+dr], k_pe shared by heads
    const o = tape.causalAttention(qFull, kFull, v, {
      shape: { B, T, H },
      scale: sz.softmax_scale,
    }); // [N*H, dv]
    return tape.linear(tape.reshape(o, { rows: N, cols: H * dv }), W(`${a}.o_proj.weight`)); // [N, D]
  };

  const swiglu = (p: string, u: Node): Node => {
    const h = tape.mul(
      tape.silu(tape.linear(u, W(`${p}.gate_proj.weight`))),
      tape.linear(u, W(`${p}.up_proj.weight`)),
    );
    return tape.linear(h, W(`${p}.down_proj.weight`));
  };

  const moeStats: MoeStats[] = [];
  const balanceNodes: Node[] = [];
  const moe = (l: number, u: Node): Node => {
    const p = `model.layers.${l}.mlp`;
    const s = tape.sigmoid(tape.linear(u, W(`${p}.gate.weight`))); // [N, E], no bias in the linear
    const { selected, weights } = routeTokens(s.data, {
      shape: { N, E },
      topK: K,
      nGroups: cfg.n_expert_groups,
      nLimitedGroups: cfg.n_limited_groups,
      routeScale: cfg.route_scale,
      bias: W(`${p}.gate.e_score_correction_bias`).data,
    });
    // Differentiable weights: gather the unbiased s at the chosen experts, normalize.
    const flat = new Int32Array(N * K).map((_, i) => Math.floor(i / K) * E + selected[i]);
    const w = tape.rowNormalize(
      tape.reshape(tape.gatherElems(s, flat), { rows: N, cols: K }),
      cfg.route_scale,
    ); // [N, K]
    let out: Node | null = cfg.n_shared_experts > 0 ? swiglu(`${p}.shared_experts`, u) : null; // [N, D]
    const loads = new Int32Array(E);
    for (let e = 0; e < E; e++) {
      const rows: number[] = [], slots: number[] = [];
      for (let i = 0; i < N * K; i++) {
        if (selected[i] === e) {
          rows.push(Math.floor(i / K));
          slots.push(i);
        }
      }
      loads[e] = rows.length;
      if (rows.length === 0) continue;
      const r = Int32Array.from(rows);
      const y = swiglu(`${p}.experts.${e}`, tape.gatherRows(u, r)); // [n_e, D]
      const ye = tape.mulRows(y, tape.gatherElems(w, Int32Array.from(slots))); // [n_e, D]
      const contrib = tape.scatterRows(ye, r, N); // [N, D]
      out = out === null ? contrib : tape.add(out, contrib);
    }
    let balance = 0;
    if (cfg.balance_alpha > 0) {
      const coef = balanceCoefficients(selected, {
        shape: { B, T, E, K },
        alpha: cfg.balance_alpha,
      });
      const bal = tape.dotConst(tape.rowNormalize(s, 1), coef); // s' = s / sum_j s_j
      balanceNodes.push(bal);
      balance = bal.data[0];
    }
    moeStats.push({ layer: l, loads, selected, weights, balance });
    return out!;
  };

  const block = (l: number, x: Node): Node => {
    const pre = `model.layers.${l}`;
    x = tape.add(x, attention(l, tape.rmsnorm(x, W(`${pre}.input_layernorm.weight`), eps)));
    const u = tape.rmsnorm(x, W(`${pre}.post_attention_layernorm.weight`), eps);
    const f = l < cfg.n_dense_layers ? swiglu(`${pre}.mlp`, u) : moe(l, u);
    return tape.add(x, f);
  };

  // Main model.
  const emb = W("model.embed_tokens.weight"); // [V, D]
  let h = tape.gatherRows(emb, input.tokens); // [N, D]
  for (let l = 0; l < cfg.n_layers; l++) h = block(l, h);
  const head = W("lm_head.weight"); // [V, D]
  const logits = tape.linear(tape.rmsnorm(h, W("model.norm.weight"), eps), head); // [N, V]
  const mainLoss = tape.crossEntropy(logits, input.targets);

  // MTP modules, sequential: module k sees h^{k-1} and the embedding of token i + k.
  const mtpLogits: Float64Array[] = [];
  const mtpCe: Node[] = [];
  let hPrev = h; // h^0: main model's final hidden, before the final norm
  for (let k = 1; k <= cfg.mtp_depth; k++) {
    const L = cfg.n_layers + k - 1;
    const pre = `model.layers.${L}`;
    const tokK = new Int32Array(N); // [N], token i + k (0 past the end)
    const tgtK = new Int32Array(N).fill(-1); // [N], target i + k (ignored past the end)
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + k < T; t++) {
        tokK[b * T + t] = input.tokens[b * T + t + k];
        tgtK[b * T + t] = input.targets[b * T + t + k];
      }
    }
    const hn = tape.rmsnorm(hPrev, W(`${pre}.hnorm.weight`), eps); // [N, D]
    const en = tape.rmsnorm(tape.gatherRows(emb, tokK), W(`${pre}.enorm.weight`), eps); // [N, D]
    const hk = block(L, tape.linear(tape.concatCols(hn, en), W(`${pre}.eh_proj.weight`))); // [N, D]
    const lk = tape.linear(tape.rmsnorm(hk, W(`${pre}.shared_head.norm.weight`), eps), head); // [N, V]
    mtpLogits.push(lk.data);
    mtpCe.push(tape.crossEntropy(lk, tgtK));
    hPrev = hk;
  }

  let total = mainLoss;
  let mtpLoss = 0;
  if (mtpCe.length > 0) {
    let sum = mtpCe[0];
    for (let k = 1; k < mtpCe.length; k++) sum = tape.add(sum, mtpCe[k]);
    const m = tape.scale(sum, cfg.mtp_lambda / cfg.mtp_depth);
    mtpLoss = m.data[0];
    total = tape.add(total, m);
  }
  let balance = 0;
  for (const b of balanceNodes) {
    balance += b.data[0];
    total = tape.add(total, b);
  }

  const grads = new Map<string, Float64Array>();
  if (tape.record) {
    tape.backward(total);
    for (const spec of table) {
      if (!spec.trainable) continue;
      grads.set(spec.name, P.get(spec.name)!.grad ?? new Float64Array(spec.size));
    }
  }
  return {
    logits: logits.data,
    mtpLogits,
    losses: {
      main: mainLoss.data[0],
      mtp: mtpLoss,
      mtpPerDepth: mtpCe.map((c) => c.data[0]),
      balance,
      total: total.data[0],
    },
    grads,
    moe: moeStats,
  };
}
