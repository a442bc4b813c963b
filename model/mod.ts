/**
 * The model layer's public API: the typed config and presets, the parameter table with HF names,
 * the CPU f64 reference forward/backward, and safetensors / HF config.json conversion.
 *
 * @example
 * ```ts
 * import { initParameters, referenceForwardBackward, resolveConfig } from "./model/mod.ts";
 * const cfg = resolveConfig("tiny");
 * const params = initParameters(cfg, 42);
 * ```
 *
 * @module
 */

export * from "./config.ts";
export * from "./params.ts";
export * from "./reference.ts";
export * from "./safetensors.ts";
export * from "./hf_config.ts";
export * from "./mla.ts";
export * from "./ffn.ts";
export * from "./transformer.ts";
export * from "./decode.ts";
export * from "./precision.ts";
