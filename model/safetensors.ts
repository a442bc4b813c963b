/**
 * Pure bytes <-> tensors for the safetensors format (the HF `config.json` mapping is in
 * `hf_config.ts`). No file I/O here: `train/` reads and writes the bytes.
 *
 * safetensors layout (https://github.com/huggingface/safetensors, "Format"):
 *
 *     [8 bytes: N, u64 little-endian][N bytes: UTF-8 JSON header, padded with spaces][data]
 *
 * The header maps each tensor name to `{ dtype, shape, data_offsets: [begin, end] }` (offsets
 * relative to the start of the data section) plus an optional `__metadata__` string->string
 * map. `encodeSafetensors` pads the header with spaces so the data starts at a multiple of 8
 * bytes, writes tensors back to back in the map's order, and copies raw bytes, so
 * decode(encode(x)) is bit-exact (NaN payloads and -0 included) and encode(decode(b)) gives b
 * back for files this module wrote. Values are little-endian, as the format requires; the
 * functions throw on a big-endian host rather than silently swap.
 *
 * F16 and BF16 tensors travel as raw bits in a Uint16Array (`bf16FromF32` / `f32FromBf16`
 * convert).
 *
 * RoPE layout of our checkpoints: the dr rope rows of `q_b_proj` / `q_proj` (per head, after the
 * dn nope rows) and of `kv_a_proj_with_mqa` (after the rkv latent rows) are in the INTERLEAVED
 * layout, pairs (2i, 2i+1) rotated together, exactly as the DeepSeek-V3 reference code and the
 * released V3 weights. HF's `modeling_deepseek.py` (trust_remote_code) and transformers'
 * `DeepseekV3` (`rope_interleave: true`, which `hf_config.ts`'s `toHfConfig` writes) de-interleave q_pe/k_pe at
 * run time before their rotate-half RoPE, so these weights load with no permutation. Only a
 * loader that applies rotate-half RoPE WITHOUT that de-interleave step would need those rows
 * permuted to [0, 2, 4, ..., 1, 3, 5, ...] within each dr block.
 *
 * @module
 */

/** Element types this module reads and writes. */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U32"
  | "U16"
  | "U8";

/** The typed arrays that hold tensor data. */
export type TensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint32Array
  | Uint8Array;

/** One tensor: element type, shape, row-major data. */
export interface SafeTensor {
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Shape; `[]` is a scalar (one element). */
  shape: number[];
  /** Row-major data; F16/BF16 as raw bits in a Uint16Array. */
  data: TensorData;
}

const DTYPES: Record<SafetensorsDtype, { bytes: number; array: string }> = {
  F64: { bytes: 8, array: "Float64Array" },
  F32: { bytes: 4, array: "Float32Array" },
  F16: { bytes: 2, array: "Uint16Array" },
  BF16: { bytes: 2, array: "Uint16Array" },
  I64: { bytes: 8, array: "BigInt64Array" },
  I32: { bytes: 4, array: "Int32Array" },
  I16: { bytes: 2, array: "Int16Array" },
  I8: { bytes: 1, array: "Int8Array" },
  U32: { bytes: 4, array: "Uint32Array" },
  U16: { bytes: 2, array: "Uint16Array" },
  U8: { bytes: 1, array: "Uint8Array" },
};

/** Largest header accepted, as the reference implementation (100 MB). */
const MAX_HEADER = 100_000_000;

function makeArray(dtype: SafetensorsDtype, buf: ArrayBuffer): TensorData {
  switch (DTYPES[dtype].array) {
    case "Float64Array":
      return new Float64Array(buf);
    case "Float32Array":
      return new Float32Array(buf);
    case "Uint16Array":
      return new Uint16Array(buf);
    case "BigInt64Array":
      return new BigInt64Array(buf);
    case "Int32Array":
      return new Int32Array(buf);
    case "Int16Array":
      return new Int16Array(buf);
    case "Int8Array":
      return new Int8Array(buf);
    case "Uint32Array":
      return new Uint32Array(buf);
    default:
      return new Uint8Array(buf);
  }
}

function assertLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error("safetensors: this host is big-endian; the format stores little-endian values");
  }
}

