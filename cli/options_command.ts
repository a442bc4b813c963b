/**
 * The commander glue of the schema-driven stages (pretrain, sft, dpo, eval, export): a
 * subcommand whose flags, config file and `--help` come from an options schema
 * (`train/options.ts`).
 *
 * @module
 */
import { Command } from "commander";
import {
  OptionsError,
  type OptionSpec,
  renderOptionsHelp,
  type ResolvedOptions,
  resolveOptions,
} from "../train/options.ts";

/**
 * Builds a commander subcommand whose options come from a schema: it passes its raw arguments
 * through {@linkcode resolveOptions}, prints {@linkcode renderOptionsHelp} for `--help`, and
 * reports option errors as `error: <message>` with exit code 2.
 *
 * @param name Subcommand name (`pretrain`, `sft`, `dpo`).
 * @param spec `description`, `schema`, and the `action` that receives the resolved options.
 * @returns The command, to `addCommand` to the program.
 * @example
 * ```ts
 * program.addCommand(optionsCommand("pretrain", {
 *   description: "pretrain a model on prepared shards",
 *   schema: PRETRAIN,
 *   action: async ({ values }) => await pretrain(values),
 * }));
 * ```
 */
export function optionsCommand<S extends readonly OptionSpec[]>(
  name: string,
  spec: {
    description: string;
    schema: S;
    action: (resolved: ResolvedOptions<S>) => void | Promise<void>;
  },
): Command {
  const cmd = new Command(name)
    .description(spec.description)
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument("[options...]", "see --help");
  cmd.helpInformation = () =>
    renderOptionsHelp(spec.schema, {
      usage: `${name} [options]`,
      description: spec.description,
    }) + "\n";
  cmd.action(async () => {
    let resolved: ResolvedOptions<S>;
    try {
      resolved = await resolveOptions(spec.schema, cmd.args);
    } catch (e) {
      if (e instanceof OptionsError) cmd.error(`error: ${e.message}`, { exitCode: 2 });
      throw e;
    }
    if (resolved.help) {
      console.log(cmd.helpInformation());
      return;
    }
    await spec.action(resolved);
  });
  return cmd;
}
