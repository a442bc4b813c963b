/**
 * Token shards: one binary file per split (`train.bin`, `val.bin`) holding a flat stream of token
 * ids, written once by `cli.ts prepare` and memory-loaded by the batch sampler.
 *
 * Layout (32-byte header, then the tokens, all little-endian):
 *
 * | bytes  | field                                                    |
 * |--------|----------------------------------------------------------|
 * | 0..8   | magic `"MDSTOK\0\0"`                                     |
 * | 8..12  | format version, u32 (= 1)                                |
 * | 12..16 | bytes per token, u32: 2 (u16 ids) or 4 (u32 ids)         |
 * | 16..20 | vocab size, u32; every id is below it                   |
 * | 20..24 | reserved, u32 (0)                                        |
 * | 24..32 | token count, u64 (low u32 then high u32)                 |
 * | 32..   | the ids                                                  |
 *
 * u16 ids are used whenever the vocab fits (<= 65536): half the disk and memory. The header is 32
 * bytes so the ids start 4-byte aligned and load as a typed-array view without a copy. The writer
 * streams to `<path>.tmp-<pid>` and renames on `close()`, so a shard that exists is complete.
 *
 * Left out: compression, memory mapping (Deno has none; a range read covers the large case).
 *
 * @module
 */
import { dirname, readFull, syncDir, writeAll } from "./_fs.ts";

/** The 8 bytes every shard starts with. */
export const SHARD_MAGIC: Uint8Array = new TextEncoder().encode("MDSTOK\0\0");
/** The format version this code writes and reads. */
export const SHARD_VERSION = 1;
/** Header size in bytes; the ids start here. */
export const SHARD_HEADER_BYTES = 32;

/** Token id storage: u16 when the vocab has at most 65536 ids, else u32. */
export type TokenDtype = "u16" | "u32";
/** A shard's ids in memory. */
export type TokenArray = Uint16Array | Uint32Array;

/** What a shard's header says. */
export interface ShardHeader {
  /** Format version. */
  version: number;
  /** Id storage type. */
  dtype: TokenDtype;
  /** Every id is below this. */
  vocabSize: number;
  /** Number of ids in the file. */
  count: number;
}

/** A whole shard in memory. */
export interface Shard {
  /** The header. */
  header: ShardHeader;
  /** The ids (a view over the file's bytes when the host is little-endian). */
  tokens: TokenArray;
}

