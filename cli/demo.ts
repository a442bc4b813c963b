/**
 * `cli.ts demo` (`deno task demo`): the whole pipeline on the built-in corpus.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "commander";
import { runDemo } from "../train/demo.ts";

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

/** Builds the `demo` subcommand. */
export function demoCommand(): Command {
  return new Command("demo")
    .description(
      "generate the built-in corpus, train the tokenizer, prepare shards, pretrain, " +
        "post-train and evaluate; prints one table (all outputs under --out)",
    )
    .option("--out <dir>", "run directory", "runs/demo")
    .option("--scale <n>", "corpus scale", int, 1)
    .option("--preset <name>", "model preset", "nano")
    .option("--pretrain-steps <n>", "pretraining steps", int, 400)
    .option("--batch-size <n>", "sequences per batch", int, 8)
    .option("--seq-len <n>", "tokens per sequence", int, 128)
    .option("--vocab-size <n>", "tokenizer vocabulary target", int, 6400)
    .option("--seed <n>", "seed of everything", int, 1234)
    .option("--no-progress", "plain log lines instead of progress bars")
    .action(async (o) => {
      await runDemo({
        out: o.out,
        scale: o.scale,
        preset: o.preset,
        pretrainSteps: o.pretrainSteps,
        batchSize: o.batchSize,
        seqLen: o.seqLen,
        vocabSize: o.vocabSize,
        seed: o.seed,
        progress: o.progress,
      });
    });
}
