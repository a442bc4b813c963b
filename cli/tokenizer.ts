/**
 * `cli.ts tokenizer`: train a tokenizer on text / JSONL files, and encode text with one.
 *
 * ```sh
 * deno run -A cli.ts tokenizer train --input data/*.jsonl --vocab-size 6400 --out runs/tokenizer
 * deno run -A cli.ts tokenizer encode --tokenizer runs/tokenizer --text "Hello 世界"
 * ```
 *
 * @module
 */

import { Command, InvalidArgumentError } from "commander";
import cliProgress from "cli-progress";
import {
  DEFAULT_MODEL_MAX_LENGTH,
  DEFAULT_VOCAB_SIZE,
  loadTokenizer,
  minVocabSize,
  saveTokenizer,
  type TrainFilesProgress,
  trainTokenizerFromFiles,
} from "../tokenizer/mod.ts";

/** The parts of a cli-progress bar used here (the package ships no types). */
interface ProgressBar {
  start(total: number, value: number, payload?: Record<string, unknown>): void;
  update(value: number, payload?: Record<string, unknown>): void;
  setTotal(total: number): void;
  stop(): void;
}

function intOption(flag: string, min: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) {
      throw new InvalidArgumentError(`${flag} must be an integer >= ${min}, got "${value}"`);
    }
    return n;
  };
}

function makeBar(): ProgressBar {
  // deno-lint-ignore no-explicit-any
  const lib = cliProgress as any;
  return new lib.SingleBar(
    {
      format: "{phase} [{bar}] {percentage}% | {value}/{total} {unit} | {duration_formatted}",
      hideCursor: true,
      stream: {
        write: (s: string) => Deno.stderr.writeSync(new TextEncoder().encode(s)),
        isTTY: Deno.stderr.isTerminal(),
      },
    },
    lib.Presets.shades_classic,
  ) as ProgressBar;
}

/** A token's text as JSON, or its bytes in hex when they are not whole UTF-8 characters. */
function showToken(bytes: Uint8Array): string {
  try {
    return JSON.stringify(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return `<${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ")}>`;
  }
}

interface TrainFlags {
  input: string[];
  vocabSize: number;
  out: string;
  minFrequency: number;
  textField: string;
  modelMaxLength: number;
  progress: boolean;
}

interface EncodeFlags {
  tokenizer: string;
  text?: string;
  file?: string;
  allowSpecial: boolean;
  tokens: boolean;
}

/**
 * Builds the `tokenizer` command with its `train` and `encode` subcommands.
 *
 * @returns A commander `Command` to add to the main program (`program.addCommand(...)`).
 * @example
 * ```ts ignore
 * import { Command } from "commander";
 * import { tokenizerCommand } from "./cli/tokenizer.ts";
 * await new Command("cli").addCommand(tokenizerCommand()).parseAsync(Deno.args, { from: "user" });
 * ```
 */
export function tokenizerCommand(): Command {
  const cmd = new Command("tokenizer").description(
    "train a byte-level BPE tokenizer, or encode text with one",
  );

  cmd.command("train")
    .description(
      'train on UTF-8 text files and JSONL files ({"text": ...} per line); writes ' +
        "tokenizer.json and tokenizer_config.json to --out",
    )
    .requiredOption(
      "--input <files...>",
      "training files (.jsonl / .ndjson as JSONL, others as text)",
    )
    .requiredOption("--out <dir>", "output directory")
    .option(
      "--vocab-size <n>",
      `vocabulary size, counting the 256 byte tokens and the special tokens (at least ${minVocabSize()})`,
      intOption("--vocab-size", minVocabSize()),
      DEFAULT_VOCAB_SIZE,
    )
    .option(
      "--min-frequency <n>",
      "never merge pairs seen fewer times",
      intOption("--min-frequency", 1),
      2,
    )
    .option("--text-field <name>", "JSONL field that holds the text", "text")
    .option(
      "--model-max-length <n>",
      "model_max_length written to tokenizer_config.json",
      intOption("--model-max-length", 1),
      DEFAULT_MODEL_MAX_LENGTH,
    )
    .option("--no-progress", "do not draw a progress bar")
    .action(async (flags: TrainFlags, self: Command) => {
      const bar = flags.progress ? makeBar() : undefined;
      let phase = "";
      const onProgress = (p: TrainFilesProgress) => {
        if (!bar) return;
        const [value, total, unit] = p.phase === "read"
          ? [p.bytes, p.totalBytes, "bytes"]
          : [p.merges, p.totalMerges, "merges"];
        if (p.phase !== phase) {
          if (phase) bar.stop();
          phase = p.phase;
          bar.start(total, value, { phase: phase === "read" ? "read " : "merge", unit });
        } else bar.update(value);
      };
      const t0 = performance.now();
      let tok;
      try {
        tok = await trainTokenizerFromFiles(flags.input, {
          vocabSize: flags.vocabSize,
          minFrequency: flags.minFrequency,
          textField: flags.textField,
          onProgress,
        });
      } catch (e) {
        bar?.stop();
        self.error(`error: ${(e as Error).message}`);
      }
      bar?.stop();
      const files = await saveTokenizer(tok, flags.out, { modelMaxLength: flags.modelMaxLength });
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      console.log(`trained ${tok.vocabSize} tokens (${tok.merges.length} merges) in ${seconds} s`);
      if (tok.vocabSize < flags.vocabSize) {
        console.log(
          `warning: the corpus ran out of pairs seen >= ${flags.minFrequency} times, so the ` +
            `vocabulary has ${tok.vocabSize} tokens, not ${flags.vocabSize}; use more text or ` +
            `--min-frequency 1`,
        );
      }
      for (const f of files) console.log(`wrote ${f}`);
    });

  cmd.command("encode")
    .description("print the token ids of a text (from --text or --file)")
    .requiredOption("--tokenizer <dir>", "directory with tokenizer.json")
    .option("--text <text>", "text to encode")
    .option("--file <path>", "UTF-8 file to encode")
    .option("--allow-special", "recognize special tokens such as <|im_end|> in the text", false)
    .option("--tokens", "print one token per line (id, then the token's text as JSON)", false)
    .action(async (flags: EncodeFlags, self: Command) => {
      if ((flags.text === undefined) === (flags.file === undefined)) {
        self.error("error: pass exactly one of --text T or --file F");
      }
      let text: string;
      let tok;
      try {
        text = flags.text ?? await Deno.readTextFile(flags.file!);
        tok = await loadTokenizer(flags.tokenizer);
      } catch (e) {
        self.error(`error: ${(e as Error).message}`);
      }
      const ids = tok.encode(text, { allowedSpecial: flags.allowSpecial ? "all" : "none" });
      if (flags.tokens) {
        for (const id of ids) console.log(`${id}\t${showToken(tok.tokenBytes(id))}`);
      } else {
        console.log(JSON.stringify(ids));
      }
      const chars = [...text].length;
      console.error(
        `${ids.length} tokens, ${chars} characters (${
          (chars / Math.max(1, ids.length)).toFixed(2)
        } chars/token)`,
      );
    });

  return cmd;
}