/** Thrown for a file that is not a valid shard; the message names the file and what to do. */
export class ShardError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong, naming the file.
   */
  constructor(message: string) {
    super(message);
    this.name = "ShardError";
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The id storage type for a vocab size: u16 when every id fits in 16 bits.
 *
 * @param vocabSize Number of distinct ids.
 * @returns `"u16"` for vocabSize <= 65536, else `"u32"`.
 * @example
 * ```ts
 * dtypeForVocab(6400); // "u16"
 * dtypeForVocab(129280); // "u32"
 * ```
 */
export function dtypeForVocab(vocabSize: number): TokenDtype {
  return vocabSize <= 65536 ? "u16" : "u32";
}

function bytesPer(dtype: TokenDtype): number {
  return dtype === "u16" ? 2 : 4;
}

function encodeHeader(h: ShardHeader): Uint8Array {
  const out = new Uint8Array(SHARD_HEADER_BYTES);
  out.set(SHARD_MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, h.version, true);
  dv.setUint32(12, bytesPer(h.dtype), true);
  dv.setUint32(16, h.vocabSize, true);
  dv.setUint32(20, 0, true);
  dv.setUint32(24, h.count % 2 ** 32, true);
  dv.setUint32(28, Math.floor(h.count / 2 ** 32), true);
  return out;
}

/**
 * Parses and checks a shard header.
 *
 * @param bytes At least the first 32 bytes of the file.
 * @param path The file name, for error messages.
 * @returns The header.
 * @throws {ShardError} for a short file, a bad magic, an unknown version or dtype.
 * @example
 * ```ts
 * const h = parseShardHeader(bytes.subarray(0, 32), "data/train.bin");
 * ```
 */
export function parseShardHeader(bytes: Uint8Array, path: string): ShardHeader {
  if (bytes.length < SHARD_HEADER_BYTES) {
    throw new ShardError(
      `${path}: truncated shard: ${bytes.length} bytes, shorter than the ${SHARD_HEADER_BYTES}-byte ` +
        `header; re-run \`cli.ts prepare\``,
    );
  }
  for (let i = 0; i < SHARD_MAGIC.length; i++) {
    if (bytes[i] !== SHARD_MAGIC[i]) {
      throw new ShardError(
        `${path}: not a token shard (bad magic; expected "MDSTOK"); pass a train.bin/val.bin ` +
          `written by \`cli.ts prepare\``,
      );
    }
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, SHARD_HEADER_BYTES);
  const version = dv.getUint32(8, true);
  if (version !== SHARD_VERSION) {
    throw new ShardError(
      `${path}: shard format version ${version} is not supported (this code reads ` +
        `${SHARD_VERSION}); re-run \`cli.ts prepare\``,
    );
  }
  const width = dv.getUint32(12, true);
  if (width !== 2 && width !== 4) {
    throw new ShardError(`${path}: bad bytes-per-token field ${width} (expected 2 or 4)`);
  }
  const vocabSize = dv.getUint32(16, true);
  const count = dv.getUint32(24, true) + dv.getUint32(28, true) * 2 ** 32;
  if (!Number.isSafeInteger(count)) throw new ShardError(`${path}: token count ${count} too large`);
  return { version, dtype: width === 2 ? "u16" : "u32", vocabSize, count };
}

function viewTokens(bytes: Uint8Array, dtype: TokenDtype, count: number): TokenArray {
  const nbytes = count * bytesPer(dtype);
  // Copy when unaligned or big-endian; otherwise a zero-copy view.
  let src = bytes;
  if (bytes.byteOffset % 4 !== 0 || !LITTLE_ENDIAN) src = bytes.slice(0, nbytes);
  const arr = dtype === "u16"
    ? new Uint16Array(src.buffer, src.byteOffset, count)
    : new Uint32Array(src.buffer, src.byteOffset, count);
  if (!LITTLE_ENDIAN) {
    const dv = new DataView(src.buffer, src.byteOffset, nbytes);
    for (let i = 0; i < count; i++) {
      arr[i] = dtype === "u16" ? dv.getUint16(2 * i, true) : dv.getUint32(4 * i, true);
    }
  }
  return arr;
}

/**
 * Checks every id of a token array against the vocab size.
 *
 * @param tokens The ids.
 * @param vocabSize Ids must be below this.
 * @param where A prefix for the error message (usually the file name).
 * @param baseIndex The index of `tokens[0]` in the whole shard, for the message.
 * @throws {ShardError} naming the first out-of-range id and its index.
 * @example
 * ```ts
 * validateTokens(new Uint16Array([1, 2, 3]), 4, "train.bin"); // ok
 * ```
 */
export function validateTokens(
  tokens: ArrayLike<number>,
  vocabSize: number,
  where: string,
  baseIndex = 0,
): void {
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!(t >= 0 && t < vocabSize && Number.isInteger(t))) {
      throw new ShardError(
        `${where}: token ${t} at index ${baseIndex + i} is not an id below the vocab size ` +
          `${vocabSize}; was it tokenized with another tokenizer? re-run \`cli.ts prepare\``,
      );
    }
  }
}

/**
 * Reads a whole shard into memory and checks it: magic, version, that the file length matches
 * the count in the header, and (unless `validate: false`) that every id is below the vocab size.
 *
 * @param path The shard file.
 * @param options `validate` (default true): scan the ids for out-of-range values.
 * @returns The header and the ids.
 * @throws {ShardError} for a bad magic, a truncated file or an out-of-range id.
 * @throws {Deno.errors.NotFound} when the file does not exist.
 * @example
 * ```ts
 * const { header, tokens } = await readShard("data/train.bin");
 * console.log(header.count === tokens.length); // true
 * ```
 */
export async function readShard(
  path: string,
  options: { validate?: boolean } = {},
): Promise<Shard> {
  const bytes = await Deno.readFile(path);
  const header = parseShardHeader(bytes, path);
  checkLength(path, header, bytes.length);
  const tokens = viewTokens(bytes.subarray(SHARD_HEADER_BYTES), header.dtype, header.count);
  if (options.validate ?? true) validateTokens(tokens, header.vocabSize, path);
  return { header, tokens };
}

