/**
 * The MiniDeepSeek command line: one entry that dispatches every stage.
 *
 *     deno run -A cli.ts info        # the WebGPU adapter
 *     deno run -A cli.ts --help      # every stage
 *
 * @module
 */
import { Command } from "commander";
import { demoCommand } from "./cli/demo.ts";
import { infoCommand } from "./cli/info.ts";
import { prepareCommand } from "./cli/prepare.ts";
import { pretrainCommand } from "./cli/pretrain.ts";
import { tokenizerCommand } from "./cli/tokenizer.ts";

/** Builds the top-level program with every subcommand registered. */
export function buildCli(): Command {
  const program = new Command("minideepseek")
    .description("Train and run a DeepSeek-V3-style model on WebGPU")
    .version("0.1.0")
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });
  program.addCommand(infoCommand());
  program.addCommand(tokenizerCommand());
  program.addCommand(prepareCommand());
  program.addCommand(pretrainCommand());
  program.addCommand(demoCommand());
  return program;
}

if (import.meta.main) {
  await buildCli().parseAsync(["deno", "cli.ts", ...Deno.args]);
}
