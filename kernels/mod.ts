/**
 * The runtime and kernels: the two backends (WebGPU and the CPU backend), tensors, the autograd
 * tape, parameter arenas and every op family with its CPU twin.
 *
 * @example A GEMM on the process's backend (a GPU, else the CPU backend) against its CPU twin
 * ```ts
 * import { getDevice, matmul, matmulCpu, Tensor } from "@minideepseek/minideepseek/kernels";
 *
 * const device = await getDevice();
 * const a = new Float32Array([1, 2, 3, 4, 5, 6]); // [2, 3]
 * const b = new Float32Array([1, 0, 0, 1, 1, 1]); // [3, 2]
 * const c = matmul(Tensor.from(device, a, [2, 3]), Tensor.from(device, b, [3, 2]));
 * console.log(await c.readF32()); // [4, 5, 10, 11]
 * console.log(matmulCpu(a, b, { aShape: [2, 3], bShape: [3, 2] })); // the same
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./backend.ts";
export * from "./gpu.ts";
export * from "./cpu.ts";
export * from "./blas.ts";
export * from "./tensor.ts";
export * from "./autograd.ts";
export * from "./arena.ts";
export * from "./elementwise.ts";
export * from "./matmul.ts";
export * from "./reduce.ts";
export * from "./softmax.ts";
export * from "./rmsnorm.ts";
export * from "./rope.ts";
export * from "./rope_freqs.ts";
export * from "./embedding.ts";
export * from "./cross_entropy.ts";
export * from "./grpo.ts";
export * from "./copy.ts";
export * from "./attention.ts";
export * from "./optim.ts";
export * from "./moe_balance.ts";
export * from "./moe_bias.ts";
export * from "./moe_plan.ts";
export * from "./moe_route.ts";
export * from "./moe_dispatch.ts";
export * from "./moe_gemm.ts";
export * from "./quant.ts";
export * from "./lowp_linear.ts";
export * from "./latent_attention.ts";
export type { Floats } from "./_rows.ts";
