/**
 * The WebGPU runtime: one device per process, the buffer pool, the pipeline cache and command
 * batching.
 *
 * Every kernel launch goes through {@linkcode Gpu.dispatch}: it encodes one compute dispatch into
 * the current command encoder and returns at once. Nothing is submitted until {@linkcode Gpu.flush}
 * (or a read, which flushes first), so a whole training step costs a few `submit` calls. Small
 * per-dispatch parameters (sizes, scalars) are packed into one parameter buffer per batch, written
 * with a single `writeBuffer` just before the submit.
 *
 * Kernels read their parameters as a read-only storage struct (`var<storage, read> p: P`), not a
 * uniform: Mesa's lavapipe (22.3) inlines uniform values into a shader and, when that shrinks the
 * code enough (a power-of-two size, for example), JIT-compiles a fresh variant on every dispatch
 * and never frees it (docs/DESIGN.md, "Dispatch params and bind groups", has what that cost).
 * Storage loads are not inlined.
 *
 * Bind groups are cached by pipeline and bound ranges, so a training loop that binds the same
 * buffers every step creates none after the first: WebGPU objects that are dropped hold native
 * memory until V8 happens to collect their small wrappers, which a GPU-bound loop rarely makes it
 * do. The cache is cleared when it reaches {@linkcode BIND_GROUP_CACHE} entries.
 *
 * Errors: shader compilation and pipeline errors are caught in error scopes that name the kernel;
 * they, and any validation error of a submitted batch, are thrown from the next `flush()`/`read`.
 *
 * Left out on purpose: multiple devices, render work, textures.
 *
 * @module
 */

import {
  type Binding,
  type DeviceBuffer,
  DeviceError,
  type DeviceInfo,
  roundUp,
  sizeClass,
} from "./device.ts";

/** Bytes reserved per dispatch in the batch's parameter buffer (also its offset alignment). */
const PARAMS_SLOT = 256;
/** Bind groups kept for reuse before the cache starts over. */
export const BIND_GROUP_CACHE = 8192;
/** Dispatches per batch before an automatic flush (bounded by the parameter buffer's size). */
const MAX_DISPATCHES_PER_BATCH = 4096;

/** Timestamp slots per batch while profiling. */
const PROFILE_SLOTS = 1024;

interface Profiler {
  totals: Map<string, { ms: number; count: number }>;
  pending: Promise<void>[];
  labels: string[];
  querySet: GPUQuerySet | null;
}

/** Thrown when no WebGPU adapter exists; the message says what to install. */
export class NoAdapterError extends Error {
  constructor() {
    super(
      "No WebGPU adapter found. On a machine without a GPU install Mesa's software Vulkan driver " +
        "(Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`) and, if the GL fallback is chosen, " +
        "set DENO_WEBGPU_BACKEND=vulkan. With a GPU, install its Vulkan (or Metal/D3D12) driver.",
    );
    this.name = "NoAdapterError";
  }
}

/** Workgroup counts for a 1-D launch of `n` threads, folded into y past the 65535 limit. */
export function grid1d(n: number, workgroupSize: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(n / workgroupSize));
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y, 1];
}

/**
 * WGSL helper: the flat thread index of a 1-D launch made with {@linkcode grid1d}.
 * Use as `let i = flat_index(wid, nwg, lid.x, WG);`.
 */
export const WGSL_FLAT_INDEX = /* wgsl */ `
fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lx: u32, wg: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * wg + lx;
}`;

/** Packs the parameters of one dispatch: 32-bit words in declaration order. */
export class Params {
  private readonly view = new DataView(new ArrayBuffer(PARAMS_SLOT));
  private words = 0;
  /** Appends an unsigned 32-bit integer. */
  u32(v: number): this {
    this.view.setUint32(this.next(), v >>> 0, true);
    return this;
  }
  /** Appends a signed 32-bit integer. */
  i32(v: number): this {
    this.view.setInt32(this.next(), v | 0, true);
    return this;
  }
  /** Appends a 32-bit float. */
  f32(v: number): this {
    this.view.setFloat32(this.next(), v, true);
    return this;
  }
  /** The packed bytes (a multiple of 16, the size of a WGSL struct of vec4-aligned words). */
  bytes(): Uint8Array {
    return new Uint8Array(this.view.buffer, 0, Math.max(16, roundUp(this.words * 4, 16)));
  }
  /** The byte offset of the next word. */
  private next(): number {
    if (this.words >= PARAMS_SLOT / 4) throw new DeviceError("Params: more than 64 words");
    return 4 * this.words++;
  }
}

