/**
 * The parameter table: every tensor of the model with its HF DeepSeek-V3 name, shape, init,
 * weight-decay flag and trainability, plus a deterministic initializer.
 *
 * Names follow `docs/deepseek-v3.md` exactly (`model.layers.{i}.self_attn.kv_a_proj_with_mqa`,
 * ...). Linear weights are `[out_features, in_features]`. The MTP module k (k = 1..mtp_depth)
 * lives under layer index `n_layers + k - 1`: its own `enorm`, `hnorm`, `eh_proj`,
 * `shared_head.norm` and a full block (attention + MoE) under the same prefix. It shares the
 * embedding and the head with the main model, so `model.layers.{L}.embed_tokens.weight` and
 * `model.layers.{L}.shared_head.head.weight`, which V3's released checkpoint stores as copies,
 * are NOT in this table: an exporter aiming at vLLM/SGLang MTP loaders copies
 * `model.embed_tokens.weight` and `lm_head.weight` under those names.
 *
 * Layouts that a loader must agree on:
 * - `kv_a_proj_with_mqa` rows are `[c_kv (rkv) ; k_pe_raw (dr)]`.
 * - `q_b_proj` / `q_proj` rows are per head `[q_nope (dn) ; q_pe (dr)]`, heads outermost.
 * - `kv_b_proj` rows are per head `[k_nope (dn) ; v (dv)]`, heads outermost.
 * - RoPE dims are interleaved pairs (2i, 2i+1), as the V3 reference code and HF's
 *   `rope_interleave: true`; no permutation is applied.
 * - `eh_proj` input columns are `[hnorm(h) (D) ; enorm(emb) (D)]`, the order of
 *   docs/deepseek-v3.md and the V3 paper's eq. 21. NOTE: vLLM's and SGLang's DeepSeek MTP code
 *   concatenates `[enorm(emb) ; hnorm(h)]`; swap the two column halves when exporting there.
 *
 * @module
 */

import { deriveSizes, type ModelConfig, type ParamPart } from "./config.ts";
import { hashString, Xoshiro128 } from "../random/rng.ts";

/** How a tensor is initialized. */
export type ParamInit = "normal" | "ones" | "zeros";

/** One row of the parameter table. */
export interface ParamSpec {
  /** The HF DeepSeek-V3 tensor name. */
  name: string;
  /** Shape; `[out, in]` for linear weights. */
  shape: readonly number[];
  /** Number of elements. */
  size: number;
  /** `normal` (mean 0, std `cfg.init_std`), `ones` (norm weights), `zeros` (the gate bias). */
  init: ParamInit;
  /** AdamW decoupled weight decay applies: matrices yes; norm weights and biases no. */
  weightDecay: boolean;
  /** Updated by the optimizer. False only for `e_score_correction_bias`, which the
   * aux-loss-free rule updates instead (V3 section 2.1.2). */
  trainable: boolean;
  /** The part `countParameters` puts it in. */
  part: ParamPart;
  /** Block index (0..n_layers+mtp_depth-1), or -1 for embedding, final norm and head. */
  layer: number;
}

/**
 * Lists every parameter tensor in a fixed order: embedding, then each block (main layers, then
 * the MTP modules), then `model.norm`, then `lm_head`.
 *
 * @param cfg A validated config.
 * @returns The table; sizes sum to `countParameters(cfg).total`.
 * @example
 * ```ts
 * parameterTable(PRESETS.tiny)[0]; // { name: "model.embed_tokens.weight", shape: [128, 32], ... }
 * ```
 */
