/**
 * The CPU backend's runtime: tensors in host memory, ops run at once on the calling thread, GEMMs
 * through BLAS ({@linkcode loadBlas}).
 *
 * It offers the same surface as the WebGPU runtime ({@linkcode Device}): a size-class buffer
 * pool, clear / copy / write / read over byte ranges, and no-op flush and sync (work is done
 * when the launcher returns). Each kernel launcher in `kernels/` sends a tensor on this device to
 * its host implementation in `kernels/host/`.
 *
 * @module
 */
import { type Blas, defaultThreads, loadBlas } from "./blas.ts";
import { setPoolThreads } from "./host/_pool.ts";
import { type Binding, type DeviceBuffer, type DeviceInfo, sizeClass } from "./device.ts";

/** A host memory block: the CPU backend's buffer. */
export class HostBuffer implements DeviceBuffer {
  /** The bytes, shared so that the host pool's workers (`host/_pool.ts`) can work on them. */
  readonly data: SharedArrayBuffer;
  /** The whole block as f32. */
  readonly f32: Float32Array;
  /** The whole block as i32. */
  readonly i32: Int32Array;
  /** The whole block as u32. */
  readonly u32: Uint32Array;
  /** Zero-filled block of `size` bytes (a multiple of 4). */
  constructor(readonly size: number) {
    this.data = new SharedArrayBuffer(size);
    this.f32 = new Float32Array(this.data);
    this.i32 = new Int32Array(this.data);
    this.u32 = new Uint32Array(this.data);
  }
  /** Nothing to do: the garbage collector frees host memory. */
  destroy(): void {}
}

/** The CPU backend: host tensors, BLAS GEMMs. Make it with {@linkcode createCpu}. */
export class Cpu {
  /** Which backend this is. */
  readonly kind = "cpu" as const;
  /** What `cli.ts info` prints. */
  readonly info: DeviceInfo;
  /** f16 storage is a GPU feature; the CPU backend computes in f32. */
  readonly hasF16 = false;
  /** Largest byte range one tensor may cover (an ArrayBuffer's practical limit). */
  readonly maxBinding = 2 ** 31 - 256;
  /** Largest buffer. */
  readonly maxBufferSize = 2 ** 31 - 256;
  private readonly pool = new Map<number, HostBuffer[]>();
  /** Bytes held by live (non-pooled) allocations, for diagnostics. */
  bytesInUse = 0;

  /**
   * Wraps a loaded BLAS; use {@linkcode createCpu} for the process's one CPU backend.
   * @param blas The library its GEMMs call.
   */
  constructor(readonly blas: Blas) {
    this.info = {
      backend: "cpu",
      description: `CPU backend, BLAS ${blas.path}${blas.core ? ` (${blas.core})` : ""}, ` +
        `${blas.threads} thread${blas.threads === 1 ? "" : "s"}`,
      vendor: "",
      architecture: Deno.build.arch,
      isFallback: false,
      features: [],
      limits: {},
    };
  }

  /** A zero-filled buffer outside the pool (arenas). */
  createBuffer(bytes: number): HostBuffer {
    return new HostBuffer(Math.ceil(bytes / 4) * 4);
  }

  /** A buffer of at least `bytes` bytes from the pool (contents undefined). */
  alloc(bytes: number): HostBuffer {
    const cls = sizeClass(Math.max(4, bytes));
    this.bytesInUse += cls;
    const free = this.pool.get(cls);
    if (free && free.length) return free.pop()!;
    return new HostBuffer(cls);
  }

  /** Returns a buffer from {@linkcode alloc} to the pool. */
  free(buf: DeviceBuffer): void {
    const b = buf as HostBuffer;
    const list = this.pool.get(b.size) ?? [];
    list.push(b);
    this.pool.set(b.size, list);
    this.bytesInUse -= b.size;
  }

  /** Drops every pooled (free) buffer. */
  trimPool(): void {
    this.pool.clear();
  }

  /** Zero-fills a byte range. */
  clear(b: Binding): void {
    new Uint8Array((b.buffer as HostBuffer).data, b.offset, roundUp4(b.size)).fill(0);
  }

  /** Copies `size` bytes. */
  copy(src: Binding, dst: Binding, size = src.size): void {
    const n = roundUp4(size);
    new Uint8Array((dst.buffer as HostBuffer).data, dst.offset, n).set(
      new Uint8Array((src.buffer as HostBuffer).data, src.offset, n),
    );
  }

  /** Writes host data into a byte range. */
  write(b: Binding, data: ArrayBufferView): void {
    new Uint8Array((b.buffer as HostBuffer).data, b.offset, data.byteLength).set(
      new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength),
    );
  }

  /** A copy of a byte range. */
  read(b: Binding): Promise<ArrayBuffer> {
    const h = b.buffer as HostBuffer;
    // a copy in an ordinary ArrayBuffer: callers hand it to Deno's I/O and expect one
    return Promise.resolve(new Uint8Array(h.data, b.offset, b.size).slice().buffer);
  }

  /** Nothing to submit: work runs when launched. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to wait for. */
  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing is pending on the CPU: a failed step's work already ran or never started. */
  discard(): void {}
}

function roundUp4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

let instance: Cpu | null = null;

/**
 * The process's CPU backend, created on first call (loads BLAS).
 * @throws {NoBlasError} when no BLAS library loads, saying what to install.
 */
export function createCpu(): Cpu {
  if (!instance) {
    instance = new Cpu(loadBlas());
    setPoolThreads(defaultThreads());
  }
  return instance;
}
