/**
 * The one typed model configuration of MiniDeepSeek: every DeepSeek-V3 hyperparameter, four
 * presets, validation, derived sizes, parameter counts and the KV-cache budget.
 *
 * Field names are the snake_case names of the DeepSeek-V3 reference inference code's `ModelArgs`
 * (`dim`, `n_heads`, `q_lora_rank`, ...) so that `docs/deepseek-v3.md`, the reference code and
 * this file read the same; `model/safetensors.ts` maps them to HF `config.json` names.
 *
 * Shape legend used in comments: V vocab, D dim, H heads, dn qk_nope_head_dim,
 * dr qk_rope_head_dim, dv v_head_dim, rq q_lora_rank, rkv kv_lora_rank, I inter_dim,
 * Im moe_inter_dim, E routed experts, S shared experts, K activated experts, G expert groups.
 *
 * Out of scope: optimizer and schedule settings (they belong to `train/`), tokenizer settings.
 *
 * References: DeepSeek-V3 technical report (arXiv 2412.19437), DeepSeek-V2 (arXiv 2405.04434),
 * `docs/deepseek-v3.md`.
 *
 * @module
 */

import { softmaxScale } from "../kernels/rope_freqs.ts";

/** Every DeepSeek-V3 architecture and loss hyperparameter. All sizes are integers. */
export interface ModelConfig {
  /** V. 6400 for the trained presets: the project's byte-level BPE tokenizer size (as minimind). */
  vocab_size: number;
  /** D, the residual stream width. */
  dim: number;
  /** Transformer blocks in the main model (the MTP modules are extra, see `mtp_depth`). */
  n_layers: number;
  /** The first n_dense_layers blocks use a dense SwiGLU FFN (V3: 3 of 61), the rest MoE. */
  n_dense_layers: number;
  /** H, attention heads (MLA has no grouped KV heads: num_key_value_heads = H). */
  n_heads: number;
  /** rq, query latent rank; 0 means no query compression and a plain W_q (V2-Lite does this). */
  q_lora_rank: number;
  /** rkv, the KV latent rank: the only per-head-free part of the KV cache (V3: 512). */
  kv_lora_rank: number;
  /** dn, per-head query/key dims that get no RoPE (V3: 128). */
  qk_nope_head_dim: number;
  /** dr, the decoupled RoPE dims, shared key across heads; even, pairs are rotated (V3: 64). */
  qk_rope_head_dim: number;
  /** dv, per-head value dims (V3: 128). */
  v_head_dim: number;
  /** I, hidden width of the dense SwiGLU blocks (V3: 18432 = 2.57 D). */
  inter_dim: number;
  /** Im, hidden width of each routed expert; fine-grained experts are narrow (V3: 2048 = 0.29 D). */
  moe_inter_dim: number;
  /** E, routed experts per MoE layer (V3: 256). */
  n_routed_experts: number;
  /** S, shared experts, fused into one SwiGLU of width S * Im with no gate (V3: 1). */
  n_shared_experts: number;
  /** K, routed experts per token (V3: 8). */
  n_activated_experts: number;
  /** G, contiguous expert groups for node-limited routing (V3: 8); 1 disables grouping. */
  n_expert_groups: number;
  /** Groups kept per token before the final top-K (V3: 4). */
  n_limited_groups: number;
  /** Gate weights (normalized to sum 1) are multiplied by this (V3: 2.5). */
  route_scale: number;
  /** alpha, weight of the complementary sequence-wise balance loss (V3: 1e-4, kept tiny). */
  balance_alpha: number;
  /** gamma, the aux-loss-free bias update speed, applied after each step (V3: 0.001). */
  bias_update_speed: number;
  /** D_mtp, number of sequential multi-token-prediction modules (V3: 1); 0 disables MTP. */
  mtp_depth: number;
  /** lambda, MTP loss weight: loss (lambda / D_mtp) * sum_k CE_k (V3: 0.3 early, 0.1 late). */
  mtp_lambda: number;
  /** RoPE base (V3: 10000). */
  rope_theta: number;
  /** Context the RoPE frequencies were trained for; YaRN applies when max_seq_len exceeds it. */
  original_seq_len: number;
  /** YaRN scale factor s (V3: 40); unused (1) when YaRN is off. */
  rope_factor: number;
  /** YaRN beta_fast: rotations above which dims keep their frequency (V3: 32). */
  beta_fast: number;
  /** YaRN beta_slow: rotations below which dims are fully interpolated (V3: 1). */
  beta_slow: number;
  /** YaRN attention temperature coefficient: m = 0.1 * mscale * ln(rope_factor) + 1 (V3: 1). */
  mscale: number;
  /** Longest sequence the model serves; > original_seq_len turns YaRN on. */
  max_seq_len: number;
  /** RMSNorm epsilon (V3: 1e-6). */
  norm_eps: number;
  /** Standard deviation of the normal init of every matrix (V3: 0.006). */
  init_std: number;
}

