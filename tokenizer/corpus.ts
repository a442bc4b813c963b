/**
 * Training text from files: JSONL (`{"text": ...}` per line) or plain UTF-8 text, streamed in
 * pieces of about a megabyte so files of any size fit in memory, and the file-to-tokenizer trainer
 * built on it.
 *
 * This is the only module of `tokenizer/` that reads files. Plain text is cut only at points where
 * the pre-tokenizer could not join the two sides (`lastSafeCut`), so streaming gives exactly the
 * chunks of the whole file. Binary input (bytes that are not UTF-8, or NUL characters) stops with
 * an error that names the file and the byte offset.
 *
 * @module
 */

import { lastSafeCut } from "./pretokenize.ts";
import { minVocabSize, SPECIAL_TOKENS } from "./special_tokens.ts";
import { Tokenizer } from "./tokenizer.ts";
import {
  ChunkCounter,
  DEFAULT_VOCAB_SIZE,
  trainBpeFromCounts,
  type TrainOptions,
} from "./train.ts";

/** Options of {@linkcode readCorpus}. */
export interface ReadCorpusOptions {
  /** JSONL field holding the text (default `"text"`). */
  textField?: string;
  /** Called after each block read, with the bytes read so far across all files. */
  onBytes?: (bytesRead: number) => void;
  /** Read block size in bytes (default 1 MiB). */
  blockSize?: number;
}

const PLAIN_MAX_BUFFER = 16 << 20;

/**
 * Whether a path is read as JSONL (by extension: `.jsonl`, `.ndjson`).
 *
 * @param path File path.
 * @returns True for JSONL files.
 * @example
 * ```ts
 * import { isJsonlPath } from "./corpus.ts";
 * isJsonlPath("data/pretrain.jsonl"); // true
 * ```
 */
export function isJsonlPath(path: string): boolean {
  return /\.(jsonl|ndjson)$/i.test(path);
}

async function* readTextBlocks(
  path: string,
  blockSize: number,
  onRead: (n: number) => void,
): AsyncGenerator<string> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new Error(`cannot open training file ${path}: ${(e as Error).message}`);
  }
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  const buf = new Uint8Array(blockSize);
  let offset = 0;
  try {
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      let text: string;
      try {
        text = decoder.decode(buf.subarray(0, n), { stream: true });
      } catch {
        throw binaryError(path, offset + firstInvalidUtf8(buf.subarray(0, n)), "is not UTF-8 text");
      }
      const nul = text.indexOf("\0");
      if (nul >= 0) throw binaryError(path, offset, "contains NUL characters");
      offset += n;
      onRead(n);
      if (text.length > 0) yield text;
    }
    let tail: string;
    try {
      tail = decoder.decode();
    } catch {
      throw binaryError(path, offset, "ends in the middle of a UTF-8 character");
    }
    if (tail.length > 0) yield tail;
  } finally {
    file.close();
  }
}

function binaryError(path: string, offset: number, what: string): Error {
  return new Error(
    `training file ${path} ${what} (near byte ${offset}); it looks like a binary file. ` +
      `Pass UTF-8 text files or JSONL files with a "text" field`,
  );
}

/** Offset of the first byte that starts an ill-formed UTF-8 sequence (approximate: block-local). */
function firstInvalidUtf8(bytes: Uint8Array): number {
  const d = new TextDecoder("utf-8", { fatal: true });
  let lo = 0, hi = bytes.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    try {
      d.decode(bytes.subarray(0, mid), { stream: true });
      lo = mid;
    } catch {
      hi = mid - 1;
    }
  }
  return lo;
}

/**
 * Streams training text from files: one string per JSONL record, and pieces of plain text files
 * cut at safe points.
 *
 * @param paths Files to read, in order.
 * @param options See {@linkcode ReadCorpusOptions}.
 * @returns An async iterator of texts.
 * @throws {Error} Naming the file (and line for JSONL) on unreadable, binary or malformed input.
 * @example
 * ```ts ignore
 * for await (const text of readCorpus(["data/pretrain.jsonl"])) counter.add(text);
 * ```
 */
