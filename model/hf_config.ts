/**
 * MiniDeepSeek config <-> Hugging Face DeepSeek-V3 `config.json` (`model_type: "deepseek_v3"`),
 * the `generation_config.json` of an exported model, and the one JSON writer both go through.
 * No file I/O here: `train/` writes the text.
 *
 * Why a writer of its own: JavaScript has one number type, so `JSON.stringify` writes 1.0 as `1`,
 * and transformers' strict config classes refuse an int where they declare a float
 * (`routed_scaling_factor: float`). {@linkcode formatHfJson} writes every field in
 * {@linkcode HF_FLOAT_FIELDS} with a decimal point.
 *
 * Token ids: the MiniDeepSeek tokenizer reserves ids 0 (`<|bos|>`), 1 (`<|eos|>`), 2 (`<|pad|>`)
 * and 4 (`<|im_end|>`) whatever its size (`tokenizer/special_tokens.ts`), so a config without
 * explicit ids gets those ({@linkcode MINIDEEPSEEK_TOKEN_IDS}).
 *
 * @example
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * import { formatHfJson, fromHfConfig, toHfConfig } from "./hf_config.ts";
 * const text = formatHfJson(toHfConfig(resolveConfig("nano")));
 * text.includes('"routed_scaling_factor": 1.0'); // true
 * fromHfConfig(JSON.parse(text)).dim; // 128
 * ```
 *
 * @module
 */

import { type ModelConfig, PRESETS, resolveConfig } from "./config.ts";

/** The special-token ids a config.json and generation_config.json name. */
export interface HfTokenIds {
  /** Start of a document or conversation (`bos_token_id`). */
  bos: number;
  /** End of a document (`eos_token_id` of config.json). */
  eos: number;
  /** Padding (`pad_token_id`). */
  pad: number;
  /** Ids generation stops at (`generation_config.json`'s `eos_token_id`), in order. */
  stop: number[];
}

/**
 * The MiniDeepSeek tokenizer's fixed ids: `<|bos|>` 0, `<|eos|>` 1, `<|pad|>` 2; generation stops
 * at `<|im_end|>` (4, the end of an assistant turn) or `<|eos|>`.
 */
export const MINIDEEPSEEK_TOKEN_IDS: Readonly<HfTokenIds> = Object.freeze({
  bos: 0,
  eos: 1,
  pad: 2,
  stop: Object.freeze([4, 1]) as number[],
});

/** Prefix of the config.json keys that only MiniDeepSeek reads. */
export const HF_EXTRA_PREFIX = "minideepseek_";

/**
 * Keys (at any depth) that {@linkcode formatHfJson} writes as floats: the float-typed fields of
 * transformers' `DeepseekV3Config`, its `rope_parameters` / `rope_scaling`, `GenerationConfig`,
 * and our own extras.
 */
export const HF_FLOAT_FIELDS: ReadonlySet<string> = new Set([
  "routed_scaling_factor",
  "initializer_range",
  "rms_norm_eps",
  "rope_theta",
  "attention_dropout",
  "aux_loss_alpha",
  "factor",
  "attention_factor",
  "beta_fast",
  "beta_slow",
  "mscale",
  "mscale_all_dim",
  "temperature",
  "top_p",
  "repetition_penalty",
  `${HF_EXTRA_PREFIX}bias_update_speed`,
  `${HF_EXTRA_PREFIX}mtp_lambda`,
]);

/**
 * JSON text for a Hugging Face config file: `JSON.stringify(value, null, 2)` plus a newline,
 * except that finite integral numbers under a key of `floatFields` keep a decimal point (`1.0`).
 *
 * @param value A JSON-serializable object.
 * @param options `floatFields` (default {@linkcode HF_FLOAT_FIELDS}).
 * @returns The file's text.
 * @example
 * ```ts
 * formatHfJson({ routed_scaling_factor: 1, n_group: 1 });
 * // '{\n  "routed_scaling_factor": 1.0,\n  "n_group": 1\n}\n'
 * ```
 */
export function formatHfJson(
  value: unknown,
  options: { floatFields?: ReadonlySet<string> } = {},
): string {
  const floats = options.floatFields ?? HF_FLOAT_FIELDS;
  // A float that JSON would print without a point becomes a marked string, unmarked below.
  const mark = "\u0000float:";
  const text = JSON.stringify(value, (key, v) => {
    if (floats.has(key) && typeof v === "number" && Number.isInteger(v)) {
      const s = JSON.stringify(v);
      return `${mark}${s.includes("e") ? s : `${s}.0`}`;
    }
    return v;
  }, 2);
  return text.replace(/"\\u0000float:([^"]+)"/g, "$1") + "\n";
}

