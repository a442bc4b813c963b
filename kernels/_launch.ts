/**
 * Internal launch helpers shared by the kernel files.
 *
 * @module
 */
import type { Device } from "./backend.ts";
import type { Binding } from "./device.ts";
import { type Gpu, grid1d, Params } from "./gpu.ts";

/**
 * Encodes a 1-D launch of `n` threads in workgroups of `wg` (default 256), folding the grid
 * into y past the 65535-workgroup limit. The kernel must compute its index as
 * `(wid.y * nwg.x + wid.x) * WG + local_index` and return when it is past `n`.
 */
export function launch1d(
  device: Device,
  name: string,
  key: string,
  source: () => string,
  bindings: Binding[],
  n: number,
  params?: (p: Params) => Params,
  wg = 256,
): void {
  if (n === 0) return;
  const gpu = webgpu(device, name);
  const pipeline = gpu.pipeline(name, key, source);
  gpu.dispatch(pipeline, bindings, grid1d(n, wg), params ? params(new Params()) : undefined);
}

/** Encodes a launch over an explicit workgroup grid. */
export function launch(
  device: Device,
  name: string,
  key: string,
  source: () => string,
  bindings: Binding[],
  workgroups: [number, number, number],
  params?: (p: Params) => Params,
): void {
  const gpu = webgpu(device, name);
  const pipeline = gpu.pipeline(name, key, source);
  gpu.dispatch(pipeline, bindings, workgroups, params ? params(new Params()) : undefined);
}

/**
 * The WebGPU runtime of `device`. Every launcher sends host tensors to its `kernels/host/`
 * implementation first, so a CPU device here is a launcher that forgot to.
 * @throws when `device` is the CPU backend, naming the kernel.
 */
export function webgpu(device: Device, kernel: string): Gpu {
  if (device.kind === "cpu") {
    throw new Error(`kernel ${kernel} has no CPU-backend implementation (a bug: please report it)`);
  }
  return device;
}
