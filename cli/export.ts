/**
 * `cli.ts export`: a run or checkpoint to a self-contained Hugging Face model directory with
 * {@linkcode runExport}.
 *
 *     deno run -A cli.ts export --model runs/demo/dpo --out hf/minideepseek
 *     python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('hf/minideepseek')"
 *
 * @module
 */
import type { Command } from "commander";
import { EXPORT_OPTIONS, runExport } from "../train/export.ts";
import { optionsCommand } from "./options_command.ts";

/** Builds the `export` subcommand. */
export function exportCommand(): Command {
  return optionsCommand("export", {
    description: "write a run or checkpoint as a Hugging Face model directory (config.json, " +
      "generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that " +
      "transformers loads and --init reads back",
    schema: EXPORT_OPTIONS,
    action: async ({ values }) => {
      await runExport(values);
    },
  });
}
