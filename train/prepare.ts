/**
 * Corpus preparation: text files -> tokenized documents -> `train.bin` / `val.bin` token shards
 * and a `meta.json`, streaming (inputs larger than memory are fine; only one document is held).
 *
 * Input formats, by file extension:
 * - `.jsonl`, `.ndjson` (the tokenizer trainer's rule, `isJsonlPath`): one JSON object per
 *   line; the document is its `text` field (or
 *   another `field`). Bad lines stop the run with `file:line: reason`, or are counted with
 *   `skipBad`.
 * - anything else: plain UTF-8 text where blank lines separate documents (paragraphs). A line
 *   that is not valid UTF-8 or holds a NUL byte (a binary file) stops the run with `file:line`,
 *   or is dropped and counted with `skipBad`.
 *
 * Every document is encoded and followed by the tokenizer's eos id. Documents are split between
 * train and val by a seeded hash of their index in the input stream (`hash32(seed, index)`), so
 * the split is deterministic, needs no second pass, and a document never straddles the two.
 *
 * @module
 */
import { isJsonlPath } from "../tokenizer/corpus.ts";
import { atomicWriteFile, join } from "./_fs.ts";
import { fieldCheck, JsonlError, readJsonl, readTextLines } from "./jsonl.ts";
import { hash32 } from "../random/rng.ts";
import { dtypeForVocab, type ShardHeader, ShardWriter, type TokenDtype } from "./shards.ts";

/** What preparation needs of a tokenizer (the project's `Tokenizer` fits). */
export interface TokenizerLike {
  /** Text -> ids (special-token spellings in the text are ordinary text). */
  encode(text: string): ArrayLike<number>;
  /** The id appended after every document. */
  readonly eosId: number;
  /** Ids are below this. */
  readonly vocabSize: number;
}

/** Options of {@linkcode prepareShards}. */
export interface PrepareOptions {
  /** Input files (JSONL or plain text), read in this order. */
  inputs: readonly string[];
  /** The tokenizer. */
  tokenizer: TokenizerLike;
  /** Output directory (created); gets train.bin, val.bin, meta.json. */
  outDir: string;
  /** Where the tokenizer came from, recorded in meta.json. */
  tokenizerPath?: string;
  /** Fraction of documents sent to val.bin (default 0.01). */
  valFraction?: number;
  /** Seed of the train/val split (default 0). */
  seed?: number;
  /** Count and skip malformed JSONL lines instead of stopping (default false). */
  skipBad?: boolean;
  /** JSONL field holding the text (default "text"). */
  field?: string;
  /** Called every `progressEvery` documents and at the end of each file. */
  onProgress?: (p: { file: string; documents: number; tokens: number }) => void;
  /** Documents between progress calls (default 1000). */
  progressEvery?: number;
}

/** Counts for one split. */
export interface SplitCounts {
  /** Documents. */
  documents: number;
  /** Tokens, eos included. */
  tokens: number;
}

/** The content of `meta.json`. */
export interface PrepareMeta {
  /** meta.json format version (1). */
  format: 1;
  /** Tokenizer location as given. */
  tokenizer: string | null;
  /** Vocab size (every id is below it). */
  vocabSize: number;
  /** The eos id appended after each document. */
  eosId: number;
  /** Id storage type of the shards. */
  dtype: TokenDtype;
  /** JSONL text field. */
  field: string;
  /** Split seed. */
  seed: number;
  /** Requested val fraction of documents. */
  valFraction: number;
  /** Per input file: path, format, documents, bad lines. */
  inputs: { path: string; format: "jsonl" | "text"; documents: number; badLines: number }[];
  /** train.bin counts. */
  train: SplitCounts;
  /** val.bin counts. */
  val: SplitCounts;
  /** Malformed JSONL lines skipped (with skipBad). */
  badLines: number;
  /** The first skipped lines' `file:line: reason` messages. */
  firstBadLines: string[];
  /** Things worth a look (e.g. an empty val split). */
  warnings: string[];
}

/** Thrown for bad preparation options. */
export class PrepareError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do.
   * @param options `cause`: the underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PrepareError";
  }
}

/** Plain text's documents (paragraphs); a line of invalid UTF-8 or with a NUL byte is bad. */
async function* textDocuments(
  path: string,
  skipBad: boolean,
  onBad: (e: JsonlError) => void,
): AsyncGenerator<string> {
  let para: string[] = [];
  for await (const { line, text, error } of readTextLines(path, { what: "a text file" })) {
    const reason = text === null
      ? error!
      : text.includes("\0")
      ? "has a NUL byte: is it a binary file? Pass UTF-8 text or JSONL"
      : undefined;
    if (reason !== undefined) {
      const err = new JsonlError(path, line, reason);
      if (!skipBad) throw err;
      onBad(err);
      continue;
    }
    if (text!.trim().length === 0) {
      if (para.length > 0) yield para.join("\n");
      para = [];
    } else para.push(text!);
  }
  if (para.length > 0) yield para.join("\n");
}

/**
 * Tokenizes input files into `train.bin`, `val.bin` and `meta.json` under `outDir`.
 *
 * @param options Inputs, tokenizer, output directory, split settings; see {@linkcode PrepareOptions}.
 * @returns The meta.json content.
 * @throws {PrepareError} for no inputs or a val fraction outside [0, 1).
 * @throws {JsonlError} for a malformed JSONL line (`file:line: reason`) unless `skipBad`.
 * @throws {ShardError} for an id the tokenizer produced at or above its vocab size.
 * @example
 * ```ts
 * const meta = await prepareShards({
 *   inputs: ["corpus.jsonl"],
 *   tokenizer: await loadTokenizer("runs/tokenizer"),
 *   tokenizerPath: "runs/tokenizer",
 *   outDir: "runs/data",
 *   seed: 1,
 * });
 * console.log(meta.train.tokens, meta.val.tokens);
 * ```
 */