export function parameterTable(cfg: ModelConfig): ParamSpec[] {
  const s = deriveSizes(cfg);
  const D = cfg.dim;
  const out: ParamSpec[] = [];
  const push = (
    name: string,
    shape: number[],
    init: ParamInit,
    part: ParamPart,
    layer: number,
  ) => {
    out.push({
      name,
      shape,
      size: shape.reduce((a, b) => a * b, 1),
      init,
      weightDecay: init === "normal",
      trainable: !name.endsWith("e_score_correction_bias"),
      part,
      layer,
    });
  };
  const linear = (name: string, o: number, i: number, part: ParamPart, layer: number) =>
    push(`${name}.weight`, [o, i], "normal", part, layer);
  const norm = (name: string, n: number, part: ParamPart, layer: number) =>
    push(`${name}.weight`, [n], "ones", part, layer);
  const swiglu = (p: string, inter: number, part: ParamPart, layer: number) => {
    linear(`${p}.gate_proj`, inter, D, part, layer); // W1
    linear(`${p}.up_proj`, inter, D, part, layer); // W3
    linear(`${p}.down_proj`, D, inter, part, layer); // W2
  };

  push("model.embed_tokens.weight", [cfg.vocab_size, D], "normal", "embedding", -1);
  for (let i = 0; i < s.n_total_layers; i++) {
    const p = `model.layers.${i}`;
    const mtp = i >= cfg.n_layers;
    const P = (part: ParamPart): ParamPart => (mtp ? "mtp" : part);
    if (mtp) {
      norm(`${p}.enorm`, D, "mtp", i);
      norm(`${p}.hnorm`, D, "mtp", i);
      linear(`${p}.eh_proj`, D, 2 * D, "mtp", i);
    }
    norm(`${p}.input_layernorm`, D, P("norms"), i);
    const a = `${p}.self_attn`;
    if (cfg.q_lora_rank > 0) {
      linear(`${a}.q_a_proj`, cfg.q_lora_rank, D, P("attention"), i);
      norm(`${a}.q_a_layernorm`, cfg.q_lora_rank, P("norms"), i);
      linear(`${a}.q_b_proj`, s.q_out, cfg.q_lora_rank, P("attention"), i);
    } else {
      linear(`${a}.q_proj`, s.q_out, D, P("attention"), i);
    }
    linear(`${a}.kv_a_proj_with_mqa`, s.kv_a_out, D, P("attention"), i);
    norm(`${a}.kv_a_layernorm`, cfg.kv_lora_rank, P("norms"), i);
    linear(`${a}.kv_b_proj`, s.kv_b_out, cfg.kv_lora_rank, P("attention"), i);
    linear(`${a}.o_proj`, D, s.o_in, P("attention"), i);
    norm(`${p}.post_attention_layernorm`, D, P("norms"), i);
    if (i < cfg.n_dense_layers) {
      swiglu(`${p}.mlp`, cfg.inter_dim, P("dense_ffn"), i);
    } else {
      linear(`${p}.mlp.gate`, cfg.n_routed_experts, D, P("gate"), i);
      push(`${p}.mlp.gate.e_score_correction_bias`, [cfg.n_routed_experts], "zeros", P("gate"), i);
      for (let e = 0; e < cfg.n_routed_experts; e++) {
        swiglu(`${p}.mlp.experts.${e}`, cfg.moe_inter_dim, P("routed_experts"), i);
      }
      if (cfg.n_shared_experts > 0) {
        swiglu(`${p}.mlp.shared_experts`, s.shared_inter_dim, P("shared_experts"), i);
      }
    }
    if (mtp) norm(`${p}.shared_head.norm`, D, "mtp", i);
  }
  norm("model.norm", D, "norms", -1);
  linear("lm_head", cfg.vocab_size, D, "head", -1);
  return out;
}

/**
 * Initializes every parameter deterministically: matrices ~ N(0, init_std^2), norm weights 1,
 * the gate bias 0. Each tensor draws from its own generator seeded by `(seed, hash(name))`, so
 * adding or reordering tensors never changes the others' values.
 *
 * @param cfg A validated config.
 * @param seed Any 32-bit integer.
 * @returns Map from HF name to f32 data (row-major, in table order).
 * @example
 * ```ts
 * const params = initParameters(PRESETS.tiny, 1234);
 * params.get("lm_head.weight")!.length; // 128 * 32
 * ```
 */
export function initParameters(cfg: ModelConfig, seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const spec of parameterTable(cfg)) {
    const data = new Float32Array(spec.size);
    if (spec.init === "ones") data.fill(1);
    else if (spec.init === "normal") {
      new Xoshiro128(seed, hashString(spec.name)).fillNormal(data, { std: cfg.init_std });
    }
    out.set(spec.name, data);
  }
  return out;
}
