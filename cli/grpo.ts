/**
 * `cli.ts grpo`: flags (or a JSON `--config` file; flags win) to {@linkcode runGrpo}.
 *
 *     deno run -A cli.ts grpo --init runs/sft --prompts grpo.jsonl --out runs/grpo
 *
 * @module
 */
import type { Command } from "commander";
import { optionsCommand } from "./options_command.ts";
import { GRPO_OPTIONS, runGrpo } from "../train/run_grpo.ts";

/** Builds the `grpo` subcommand. */
export function grpoCommand(): Command {
  return optionsCommand("grpo", {
    description: "GRPO (DeepSeek-R1's reinforcement learning): G completions per prompt sampled " +
      "from the policy, scored by rule-based rewards, advantages normalized within each group",
    schema: GRPO_OPTIONS,
    action: async ({ values }) => {
      const r = await runGrpo(values);
      const reward = r.val.reward;
      console.log(
        `grpo done: step ${r.step}, loss ${r.lastLoss.toFixed(4)}, held-out reward ${
          reward?.toFixed(3) ?? "-"
        }, ${r.seconds.toFixed(1)} s; checkpoint ${r.checkpoint}`,
      );
    },
  });
}