export async function* readCorpus(
  paths: readonly string[],
  options: ReadCorpusOptions = {},
): AsyncGenerator<string> {
  const field = options.textField ?? "text";
  const blockSize = options.blockSize ?? 1 << 20;
  let total = 0;
  const onRead = (n: number) => {
    total += n;
    options.onBytes?.(total);
  };
  for (const path of paths) {
    let pending = "";
    if (isJsonlPath(path)) {
      let line = 0;
      for await (const block of readTextBlocks(path, blockSize, onRead)) {
        pending += block;
        let start = 0;
        for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n", start)) {
          line++;
          const text = parseJsonlLine(pending.slice(start, nl), { path, line, field });
          if (text !== null) yield text;
          start = nl + 1;
        }
        pending = pending.slice(start);
      }
      if (pending.length > 0) {
        const text = parseJsonlLine(pending, { path, line: line + 1, field });
        if (text !== null) yield text;
      }
    } else {
      for await (const block of readTextBlocks(path, blockSize, onRead)) {
        pending += block;
        const cut = lastSafeCut(pending);
        if (cut > 0) {
          yield pending.slice(0, cut);
          pending = pending.slice(cut);
        } else if (pending.length > PLAIN_MAX_BUFFER) {
          yield pending; // a 16 MB run without a safe cut: split here, one chunk may differ
          pending = "";
        }
      }
      if (pending.length > 0) yield pending;
    }
  }
}

function parseJsonlLine(
  raw: string,
  where: { path: string; line: number; field: string },
): string | null {
  const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
  if (line.trim().length === 0) return null;
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch (e) {
    throw new Error(
      `${where.path}:${where.line}: not valid JSON (${(e as Error).message}); each line of a ` +
        `.jsonl file must be one JSON object such as {"${where.field}": "..."}`,
    );
  }
  const text = typeof record === "object" && record !== null
    ? (record as Record<string, unknown>)[where.field]
    : undefined;
  if (typeof text !== "string") {
    throw new Error(
      `${where.path}:${where.line}: expected a JSON object with a string "${where.field}" field` +
        (where.field === "text" ? " (use --text-field to read another field)" : ""),
    );
  }
  return text;
}

/** Progress of {@linkcode trainTokenizerFromFiles}. */
export type TrainFilesProgress =
  | { phase: "read"; bytes: number; totalBytes: number }
  | { phase: "merge"; merges: number; totalMerges: number };

/** Options of {@linkcode trainTokenizerFromFiles}. */
export interface TrainFilesOptions extends Omit<TrainOptions, "onProgress"> {
  /** JSONL field holding the text (default `"text"`). */
  textField?: string;
  /** Progress of reading, then of merging. */
  onProgress?: (progress: TrainFilesProgress) => void;
}

/**
 * Trains a tokenizer on text files and JSONL files.
 *
 * @param paths Input files (`.jsonl` / `.ndjson` read as JSONL, anything else as plain text).
 * @param options Vocabulary size, min frequency, special tokens, JSONL field, progress callback.
 * @returns The trained tokenizer.
 * @throws {Error} If no files are given, a file is missing, binary or malformed, the corpus holds
 *   no text, or `vocabSize` is below 256 + the number of special tokens.
 * @example
 * ```ts ignore
 * const tok = await trainTokenizerFromFiles(["corpus.jsonl"], { vocabSize: 6400 });
 * ```
 */
export async function trainTokenizerFromFiles(
  paths: readonly string[],
  options: TrainFilesOptions = {},
): Promise<Tokenizer> {
  if (paths.length === 0) {
    throw new Error(
      'no training files given: pass --input FILE... (JSONL with a "text" field or plain text)',
    );
  }
  const vocabSize = options.vocabSize ?? DEFAULT_VOCAB_SIZE;
  const numSpecial = (options.specialTokens ?? SPECIAL_TOKENS).length;
  if (!Number.isInteger(vocabSize) || vocabSize < minVocabSize(numSpecial)) {
    throw new Error(
      `--vocab-size ${vocabSize} is too small: it must be an integer of at least ` +
        `${minVocabSize(numSpecial)} (256 byte tokens + ${numSpecial} special tokens); ` +
        `try the default ${DEFAULT_VOCAB_SIZE}`,
    );
  }
  let totalBytes = 0;
  for (const path of paths) {
    try {
      totalBytes += (await Deno.stat(path)).size;
    } catch (e) {
      throw new Error(`cannot read training file ${path}: ${(e as Error).message}`);
    }
  }
  const counter = new ChunkCounter();
  const onBytes = (bytes: number) => options.onProgress?.({ phase: "read", bytes, totalBytes });
  for await (const text of readCorpus(paths, { textField: options.textField, onBytes })) {
    counter.add(text);
  }
  if (counter.counts.size === 0) {
    throw new Error(
      `the training corpus is empty: no text found in ${paths.join(", ")} ` +
        `(${totalBytes} bytes); pass files that contain text`,
    );
  }
  const data = trainBpeFromCounts(counter.counts, {
    ...options,
    onProgress: (p) => options.onProgress?.({ phase: "merge", ...p }),
  });
  return new Tokenizer(data);
}
