/**
 * The runtime and kernels: the two backends (WebGPU and the CPU backend), tensors, the autograd
 * tape, parameter arenas and every op family with its CPU twin.
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
export * from "./copy.ts";
export * from "./attention.ts";
export * from "./optim.ts";
export * from "./moe_route.ts";
export * from "./moe_dispatch.ts";
export * from "./moe_gemm.ts";
export * from "./quant.ts";
export * from "./lowp_linear.ts";
export * from "./latent_attention.ts";