/** Names of the presets. */
export type PresetName = "tiny" | "nano" | "mini" | "small";

/** The parts a parameter belongs to, for counting. */
export type ParamPart =
  | "embedding"
  | "attention"
  | "dense_ffn"
  | "routed_experts"
  | "shared_experts"
  | "gate"
  | "norms"
  | "head"
  | "mtp";

/** The parts in the order `countParameters` reports them. */
export const PARAM_PARTS: readonly ParamPart[] = [
  "embedding",
  "attention",
  "dense_ffn",
  "routed_experts",
  "shared_experts",
  "gate",
  "norms",
  "head",
  "mtp",
];

/** Values every preset shares: the V3 choices that do not depend on scale. */
const V3_COMMON = {
  // V3 routes with a 2.5 scale because 8 sigmoid weights summing to 1 are small; with K = 2
  // experts each weight is ~0.5 already, so 1.0 keeps the expert output near unit scale.
  route_scale: 1.0,
  balance_alpha: 1e-4, // V3 section 2.1.2: "extremely small" so it only prevents extreme imbalance
  bias_update_speed: 1e-3, // V3 section 4.2: gamma = 0.001 for most of training
  mtp_depth: 1, // V3 predicts one extra token
  mtp_lambda: 0.3, // V3: 0.3 for the first 10T tokens (all our training is "early")
  rope_theta: 10000, // V3 / Llama default
  rope_factor: 1, // YaRN off: we pretrain at the full context (V3 also extends only afterwards)
  beta_fast: 32, // V3 values, used only if someone turns YaRN on
  beta_slow: 1,
  mscale: 1,
  norm_eps: 1e-6, // docs/deepseek-v3.md
} as const;

