/**
 * `cli.ts dpo`: flags (or a JSON `--config` file; flags win) to {@linkcode runDpo}.
 *
 *     deno run -A cli.ts dpo --init runs/sft --data dpo.jsonl --out runs/dpo
 *
 * @module
 */
import type { Command } from "commander";
import { optionsCommand } from "./options_command.ts";
import { DPO_OPTIONS, runDpo } from "../train/run_dpo.ts";

/** Builds the `dpo` subcommand. */
export function dpoCommand(): Command {
  return optionsCommand("dpo", {
    description: "Direct Preference Optimization on preference pairs, from an SFT checkpoint " +
      "(the frozen reference's log-probabilities are computed once, before training)",
    schema: DPO_OPTIONS,
    action: async ({ values }) => {
      const r = await runDpo(values);
      const acc = r.val["rewards/accuracies"];
      console.log(
        `dpo done: step ${r.step}, loss ${r.lastLoss.toFixed(4)}, val loss ${
          r.val.loss?.toFixed(4) ?? "-"
        }, val reward accuracy ${acc?.toFixed(3) ?? "-"}, ${r.seconds.toFixed(1)} s; ` +
          `checkpoint ${r.checkpoint}`,
      );
    },
  });
}
