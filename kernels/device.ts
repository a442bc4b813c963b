/**
 * What the two backends share: buffers and byte-range bindings, the adapter description, the
 * error type, and the size classes of their buffer pools.
 *
 * The backends are {@linkcode Gpu} (WebGPU: WGSL kernels on any GPU, or on a software Vulkan
 * driver) and {@linkcode Cpu} (host memory, BLAS GEMMs); `backend.ts` picks one per process.
 *
 * @module
 */

/** Bytes every tensor's byte offset is aligned to (the largest storage-binding alignment). */
export const BINDING_ALIGN = 256;

/** A backend's buffer: a WebGPU `GPUBuffer` or the CPU backend's host block. */
export interface DeviceBuffer {
  /** Bytes. */
  readonly size: number;
  /** Releases the memory now (WebGPU); host memory goes with its last reference. */
  destroy(): void;
}

/** A byte range of a buffer: what a kernel reads or writes (a tensor's storage). */
export interface Binding {
  /** The buffer. */
  buffer: DeviceBuffer;
  /** Byte offset of the range. */
  offset: number;
  /** Byte size of the range. */
  size: number;
}

/** What `cli.ts info` prints about the backend and, for WebGPU, the adapter. */
export interface DeviceInfo {
  /** "webgpu" or "cpu". */
  backend: "webgpu" | "cpu";
  /** Human-readable description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** The adapter's vendor, as WebGPU reports it (may be empty). */
  vendor: string;
  /** The adapter's (or, for the CPU backend, the machine's) architecture; may be empty. */
  architecture: string;
  /** True for a software/fallback WebGPU adapter such as Mesa's lavapipe. */
  isFallback: boolean;
  /** Features we asked for and got. */
  features: string[];
  /** The limits requested (the adapter's maxima). */
  limits: Record<string, number>;
}

/** Thrown for a backend error (validation, out of memory, a bad tensor range); names the kernel. */
export class DeviceError extends Error {
  /**
   * Creates the error.
   * @param message What failed, naming the kernel or the tensor.
   */
  constructor(message: string) {
    super(message);
    this.name = "DeviceError";
  }
}

/** Rounds `n` up to a multiple of `m`. @example roundUp(5, 4) // 8 */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Size class of a pooled buffer: 4 classes per power of two, at least 256 bytes. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) {
    const c = roundUp(p * f, 256);
    if (c >= bytes) return c;
  }
  return roundUp(bytes, 256);
}