/**
 * The presets. Every field is spelled out so a reader sees the whole model in one place.
 * Counts (total / active per token, including MTP) are printed by `countParameters`.
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<ModelConfig>>> = Object.freeze({
  /**
   * Tests: every feature on, as small as possible (52,656 parameters, 34,224 active): q
   * compression, 1 dense + 1 MoE layer, 2 expert groups with limiting, a shared expert, MTP, and
   * YaRN active (max_seq_len 64 > original 32) so the CPU reference covers the mscale rule too.
   */
  tiny: Object.freeze({
    ...V3_COMMON,
    vocab_size: 128,
    dim: 32,
    n_layers: 2,
    n_dense_layers: 1,
    n_heads: 2,
    q_lora_rank: 16,
    kv_lora_rank: 16,
    qk_nope_head_dim: 8,
    qk_rope_head_dim: 4,
    v_head_dim: 8,
    inter_dim: 64,
    moe_inter_dim: 16,
    n_routed_experts: 8,
    n_shared_experts: 1,
    n_activated_experts: 2,
    n_expert_groups: 2,
    n_limited_groups: 1,
    route_scale: 2.5, // V3's value, so a test would catch a missing multiply
    rope_factor: 2,
    original_seq_len: 32,
    max_seq_len: 64,
    // Larger than V3's 0.006 so a few test steps move the loss visibly.
    init_std: 0.02,
  }),
  /**
   * The CPU demo: 2.34M parameters (2.05M active; 2.05M / 1.91M without MTP), 80% of them in
   * the 6400-row embedding and head; trains in minutes on a software Vulkan adapter.
   */
  nano: Object.freeze({
    ...V3_COMMON,
    vocab_size: 6400,
    dim: 128,
    n_layers: 2,
    n_dense_layers: 1,
    n_heads: 4,
    q_lora_rank: 64,
    kv_lora_rank: 32,
    qk_nope_head_dim: 16,
    qk_rope_head_dim: 16,
    v_head_dim: 16,
    inter_dim: 320,
    moe_inter_dim: 64,
    n_routed_experts: 8,
    n_shared_experts: 1,
    n_activated_experts: 2,
    n_expert_groups: 2,
    n_limited_groups: 1,
    original_seq_len: 256,
    max_seq_len: 256,
    init_std: 0.02, // shallow and narrow: 0.006 would make the first hundred steps wasted
  }),
  /**
   * Like minimind's smallest model: 25.0M active per token without MTP (82.8M total); 93.8M
   * total / 27.8M active with the MTP module. For one consumer GPU.
   */
  mini: Object.freeze({
    ...V3_COMMON,
    vocab_size: 6400,
    dim: 512,
    n_layers: 8,
    n_dense_layers: 1,
    n_heads: 8,
    q_lora_rank: 192,
    kv_lora_rank: 128,
    qk_nope_head_dim: 32,
    qk_rope_head_dim: 32,
    v_head_dim: 32,
    inter_dim: 1408,
    moe_inter_dim: 384,
    n_routed_experts: 16,
    n_shared_experts: 1,
    n_activated_experts: 2,
    n_expert_groups: 4,
    n_limited_groups: 2,
    original_seq_len: 512,
    max_seq_len: 512,
    init_std: 0.02,
  }),
  /** 161.5M total / 76.5M active (148.3M / 70.4M without MTP), for real GPUs. */
  small: Object.freeze({
    ...V3_COMMON,
    vocab_size: 6400,
    dim: 768,
    n_layers: 12,
    n_dense_layers: 1,
    n_heads: 12,
    q_lora_rank: 384,
    kv_lora_rank: 256,
    qk_nope_head_dim: 64,
    qk_rope_head_dim: 32,
    v_head_dim: 64,
    inter_dim: 2048,
    moe_inter_dim: 256,
    n_routed_experts: 16,
    n_shared_experts: 1,
    n_activated_experts: 4,
    n_expert_groups: 4,
    n_limited_groups: 2,
    route_scale: 1.5, // 4 weights of ~0.25: scale up a little, as V3 does for its 8
    original_seq_len: 1024,
    max_seq_len: 1024,
    init_std: 0.01,
  }),
});

/** The field names, in declaration order (used to reject unknown fields). */
export const CONFIG_FIELDS: readonly (keyof ModelConfig)[] = Object.keys(
  PRESETS.tiny,
) as (keyof ModelConfig)[];

const INT_FIELDS = new Set<keyof ModelConfig>([
  "vocab_size",
  "dim",
  "n_layers",
  "n_dense_layers",
  "n_heads",
  "q_lora_rank",
  "kv_lora_rank",
  "qk_nope_head_dim",
  "qk_rope_head_dim",
  "v_head_dim",
  "inter_dim",
  "moe_inter_dim",
  "n_routed_experts",
  "n_shared_experts",
  "n_activated_experts",
  "n_expert_groups",
  "n_limited_groups",
  "mtp_depth",
  "original_seq_len",
  "max_seq_len",
]);

/** Integer fields that may be 0. */
const ZERO_OK = new Set<keyof ModelConfig>([
  "n_dense_layers",
  "q_lora_rank",
  "n_shared_experts",
  "mtp_depth",
]);

/** Float fields that may be 0. */
const FLOAT_ZERO_OK = new Set<keyof ModelConfig>([
  "balance_alpha",
  "bias_update_speed",
  "mtp_lambda",
  "mscale",
]);

