/**
 * MiniDeepSeek: the DeepSeek-V3 training pipeline at small scale, in TypeScript on WebGPU.
 *
 * This module re-exports the public API of each layer; see the README for the command line.
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
