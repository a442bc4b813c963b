/**
 * JSONL (one JSON value per line) reading and writing, streamed so files larger than memory work.
 *
 * The reader decodes UTF-8 with a `TextDecoderStream`, splits lines itself (`\n` or `\r\n`; a
 * leading BOM and blank lines are skipped), parses each line and optionally checks it against a
 * schema. A bad line is reported as `file:line: reason`; by default the first one throws, with
 * `skipBad` the reader goes on and counts them.
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

/**
 * Streams a JSONL file: yields `{ value, line }` per non-blank line.
 *
 * @param path The file.
 * @param options `check`, `skipBad`, `onBad`.
 * @returns An async iterable with running `bad` / `lines` counts.
 * @throws {JsonlError} (while iterating) for the first bad line unless `skipBad`:
 *   `data.jsonl:12: invalid JSON (Unexpected token ...)`, or the check's reason.
 * @throws {Deno.errors.NotFound} (while iterating) when the file does not exist.
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
    const file = await Deno.open(path, { read: true });
    const text = file.readable.pipeThrough(new TextDecoderStream("utf-8", { fatal: true }));
    try {
      for await (let raw of splitLines(text)) {
        lines++;
        if (lines === 1 && raw.charCodeAt(0) === 0xfeff) raw = raw.slice(1);
        if (raw.trim().length === 0) continue;
        let value: unknown;
        let reason: string | undefined;
        try {
          value = JSON.parse(raw);
        } catch (e) {
          const preview = raw.length > MAX_LINE_PREVIEW
            ? raw.slice(0, MAX_LINE_PREVIEW) + "..."
            : raw;
          reason = `invalid JSON (${(e as Error).message}): ${JSON.stringify(preview)}`;
        }
        if (reason === undefined && options.check) reason = options.check(value);
        if (reason !== undefined) {
          const err = new JsonlError(path, lines, reason);
          if (!options.skipBad) throw err;
          bad++;
          if (firstErrors.length < 10) firstErrors.push(err.message);
          options.onBad?.(err);
          continue;
        }
        yield { value: value as T, line: lines };
      }
    } catch (e) {
      if (e instanceof TypeError && /decode|invalid/i.test(e.message)) {
        throw new JsonlError(path, lines + 1, `not valid UTF-8 (${e.message})`);
      }
      throw e;
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
    await writeAll(this.#file, bytes);
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