/**
 * Upper bounds of the integer fields: far past anything this project can train (V3 itself has
 * dim 7168, 61 layers, 256 experts, vocab 129280), so a value beyond one is a typo, and is
 * refused before anything is sized or allocated from it. Fields not listed: 1 << 20.
 */
const INT_MAX: Partial<Record<keyof ModelConfig, number>> = {
  vocab_size: 1 << 24,
  dim: 1 << 16,
  n_layers: 1024,
  n_dense_layers: 1024,
  n_heads: 1024,
  n_routed_experts: 4096,
  n_shared_experts: 64,
  n_activated_experts: 256,
  n_expert_groups: 4096,
  n_limited_groups: 4096,
  mtp_depth: 16,
};

/** Describes a config value for an error message (JSON.stringify prints Infinity as null). */
function shown(v: unknown): string {
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : `${v}`;
  if (v === undefined) return "nothing (the field is missing)";
  return `${v === null ? "" : `${typeof v} `}${JSON.stringify(v) ?? String(v)}`;
}

function fail(field: string, message: string): never {
  throw new RangeError(`invalid model config field '${field}': ${message}`);
}

/**
 * Checks every field of a config and the constraints between fields.
 *
 * @param cfg The config to check.
 * @throws {RangeError} Naming the first bad field and what value it needs.
 * @example
 * ```ts
 * validateConfig({ ...PRESETS.tiny, n_limited_groups: 3 }); // throws: n_limited_groups
 * ```
 */
export function validateConfig(cfg: ModelConfig): void {
  for (const f of CONFIG_FIELDS) {
    const v = (cfg as unknown as Record<string, unknown>)[f];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      fail(f, `expected a finite number, got ${shown(v)}`);
    }
    if (INT_FIELDS.has(f)) {
      if (!Number.isInteger(v)) fail(f, `expected an integer, got ${v}`);
      const min = ZERO_OK.has(f) ? 0 : 1;
      if (v < min) fail(f, `expected an integer >= ${min}, got ${v}`);
      const max = INT_MAX[f] ?? 1 << 20;
      if (v > max) fail(f, `expected an integer <= ${max}, got ${v}`);
    } else {
      if (FLOAT_ZERO_OK.has(f) ? v < 0 : v <= 0) {
        fail(f, `expected a number ${FLOAT_ZERO_OK.has(f) ? ">= 0" : "> 0"}, got ${v}`);
      }
    }
  }
  for (const f of Object.keys(cfg)) {
    if (!(CONFIG_FIELDS as readonly string[]).includes(f)) {
      fail(f, `unknown field; known fields: ${CONFIG_FIELDS.join(", ")}`);
    }
  }
  if (cfg.n_dense_layers > cfg.n_layers) {
    fail("n_dense_layers", `must be <= n_layers (${cfg.n_layers}), got ${cfg.n_dense_layers}`);
  }
  if (cfg.qk_rope_head_dim % 2 !== 0) {
    fail("qk_rope_head_dim", `RoPE rotates pairs, so it must be even, got ${cfg.qk_rope_head_dim}`);
  }
  if (cfg.n_routed_experts % cfg.n_expert_groups !== 0) {
    fail(
      "n_expert_groups",
      `must divide n_routed_experts (${cfg.n_routed_experts}), got ${cfg.n_expert_groups}`,
    );
  }
  const perGroup = cfg.n_routed_experts / cfg.n_expert_groups;
  if (cfg.n_expert_groups > 1 && perGroup < 2) {
    fail(
      "n_expert_groups",
      `the group score sums the top-2 experts of a group, so groups need >= 2 experts; ` +
        `got ${perGroup} expert(s) per group`,
    );
  }
  if (cfg.n_limited_groups > cfg.n_expert_groups) {
    fail(
      "n_limited_groups",
      `must be <= n_expert_groups (${cfg.n_expert_groups}), got ${cfg.n_limited_groups}`,
    );
  }
  if (cfg.n_activated_experts > cfg.n_limited_groups * perGroup) {
    fail(
      "n_activated_experts",
      `must be <= n_limited_groups * experts per group (${cfg.n_limited_groups * perGroup}), ` +
        `got ${cfg.n_activated_experts}`,
    );
  }
  if (cfg.rope_factor < 1) fail("rope_factor", `must be >= 1, got ${cfg.rope_factor}`);
  if (cfg.beta_fast <= cfg.beta_slow) {
    fail("beta_fast", `must be > beta_slow (${cfg.beta_slow}), got ${cfg.beta_fast}`);
  }
}