/** The one WebGPU device of this process and everything cached around it. */
export class Gpu {
  /** Which backend this is. */
  readonly kind = "webgpu" as const;
  /** The adapter's description and what we requested. */
  readonly info: DeviceInfo;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly pool = new Map<number, GPUBuffer[]>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly paramsStaging = new Uint8Array(MAX_DISPATCHES_PER_BATCH * PARAMS_SLOT);
  private readonly paramsBuffer: GPUBuffer;
  private dispatches = 0;
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly objectIds = new WeakMap<object, number>();
  private nextObjectId = 1;
  private batchKernels = new Set<string>();
  private pendingErrors: Promise<string | null>[] = [];
  private lostReason: string | null = null;
  /** Bytes held by live (non-pooled) allocations, for diagnostics. */
  bytesInUse = 0;
  /** Total dispatches encoded since creation (for benchmarks and tests). */
  totalDispatches = 0;
  /** Bind groups created since creation (the rest of the dispatches reused a cached one). */
  totalBindGroups = 0;
  /** Total submits since creation. */
  totalSubmits = 0;
  private profiler: Profiler | null = null;

  /**
   * Wraps a device; use `getGpu()` to make one.
   *
   * @param adapter The adapter the device came from.
   * @param device The device.
   * @param info What `cli.ts info` prints.
   */
  constructor(readonly adapter: GPUAdapter, readonly device: GPUDevice, info: DeviceInfo) {
    this.info = info;
    this.paramsBuffer = device.createBuffer({
      size: this.paramsStaging.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.lost.then((l) => {
      this.lostReason = `${l.reason}: ${l.message}`;
    });
  }

  /** Whether the device can store f16 (the `shader-f16` feature). */
  get hasF16(): boolean {
    return this.device.features.has("shader-f16");
  }

  /** Largest byte size one storage binding may cover. */
  get maxBinding(): number {
    return this.device.limits.maxStorageBufferBindingSize;
  }

  /** Largest buffer the adapter allows. */
  get maxBufferSize(): number {
    return this.device.limits.maxBufferSize;
  }

  /** A zero-filled storage buffer outside the pool (arenas). */
  createBuffer(bytes: number): GPUBuffer {
    const size = roundUp(Math.max(4, bytes), 4);
    const buf = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.clear({ buffer: buf, offset: 0, size });
    return buf;
  }

  /**
   * A compute pipeline for `name`, compiled once per distinct `source` variant.
   * `key` distinguishes specializations (sizes, dtypes baked into the WGSL text).
   */
  pipeline(name: string, key: string, source: () => string): GPUComputePipeline {
    const id = `${name}|${key}`;
    let p = this.pipelines.get(id);
    if (p) return p;
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ code: source(), label: id });
    p = this.device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
      label: id,
    });
    this.pendingErrors.push(
      this.device.popErrorScope().then((e) => e ? `kernel ${id}: ${e.message}` : null),
    );
    this.pipelines.set(id, p);
    return p;
  }

  /**
   * Encodes one dispatch of `pipeline` over `workgroups`, binding `buffers` at bindings
   * 0..n-1 and `params` (if any) at binding n. Returns immediately.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    buffers: Binding[],
    workgroups: [number, number, number],
    params?: Params,
  ): void {
    if (this.lostReason) throw new DeviceError(`GPU device lost (${this.lostReason})`);
    if (workgroups[0] * workgroups[1] * workgroups[2] === 0) return;
    const profileFull = this.profiler !== null && this.profiler.labels.length >= PROFILE_SLOTS;
    if (this.dispatches >= MAX_DISPATCHES_PER_BATCH || profileFull) this.submitBatch();
    let key = `${this.objectId(pipeline)}`;
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => {
      const size = roundUp(b.size, 4);
      const buffer = b.buffer as GPUBuffer;
      key += `|${this.objectId(buffer)}:${b.offset}:${size}`;
      return { binding: i, resource: { buffer, offset: b.offset, size } };
    });
    if (params) {
      const bytes = params.bytes();
      const offset = this.dispatches * PARAMS_SLOT;
      this.paramsStaging.set(bytes, offset);
      key += `|p${offset}:${bytes.byteLength}`;
      entries.push({
        binding: buffers.length,
        resource: { buffer: this.paramsBuffer, offset, size: bytes.byteLength },
      });
    }
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      if (this.bindGroups.size >= BIND_GROUP_CACHE) this.bindGroups.clear();
      bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      this.totalBindGroups++;
      this.bindGroups.set(key, bindGroup);
    }
    const pass = this.profiler ? this.profiledPass(pipeline.label) : this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    if (this.profiler) {
      pass.end();
      this.pass = null;
    }
    this.dispatches++;
    this.totalDispatches++;
    this.batchKernels.add(pipeline.label);
  }

  /** Encodes a zero fill of a byte range (outside any compute pass). */
  clear(b: Binding): void {
    this.currentEncoder(true).clearBuffer(b.buffer as GPUBuffer, b.offset, roundUp(b.size, 4));
  }

  /** Encodes a buffer-to-buffer copy of `size` bytes. */
  copy(src: Binding, dst: Binding, size = src.size): void {
    this.currentEncoder(true).copyBufferToBuffer(
      src.buffer as GPUBuffer,
      src.offset,
      dst.buffer as GPUBuffer,
      dst.offset,
      roundUp(size, 4),
    );
  }

  /** Writes host data into a buffer, ordered after everything encoded so far. */
  write(b: Binding, data: ArrayBufferView): void {
    // queue.writeBuffer runs before the next submit, so pending work must go first.
    this.submitBatch();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(b.buffer as GPUBuffer, b.offset, bytes);
    } else {
      const padded = new Uint8Array(roundUp(bytes.byteLength, 4));
      padded.set(bytes);
      this.device.queue.writeBuffer(b.buffer as GPUBuffer, b.offset, padded);
    }
  }

  /** Submits everything encoded so far and throws any error found since the last flush. */
  async flush(): Promise<void> {
    this.submitBatch();
    await this.checkErrors();
  }

  /**
   * Drops everything encoded since the last submit without running it (after an exception in
   * the middle of a step, whose half-encoded work must not run).
   */
  discard(): void {
    if (this.pass) this.pass.end();
    this.pass = null;
    this.encoder = null;
    this.dispatches = 0;
    this.batchKernels = new Set();
    if (this.profiler) this.profiler.labels = [];
  }

  /** Copies a byte range back to the host (flushes first). */
  async read(b: Binding): Promise<ArrayBuffer> {
    const size = roundUp(b.size, 4);
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.currentEncoder(true).copyBufferToBuffer(b.buffer as GPUBuffer, b.offset, staging, 0, size);
    this.submitBatch();
    await this.checkErrors();
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, b.size);
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.submitBatch();
    await this.device.queue.onSubmittedWorkDone();
    await this.checkErrors();
  }

  /** A storage buffer of at least `bytes` bytes from the pool (contents undefined). */
  alloc(bytes: number): GPUBuffer {
    const cls = sizeClass(Math.max(4, bytes));
    const free = this.pool.get(cls);
    this.bytesInUse += cls;
    if (free && free.length) return free.pop()!;
    if (cls > this.device.limits.maxBufferSize) {
      throw new DeviceError(
        `buffer of ${bytes} bytes exceeds this adapter's maxBufferSize ` +
          `(${this.device.limits.maxBufferSize}); use a smaller batch or model`,
      );
    }
    this.device.pushErrorScope("out-of-memory");
    const buf = this.device.createBuffer({
      size: cls,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.pendingErrors.push(
      this.device.popErrorScope().then((e) =>
        e ? `out of GPU memory allocating ${cls} bytes: ${e.message}` : null
      ),
    );
    return buf;
  }

  /** Returns a buffer from {@linkcode alloc} to the pool. Encoded work may still use it. */
  free(b: DeviceBuffer): void {
    const buf = b as GPUBuffer;
    const list = this.pool.get(buf.size) ?? [];
    list.push(buf);
    this.pool.set(buf.size, list);
    this.bytesInUse -= buf.size;
  }

  /** Destroys every pooled (free) buffer, returning its memory to the driver. */
  trimPool(): void {
    for (const list of this.pool.values()) for (const b of list) b.destroy();
    this.pool.clear();
    this.bindGroups.clear();
  }

  /**
   * Starts timing every dispatch with timestamp queries (one compute pass per dispatch, so it
   * slows things down a little). Needs the `timestamp-query` feature.
   * @throws when the adapter has no timestamp queries.
   */
  startProfiling(): void {
    if (!this.device.features.has("timestamp-query")) {
      throw new DeviceError(
        "profiling needs the timestamp-query feature, which this adapter lacks",
      );
    }
    this.submitBatch();
    this.profiler = { totals: new Map(), pending: [], labels: [], querySet: null };
  }

  /**
   * Stops profiling and returns GPU time per kernel name (milliseconds, dispatch count),
   * slowest first.
   */
  async stopProfiling(): Promise<{ kernel: string; ms: number; count: number }[]> {
    const p = this.profiler;
    if (!p) return [];
    this.submitBatch();
    await Promise.all(p.pending);
    this.profiler = null;
    return [...p.totals].map(([kernel, t]) => ({ kernel, ms: t.ms, count: t.count }))
      .sort((a, b) => b.ms - a.ms);
  }

  /** A compute pass of its own with timestamp writes, for one profiled dispatch. */
  private profiledPass(label: string): GPUComputePassEncoder {
    const p = this.profiler!;
    const encoder = this.currentEncoder(true);
    p.querySet ??= this.device.createQuerySet({ type: "timestamp", count: 2 * PROFILE_SLOTS });
    const i = p.labels.length;
    p.labels.push(label);
    const pass = encoder.beginComputePass({
      timestampWrites: {
        querySet: p.querySet,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
    this.pass = pass;
    return pass;
  }

  /** Resolves this batch's timestamps (when profiling) into the totals, asynchronously. */
  private resolveProfile(encoder: GPUCommandEncoder): (() => void) | null {
    const p = this.profiler;
    if (!p || !p.querySet || p.labels.length === 0) return null;
    const n = p.labels.length, labels = p.labels, querySet = p.querySet;
    const bytes = 16 * n;
    const resolve = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const read = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, read, 0, bytes);
    p.labels = [];
    p.querySet = null; // a fresh set per batch: the old one is read after the submit
    return () => {
      p.pending.push(
        read.mapAsync(GPUMapMode.READ).then(() => {
          const t = new BigUint64Array(read.getMappedRange());
          for (let i = 0; i < n; i++) {
            const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
            const e = p.totals.get(labels[i]) ?? { ms: 0, count: 0 };
            e.ms += ms;
            e.count++;
            p.totals.set(labels[i], e);
          }
          read.unmap();
          read.destroy();
          resolve.destroy();
          querySet.destroy();
        }),
      );
    };
  }

  /**
   * A small number naming a pipeline or buffer in bind-group cache keys (WebGPU objects have no
   * id of their own, and labels need not be unique).
   */
  private objectId(o: GPUComputePipeline | GPUBuffer): number {
    let id = this.objectIds.get(o);
    if (id === undefined) this.objectIds.set(o, id = this.nextObjectId++);
    return id;
  }

  /** The open compute pass of the current batch, begun if needed. */
  private computePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.currentEncoder(false).beginComputePass();
    return this.pass;
  }

  /** The current batch's command encoder (ending the open pass when `endPass`). */
  private currentEncoder(endPass: boolean): GPUCommandEncoder {
    if (endPass && this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  /** Writes the batch's dispatch params and submits its command buffer. */
  private submitBatch(): void {
    if (!this.encoder) return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.dispatches > 0) {
      this.device.queue.writeBuffer(
        this.paramsBuffer,
        0,
        this.paramsStaging,
        0,
        this.dispatches * PARAMS_SLOT,
      );
    }
    const kernels = [...this.batchKernels].join(", ");
    const afterSubmit = this.resolveProfile(this.encoder);
    this.device.pushErrorScope("validation");
    this.device.queue.submit([this.encoder.finish()]);
    afterSubmit?.();
    this.pendingErrors.push(
      this.device.popErrorScope().then((e) =>
        e ? `a batch of kernels [${kernels}] failed validation: ${e.message}` : null
      ),
    );
    this.encoder = null;
    this.dispatches = 0;
    this.batchKernels = new Set();
    this.totalSubmits++;
  }

  /** Awaits the error scopes of earlier submits; throws a {@linkcode GpuError} for any error. */
  private async checkErrors(): Promise<void> {
    if (this.pendingErrors.length === 0) return;
    const pending = this.pendingErrors;
    this.pendingErrors = [];
    const messages = (await Promise.all(pending)).filter((m) => m !== null);
    if (messages.length) throw new DeviceError(messages.join("\n"));
    if (this.lostReason) throw new DeviceError(`GPU device lost (${this.lostReason})`);
  }
}

let instance: Promise<Gpu> | null = null;

/** Features requested when the adapter has them. */
const WANTED_FEATURES = ["shader-f16", "subgroups", "timestamp-query"] as const;

/**
 * The process's one GPU, created on first call: the adapter's maximum limits and the
 * features `shader-f16`, `subgroups` and `timestamp-query` where present.
 *
 * @throws {NoAdapterError} when there is no WebGPU adapter, saying what to install.
 * @example
 * const gpu = await getGpu();
 * console.log(gpu.info.description);
 */
export function getGpu(): Promise<Gpu> {
  instance ??= createGpu();
  return instance;
}

async function createGpu(): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) throw new NoAdapterError();
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoAdapterError();
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === "number") limits[key] = v;
  }
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: limits,
  });
  const ai = adapter.info;
  return new Gpu(adapter, device, {
    backend: "webgpu",
    description: ai.description || ai.device || "unknown adapter",
    vendor: ai.vendor,
    architecture: ai.architecture,
    isFallback: Boolean((ai as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    features: [...device.features].sort(),
    limits,
  });
}
