/**
 * JSONL (one JSON value per line) reading and writing, streamed so files larger than memory work.
 *
 * The reader splits lines on bytes (`\n` or `\r\n`; a leading BOM and blank lines are skipped) and
 * decodes each line as UTF-8 on its own, so a line of invalid UTF-8 or binary is one bad line like
 * any other; it parses each line and optionally checks it against a schema. A bad line is
 * reported as `file:line: reason`; by default the first one throws, with `skipBad` the reader goes
 * on and counts them.
 *
 * Left out: JSON values spanning several lines, compressed input.
 *
 * @module
 */
import { writeAll } from "./_fs.ts";

/** One parsed line. */
export interface JsonlRecord<T> {
  /** The parsed (and checked) value. */
  value: T;
  /** 1-based line number in the file. */
  line: number;
}

/**
 * A schema check: returns `undefined` for a good value, else the reason it is bad
 * (e.g. `missing field "text"`).
 */
export type JsonlCheck = (value: unknown) => string | undefined;

/** Thrown for a malformed line; `message` is `file:line: reason`. */
export class JsonlError extends Error {
  /**
   * Creates the error.
   *
   * @param file The file name.
   * @param line The 1-based line number.
   * @param reason What is wrong with the line.
   */
  constructor(readonly file: string, readonly line: number, readonly reason: string) {
    super(`${file}:${line}: ${reason}`);
    this.name = "JsonlError";
  }
}

/** Options of {@linkcode readJsonl}. */
export interface ReadJsonlOptions {
  /** Schema check applied to each parsed value (see {@linkcode fieldCheck}). */
  check?: JsonlCheck;
  /** Go on after a bad line and count it instead of throwing (default false). */
  skipBad?: boolean;
  /** Called for each skipped bad line with its `file:line: reason` message. */
  onBad?: (error: JsonlError) => void;
}

/** The reader: iterate it once; `bad`, `lines` and `firstErrors` fill in as it goes. */
export interface JsonlStream<T> extends AsyncIterable<JsonlRecord<T>> {
  /** Bad lines skipped so far (only with `skipBad`). */
  readonly bad: number;
  /** Lines read so far (blank ones included). */
  readonly lines: number;
  /** Messages of the first (up to 10) skipped bad lines. */
  readonly firstErrors: readonly string[];
}

const MAX_LINE_PREVIEW = 60;

/**
 * Splits a stream of text chunks into lines (without the `\n` / `\r\n` ending).
 *
 * @param chunks Decoded text chunks.
 * @returns The lines, the last one even without a trailing newline.
 * @example
 * ```ts
 * for await (const line of splitLines(file.readable.pipeThrough(new TextDecoderStream()))) {}
 * ```
 */
export async function* splitLines(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of chunks) {
    const text = rest + chunk;
    let start = 0;
    // Search only the new chunk: `rest` has no newline (keeps a very long line linear).
    for (let nl = text.indexOf("\n", rest.length); nl >= 0; nl = text.indexOf("\n", start)) {
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      yield text.slice(start, end);
      start = nl + 1;
    }
    rest = text.slice(start);
  }
  if (rest.length > 0) yield rest.endsWith("\r") ? rest.slice(0, -1) : rest;
}

/** One line of a file read by {@linkcode readTextLines}. */
export interface TextLine {
  /** 1-based line number. */
  line: number;
  /** The decoded line (without its `\n` / `\r\n`), or null when it is not valid UTF-8. */
  text: string | null;
  /** Why `text` is null: `not valid UTF-8 (byte 0xff at column 7)`; else undefined. */
  error?: string;
}

/**
 * Opens a file for reading with errors that name it: a missing file, a directory, no permission.
 *
 * @param path The file.
 * @param what What the file should be, for the message (`a JSONL file`).
 * @returns The open file.
 * @throws {Error} `data/: is a directory, not a JSONL file; pass a file (e.g. data/*.jsonl)`.
 */
export async function openForReading(path: string, what = "a file"): Promise<Deno.FsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`${path}: no such file (expected ${what})`);
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new Deno.errors.PermissionDenied(`${path}: permission denied (expected ${what})`);
    }
    throw new Error(`${path}: cannot open ${what} (${(e as Error).message})`);
  }
  const info = await file.stat();
  if (info.isDirectory) {
    file.close();
    const dir = path.replace(/[\\/]+$/, "");
    throw new Error(`${path}: is a directory, not ${what}; pass its files (e.g. ${dir}/*)`);
  }
  return file;
}

