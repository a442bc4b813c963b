/**
 * `cli.ts pretrain`: flags (or a JSON `--config` file; flags win) to {@linkcode runPretrain}.
 *
 * @module
 */
import type { Command } from "commander";
import { optionsCommand } from "./options_command.ts";
import { PRETRAIN_OPTIONS, runPretrain } from "../train/run_pretrain.ts";

/** Builds the `pretrain` subcommand. */
export function pretrainCommand(): Command {
  return optionsCommand("pretrain", {
    description: "pretrain a model on prepared token shards (next-token + MTP + balance loss)",
    schema: PRETRAIN_OPTIONS,
    action: async ({ values }) => {
      const r = await runPretrain(values);
      console.log(
        `pretrain done: step ${r.step}, loss ${r.lastLoss.toFixed(4)}, val ${
          r.val.loss?.toFixed(4)
        }, ${r.seconds.toFixed(1)} s; checkpoint ${r.checkpoint}`,
      );
    },
  });
}
