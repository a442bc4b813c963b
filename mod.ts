/**
 * MiniDeepSeek: the DeepSeek-V3 training pipeline at small scale, in TypeScript on WebGPU or the CPU.
 *
 * This module re-exports the runtime and kernels; the model, tokenizer, data, training and
 * serving layers are their own entry points (`./model`, `./tokenizer`, `./data`, `./train`,
 * `./serve`), since several of them share names such as `balanceLoss` between a GPU kernel and
 * its CPU reference.
 *
 * @example
 * ```ts
 * import { getDevice } from "@minideepseek/minideepseek";
 * const device = await getDevice();
 * console.log(device.kind, device.info.description); // "cpu" or "webgpu"
 * ```
 *
 * @module
 */
export * from "./kernels/mod.ts";
