/**
 * Tensors: a byte range of a backend buffer (WebGPU or host memory) with a shape and a dtype.
 *
 * Tensors are row-major and contiguous. A view shares its parent's buffer; its byte offset must
 * be a multiple of {@linkcode BINDING_ALIGN} so that it can be bound directly (WebGPU requires
 * aligned storage-binding offsets). Kernels that need other slices copy or index with strides.
 *
 * Ownership: a tensor made by {@linkcode Tensor.empty} owns a pooled buffer and hands it back on
 * {@linkcode Tensor.dispose}. Tensors created while a {@linkcode Scope} is active are disposed
 * with it, which is how a training step returns its activations to the pool.
 *
 * @module
 */
import type { Device } from "./backend.ts";
import { type Binding, BINDING_ALIGN, type DeviceBuffer, DeviceError } from "./device.ts";

/** Element types a tensor can hold. */
export type DType = "f32" | "f16" | "i32" | "u32";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4, u32: 4 };

/** Host arrays matching each dtype (f16 is read back widened to f32). */
export type HostArray = Float32Array | Int32Array | Uint32Array | Uint16Array;

/** Number of elements of a shape. @example numel([2, 3]) // 6 */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A set of tensors released together (a training step's activations, say). */
export class Scope {
  private readonly owned: Tensor[] = [];
  private readonly parent: Scope | null = currentScope;
  /** Makes this scope the one new tensors register with until {@linkcode end}. */
  constructor() {
    currentScope = this;
  }
  /** Registers a tensor to be disposed with this scope. */
  track(t: Tensor): void {
    this.owned.push(t);
  }
  /** Stops tracking `t`, so it survives {@linkcode dispose} (e.g. a result to keep). */
  keep(t: Tensor): Tensor {
    const i = this.owned.indexOf(t);
    if (i >= 0) this.owned.splice(i, 1);
    return t;
  }
  /** Restores the enclosing scope and disposes every tensor tracked here. */
  dispose(): void {
    if (currentScope === this) currentScope = this.parent;
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}

let currentScope: Scope | null = null;

/** Runs `fn` with no active scope: tensors it creates live until disposed by hand. */
export function unscoped<T>(fn: () => T): T {
  const saved = currentScope;
  currentScope = null;
  try {
    return fn();
  } finally {
    currentScope = saved;
  }
}

/** Runs `fn` in a fresh {@linkcode Scope}, disposing what it created except the returned tensors. */
export async function scoped<T>(fn: () => T | Promise<T>): Promise<T> {
  const s = new Scope();
  try {
    const r = await fn();
    if (r instanceof Tensor) s.keep(r);
    else if (Array.isArray(r)) { for (const x of r) if (x instanceof Tensor) s.keep(x); }
    return r;
  } finally {
    s.dispose();
  }
}

/** A contiguous tensor on a {@linkcode Device}. */
export class Tensor {
  /** Gradient accumulated by the tape (same shape), if any. */
  grad: Tensor | null = null;
  /** Whether backward should produce a gradient for this tensor. */
  requiresGrad = false;
  /** Optional name, for error messages and checkpoints. */
  name = "";
  private disposed = false;

  /**
   * Wraps a buffer range. Prefer {@linkcode Tensor.empty}, {@linkcode Tensor.from} or a view.
   * @param owned whether dispose() returns `buffer` to the pool.
   */
  constructor(
    readonly device: Device,
    readonly buffer: DeviceBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType = "f32",
    readonly offset = 0,
    private readonly owned = false,
  ) {
    if (offset % BINDING_ALIGN !== 0) {
      throw new DeviceError(`tensor offset ${offset} is not a multiple of ${BINDING_ALIGN} bytes`);
    }
    if (offset + this.bytes > buffer.size) {
      throw new DeviceError(
        `tensor [${shape}] ${dtype} at ${offset} overruns its ${buffer.size}-byte buffer`,
      );
    }
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Bytes covered. */
  get bytes(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** The binding of this tensor's range. */
  get binding(): Binding {
    return { buffer: this.buffer, offset: this.offset, size: Math.max(4, this.bytes) };
  }

  /** An uninitialised tensor from the pool, tracked by the current scope. */
  static empty(device: Device, shape: readonly number[], dtype: DType = "f32"): Tensor {
    const bytes = numel(shape) * DTYPE_BYTES[dtype];
    const t = new Tensor(device, device.alloc(bytes), [...shape], dtype, 0, true);
    currentScope?.track(t);
    return t;
  }

  /** A zero-filled tensor (the fill is encoded, not run yet). */
  static zeros(device: Device, shape: readonly number[], dtype: DType = "f32"): Tensor {
    const t = Tensor.empty(device, shape, dtype);
    device.clear(t.binding);
    return t;
  }

  /**
   * Uploads host data.
   * @example const t = Tensor.from(device, new Float32Array([1, 2, 3, 4]), [2, 2]);
   */
  static from(
    device: Device,
    data: ArrayLike<number> | HostArray,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    if (data.length !== numel(shape)) {
      throw new DeviceError(`Tensor.from: ${data.length} values for shape [${shape}]`);
    }
    const t = Tensor.empty(device, shape, dtype);
    t.upload(data);
    return t;
  }

  /** Writes host data into this tensor (ordered after work encoded so far). */
  upload(data: ArrayLike<number> | HostArray): void {
    if (data.length !== this.size) {
      throw new DeviceError(`upload: ${data.length} values for tensor [${this.shape}]`);
    }
    this.device.write(this.binding, toHost(data, this.dtype));
  }

  /** A view of the same bytes with another shape of equal size. */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new DeviceError(`reshape: [${this.shape}] has ${this.size} elements, not [${shape}]`);
    }
    const v = new Tensor(this.device, this.buffer, [...shape], this.dtype, this.offset);
    return v;
  }

  /** A view of `shape` starting `elementOffset` elements in (byte offset must be aligned). */
  view(shape: readonly number[], elementOffset = 0): Tensor {
    return new Tensor(
      this.device,
      this.buffer,
      [...shape],
      this.dtype,
      this.offset + elementOffset * DTYPE_BYTES[this.dtype],
    );
  }

  /** Reads the tensor back (f16 widened to f32). */
  async read(): Promise<HostArray> {
    const raw = await this.device.read(this.binding);
    switch (this.dtype) {
      case "f32":
        return new Float32Array(raw);
      case "i32":
        return new Int32Array(raw);
      case "u32":
        return new Uint32Array(raw);
      case "f16":
        return f16ToF32(new Uint16Array(raw));
    }
  }

  /** Reads an f32/f16 tensor back as Float32Array. */
  async readF32(): Promise<Float32Array> {
    const r = await this.read();
    if (!(r instanceof Float32Array)) throw new DeviceError(`readF32 on a ${this.dtype} tensor`);
    return r;
  }

  /** Returns an owned buffer to the pool; views and arena tensors only drop their grad. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.owned) this.device.free(this.buffer);
  }
}

/** Host data converted to the bytes of `dtype`. */
function toHost(data: ArrayLike<number> | HostArray, dtype: DType): ArrayBufferView {
  switch (dtype) {
    case "f32":
      return data instanceof Float32Array ? data : Float32Array.from(data);
    case "i32":
      return data instanceof Int32Array ? data : Int32Array.from(data);
    case "u32":
      return data instanceof Uint32Array ? data : Uint32Array.from(data);
    case "f16":
      return data instanceof Uint16Array ? data : f32ToF16(Float32Array.from(data));
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Rounds f32 values to IEEE half (round to nearest even), returning the raw bits. */
export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = halfBits(src[i]);
  return out;
}

function halfBits(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to zero
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  // a carry out of the mantissa correctly bumps the exponent (up to inf)
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** Widens raw IEEE half bits to f32 values. */
export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) out[i] = s * m * 2 ** -24;
    else if (e === 0x1f) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
