/**
 * Typed-array views of host tensors, for the CPU backend's op implementations.
 *
 * @module
 */
import type { HostBuffer } from "../cpu.ts";
import type { Tensor } from "../tensor.ts";

/** The f32 elements of a host tensor (no copy). */
export function f32(t: Tensor): Float32Array {
  return new Float32Array((t.buffer as HostBuffer).data, t.offset, t.size);
}

/** The i32 elements of a host tensor (no copy). */
export function i32(t: Tensor): Int32Array {
  return new Int32Array((t.buffer as HostBuffer).data, t.offset, t.size);
}

/** The u32 elements of a host tensor (no copy). */
export function u32(t: Tensor): Uint32Array {
  return new Uint32Array((t.buffer as HostBuffer).data, t.offset, t.size);
}

/** Whether a tensor lives on the CPU backend. */
export function onHost(t: Tensor): boolean {
  return t.device.kind === "cpu";
}