/**
 * Streams a file's lines, decoding each line on its own (`\n` or `\r\n` endings, a BOM on the
 * first line dropped), so one line of invalid UTF-8 is reported with its number, and a caller
 * may skip it and go on. Memory is one chunk plus the longest line.
 *
 * @param path The file.
 * @param options `what` the file should be, for open errors (default "a file").
 * @returns The lines; `text` is null (and `error` says why) for a line that is not valid UTF-8.
 * @throws {Error} naming the file when it is missing, a directory or unreadable.
 * @example
 * ```ts
 * for await (const { line, text, error } of readTextLines("corpus.txt")) {
 *   if (text === null) console.warn(`corpus.txt:${line}: ${error}`);
 * }
 * ```
 */
export async function* readTextLines(
  path: string,
  options: { what?: string } = {},
): AsyncGenerator<TextLine> {
  const file = await openForReading(path, options.what);
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let line = 0;
  const decode = (bytes: Uint8Array): TextLine => {
    line++;
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === 13) end--;
    let start = 0;
    if (line === 1 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3;
    const body = bytes.subarray(start, end);
    try {
      return { line, text: decoder.decode(body) };
    } catch {
      return { line, text: null, error: `not valid UTF-8 (${firstInvalidByte(body)})` };
    }
  };
  let rest: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of file.readable) {
      let data: Uint8Array = chunk;
      if (rest.length > 0) {
        data = new Uint8Array(rest.length + chunk.length);
        data.set(rest);
        data.set(chunk, rest.length);
      }
      let start = 0;
      // Search only the new chunk: `rest` has no newline (keeps a very long line linear).
      for (let nl = data.indexOf(10, rest.length); nl >= 0; nl = data.indexOf(10, start)) {
        yield decode(data.subarray(start, nl));
        start = nl + 1;
      }
      rest = data.slice(start);
    }
    if (rest.length > 0) yield decode(rest);
  } catch (e) {
    if (e instanceof Error && !e.message.includes(path)) {
      throw new Error(`${path}:${line + 1}: cannot read (${e.message})`);
    }
    throw e;
  }
}

/** Where the first invalid UTF-8 sequence of `bytes` starts: `byte 0xff at column 7`. */
function firstInvalidByte(bytes: Uint8Array): string {
  const d = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  // Grow a valid prefix by whole code points: cheap enough for an error path.
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    const n = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    try {
      d.decode(bytes.subarray(i, i + n));
    } catch {
      return `byte 0x${b.toString(16).padStart(2, "0")} at column ${i + 1}; is it a binary ` +
        `file or another encoding? Convert it to UTF-8`;
    }
    i += n;
  }
  return "truncated sequence at the end of the line";
}

/**
 * Streams a JSONL file: yields `{ value, line }` per non-blank line.
 *
 * @param path The file.
 * @param options `check`, `skipBad`, `onBad`.
 * @returns An async iterable with running `bad` / `lines` counts.
 * @throws {JsonlError} (while iterating) for the first bad line unless `skipBad`:
 *   `data.jsonl:12: invalid JSON (Unexpected token ...)`, `data.jsonl:3: not valid UTF-8 (...)`,
 *   or the check's reason.
 * @throws {Deno.errors.NotFound} (while iterating) when the file does not exist; an Error naming
 *   the path for a directory.
 * @example
 * ```ts
 * const docs = readJsonl<{ text: string }>("corpus.jsonl", { check: fieldCheck({ text: "string" }) });
 * for await (const { value, line } of docs) console.log(line, value.text.length);
 * console.log(`${docs.bad} bad lines`);
 * ```
 */
export function readJsonl<T = unknown>(
  path: string,
  options: ReadJsonlOptions = {},
): JsonlStream<T> {
  let bad = 0, lines = 0;
  const firstErrors: string[] = [];
  async function* iterate(): AsyncGenerator<JsonlRecord<T>> {
    for await (const { line, text: raw, error } of readTextLines(path, { what: "a JSONL file" })) {
      lines = line;
      if (raw !== null && raw.trim().length === 0) continue;
      let value: unknown;
      let reason: string | undefined = error;
      if (raw !== null) {
        try {
          value = JSON.parse(raw);
        } catch (e) {
          const preview = raw.length > MAX_LINE_PREVIEW
            ? raw.slice(0, MAX_LINE_PREVIEW) + "..."
            : raw;
          reason = `invalid JSON (${(e as Error).message}): ${JSON.stringify(preview)}`;
        }
      }
      if (reason === undefined && options.check) reason = options.check(value);
      if (reason !== undefined) {
        const err = new JsonlError(path, line, reason);
        if (!options.skipBad) throw err;
        bad++;
        if (firstErrors.length < 10) firstErrors.push(err.message);
        options.onBad?.(err);
        continue;
      }
      yield { value: value as T, line };
    }
  }
  return {
    get bad() {
      return bad;
    },
    get lines() {
      return lines;
    },
    firstErrors,
    [Symbol.asyncIterator]: iterate,
  };
}

