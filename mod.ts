/**
 * MiniDeepSeek: the DeepSeek-V3 training pipeline at small scale, in TypeScript on WebGPU.
 *
 * This module re-exports the runtime and kernels; the model, tokenizer, data, training and
 * serving layers are their own entry points (`./model`, `./tokenizer`, `./data`, `./train`,
 * `./serve`), since several of them share names such as `balanceLoss` between a GPU kernel and
 * its CPU reference.
 *
 * @example
 * ```ts
 * import { getGpu } from "@minideepseek/minideepseek";
 * const gpu = await getGpu();
 * console.log(gpu.info.description);
 * ```
 *
 * @module
 */
export * from "./kernels/mod.ts";
