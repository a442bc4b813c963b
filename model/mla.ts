/**
 * Multi-head latent attention (DeepSeek-V2 section 2.1, V3 section 2.1.1) on the GPU, for
 * training and full-sequence forwards. Incremental decoding with the latent cache is in
 * `decode.ts`.
 *
 * Legend: B batch, T time, N = B*T tokens, D dim, H heads, dn qk_nope_head_dim,
 * dr qk_rope_head_dim, dv v_head_dim, rq q_lora_rank, rkv kv_lora_rank.
 *
 *     c_q  = RMSNorm_q(W_qa x)                  [N, rq]      (or q = W_q x when rq = 0)
 *     q    = W_qb c_q                           [B, T, H, dn + dr], RoPE on the last dr
 *     kva  = W_kva x                            [N, rkv + dr] = [c_kv ; k_pe_raw]
 *     c    = RMSNorm_kv(c_kv)                   [N, rkv]
 *     k_pe = RoPE(k_pe_raw)                     [B, T, 1, dr]  one key shared by all heads
 *     kvb  = W_kvb c                            [B, T, H, dn + dv] = per head [k_nope ; v]
 *     k    = per head [k_nope_h ; k_pe]         [B, T, H, dn + dr]
 *     o    = softmax(q k^T * scale, causal) v   [B, T, H, dv]
 *     out  = W_o o                              [N, D]
 *
 * @module
 */
import { attention } from "../kernels/attention.ts";
import { concatBroadcastHeads, sliceLastDim } from "../kernels/copy.ts";
import { reshape } from "../kernels/elementwise.ts";
import { linearF32, type LinearFn } from "./precision.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { rope } from "../kernels/rope.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { ModelConfig } from "./config.ts";

/** What an attention call needs besides its input. */
export interface MlaContext {
  /** The model's config. */
  cfg: ModelConfig;
  /** Looks a parameter up by its HF name. */
  param: (name: string) => Tensor;
  /** RoPE tables [max_seq_len, dr/2]. */
  rope: { cos: Tensor; sin: Tensor };
  /** The softmax scale (with the YaRN mscale when active). */
  scale: number;
  /** Segment ids i32 [B, T] keeping packed documents apart, or null. */
  seg: Tensor | null;
  /** Batch and time of the input. */
  shape: { B: number; T: number };
  /** The projections' linear op, `linearFor(precision)` (model/precision.ts); f32 if absent. */
  linear?: LinearFn;
}

/**
 * One MLA layer: `x` [N, D] -> [N, D] for the block whose parameters start with `prefix`
 * (e.g. `model.layers.0.self_attn`).
 */
export function mlaForward(ctx: MlaContext, prefix: string, x: Tensor): Tensor {
  const { cfg, param, shape: { B, T } } = ctx;
  const H = cfg.n_heads, dn = cfg.qk_nope_head_dim, dr = cfg.qk_rope_head_dim;
  const dv = cfg.v_head_dim, rkv = cfg.kv_lora_rank, eps = cfg.norm_eps;
  const p = (n: string) => param(`${prefix}.${n}.weight`);
  const linear = ctx.linear ?? linearF32;

  // Queries: low-rank with a norm on the latent, or a plain projection.
  const qFlat = cfg.q_lora_rank > 0
    ? linear(rmsnorm(linear(x, p("q_a_proj")), p("q_a_layernorm"), { eps }), p("q_b_proj"))
    : linear(x, p("q_proj")); // [N, H*(dn+dr)]
  const q = rope(reshape(qFlat, [B, T, H, dn + dr]), ctx.rope, { offset: dn });

  // Keys/values from one down-projection: the latent (normed) and the shared rope key.
  const kva = linear(x, p("kv_a_proj_with_mqa")); // [N, rkv + dr]
  const c = rmsnorm(sliceLastDim(kva, 0, rkv), p("kv_a_layernorm"), { eps }); // [N, rkv]
  const kPe = rope(reshape(sliceLastDim(kva, rkv, dr), [B, T, 1, dr]), ctx.rope); // [B,T,1,dr]
  const kvb = reshape(linear(c, p("kv_b_proj")), [B, T, H, dn + dv]);
  const k = concatBroadcastHeads(sliceLastDim(kvb, 0, dn), kPe); // [B, T, H, dn + dr]
  const v = sliceLastDim(kvb, dn, dv); // [B, T, H, dv]

  const o = attention(q, k, v, { scale: ctx.scale, seg: ctx.seg }); // [B, T, H, dv]
  return linear(reshape(o, [B * T, H * dv]), p("o_proj"));
}