/** Field types {@linkcode fieldCheck} knows. */
export type FieldType = "string" | "number" | "boolean" | "object" | "array";

/**
 * Builds a schema check requiring an object with the given fields and types.
 *
 * @param fields Field name -> expected type.
 * @returns A {@linkcode JsonlCheck}.
 * @example
 * ```ts
 * const check = fieldCheck({ text: "string" });
 * check({ text: "hi" }); // undefined
 * check({ txt: "hi" }); // 'missing field "text" (expected a string)'
 * check({ text: 3 }); // 'field "text" must be a string, got number'
 * ```
 */
export function fieldCheck(fields: Record<string, FieldType>): JsonlCheck {
  return (value) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return `expected a JSON object, got ${typeName(value)}`;
    }
    const obj = value as Record<string, unknown>;
    for (const [name, type] of Object.entries(fields)) {
      if (!(name in obj)) return `missing field "${name}" (expected ${article(type)})`;
      const got = typeName(obj[name]);
      if (got !== type) return `field "${name}" must be ${article(type)}, got ${got}`;
    }
    return undefined;
  };
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/**
 * Appends JSON values to a file, one per line, buffered. Call `sync()` to make what was written
 * durable (e.g. at a checkpoint) and `close()` at the end.
 *
 * @example
 * ```ts
 * const w = await JsonlWriter.open("out.jsonl");
 * await w.write({ text: "hello" });
 * await w.close();
 * ```
 */
export class JsonlWriter {
  readonly #file: Deno.FsFile;
  readonly #enc = new TextEncoder();
  #pending: string[] = [];
  #pendingChars = 0;
  #closed = false;

  private constructor(file: Deno.FsFile, readonly path: string) {
    this.#file = file;
  }

  /**
   * Opens `path` for writing.
   *
   * @param path The file.
   * @param options `append` (default false: truncate).
   * @returns The writer.
   * @throws When the file cannot be opened (the OS error names the path).
   * @example
   * ```ts
   * const w = await JsonlWriter.open("metrics.jsonl", { append: true });
   * ```
   */
  static async open(path: string, options: { append?: boolean } = {}): Promise<JsonlWriter> {
    const append = options.append ?? false;
    const file = await Deno.open(path, {
      write: true,
      create: true,
      append,
      truncate: !append,
    });
    return new JsonlWriter(file, path);
  }

  /**
   * Queues one value as a line; writes once 64 KiB are queued.
   *
   * @param value Any JSON-serializable value.
   * @throws {TypeError} for a value JSON cannot represent, or after `close()`.
   * @example
   * ```ts
   * await w.write({ step: 1, loss: 2.5 });
   * ```
   */
  async write(value: unknown): Promise<void> {
    if (this.#closed) throw new TypeError(`${this.path}: write after close()`);
    const line = JSON.stringify(value);
    if (line === undefined) throw new TypeError(`${this.path}: value is not JSON-serializable`);
    this.#pending.push(line + "\n");
    this.#pendingChars += line.length + 1;
    if (this.#pendingChars >= 1 << 16) await this.flush();
  }

  /**
   * Writes queued lines to the file (no fsync).
   *
   * @example
   * ```ts
   * await w.flush();
   * ```
   */
  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const bytes = this.#enc.encode(this.#pending.join(""));
    this.#pending = [];
    this.#pendingChars = 0;
    try {
      await writeAll(this.#file, bytes);
    } catch (e) {
      throw new Error(`${this.path}: cannot write it (${(e as Error).message})`, { cause: e });
    }
  }

  /**
   * Writes queued lines and fsyncs the file.
   *
   * @example
   * ```ts
   * await w.sync(); // at a checkpoint
   * ```
   */
  async sync(): Promise<void> {
    await this.flush();
    await this.#file.sync();
  }

  /**
   * Syncs and closes the file.
   *
   * @example
   * ```ts
   * await w.close();
   * ```
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.sync();
    this.#closed = true;
    this.#file.close();
  }
}

/**
 * Writes an array of values as a JSONL file in one call.
 *
 * @param path The file (replaced).
 * @param values The values, one per line.
 * @example
 * ```ts
 * await writeJsonl("pairs.jsonl", [{ prompt: "hi", chosen: "a", rejected: "b" }]);
 * ```
 */
export async function writeJsonl(path: string, values: Iterable<unknown>): Promise<void> {
  const w = await JsonlWriter.open(path);
  for (const v of values) await w.write(v);
  await w.close();
}
