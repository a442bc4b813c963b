/**
 * `cli.ts demo` (`deno task demo`): the whole pipeline on the built-in corpus.
 *
 * @module
 */
import { addDeviceOption } from "./device.ts";
import { Command, InvalidArgumentError } from "commander";
import { type DemoOptions, runDemo } from "../train/demo.ts";

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

function nonNegative(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("expected a number >= 0");
  return n;
}

/** Step counts of `demo --full`: longer pretraining and SFT than the 10-minute default. */
export const FULL_RECIPE = Object.freeze({ pretrainSteps: 3000, sftSteps: 900 });

/** Builds the `demo` subcommand. */
export function demoCommand(): Command {
  return addDeviceOption(new Command("demo"))
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
    // The defaults fit 10 minutes on a 2-core CPU machine with the CPU backend; docs/DESIGN.md
    // ("The demo world") says why each is what it is.
    .option("--pretrain-steps <n>", "pretraining steps", int, 1500)
    .option("--batch-size <n>", "pretraining sequences per batch", int, 2)
    .option(
      "--seq-len <n>",
      "pretraining tokens per sequence (512: chat prompts with tools are ~250 tokens)",
      int,
      512,
    )
    .option(
      "--mtp",
      "also train V3's MTP module in pretraining (~75% more time per step at the nano size)",
      false,
    )
    .option("--vocab-size <n>", "tokenizer vocabulary target", int, 2048)
    .option("--sft-steps <n>", "SFT steps", int, 650)
    .option(
      "--sft-batch-size <n>",
      "SFT rows of 512 positions per step (packed conversations)",
      int,
      4,
    )
    .option("--sft-lr <x>", "SFT peak learning rate", positive, 2e-3)
    .option("--no-sft-replay", "SFT on the conversations alone (no replayed pretraining text)")
    .option(
      "--dpo-steps <n>",
      "DPO steps (120 x 8 pairs: two passes over the 500 train pairs; one pass lifted held-out " +
        "preference accuracy half as much)",
      int,
      120,
    )
    .option("--dpo-batch-size <n>", "DPO preference pairs per step", int, 8)
    .option("--dpo-lr <x>", "DPO peak learning rate", positive, 1e-4)
    .option("--dpo-beta <x>", "DPO temperature beta", positive, 0.3)
    .option("--no-dpo-replay", "DPO on the pairs alone (no replayed pretraining text)")
    .option(
      "--dpo-rpo-alpha <x>",
      "weight of the chosen replies' NLL added to the DPO loss (0: plain DPO; plain DPO lowered " +
        "the demo's QA accuracy by a third; 3 kept it within 0.06 of SFT's)",
      nonNegative,
      3,
    )
    .option(
      "--no-dpo-on-policy",
      "DPO on the written pairs as they are (default: each rejected turn becomes the SFT " +
        "model's own greedy reply where that differs from the chosen one)",
    )
    .option("--grpo-steps <n>", "GRPO steps after DPO", int, 60)
    .option("--no-grpo", "stop after DPO (no GRPO stage)")
    .option("--grpo-batch-size <n>", "GRPO prompts per step", int, 8)
    .option("--grpo-group <n>", "GRPO completions sampled per prompt", int, 8)
    .option("--grpo-lr <x>", "GRPO peak learning rate", positive, 5e-5)
    .option("--grpo-beta <x>", "GRPO KL weight to the DPO model", nonNegative, 0.04)
    .option("--grpo-max-tokens <n>", "GRPO most tokens per completion", int, 96)
    .option(
      "--full",
      `the longer recipe: ${FULL_RECIPE.pretrainSteps} pretraining and ${FULL_RECIPE.sftSteps} ` +
        "SFT steps unless given (a longer run for more accurate answers)",
      false,
    )
    .option("--seed <n>", "seed of everything", int, 1234)
    .option("--no-progress", "plain log lines instead of progress bars")
    .action(async (_o, cmd: Command) => {
      await runDemo(demoOptionsOf(cmd));
    });
}

/**
 * The demo's settings from a parsed `demo` command: `--full` sets the step counts the user left
 * at their defaults to {@linkcode FULL_RECIPE}'s.
 *
 * @example
 * ```ts ignore
 * const cmd = demoCommand().action(() => {});
 * cmd.parse(["--full", "--sft-steps", "300"], { from: "user" });
 * demoOptionsOf(cmd).pretrainSteps; // 3000 (sftSteps stays 300)
 * ```
 */
export function demoOptionsOf(cmd: Command): DemoOptions {
  const o = cmd.opts();
  const steps = (name: keyof typeof FULL_RECIPE): number =>
    o.full && cmd.getOptionValueSource(name) === "default" ? FULL_RECIPE[name] : o[name];
  return {
    out: o.out,
    device: o.device,
    scale: o.scale,
    preset: o.preset,
    pretrainSteps: steps("pretrainSteps"),
    mtp: o.mtp,
    sftReplay: o.sftReplay,
    dpoReplay: o.dpoReplay,
    batchSize: o.batchSize,
    seqLen: o.seqLen,
    vocabSize: o.vocabSize,
    seed: o.seed,
    progress: o.progress,
    sftSteps: steps("sftSteps"),
    sftBatchSize: o.sftBatchSize,
    sftLr: o.sftLr,
    dpoSteps: o.dpoSteps,
    dpoBatchSize: o.dpoBatchSize,
    dpoLr: o.dpoLr,
    dpoBeta: o.dpoBeta,
    dpoRpoAlpha: o.dpoRpoAlpha,
    dpoOnPolicy: o.dpoOnPolicy,
    grpoSteps: o.grpo ? o.grpoSteps : 0,
    grpoBatchSize: o.grpoBatchSize,
    grpoGroup: o.grpoGroup,
    grpoLr: o.grpoLr,
    grpoBeta: o.grpoBeta,
    grpoMaxTokens: o.grpoMaxTokens,
  };
}
