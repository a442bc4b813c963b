/**
 * Parameter arenas: parameters, their gradients and the two AdamW moments each live in a few
 * large buffers with a fixed table of named, 256-byte-aligned offsets.
 *
 * One table serves all four arenas (same offsets), so zeroing every gradient is one
 * `clearBuffer` per chunk, and the optimizer and the checkpoint writer walk the same table.
 * A new chunk starts wherever the next tensor would pass the adapter's
 * `maxStorageBufferBindingSize`, so every chunk can be bound whole.
 *
 * @module
 */
import type { Device } from "./backend.ts";
import { BINDING_ALIGN, type DeviceBuffer, DeviceError, roundUp } from "./device.ts";
import { numel, Tensor } from "./tensor.ts";

/** What the arena needs to know about one parameter. */
export interface ArenaSpec {
  /** Unique name (the HF tensor name). */
  name: string;
  /** Shape, row-major. */
  shape: readonly number[];
  /** Whether AdamW applies weight decay (matrices yes; norms and biases no). */
  decay?: boolean;
  /** Whether the optimizer updates it (the MoE balancing bias is not trained by gradients). */
  trainable?: boolean;
  /**
   * Neighbouring specs with the same group are kept in one chunk (one binding), e.g. a MoE
   * layer's experts, which the grouped GEMM binds as one range.
   */
  group?: string;
}

/** One parameter's place in the arenas. */
export interface ArenaEntry {
  /** HF tensor name. */
  name: string;
  /** Row-major shape. */
  shape: readonly number[];
  /** Whether AdamW applies weight decay to it. */
  decay: boolean;
  /** Whether the optimizer updates it (false: the MoE gate bias, moved by the bias update). */
  trainable: boolean;
  /** Chunk index. */
  chunk: number;
  /** Byte offset inside the chunk. */
  offset: number;
  /** Element count. */
  size: number;
}

/** The four arenas' buffers for one chunk. */
export interface ArenaChunk {
  /** Parameters. */
  params: DeviceBuffer;
  /** Gradients. */
  grads: DeviceBuffer;
  /** AdamW first moments. */
  m: DeviceBuffer;
  /** AdamW second moments. */
  v: DeviceBuffer;
  /** Bytes used (a multiple of 4). */
  bytes: number;
}

/** Parameters, gradients and AdamW moments for a fixed table of named f32 tensors. */
export class ParamArena {
  /** Entries in table order. */
  readonly entries: ArenaEntry[] = [];
  /** The buffers, one set per chunk. */
  readonly chunks: ArenaChunk[] = [];
  private readonly byName = new Map<string, ArenaEntry>();
  private readonly paramTensors = new Map<string, Tensor>();

  /**
   * Lays out `specs` and allocates the four arenas (zero-filled).
   * @throws {DeviceError} on a duplicate name or a tensor larger than one binding.
   */
  constructor(
    readonly device: Device,
    specs: readonly ArenaSpec[],
    opts: { chunkBytes?: number } = {},
  ) {
    const limit = Math.min(
      opts.chunkBytes ?? Infinity,
      device.maxBinding,
      device.maxBufferSize,
    );
    const sizes: number[] = [];
    let chunk = 0, offset = 0;
    // Bytes each group spans when laid out from an aligned start.
    const groupBytes = new Map<string, number>();
    for (const s of specs) {
      if (!s.group) continue;
      const b = roundUp(groupBytes.get(s.group) ?? 0, BINDING_ALIGN) + numel(s.shape) * 4;
      groupBytes.set(s.group, b);
    }
    let openGroup: string | undefined;
    for (const s of specs) {
      if (s.group && s.group !== openGroup) {
        const span = groupBytes.get(s.group)!;
        if (span > limit) {
          throw new DeviceError(
            `arena: parameter group ${s.group} needs ${span} bytes in one binding, more than ` +
              `this adapter allows (${limit}); use fewer or smaller experts`,
          );
        }
        if (offset + span > limit) {
          sizes.push(offset);
          chunk++;
          offset = 0;
        }
      }
      openGroup = s.group;
      if (this.byName.has(s.name)) throw new DeviceError(`arena: duplicate parameter ${s.name}`);
      const size = numel(s.shape);
      const bytes = size * 4;
      if (bytes > limit) {
        throw new DeviceError(
          `arena: parameter ${s.name} [${s.shape}] needs ${bytes} bytes, more than one ` +
            `binding allows (${limit}); shard it or use a smaller model`,
        );
      }
      if (offset + bytes > limit) {
        sizes.push(offset);
        chunk++;
        offset = 0;
      }
      const e: ArenaEntry = {
        name: s.name,
        shape: [...s.shape],
        decay: s.decay ?? s.shape.length >= 2,
        trainable: s.trainable ?? true,
        chunk,
        offset,
        size,
      };
      this.entries.push(e);
      this.byName.set(s.name, e);
      offset = roundUp(offset + bytes, BINDING_ALIGN);
    }
    sizes.push(offset);
    for (const bytes of sizes) {
      const size = Math.max(BINDING_ALIGN, bytes);
      const make = () => device.createBuffer(size);
      this.chunks.push({ params: make(), grads: make(), m: make(), v: make(), bytes: size });
    }
  }