function isShape(s: unknown): s is number[] {
  return Array.isArray(s) && s.every((d) => Number.isSafeInteger(d) && d >= 0);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Serializes tensors to safetensors bytes.
 *
 * @param tensors Name -> tensor; written in the map's iteration order.
 * @param options `metadata`: string -> string pairs for `__metadata__` (omitted when absent).
 * @returns The file bytes.
 * @throws {RangeError} Naming the tensor on a bad name, unknown dtype, wrong array type, or a
 *   shape whose element count differs from the data length.
 * @example
 * ```ts
 * const bytes = encodeSafetensors(new Map([
 *   ["w", { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) }],
 * ]), { metadata: { format: "pt" } });
 * ```
 */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, SafeTensor>,
  options: { metadata?: Record<string, string> } = {},
): Uint8Array {
  assertLittleEndian();
  const header: Record<string, unknown> = {};
  if (options.metadata !== undefined) {
    for (const [k, v] of Object.entries(options.metadata)) {
      if (typeof v !== "string") {
        throw new TypeError(`safetensors: __metadata__['${k}'] must be a string, got ${typeof v}`);
      }
    }
    header.__metadata__ = options.metadata;
  }
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of tensors) {
    if (name === "" || name === "__metadata__") {
      throw new RangeError(`safetensors: invalid tensor name '${name}'`);
    }
    const info = DTYPES[t.dtype];
    if (info === undefined) {
      throw new RangeError(
        `safetensors: tensor '${name}' has unknown dtype '${t.dtype}'; expected one of ${
          Object.keys(DTYPES).join(", ")
        }`,
      );
    }
    if (t.data?.constructor?.name !== info.array) {
      throw new RangeError(
        `safetensors: tensor '${name}' of dtype ${t.dtype} needs a ${info.array}, got ${t.data?.constructor?.name}`,
      );
    }
    if (!isShape(t.shape)) {
      throw new RangeError(
        `safetensors: tensor '${name}' has an invalid shape ${JSON.stringify(t.shape)}`,
      );
    }
    if (numel(t.shape) !== t.data.length) {
      throw new RangeError(
        `safetensors: tensor '${name}' has shape [${t.shape.join(", ")}] (${
          numel(t.shape)
        } elements) ` +
          `but ${t.data.length} values`,
      );
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.length],
    };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20); // spaces, as the spec asks
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at); // a byte copy: NaN payloads survive
    at += p.length;
  }
  return out;
}