/**
 * Builds a config from a preset (or a full config) plus overrides, and validates it.
 *
 * @param preset A preset name or a complete config to start from.
 * @param overrides Fields to replace; unknown names are an error.
 * @returns A new frozen config.
 * @throws {RangeError} Naming the field on an unknown preset/field or an invalid value.
 * @example
 * ```ts
 * const cfg = resolveConfig("tiny", { mtp_depth: 2 });
 * resolveConfig("tiny", { dimm: 3 } as never); // throws: invalid model config field 'dimm'
 * ```
 */
export function resolveConfig(
  preset: PresetName | ModelConfig,
  overrides: Partial<ModelConfig> = {},
): ModelConfig {
  let base: ModelConfig;
  if (typeof preset === "string") {
    if (!Object.hasOwn(PRESETS, preset)) {
      throw new RangeError(
        `unknown model preset '${preset}'; expected one of ${Object.keys(PRESETS).join(", ")}`,
      );
    }
    base = PRESETS[preset];
  } else {
    base = preset;
  }
  for (const k of Object.keys(overrides)) {
    if (!(CONFIG_FIELDS as readonly string[]).includes(k)) {
      fail(k, `unknown field; known fields: ${CONFIG_FIELDS.join(", ")}`);
    }
  }
  const cfg = { ...base, ...overrides } as ModelConfig;
  validateConfig(cfg);
  return Object.freeze(cfg);
}

/** Sizes derived from a config; every other file reads these instead of recomputing them. */
export interface DerivedSizes {
  /** dn + dr: the per-head query/key width that the softmax scale uses. */
  qk_head_dim: number;
  /** H * (dn + dr): output width of q_proj / q_b_proj. */
  q_out: number;
  /** rkv + dr: output width of kv_a_proj_with_mqa, `[c_kv ; k_pe_raw]`. */
  kv_a_out: number;
  /** H * (dn + dv): output width of kv_b_proj, per head `[k_nope ; v]`. */
  kv_b_out: number;
  /** H * dv: input width of o_proj. */
  o_in: number;
  /** E / G. */
  experts_per_group: number;
  /** S * Im: width of the fused shared-expert SwiGLU. */
  shared_inter_dim: number;
  /** n_layers - n_dense_layers. */
  n_moe_layers: number;
  /** n_layers + mtp_depth: layer indices used in parameter names (MTP modules come last). */
  n_total_layers: number;
  /** max_seq_len > original_seq_len. */
  yarn_active: boolean;
  /** The attention softmax scale, mscale rule included (see `softmaxScale`). */
  softmax_scale: number;
}

/**
 * Computes every size derived from the config in one place (llm.c `fill_in_parameter_sizes`).
 *
 * @param cfg A validated config.
 * @returns The derived sizes.
 * @example
 * ```ts
 * deriveSizes(PRESETS.tiny).kv_a_out; // 16 + 4 = 20
 * ```
 */
export function deriveSizes(cfg: ModelConfig): DerivedSizes {
  const H = cfg.n_heads;
  const qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
  const yarn = cfg.max_seq_len > cfg.original_seq_len;
  return {
    qk_head_dim: qk,
    q_out: H * qk,
    kv_a_out: cfg.kv_lora_rank + cfg.qk_rope_head_dim,
    kv_b_out: H * (cfg.qk_nope_head_dim + cfg.v_head_dim),
    o_in: H * cfg.v_head_dim,
    experts_per_group: cfg.n_routed_experts / cfg.n_expert_groups,
    shared_inter_dim: cfg.n_shared_experts * cfg.moe_inter_dim,
    n_moe_layers: cfg.n_layers - cfg.n_dense_layers,
    n_total_layers: cfg.n_layers + cfg.mtp_depth,
    yarn_active: yarn,
    softmax_scale: softmaxScale({
      headDim: qk,
      maxSeqLen: cfg.max_seq_len,
      originalSeqLen: cfg.original_seq_len,
      factor: cfg.rope_factor,
      mscale: cfg.mscale,
    }),
  };
}