  /** Total parameter count. */
  get numParams(): number {
    return this.entries.reduce((a, e) => a + e.size, 0);
  }

  /** The table entry of `name`. @throws when there is no such parameter. */
  entry(name: string): ArenaEntry {
    const e = this.byName.get(name);
    if (!e) throw new DeviceError(`arena: no parameter named ${name}`);
    return e;
  }

  /** Whether the arena holds `name`. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /**
   * The parameter as a tensor whose `.grad` is its slice of the gradient arena; trainable
   * parameters have `requiresGrad` set so the tape records ops on them.
   */
  param(name: string): Tensor {
    let t = this.paramTensors.get(name);
    if (t) return t;
    const e = this.entry(name);
    const c = this.chunks[e.chunk];
    t = new Tensor(this.device, c.params, e.shape, "f32", e.offset);
    t.name = name;
    if (e.trainable) {
      t.requiresGrad = true;
      t.grad = new Tensor(this.device, c.grads, e.shape, "f32", e.offset);
    }
    this.paramTensors.set(name, t);
    return t;
  }

  /** One arena's slice for `name` as a tensor ("m" and "v" are the AdamW moments). */
  slot(name: string, arena: "params" | "grads" | "m" | "v"): Tensor {
    const e = this.entry(name);
    return new Tensor(this.device, this.chunks[e.chunk][arena], e.shape, "f32", e.offset);
  }

  /** Encodes a zero fill of every gradient (padding included, which keeps norms exact). */
  zeroGrads(): void {
    for (const c of this.chunks) this.device.clear({ buffer: c.grads, offset: 0, size: c.bytes });
  }

  /** Uploads a parameter's values. @throws on a length mismatch, naming the tensor. */
  upload(name: string, data: Float32Array, arena: "params" | "m" | "v" = "params"): void {
    const e = this.entry(name);
    if (data.length !== e.size) {
      throw new DeviceError(
        `arena: ${name} expects ${e.size} values [${e.shape}], got ${data.length}`,
      );
    }
    this.device.write(
      { buffer: this.chunks[e.chunk][arena], offset: e.offset, size: e.size * 4 },
      data,
    );
  }

  /** Reads every tensor of one arena back, in table order, one readback per chunk. */
  async readAll(
    arena: "params" | "grads" | "m" | "v" = "params",
  ): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (let ci = 0; ci < this.chunks.length; ci++) {
      const c = this.chunks[ci];
      const raw = await this.device.read({ buffer: c[arena], offset: 0, size: c.bytes });
      for (const e of this.entries) {
        if (e.chunk !== ci) continue;
        out.set(e.name, new Float32Array(raw.slice(e.offset, e.offset + e.size * 4)));
      }
    }
    return out;
  }

  /** Frees the GPU buffers. */
  destroy(): void {
    for (const c of this.chunks) for (const b of [c.params, c.grads, c.m, c.v]) b.destroy();
    this.chunks.length = 0;
  }
}