function checkLength(path: string, h: ShardHeader, fileBytes: number): void {
  const want = SHARD_HEADER_BYTES + h.count * bytesPer(h.dtype);
  if (fileBytes !== want) {
    const what = fileBytes < want ? "truncated shard" : "shard has trailing bytes";
    throw new ShardError(
      `${path}: ${what}: header says ${h.count} ${h.dtype} tokens (${want} bytes) but the file ` +
        `has ${fileBytes} bytes; re-run \`cli.ts prepare\``,
    );
  }
}

/**
 * Reads only a shard's header (and checks the file length against it).
 *
 * @param path The shard file.
 * @returns The header.
 * @throws {ShardError} for a bad magic or a truncated file.
 * @example
 * ```ts
 * const { count, vocabSize } = await readShardHeader("data/val.bin");
 * ```
 */
export async function readShardHeader(path: string): Promise<ShardHeader> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(SHARD_HEADER_BYTES);
    const n = await readFull(f, buf);
    const header = parseShardHeader(buf.subarray(0, n), path);
    checkLength(path, header, (await f.stat()).size);
    return header;
  } finally {
    f.close();
  }
}

/**
 * Reads `count` ids starting at id index `start`, without loading the rest of the file.
 *
 * @param path The shard file.
 * @param range `start` (id index) and `count` (ids; clipped at the end of the shard).
 * @returns The ids of the range, checked against the vocab size.
 * @throws {ShardError} for a bad header, a truncated file, an out-of-range id, or a `start`
 *   outside the shard.
 * @example
 * ```ts
 * const first = await readShardRange("data/train.bin", { start: 0, count: 1024 });
 * ```
 */
export async function readShardRange(
  path: string,
  range: { start: number; count: number },
): Promise<TokenArray> {
  const f = await Deno.open(path, { read: true });
  try {
    const hb = new Uint8Array(SHARD_HEADER_BYTES);
    const header = parseShardHeader(hb.subarray(0, await readFull(f, hb)), path);
    checkLength(path, header, (await f.stat()).size);
    const { start } = range;
    if (!Number.isInteger(start) || start < 0 || start > header.count) {
      throw new ShardError(`${path}: range start ${start} is outside [0, ${header.count}]`);
    }
    const count = Math.max(0, Math.min(range.count, header.count - start));
    const w = bytesPer(header.dtype);
    await f.seek(SHARD_HEADER_BYTES + start * w, Deno.SeekMode.Start);
    const buf = new Uint8Array(count * w);
    const n = await readFull(f, buf);
    if (n !== buf.length) throw new ShardError(`${path}: truncated shard while reading a range`);
    const tokens = viewTokens(buf, header.dtype, count);
    validateTokens(tokens, header.vocabSize, path, start);
    return tokens;
  } finally {
    f.close();
  }
}

/**
 * Streams token ids into a new shard. Ids are buffered and written in large blocks; `close()`
 * writes the final count into the header, fsyncs, and renames the temporary file into place.
 *
 * @example
 * ```ts
 * const w = await ShardWriter.create("data/train.bin", { vocabSize: 6400 });
 * await w.append([5, 17, 2]);
 * await w.close(); // data/train.bin now holds 3 u16 ids
 * ```
 */
export class ShardWriter {
  /** Ids written so far. */
  count = 0;
  readonly #file: Deno.FsFile;
  readonly #tmp: string;
  readonly #buf: TokenArray;
  readonly #bytes: Uint8Array;
  #fill = 0;
  #closed = false;

  private constructor(
    file: Deno.FsFile,
    tmp: string,
    readonly path: string,
    readonly vocabSize: number,
    readonly dtype: TokenDtype,
    bufferTokens: number,
  ) {
    this.#file = file;
    this.#tmp = tmp;
    this.#buf = dtype === "u16" ? new Uint16Array(bufferTokens) : new Uint32Array(bufferTokens);
    this.#bytes = new Uint8Array(this.#buf.buffer);
  }

