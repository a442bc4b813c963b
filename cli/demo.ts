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

function positive(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("expected a positive number");
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
    .option(
      "--scale <x>",
      "corpus scale (world size and document counts; 1 = the default world)",
      positive,
      1,
    )
    .option("--preset <name>", "model preset", "nano")
    // The budget (10 minutes on a 2-core lavapipe machine) at ~1.1 s per nano pretraining step,
    // ~1.65 s per SFT step and ~1.8 s per DPO step: ~260 s pretraining, ~180 s SFT, ~90 s DPO
    // (reference pass included), ~35 s evaluating three checkpoints. 400 pretraining steps
    // alone would take ~7.5 minutes.
    .option("--pretrain-steps <n>", "pretraining steps", int, 220)
    .option("--batch-size <n>", "sequences per batch", int, 8)
    .option("--seq-len <n>", "tokens per sequence", int, 128)
    .option("--vocab-size <n>", "tokenizer vocabulary target", int, 6400)
    .option("--sft-steps <n>", "SFT steps", int, 100)
    .option(
      "--sft-batch-size <n>",
      "SFT rows of 512 positions per step (packed conversations)",
      int,
      4,
    )
    .option("--sft-lr <x>", "SFT peak learning rate", positive, 2e-3)
    .option("--dpo-steps <n>", "DPO steps", int, 30)
    .option("--dpo-batch-size <n>", "DPO preference pairs per step", int, 8)
    .option("--dpo-lr <x>", "DPO peak learning rate", positive, 2e-4)
    .option("--dpo-beta <x>", "DPO temperature beta", positive, 0.1)
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
        sftSteps: o.sftSteps,
        sftBatchSize: o.sftBatchSize,
        sftLr: o.sftLr,
        dpoSteps: o.dpoSteps,
        dpoBatchSize: o.dpoBatchSize,
        dpoLr: o.dpoLr,
        dpoBeta: o.dpoBeta,
      });
    });
}
