/**
 * The MiniDeepSeek command line: one entry that dispatches every stage.
 *
 *     deno run -A cli.ts info        # the WebGPU adapter
 *     deno run -A cli.ts --help      # every stage
 *
 * @module
 */
import { Command } from "commander";
import { chatCommand } from "./cli/chat.ts";
import { demoCommand } from "./cli/demo.ts";
import { generateCommand } from "./cli/generate.ts";
import { infoCommand } from "./cli/info.ts";
import { modelCommand } from "./cli/model.ts";
import { prepareCommand } from "./cli/prepare.ts";
import { pretrainCommand } from "./cli/pretrain.ts";
import { serveCommand } from "./cli/serve.ts";
import { tokenizerCommand } from "./cli/tokenizer.ts";
import { sftCommand } from "./cli/sft.ts";
import { dpoCommand } from "./cli/dpo.ts";
import { grpoCommand } from "./cli/grpo.ts";
import { evalCommand } from "./cli/eval.ts";
import { exportCommand } from "./cli/export.ts";

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
  program.addCommand(sftCommand());
  program.addCommand(dpoCommand());
  program.addCommand(grpoCommand());
  program.addCommand(evalCommand());
  program.addCommand(exportCommand());
  program.addCommand(generateCommand());
  program.addCommand(chatCommand());
  program.addCommand(serveCommand());
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