/** Options of {@linkcode toHfConfig}. */
export interface ToHfConfigOptions {
  /** Special-token ids (default {@linkcode MINIDEEPSEEK_TOKEN_IDS}). */
  tokenIds?: HfTokenIds;
  /** The stored tensors' dtype, as torch names it (default `"float32"`). */
  dtype?: "float32" | "bfloat16" | "float16";
}

/**
 * MiniDeepSeek config -> HF DeepSeek-V3 `config.json` object. Training-only fields HF lacks go
 * under `minideepseek_` keys (bias update speed, MTP lambda); the balance loss weight goes to
 * HF's own `aux_loss_alpha` with `seq_aux: true` (the sequence-wise variant). `rope_scaling`
 * holds the YaRN fields when YaRN is active and is null otherwise. Write it with
 * {@linkcode formatHfJson}, which keeps the float fields floats.
 *
 * @param cfg A validated config.
 * @param options Token ids and dtype.
 * @returns A JSON-serializable object.
 * @example
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * toHfConfig(resolveConfig("nano")).eos_token_id; // 1
 * ```
 */
export function toHfConfig(
  cfg: ModelConfig,
  options: ToHfConfigOptions = {},
): Record<string, unknown> {
  const yarn = cfg.max_seq_len > cfg.original_seq_len;
  const ids = options.tokenIds ?? MINIDEEPSEEK_TOKEN_IDS;
  return {
    architectures: ["DeepseekV3ForCausalLM"],
    model_type: "deepseek_v3",
    vocab_size: cfg.vocab_size,
    hidden_size: cfg.dim,
    intermediate_size: cfg.inter_dim,
    moe_intermediate_size: cfg.moe_inter_dim,
    num_hidden_layers: cfg.n_layers,
    first_k_dense_replace: cfg.n_dense_layers,
    moe_layer_freq: 1,
    num_attention_heads: cfg.n_heads,
    num_key_value_heads: cfg.n_heads,
    n_routed_experts: cfg.n_routed_experts,
    n_shared_experts: cfg.n_shared_experts,
    num_experts_per_tok: cfg.n_activated_experts,
    n_group: cfg.n_expert_groups,
    topk_group: cfg.n_limited_groups,
    routed_scaling_factor: cfg.route_scale,
    norm_topk_prob: true,
    scoring_func: "sigmoid",
    topk_method: "noaux_tc",
    num_nextn_predict_layers: cfg.mtp_depth,
    q_lora_rank: cfg.q_lora_rank === 0 ? null : cfg.q_lora_rank,
    kv_lora_rank: cfg.kv_lora_rank,
    qk_nope_head_dim: cfg.qk_nope_head_dim,
    qk_rope_head_dim: cfg.qk_rope_head_dim,
    v_head_dim: cfg.v_head_dim,
    hidden_act: "silu",
    max_position_embeddings: cfg.max_seq_len,
    rope_theta: cfg.rope_theta,
    rope_scaling: yarn
      ? {
        type: "yarn",
        rope_type: "yarn",
        factor: cfg.rope_factor,
        original_max_position_embeddings: cfg.original_seq_len,
        beta_fast: cfg.beta_fast,
        beta_slow: cfg.beta_slow,
        // HF scales the softmax by yarn_get_mscale(factor, mscale_all_dim)^2 and cos/sin by
        // get_mscale(mscale) / get_mscale(mscale_all_dim); equal values give exactly our rule.
        mscale: cfg.mscale,
        mscale_all_dim: cfg.mscale,
      }
      : null,
    rope_interleave: true,
    rms_norm_eps: cfg.norm_eps,
    initializer_range: cfg.init_std,
    attention_bias: false,
    attention_dropout: 0.0,
    tie_word_embeddings: false,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    torch_dtype: options.dtype ?? "float32",
    use_cache: true,
    aux_loss_alpha: cfg.balance_alpha,
    seq_aux: true,
    [`${HF_EXTRA_PREFIX}bias_update_speed`]: cfg.bias_update_speed,
    [`${HF_EXTRA_PREFIX}mtp_lambda`]: cfg.mtp_lambda,
  };
}

/**
 * The `generation_config.json` object of an exported chat model: greedy by default, stops at
 * each id of `tokenIds.stop` (`<|im_end|>` then `<|eos|>`), and allows the model's whole context.
 *
 * @param cfg The model's config (for `max_length`).
 * @param options `tokenIds` (default {@linkcode MINIDEEPSEEK_TOKEN_IDS}).
 * @returns A JSON-serializable object.
 * @example
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * toGenerationConfig(resolveConfig("nano")).eos_token_id; // [4, 1]
 * ```
 */