/**
 * Parses safetensors bytes. Tensor data is copied into fresh, aligned buffers.
 *
 * @param bytes The whole file.
 * @returns `tensors` (in header order) and `metadata` (empty when absent).
 * @throws {RangeError} "truncated" when the file ends before the header or a tensor's data;
 *   "bad header" (naming the tensor where there is one) on invalid JSON, an unknown dtype, a
 *   shape that disagrees with the data_offsets, or overlapping / gapped offsets.
 * @example
 * ```ts
 * const { tensors, metadata } = decodeSafetensors(bytes);
 * tensors.get("lm_head.weight")!.shape; // [6400, 128]
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
): { tensors: Map<string, SafeTensor>; metadata: Record<string, string> } {
  assertLittleEndian();
  if (bytes.length < 8) {
    throw new RangeError(
      `safetensors: truncated file: ${bytes.length} bytes, the header length alone needs 8`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) {
    throw new RangeError(`safetensors: bad header: length ${n} exceeds ${MAX_HEADER} bytes`);
  }
  const hlen = Number(n);
  if (8 + hlen > bytes.length) {
    throw new RangeError(
      `safetensors: truncated file: header says ${hlen} header bytes but only ${
        bytes.length - 8
      } follow`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + hlen)),
    );
  } catch (e) {
    throw new RangeError(`safetensors: bad header: not UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new RangeError("safetensors: bad header: expected a JSON object");
  }
  const dataLen = bytes.length - 8 - hlen;
  const data = bytes.subarray(8 + hlen);
  const metadata: Record<string, string> = {};
  const entries: {
    name: string;
    dtype: SafetensorsDtype;
    shape: number[];
    begin: number;
    end: number;
  }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw new RangeError("safetensors: bad header: __metadata__ must be an object");
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new RangeError(`safetensors: bad header: __metadata__['${k}'] is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (t === null || typeof t !== "object") {
      throw new RangeError(`safetensors: bad header: tensor '${name}' is not an object`);
    }
    if (typeof t.dtype !== "string" || !(t.dtype in DTYPES)) {
      throw new RangeError(
        `safetensors: bad header: tensor '${name}' has unsupported dtype ${
          JSON.stringify(t.dtype)
        }; ` +
          `expected one of ${Object.keys(DTYPES).join(", ")}`,
      );
    }
    if (!isShape(t.shape)) {
      throw new RangeError(
        `safetensors: bad header: tensor '${name}' has an invalid shape ${JSON.stringify(t.shape)}`,
      );
    }
    const off = t.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 || !off.every((o) =>
        Number.isSafeInteger(o) && o >= 0
      ) ||
      off[0] > off[1]
    ) {
      throw new RangeError(
        `safetensors: bad header: tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`,
      );
    }
    const dtype = t.dtype as SafetensorsDtype;
    const want = numel(t.shape) * DTYPES[dtype].bytes;
    if (off[1] - off[0] !== want) {
      throw new RangeError(
        `safetensors: bad header: tensor '${name}' of dtype ${dtype} and shape [${
          t.shape.join(", ")
        }] ` +
          `needs ${want} bytes but data_offsets [${off[0]}, ${off[1]}] span ${off[1] - off[0]}`,
      );
    }
    if (off[1] > dataLen) {
      throw new RangeError(
        `safetensors: truncated file: tensor '${name}' needs data bytes [${off[0]}, ${off[1]}) ` +
          `but only ${dataLen} bytes follow the header`,
      );
    }
    entries.push({ name, dtype, shape: t.shape, begin: off[0], end: off[1] });
  }
  // The format requires the tensors to tile the data section exactly (no overlap, no gaps).
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin !== at) {
      throw new RangeError(
        `safetensors: bad header: tensor '${e.name}' starts at data byte ${e.begin}, expected ${at} ` +
          `(${e.begin < at ? "overlaps the previous tensor" : "leaves a gap"})`,
      );
    }
    at = e.end;
  }
  if (at !== dataLen) {
    throw new RangeError(
      `safetensors: bad header: tensors cover ${at} data bytes but the file has ${dataLen}`,
    );
  }
  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) {
    const buf = new ArrayBuffer(e.end - e.begin);
    new Uint8Array(buf).set(data.subarray(e.begin, e.end));
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: makeArray(e.dtype, buf) });
  }
  return { tensors, metadata };
}

/**
 * Checks that a set of tensors is exactly the expected one (names, shapes, optionally dtypes),
 * e.g. a decoded checkpoint against `parameterTable(cfg)`.
 *
 * @param tensors Name -> tensor (only `shape` and `dtype` are read).
 * @param expected The tensors that must be there: `{ name, shape, dtype? }`.
 * @throws {RangeError} Naming the first missing tensor, the first unexpected tensor, or the
 *   first tensor whose shape or dtype differs.
 * @example
 * ```ts
 * checkTensors(decodeSafetensors(bytes).tensors, parameterTable(cfg));
 * ```
 */
export function checkTensors(
  tensors: ReadonlyMap<string, { shape: readonly number[]; dtype?: string }>,
  expected: Iterable<{ name: string; shape: readonly number[]; dtype?: string }>,
): void {
  const seen = new Set<string>();
  for (const e of expected) {
    seen.add(e.name);
    const t = tensors.get(e.name);
    if (t === undefined) throw new RangeError(`safetensors: missing tensor '${e.name}'`);
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new RangeError(
        `safetensors: tensor '${e.name}' has shape [${t.shape.join(", ")}], expected [${
          e.shape.join(", ")
        }]`,
      );
    }
    if (e.dtype !== undefined && t.dtype !== e.dtype) {
      throw new RangeError(
        `safetensors: tensor '${e.name}' has dtype ${t.dtype}, expected ${e.dtype}`,
      );
    }
  }
  for (const name of tensors.keys()) {
    if (!seen.has(name)) throw new RangeError(`safetensors: unexpected tensor '${name}'`);
  }
}

/**
 * f32 -> bf16 bits, rounding to nearest even; NaN stays NaN (quiet, sign and top payload kept).
 *
 * @param x Float32Array.
 * @returns Uint16Array of bf16 bits.
 * @example
 * ```ts
 * bf16FromF32(new Float32Array([1])); // [0x3f80]
 * ```
 */
export function bf16FromF32(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = u[i];
    if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) {
      out[i] = (b >>> 16) | 0x0040; // keep it a NaN even if the payload sat in the low bits
    } else {
      out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/**
 * bf16 bits -> f32 (exact).
 *
 * @param x Uint16Array of bf16 bits.
 * @returns Float32Array.
 * @example
 * ```ts
 * f32FromBf16(new Uint16Array([0x3f80])); // [1]
 * ```
 */
export function f32FromBf16(x: Uint16Array): Float32Array {
  const u = new Uint32Array(x.length);
  for (let i = 0; i < x.length; i++) u[i] = x[i] << 16;
  return new Float32Array(u.buffer);
}