/**
 * The options `kernels/rope_freqs.ts` takes, read from a config.
 *
 * @param cfg A validated config.
 * @returns `{ dim, theta, maxSeqLen, originalSeqLen, factor, betaFast, betaSlow }`.
 * @example
 * ```ts
 * const freqs = ropeFrequencies(ropeOptions(cfg)); // Float32Array [dr / 2]
 * ```
 */
export function ropeOptions(cfg: ModelConfig): {
  dim: number;
  theta: number;
  maxSeqLen: number;
  originalSeqLen: number;
  factor: number;
  betaFast: number;
  betaSlow: number;
} {
  return {
    dim: cfg.qk_rope_head_dim,
    theta: cfg.rope_theta,
    maxSeqLen: cfg.max_seq_len,
    originalSeqLen: cfg.original_seq_len,
    factor: cfg.rope_factor,
    betaFast: cfg.beta_fast,
    betaSlow: cfg.beta_slow,
  };
}

/** Total and per-token active parameter counts. */
export interface ParameterCount {
  /** Parameters stored. */
  total: number;
  /** Parameters a token's forward pass uses (only K of E routed experts). */
  active: number;
}

/** The result of `countParameters`. */
export interface ParameterCounts {
  /** Counts per part; `mtp` holds the whole MTP modules (their own block included). */
  parts: Record<ParamPart, ParameterCount>;
  /** Everything, MTP included (what a checkpoint stores). */
  total: number;
  /** Active per token, MTP included (what a training step touches per token). */
  active: number;
  /** Without the MTP modules (what plain inference uses; V3 reports 671B/37B this way). */
  main: ParameterCount;
}

/** Parameter counts of one transformer block, by part (an MTP block uses the same shapes). */
function blockCounts(cfg: ModelConfig, moe: boolean): Record<ParamPart, ParameterCount> {
  const s = deriveSizes(cfg);
  const D = cfg.dim;
  const z = () => ({ total: 0, active: 0 });
  const parts = Object.fromEntries(PARAM_PARTS.map((p) => [p, z()])) as Record<
    ParamPart,
    ParameterCount
  >;
  const add = (p: ParamPart, total: number, active = total) => {
    parts[p].total += total;
    parts[p].active += active;
  };
  // MLA projections, [out, in] each.
  const q = cfg.q_lora_rank > 0 ? D * cfg.q_lora_rank + cfg.q_lora_rank * s.q_out : D * s.q_out;
  add("attention", q + D * s.kv_a_out + cfg.kv_lora_rank * s.kv_b_out + s.o_in * D);
  // input_layernorm, post_attention_layernorm, q_a_layernorm (if rq > 0), kv_a_layernorm.
  add("norms", 2 * D + (cfg.q_lora_rank > 0 ? cfg.q_lora_rank : 0) + cfg.kv_lora_rank);
  if (!moe) {
    add("dense_ffn", 3 * D * cfg.inter_dim);
  } else {
    const expert = 3 * D * cfg.moe_inter_dim;
    add("routed_experts", cfg.n_routed_experts * expert, cfg.n_activated_experts * expert);
    add("shared_experts", 3 * D * s.shared_inter_dim);
    // gate.weight [E, D] and e_score_correction_bias [E]; every token scores every expert.
    add("gate", cfg.n_routed_experts * D + cfg.n_routed_experts);
  }
  return parts;
}

/**
 * Counts parameters per part, total and active per token; matches `parameterTable` exactly.
 *
 * Active = everything a token's forward uses: all non-expert weights (the embedding too, as
 * V3's 37B does), the shared experts and K of the E routed experts of each MoE layer.
 *
 * @param cfg A validated config.
 * @returns Per-part and overall counts.
 * @example
 * ```ts
 * const { total, active, main } = countParameters(PRESETS.mini);
 * ```
 */