export function toGenerationConfig(
  cfg: ModelConfig,
  options: { tokenIds?: HfTokenIds } = {},
): Record<string, unknown> {
  const ids = options.tokenIds ?? MINIDEEPSEEK_TOKEN_IDS;
  return {
    bos_token_id: ids.bos,
    eos_token_id: [...ids.stop],
    pad_token_id: ids.pad,
    do_sample: false,
    max_length: cfg.max_seq_len,
  };
}

/** A config value for a message: JSON, but `missing` for undefined and `Infinity` as such. */
function shownValue(v: unknown): string {
  if (v === undefined) return "nothing (the field is missing)";
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return JSON.stringify(v) ?? String(v);
}

/**
 * HF DeepSeek-V3 `config.json` object -> validated MiniDeepSeek config. Fields HF lacks fall
 * back to the preset defaults (V3's values); with `rope_scaling` null the YaRN fields take their
 * "off" values (original_seq_len = max_position_embeddings, factor 1, betas 32/1, mscale 1).
 *
 * @param json The parsed config.json.
 * @returns A frozen config.
 * @throws {RangeError} Naming the config.json field that is missing, has the wrong type, or
 *   asks for something MiniDeepSeek does not implement (softmax scoring, tied embeddings, ...).
 * @example
 * ```ts
 * const cfg = fromHfConfig(JSON.parse(text));
 * ```
 */
export function fromHfConfig(json: unknown): ModelConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new RangeError("hf config.json: expected a JSON object");
  }
  const j = json as Record<string, unknown>;
  const bad = (field: string, msg: string): never => {
    throw new RangeError(`hf config.json field '${field}': ${msg}`);
  };
  const num = (field: string, fallback?: number): number => {
    const v = j[field];
    if (v === undefined || v === null) {
      if (fallback === undefined) bad(field, "missing");
      return fallback!;
    }
    if (typeof v !== "number" || !Number.isFinite(v)) {
      bad(field, `expected a number, got ${shownValue(v)}`);
    }
    return v as number;
  };
  const expect = (field: string, ok: (v: unknown) => boolean, want: string) => {
    if (j[field] !== undefined && !ok(j[field])) {
      bad(field, `MiniDeepSeek implements only ${want}, got ${shownValue(j[field])}`);
    }
  };
  if (j.model_type !== "deepseek_v3") {
    bad("model_type", `expected "deepseek_v3", got ${shownValue(j.model_type)}`);
  }
  expect("scoring_func", (v) => v === "sigmoid", '"sigmoid"');
  expect("topk_method", (v) => v === "noaux_tc", '"noaux_tc"');
  expect("norm_topk_prob", (v) => v === true, "true");
  expect("tie_word_embeddings", (v) => v === false, "false");
  expect("moe_layer_freq", (v) => v === 1, "1");
  expect("rope_interleave", (v) => v === true, "true (interleaved RoPE weights)");
  expect(
    "num_key_value_heads",
    (v) => v === j.num_attention_heads,
    "num_key_value_heads = num_attention_heads",
  );
  const d = PRESETS.tiny; // only for training-only fields HF lacks; they are V3's values
  const maxPos = num("max_position_embeddings");
  let rope = { original_seq_len: maxPos, rope_factor: 1, beta_fast: 32, beta_slow: 1, mscale: 1 };
  // transformers >= 5 writes `rope_parameters` (theta included, rope_type "default" without
  // scaling); older files and the V3 release write `rope_theta` and `rope_scaling`.
  const rp = j.rope_parameters;
  let ropeKey = "rope_scaling";
  let rs = j.rope_scaling;
  let theta = num("rope_theta", 10000);
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== "object" || Array.isArray(rp)) bad("rope_parameters", "expected an object");
    const r = rp as Record<string, unknown>;
    if (r.rope_theta !== undefined) {
      if (typeof r.rope_theta !== "number" || !Number.isFinite(r.rope_theta)) {
        bad("rope_parameters.rope_theta", `expected a number, got ${JSON.stringify(r.rope_theta)}`);
      }
      theta = r.rope_theta as number;
    }
    const type = r.rope_type ?? r.type ?? "default";
    if (type !== "default") [ropeKey, rs] = ["rope_parameters", rp];
  }
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== "object" || Array.isArray(rs)) {
      bad(ropeKey, "expected an object or null");
    }
    const r = rs as Record<string, unknown>;
    const type = r.type ?? r.rope_type;
    if (type !== "yarn") {
      bad(`${ropeKey}.type`, `MiniDeepSeek implements only "yarn", got ${shownValue(type)}`);
    }
    const rn = (k: string, fallback?: number): number => {
      const v = r[k] ?? fallback;
      if (typeof v !== "number" || !Number.isFinite(v)) {
        bad(`${ropeKey}.${k}`, `expected a number, got ${shownValue(v)}`);
      }
      return v as number;
    };
    const mscale = rn("mscale_all_dim", rn("mscale", 1));
    if (rn("mscale", mscale) !== mscale) {
      bad(
        `${ropeKey}.mscale`,
        `must equal mscale_all_dim (${mscale}): cos/sin scaling is not implemented`,
      );
    }
    rope = {
      original_seq_len: rn("original_max_position_embeddings"),
      rope_factor: rn("factor"),
      beta_fast: rn("beta_fast", 32),
      beta_slow: rn("beta_slow", 1),
      mscale,
    };
    if (rope.rope_factor !== 1 && maxPos <= rope.original_seq_len) {
      bad(
        `${ropeKey}.original_max_position_embeddings`,
        `must be < max_position_embeddings (${maxPos}): MiniDeepSeek applies YaRN only beyond the original context`,
      );
    }
  }
  const qr = j.q_lora_rank;
  const cfg: ModelConfig = {
    vocab_size: num("vocab_size"),
    dim: num("hidden_size"),
    n_layers: num("num_hidden_layers"),
    n_dense_layers: num("first_k_dense_replace", 0),
    n_heads: num("num_attention_heads"),
    q_lora_rank: qr === null || qr === undefined ? 0 : num("q_lora_rank"),
    kv_lora_rank: num("kv_lora_rank"),
    qk_nope_head_dim: num("qk_nope_head_dim"),
    qk_rope_head_dim: num("qk_rope_head_dim"),
    v_head_dim: num("v_head_dim"),
    inter_dim: num("intermediate_size"),
    moe_inter_dim: num("moe_intermediate_size"),
    n_routed_experts: num("n_routed_experts"),
    n_shared_experts: num("n_shared_experts", 0),
    n_activated_experts: num("num_experts_per_tok"),
    n_expert_groups: num("n_group", 1),
    n_limited_groups: num("topk_group", 1),
    route_scale: num("routed_scaling_factor", 1),
    balance_alpha: num("aux_loss_alpha", d.balance_alpha),
    bias_update_speed: num(`${HF_EXTRA_PREFIX}bias_update_speed`, d.bias_update_speed),
    mtp_depth: num("num_nextn_predict_layers", 0),
    mtp_lambda: num(`${HF_EXTRA_PREFIX}mtp_lambda`, d.mtp_lambda),
    rope_theta: theta,
    ...rope,
    max_seq_len: maxPos,
    norm_eps: num("rms_norm_eps", 1e-6),
    init_std: num("initializer_range", 0.006),
  };
  try {
    return resolveConfig(cfg);
  } catch (e) {
    // Name the config.json key too: the user edits that file, not our field names.
    const msg = (e as Error).message.replace(/field '(\w+)'/, (m, f: string) => {
      const hf = HF_FIELD_NAMES[f as keyof ModelConfig];
      return hf === undefined ? m : `${m} (config.json '${hf}')`;
    });
    throw new RangeError(`hf config.json: ${msg}`);
  }
}

