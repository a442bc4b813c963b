/**
 * The WebGPU runtime and kernels: device, tensors, the autograd tape, parameter arenas and every
 * op family with its CPU twin.
 *
 * @module
 */
export * from "./gpu.ts";
export * from "./tensor.ts";
export * from "./autograd.ts";
export * from "./arena.ts";
export * from "./elementwise.ts";
