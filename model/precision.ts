/**
 * The `--precision` switch: which GEMM the model's projection layers use.
 *
 *     f32  linear (kernels/matmul.ts), the reference
 *     f16  linearF16: GEMM inputs rounded to f16, f32 accumulation (needs `shader-f16`)
 *     fp8  linearFp8: DeepSeek-V3's FP8 recipe, emulated (E4M3 inputs with 1x128 activation
 *          tiles and 128x128 weight blocks, f32 accumulation promoted every 128 K elements)
 *
 * Only the projections go low precision (V3 section 3.3): MLA's q_a / q_b (or q) / kv_a / kv_b /
 * o_proj, the dense and shared-expert SwiGLU matrices and the MTP eh_proj. The embedding, the
 * output head, the MoE gate, norms, attention and the optimizer stay f32, and so do the routed
 * experts' grouped GEMM (`kernels/moe_gemm.ts`) in this version. Master weights and gradients
 * are f32 in every mode.
 *
 * @example
 * ```ts
 * const lin = linearFor("fp8");
 * const q = lin(x, param("model.layers.0.self_attn.q_a_proj.weight")); // [N, rq]
 * ```
 *
 * @module
 */
import { assertF16, type F16Capable, linearF16, linearFp8 } from "../kernels/lowp_linear.ts";
import { linear } from "../kernels/matmul.ts";
import type { Tensor } from "../kernels/tensor.ts";

/** Number formats of the projection GEMMs' inputs. */
export type Precision = "f32" | "f16" | "fp8";

/** Every precision, in the order `--help` lists them. */
export const PRECISIONS: readonly Precision[] = ["f32", "f16", "fp8"];

/** A linear layer without bias: `y [..., out] = x [..., in] @ W^T`, W [out, in], with autograd. */
export type LinearFn = (x: Tensor, w: Tensor) => Tensor;

/**
 * The f32 linear (no alpha), for the layers that always stay f32 (head, gate).
 *
 * @param x Input [..., in].
 * @param w Weight [out, in].
 * @returns `x @ w^T` [..., out].
 */
export const linearF32: LinearFn = (x: Tensor, w: Tensor): Tensor => linear(x, w);

/**
 * The linear op of `precision`, for the model's projection layers.
 *
 * @throws for an unknown precision, naming the valid ones.
 * @example const lin = linearFor(cfgPrecision); const y = lin(x, w);
 */
export function linearFor(precision: Precision): LinearFn {
  switch (precision) {
    case "f32":
      return linearF32;
    case "f16":
      return linearF16;
    case "fp8":
      return linearFp8;
    default:
      throw new Error(
        `unknown precision "${precision}"; use one of ${PRECISIONS.join(", ")}`,
      );
  }
}

/**
 * Parses a `--precision` value.
 * @throws naming the flag and the valid values.
 * @example parsePrecision("fp8") // "fp8"
 */
export function parsePrecision(value: string): Precision {
  if ((PRECISIONS as readonly string[]).includes(value)) return value as Precision;
  throw new Error(`--precision: expected one of ${PRECISIONS.join(", ")}, got "${value}"`);
}

/**
 * Checks at startup that `gpu` can run `precision` (f16 needs `shader-f16`), so a run fails
 * before its first step rather than inside it.
 * @throws when f16 is asked for on an adapter without `shader-f16`, saying what to use instead.
 * @example checkPrecision(gpu, parsePrecision(flags.precision));
 */
export function checkPrecision(gpu: F16Capable, precision: Precision): void {
  if (precision === "f16") assertF16(gpu);
}