/** Our field -> the config.json key it is read from. */
const HF_FIELD_NAMES: Partial<Record<keyof ModelConfig, string>> = {
  vocab_size: "vocab_size",
  dim: "hidden_size",
  n_layers: "num_hidden_layers",
  n_dense_layers: "first_k_dense_replace",
  n_heads: "num_attention_heads",
  q_lora_rank: "q_lora_rank",
  kv_lora_rank: "kv_lora_rank",
  qk_nope_head_dim: "qk_nope_head_dim",
  qk_rope_head_dim: "qk_rope_head_dim",
  v_head_dim: "v_head_dim",
  inter_dim: "intermediate_size",
  moe_inter_dim: "moe_intermediate_size",
  n_routed_experts: "n_routed_experts",
  n_shared_experts: "n_shared_experts",
  n_activated_experts: "num_experts_per_tok",
  n_expert_groups: "n_group",
  n_limited_groups: "topk_group",
  route_scale: "routed_scaling_factor",
  balance_alpha: "aux_loss_alpha",
  bias_update_speed: `${HF_EXTRA_PREFIX}bias_update_speed`,
  mtp_depth: "num_nextn_predict_layers",
  mtp_lambda: `${HF_EXTRA_PREFIX}mtp_lambda`,
  rope_theta: "rope_theta",
  original_seq_len: "rope_scaling.original_max_position_embeddings",
  rope_factor: "rope_scaling.factor",
  beta_fast: "rope_scaling.beta_fast",
  beta_slow: "rope_scaling.beta_slow",
  mscale: "rope_scaling.mscale_all_dim",
  max_seq_len: "max_position_embeddings",
  norm_eps: "rms_norm_eps",
  init_std: "initializer_range",
};