export function countParameters(cfg: ModelConfig): ParameterCounts {
  const D = cfg.dim;
  const parts = Object.fromEntries(PARAM_PARTS.map((p) => [p, { total: 0, active: 0 }])) as Record<
    ParamPart,
    ParameterCount
  >;
  const merge = (into: ParamPart | null, from: Record<ParamPart, ParameterCount>) => {
    for (const p of PARAM_PARTS) {
      const dst = parts[into ?? p];
      dst.total += from[p].total;
      dst.active += from[p].active;
    }
  };
  parts.embedding = { total: cfg.vocab_size * D, active: cfg.vocab_size * D };
  parts.head = { total: cfg.vocab_size * D, active: cfg.vocab_size * D };
  parts.norms.total += D; // model.norm
  parts.norms.active += D;
  for (let i = 0; i < cfg.n_layers; i++) merge(null, blockCounts(cfg, i >= cfg.n_dense_layers));
  for (let k = 0; k < cfg.mtp_depth; k++) {
    // enorm, hnorm, eh_proj [D, 2D], shared_head.norm, then a full block (MoE, as its layer
    // index n_layers + k >= n_dense_layers).
    const own = 3 * D + 2 * D * D;
    parts.mtp.total += own;
    parts.mtp.active += own;
    merge("mtp", blockCounts(cfg, true));
  }
  let total = 0, active = 0;
  for (const p of PARAM_PARTS) {
    total += parts[p].total;
    active += parts[p].active;
  }
  return {
    parts,
    total,
    active,
    main: { total: total - parts.mtp.total, active: active - parts.mtp.active },
  };
}

/** Per-token KV-cache size of one attention variant, summed over the main model's layers. */
export interface KvCacheSize {
  /** Numbers cached per token. */
  elements: number;
  /** Bytes per token at f32. */
  f32: number;
  /** Bytes per token at bf16. */
  bf16: number;
}

/**
 * KV-cache bytes per token: MLA caches the normalized latent c (rkv) and the rotated shared
 * k_pe (dr) per layer; standard multi-head attention with the same heads would cache every
 * head's key (dn + dr) and value (dv), i.e. `2 * H * dh` when dn + dr = dv = dh.
 * Counts the n_layers main blocks only: the MTP modules are not used for plain decoding.
 *
 * @param cfg A validated config.
 * @returns `{ mla, mha, ratio }` where ratio = mha.elements / mla.elements.
 * @example
 * ```ts
 * kvCacheBytesPerToken(PRESETS.tiny).mla.f32; // 2 layers * (16 + 4) * 4 bytes = 160
 * ```
 */
export function kvCacheBytesPerToken(
  cfg: ModelConfig,
): { mla: KvCacheSize; mha: KvCacheSize; ratio: number } {
  const L = cfg.n_layers;
  const mla = L * (cfg.kv_lora_rank + cfg.qk_rope_head_dim);
  const mha = L * cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim);
  const size = (e: number): KvCacheSize => ({ elements: e, f32: 4 * e, bf16: 2 * e });
  return { mla: size(mla), mha: size(mha), ratio: mha / mla };
}

/** What a config needs in memory, f32 throughout (activations not counted). */
export interface MemoryNeeds {
  /** Parameters, MTP modules included. */
  params: number;
  /** Bytes to train: weights, gradients and two AdamW moments, 16 per parameter. */
  trainBytes: number;
  /** Bytes to hold the weights alone (inference), 4 per parameter. */
  weightBytes: number;
}

/**
 * The memory a config needs before any activation: what `--model` checks against the machine
 * before allocating.
 *
 * @param cfg A validated config.
 * @returns Parameter count and bytes to train and to serve.
 * @example
 * ```ts
 * memoryNeeds(PRESETS.tiny).trainBytes; // 16 * countParameters(PRESETS.tiny).total
 * ```
 */
export function memoryNeeds(cfg: ModelConfig): MemoryNeeds {
  const params = countParameters(cfg).total;
  return { params, trainBytes: 16 * params, weightBytes: 4 * params };
}
