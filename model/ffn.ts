/**
 * The feed-forward blocks: the dense SwiGLU of the first `n_dense_layers` blocks and
 * DeepSeekMoE (V3 section 2.1.2) after them, on the GPU.
 *
 * Legend: N tokens (B*T), D dim, I inter_dim, Im moe_inter_dim, E routed experts, K experts per
 * token, S shared experts.
 *
 *     dense:  W2 (silu(W1 u) * W3 u)                                  (gate_proj, up_proj, down_proj)
 *     MoE:    s = sigmoid(W_g u)                                      [N, E]
 *             TopK by s + b, group-limited; g = s at TopK normalized, * route_scale
 *             y = sum_{i in TopK} g_i E_i(u) + Shared(u)
 *
 * Routed experts run token-dispatched: tokens are gathered expert by expert, every expert's
 * GEMM of a layer runs in one grouped dispatch whose size follows the N*K routed rows, and the
 * results are scattered back weighted. Compute follows K, not E.
 *
 * @module
 */
import type { ParamArena } from "../kernels/arena.ts";
import { sigmoid, swiglu } from "../kernels/elementwise.ts";
import { linear } from "../kernels/matmul.ts";
import { gatherRows, scatterWeighted } from "../kernels/moe_dispatch.ts";
import { groupedLinear, groupedTiles } from "../kernels/moe_gemm.ts";
import { balanceLoss } from "../kernels/moe_balance.ts";
import { dispatchPlan } from "../kernels/moe_plan.ts";
import { moeRoute } from "../kernels/moe_route.ts";
import { add } from "../kernels/elementwise.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { ModelConfig } from "./config.ts";
import { linearF32, type LinearFn } from "./precision.ts";

/** A SwiGLU MLP under `prefix` (`...mlp` or `...mlp.shared_experts`): u [N, D] -> [N, D]. */
export function swigluMlp(
  param: (name: string) => Tensor,
  prefix: string,
  u: Tensor,
  lin: LinearFn = linearF32,
): Tensor {
  const w = (n: string) => param(`${prefix}.${n}.weight`);
  return lin(swiglu(lin(u, w("gate_proj")), lin(u, w("up_proj"))), w("down_proj"));
}

/** What a MoE layer reports besides its output. */
export interface MoeOutput {
  /** [N, D] */
  y: Tensor;
  /** The sequence-wise balance loss of this layer, [1] (alpha already applied). */
  balance: Tensor;
  /** Tokens routed to each expert, i32 [E]: the aux-loss-free bias update reads it. */
  loads: Tensor;
}

/**
 * The expert weights named `proj` of the MoE layer under `prefix`, as expert 0's tensor plus
 * the element stride to the next expert, which the grouped GEMM needs.
 * @throws when the experts are not evenly spaced in one arena chunk.
 */
export function expertWeights(
  arena: ParamArena,
  prefix: string,
  proj: string,
  E: number,
): { w: Tensor; strideElems: number } {
  const name = (e: number) => `${prefix}.experts.${e}.${proj}.weight`;
  const first = arena.entry(name(0));
  const stride = E > 1 ? arena.entry(name(1)).offset - first.offset : first.size * 4;
  for (let e = 1; e < E; e++) {
    const x = arena.entry(name(e));
    if (x.chunk !== first.chunk || x.offset !== first.offset + e * stride) {
      throw new Error(
        `MoE ${prefix}: expert weights ${proj} are not evenly spaced in one arena chunk ` +
          `(expert ${e}); the grouped GEMM needs them so`,
      );
    }
  }
  return { w: arena.param(name(0)), strideElems: stride / 4 };
}

/**
 * One DeepSeekMoE layer under `prefix` (`model.layers.{i}.mlp`): u [N, D] -> [N, D].
 * @param shape B sequences (for the sequence-wise balance loss).
 */
export function moeForward(
  arena: ParamArena,
  cfg: ModelConfig,
  prefix: string,
  u: Tensor,
  shape: { B: number; linear?: LinearFn },
): MoeOutput {
  const E = cfg.n_routed_experts, K = cfg.n_activated_experts;
  const s = sigmoid(linear(u, arena.param(`${prefix}.gate.weight`))); // [N, E]
  const bias = arena.param(`${prefix}.gate.e_score_correction_bias`); // [E], no gradient
  const { indices, weights } = moeRoute(s, bias, {
    K,
    groups: cfg.n_expert_groups,
    topkGroups: cfg.n_limited_groups,
    routeScale: cfg.route_scale,
  });
  const plan = dispatchPlan(indices, { E });
  const xs = gatherRows(u, plan.perm, { inv: plan.inv }); // [N*K, D]
  const tiles = groupedTiles(plan.offsets, xs.shape[0]);
  const grouped = (x: Tensor, proj: string) => {
    const { w, strideElems } = expertWeights(arena, prefix, proj, E);
    return groupedLinear(x, w, { E, strideElems, offsets: plan.offsets, tiles });
  };
  const h = swiglu(grouped(xs, "gate_proj"), grouped(xs, "up_proj")); // [N*K, Im]
  const ys = grouped(h, "down_proj"); // [N*K, D]
  let y = scatterWeighted(ys, plan.perm, { weights, inv: plan.inv }); // [N, D]
  if (cfg.n_shared_experts > 0) {
    y = add(y, swigluMlp((n) => arena.param(n), `${prefix}.shared_experts`, u, shape.linear));
  }
  const balance = balanceLoss(s, indices, { B: shape.B, alpha: cfg.balance_alpha });
  return { y, balance, loads: plan.counts };
}