export async function prepareShards(options: PrepareOptions): Promise<PrepareMeta> {
  const { inputs, tokenizer, outDir } = options;
  const valFraction = options.valFraction ?? 0.01;
  const seed = options.seed ?? 0;
  const field = options.field ?? "text";
  const every = options.progressEvery ?? 1000;
  if (inputs.length === 0) throw new PrepareError("prepare: no input files (pass --input FILE...)");
  // Every input is checked before any output is written, so a typo costs no partial shards.
  for (const path of inputs) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      throw new PrepareError(
        `prepare: --input ${path}: ${
          e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message
        }`,
      );
    }
    if (info.isDirectory) {
      throw new PrepareError(
        `prepare: --input ${path}: is a directory; pass its files (e.g. ` +
          `--input ${path.replace(/[\\/]+$/, "")}/*.jsonl)`,
      );
    }
  }
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new PrepareError(`prepare: --val-fraction must be in [0, 1), got ${valFraction}`);
  }
  if (!Number.isInteger(seed)) {
    throw new PrepareError(`prepare: --seed must be an integer, got ${seed}`);
  }
  const { vocabSize, eosId } = tokenizer;
  if (!(Number.isInteger(eosId) && eosId >= 0 && eosId < vocabSize)) {
    throw new PrepareError(
      `prepare: tokenizer eos id ${eosId} is not below its vocab size ${vocabSize}`,
    );
  }
  await Deno.mkdir(outDir, { recursive: true });
  const dtype = dtypeForVocab(vocabSize);
  const train = await ShardWriter.create(join(outDir, "train.bin"), { vocabSize, dtype });
  const val = await ShardWriter.create(join(outDir, "val.bin"), { vocabSize, dtype });
  const counts = { train: { documents: 0, tokens: 0 }, val: { documents: 0, tokens: 0 } };
  const meta: PrepareMeta = {
    format: 1,
    tokenizer: options.tokenizerPath ?? null,
    vocabSize,
    eosId,
    dtype,
    field,
    seed,
    valFraction,
    inputs: [],
    train: counts.train,
    val: counts.val,
    badLines: 0,
    firstBadLines: [],
    warnings: [],
  };
  const threshold = valFraction * 2 ** 32;
  let docIndex = 0;
  const eos = [eosId];
  let trainHeader: ShardHeader, valHeader: ShardHeader;
  try {
    for (const path of inputs) {
      const format = isJsonlPath(path) ? "jsonl" : "text";
      const entry = { path, format, documents: 0, badLines: 0 } as PrepareMeta["inputs"][number];
      meta.inputs.push(entry);
      let textBad = 0;
      const onTextBad = (e: JsonlError) => {
        textBad++;
        if (meta.firstBadLines.length < 10) meta.firstBadLines.push(e.message);
      };
      const jsonl = format === "jsonl"
        ? readJsonl<Record<string, string>>(path, {
          check: fieldCheck({ [field]: "string" }),
          skipBad: options.skipBad ?? false,
        })
        : null;
      const docs = jsonl
        ? (async function* () {
          for await (const r of jsonl) yield r.value[field];
        })()
        : textDocuments(path, options.skipBad ?? false, onTextBad);
      for await (const text of docs) {
        const ids = tokenizer.encode(text);
        const isVal = hash32(seed, docIndex++) < threshold;
        const [w, c] = isVal ? [val, counts.val] : [train, counts.train];
        await w.append(ids);
        await w.append(eos);
        c.documents++;
        c.tokens += ids.length + 1;
        entry.documents++;
        if (entry.documents % every === 0) {
          options.onProgress?.({
            file: path,
            documents: docIndex,
            tokens: train.count + val.count,
          });
        }
      }
      if (!jsonl) {
        entry.badLines = textBad;
        meta.badLines += textBad;
      } else {
        entry.badLines = jsonl.bad;
        meta.badLines += jsonl.bad;
        for (const m of jsonl.firstErrors) {
          if (meta.firstBadLines.length < 10) meta.firstBadLines.push(m);
        }
      }
      options.onProgress?.({ file: path, documents: docIndex, tokens: train.count + val.count });
    }
    trainHeader = await train.close();
    valHeader = await val.close();
  } catch (e) {
    await train.abort();
    await val.abort();
    if (e instanceof JsonlError || e instanceof PrepareError) throw e;
    // A write error (a full disk) names no file by itself.
    throw new PrepareError(
      `prepare: stopped (${(e as Error).message}); the partial shards in ${outDir} were removed`,
      { cause: e },
    );
  }
  if (trainHeader.count !== counts.train.tokens || valHeader.count !== counts.val.tokens) {
    throw new PrepareError("prepare: internal error: shard counts disagree with the tallies");
  }
  if (counts.train.documents === 0) meta.warnings.push("train split is empty: no documents found");
  if (valFraction > 0 && counts.val.documents === 0) {
    meta.warnings.push(
      `val split is empty: ${docIndex} documents and --val-fraction ${valFraction}; ` +
        `raise --val-fraction or add data`,
    );
  }
  await atomicWriteFile(
    join(outDir, "meta.json"),
    new TextEncoder().encode(JSON.stringify(meta, null, 2) + "\n"),
  );
  return meta;
}
