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
import { modelCommand } from "./cli/model.ts";
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
  program.addCommand(modelCommand());
  program.addCommand(tokenizerCommand());
  program.addCommand(prepareCommand());
  program.addCommand(pretrainCommand());
  program.addCommand(demoCommand());
  return program;
}

if (import.meta.main) {
  try {
    await buildCli().parseAsync(["deno", "cli.ts", ...Deno.args]);
  } catch (e) {
    // A user error reads as one line; MINIDEEPSEEK_DEBUG=1 shows the stack.
    const debug = Deno.env.get("MINIDEEPSEEK_DEBUG");
    console.error(`error: ${debug ? (e as Error).stack : (e as Error).message ?? e}`);
    Deno.exit(1);
  }
}
