/**
 * `cli.ts sft`: flags (or a JSON `--config` file; flags win) to {@linkcode runSft}.
 *
 *     deno run -A cli.ts sft --init runs/pretrain --data sft.jsonl --out runs/sft
 *
 * @module
 */
import type { Command } from "commander";
import { optionsCommand } from "./options_command.ts";
import { runSft, SFT_OPTIONS } from "../train/run_sft.ts";

/** Builds the `sft` subcommand. */
export function sftCommand(): Command {
  return optionsCommand("sft", {
    description: "supervised fine-tuning on chat conversations (loss on assistant tokens only), " +
      "starting from a pretraining checkpoint",
    schema: SFT_OPTIONS,
    action: async ({ values }) => {
      const r = await runSft(values);
      console.log(
        `sft done: step ${r.step}, loss ${r.lastLoss.toFixed(4)}, val ${
          r.val.loss?.toFixed(4) ?? "-"
        }, ${r.seconds.toFixed(1)} s; checkpoint ${r.checkpoint}`,
      );
    },
  });
}
