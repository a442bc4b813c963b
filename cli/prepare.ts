/**
 * `cli.ts prepare`: tokenize a corpus into `train.bin` / `val.bin` token shards and `meta.json`.
 *
 *     deno run -A cli.ts prepare --input corpus.jsonl --tokenizer runs/tokenizer --out runs/data
 *
 * The work is {@linkcode prepareShards} in `train/prepare.ts`; this file only parses flags,
 * loads the tokenizer and prints progress and a summary.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "commander";
import { loadTokenizer } from "../tokenizer/io.ts";
import { type PrepareMeta, prepareShards } from "../train/prepare.ts";

function fraction(text: string): number {
  const v = Number(text);
  if (text.trim() === "" || !(v >= 0 && v < 1)) {
    throw new InvalidArgumentError(`expects a number in [0, 1), got '${text}'`);
  }
  return v;
}

function integer(text: string): number {
  const v = Number(text);
  if (text.trim() === "" || !Number.isSafeInteger(v)) {
    throw new InvalidArgumentError(`expects an integer, got '${text}'`);
  }
  return v;
}

/** The flags of `prepare`, as commander parses them. */
interface PrepareFlags {
  input: string[];
  tokenizer: string;
  out: string;
  valFraction: number;
  seed: number;
  skipBad: boolean;
  field: string;
  quiet: boolean;
}

/**
 * Prints a human summary of a prepared corpus.
 *
 * @param meta The meta.json content.
 * @param outDir Where the shards are.
 * @returns The summary lines.
 * @example
 * ```ts
 * console.log(summarizePrepare(meta, "runs/data"));
 * ```
 */
export function summarizePrepare(meta: PrepareMeta, outDir: string): string {
  const lines = [
    `wrote ${outDir}/train.bin: ${meta.train.tokens} tokens in ${meta.train.documents} documents`,
    `wrote ${outDir}/val.bin:   ${meta.val.tokens} tokens in ${meta.val.documents} documents`,
    `vocab ${meta.vocabSize} (${meta.dtype} ids), eos id ${meta.eosId}; ${outDir}/meta.json`,
  ];
  if (meta.badLines > 0) {
    lines.push(`skipped ${meta.badLines} bad lines, first ones:`);
    for (const m of meta.firstBadLines) lines.push(`  ${m}`);
  }
  for (const w of meta.warnings) lines.push(`warning: ${w}`);
  return lines.join("\n");
}

/**
 * Builds the `prepare` subcommand.
 *
 * @returns The command, to `addCommand` to the program.
 * @example
 * ```ts
 * program.addCommand(prepareCommand());
 * ```
 */
export function prepareCommand(): Command {
  return new Command("prepare")
    .description(
      'tokenize JSONL ({"text": ...} per line) or plain-text files (blank lines separate ' +
        "documents) into train.bin / val.bin token shards and meta.json; each document is " +
        "followed by the eos token and goes wholly to train or val",
    )
    .requiredOption("--input <files...>", "input files, read in order (.jsonl/.ndjson or text)")
    .requiredOption("--tokenizer <dir>", "tokenizer directory (tokenizer.json)")
    .requiredOption("--out <dir>", "output directory for train.bin, val.bin, meta.json")
    .option("--val-fraction <f>", "fraction of documents for val.bin", fraction, 0.01)
    .option("--seed <n>", "seed of the train/val split", integer, 0)
    .option("--skip-bad", "skip and count malformed JSONL lines instead of stopping", false)
    .option("--field <name>", "JSONL field holding the text", "text")
    .option("--quiet", "no progress lines", false)
    .action(async (flags: PrepareFlags) => {
      const tokenizer = await loadTokenizer(flags.tokenizer);
      const t0 = performance.now();
      const meta = await prepareShards({
        inputs: flags.input,
        tokenizer,
        tokenizerPath: flags.tokenizer,
        outDir: flags.out,
        valFraction: flags.valFraction,
        seed: flags.seed,
        skipBad: flags.skipBad,
        field: flags.field,
        progressEvery: 10_000,
        onProgress: flags.quiet ? undefined : ({ file, documents, tokens }) => {
          const s = (performance.now() - t0) / 1000;
          console.error(
            `prepare: ${file}: ${documents} documents, ${tokens} tokens (${s.toFixed(1)} s)`,
          );
        },
      });
      console.log(summarizePrepare(meta, flags.out));
    });
}