  /**
   * Starts a shard at `path` (written as `path.tmp-<pid>` until `close()`).
   *
   * @param path The final file name.
   * @param options `vocabSize` (required; ids must be below it), `dtype` (default: u16 when the
   *   vocab fits), `bufferTokens` (ids buffered before a write; default 1 Mi).
   * @returns The open writer.
   * @throws {ShardError} for a vocab that does not fit the dtype.
   * @example
   * ```ts
   * const w = await ShardWriter.create("val.bin", { vocabSize: 6400 });
   * ```
   */
  static async create(
    path: string,
    options: { vocabSize: number; dtype?: TokenDtype; bufferTokens?: number },
  ): Promise<ShardWriter> {
    const { vocabSize } = options;
    const dtype = options.dtype ?? dtypeForVocab(vocabSize);
    if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 32) {
      throw new ShardError(`${path}: vocab size ${vocabSize} must be an integer in [1, 2^32]`);
    }
    if (dtype === "u16" && vocabSize > 65536) {
      throw new ShardError(`${path}: vocab size ${vocabSize} does not fit u16 ids; use dtype u32`);
    }
    if (!LITTLE_ENDIAN) throw new ShardError(`${path}: writing shards needs a little-endian host`);
    const tmp = `${path}.tmp-${Deno.pid}`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    await writeAll(file, encodeHeader({ version: SHARD_VERSION, dtype, vocabSize, count: 0 }));
    return new ShardWriter(file, tmp, path, vocabSize, dtype, options.bufferTokens ?? 1 << 20);
  }

  /**
   * Appends ids to the shard.
   *
   * @param ids Token ids, each an integer below the vocab size.
   * @throws {ShardError} for an out-of-range id (naming its index in the shard) or after close.
   * @example
   * ```ts
   * await w.append(tokenizer.encode("hello"));
   * ```
   */
  async append(ids: ArrayLike<number>): Promise<void> {
    if (this.#closed) throw new ShardError(`${this.path}: append after close()`);
    validateTokens(ids, this.vocabSize, this.path, this.count);
    for (let i = 0; i < ids.length; i++) {
      this.#buf[this.#fill++] = ids[i];
      if (this.#fill === this.#buf.length) await this.#flush();
    }
    this.count += ids.length;
  }

  async #flush(): Promise<void> {
    await writeAll(this.#file, this.#bytes.subarray(0, this.#fill * bytesPer(this.dtype)));
    this.#fill = 0;
  }

  /**
   * Writes the remaining ids and the final count, fsyncs, and moves the file into place.
   *
   * @returns The header of the finished shard.
   * @example
   * ```ts
   * const { count } = await w.close();
   * ```
   */
  async close(): Promise<ShardHeader> {
    if (this.#closed) throw new ShardError(`${this.path}: close() called twice`);
    this.#closed = true;
    const header = {
      version: SHARD_VERSION,
      dtype: this.dtype,
      vocabSize: this.vocabSize,
      count: this.count,
    };
    try {
      await this.#flush();
      await this.#file.seek(0, Deno.SeekMode.Start);
      await writeAll(this.#file, encodeHeader(header));
      await this.#file.sync();
    } finally {
      this.#file.close();
    }
    await Deno.rename(this.#tmp, this.path);
    await syncDir(dirname(this.path));
    return header;
  }

  /**
   * Drops the partial shard (closes and deletes the temporary file).
   *
   * @example
   * ```ts
   * try { await fill(w); } catch (e) { await w.abort(); throw e; }
   * ```
   */
  async abort(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
    await Deno.remove(this.#tmp).catch(() => {});
  }
}

/**
 * Writes a whole id array as a shard in one call.
 *
 * @param path The file to write.
 * @param tokens The ids.
 * @param options `vocabSize` and optional `dtype`, as {@linkcode ShardWriter.create}.
 * @returns The header written.
 * @throws {ShardError} for an out-of-range id.
 * @example
 * ```ts
 * await writeShard("tiny.bin", [1, 2, 3], { vocabSize: 4 });
 * ```
 */
export async function writeShard(
  path: string,
  tokens: ArrayLike<number>,
  options: { vocabSize: number; dtype?: TokenDtype },
): Promise<ShardHeader> {
  const w = await ShardWriter.create(path, options);
  try {
    await w.append(tokens);
  } catch (e) {
    await w.abort();
    throw e;
  }
  return await w.close();
}
