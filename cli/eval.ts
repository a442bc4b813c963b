/**
 * `cli.ts eval`: evaluates checkpoints side by side with {@linkcode runEval}.
 *
 *     deno run -A cli.ts eval --model runs/pretrain runs/sft runs/dpo --data runs/data \
 *       --questions eval.jsonl --tool-calls eval_tools.jsonl --pairs dpo_heldout.jsonl \
 *       --grpo-eval grpo_heldout.jsonl
 *
 * @module
 */
import type { Command } from "commander";
import { optionsCommand } from "./options_command.ts";
import { EVAL_OPTIONS, runEval } from "../train/run_eval.ts";

/** Builds the `eval` subcommand. */
export function evalCommand(): Command {
  return optionsCommand("eval", {
    description: "evaluate checkpoints side by side: validation loss, QA and tool-call accuracy " +
      "of greedy chat replies, preference accuracy, held-out arithmetic accuracy and reasoning " +
      "format; writes report.md and report.json",
    schema: EVAL_OPTIONS,
    action: async ({ values }) => {
      await runEval(values);
    },
  });
}
