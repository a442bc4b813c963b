/**
 * `cli.ts generate`: one prompt in, one streamed completion out, with every sampling flag.
 *
 * ```sh
 * deno run -A cli.ts generate --model runs/sft --prompt "Once upon a time" --max-tokens 64
 * deno run -A cli.ts generate --model runs/sft --chat --prompt "What is 6 * 7?" --temperature 0
 * echo "Once upon a time" | deno run -A cli.ts generate --model runs/sft --seed 1
 * ```
 *
 * The completion goes to stdout as it is decoded; a one-line summary (token counts, finish
 * reason, speed) goes to stderr. The sampling flags and their parsing are shared with `chat`. The
 * generation itself is `serve/generate.ts`'s {@linkcode runGenerate}; this file parses the flags
 * and wires stdin, stdout and Ctrl-C.
 *
 * @module
 */

import { chooseDevice } from "../kernels/backend.ts";
import { addDeviceOption } from "./device.ts";
import { Command, InvalidArgumentError, Option } from "commander";
import { CompletionService } from "../serve/completions.ts";
import { Engine } from "../serve/engine.ts";
import { runGenerate, type SamplingSettings } from "../serve/generate.ts";
import { loadForServing } from "../serve/load.ts";

/**
 * A commander argument parser for a number in a range; the error names the flag.
 *
 * @param flag The flag, for the message.
 * @param range `min`, `max`, `int`.
 * @returns The parser.
 * @example
 * ```ts ignore
 * cmd.option("--port <n>", "port", numberArg("--port", { min: 0, max: 65535, int: true }), 8000);
 * ```
 */
export function numberArg(
  flag: string,
  range: { min?: number; max?: number; int?: boolean } = {},
): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    const { min = -Infinity, max = Infinity, int = false } = range;
    if (
      value.trim() === "" || !Number.isFinite(n) || (int && !Number.isInteger(n)) || n < min ||
      n > max
    ) {
      const kind = int ? "an integer" : "a number";
      const bounds = Number.isFinite(min) && Number.isFinite(max)
        ? ` from ${min} to ${max}`
        : Number.isFinite(min)
        ? ` >= ${min}`
        : "";
      throw new InvalidArgumentError(`${flag} expects ${kind}${bounds}, got '${value}'`);
    }
    return n;
  };
}

/**
 * Adds the sampling flags to a command: `--temperature`, `--top-p`, `--top-k`, `--min-p`,
 * `--repetition-penalty`, `--presence-penalty`, `--frequency-penalty`, `--seed`, `--max-tokens`,
 * `--stop` (repeatable). They parse to a {@linkcode SamplingSettings}.
 *
 * @param cmd The command.
 * @param defaults `temperature` and `maxTokens` defaults for this command.
 * @returns The command.
 * @example
 * ```ts ignore
 * addSamplingOptions(new Command("generate"), { temperature: 0.8, maxTokens: 128 });
 * ```
 */
export function addSamplingOptions(
  cmd: Command,
  defaults: { temperature: number; maxTokens: number },
): Command {
  return cmd
    .option(
      "--temperature <t>",
      "softmax temperature; 0 is greedy",
      numberArg("--temperature", { min: 0, max: 2 }),
      defaults.temperature,
    )
    .option(
      "--top-p <p>",
      "nucleus sampling mass; 1 is off",
      numberArg("--top-p", { min: 1e-9, max: 1 }),
      1,
    )
    .option(
      "--top-k <k>",
      "keep the k most likely tokens; 0 is off",
      numberArg("--top-k", { min: 0, int: true }),
      0,
    )
    .option(
      "--min-p <p>",
      "drop tokens below p x the best one; 0 is off",
      numberArg("--min-p", { min: 0, max: 1 }),
      0,
    )
    .option(
      "--repetition-penalty <r>",
      "CTRL penalty on tokens already seen; 1 is off",
      numberArg("--repetition-penalty", { min: 1e-9, max: 10 }),
      1,
    )
    .option(
      "--presence-penalty <p>",
      "OpenAI presence penalty, -2..2",
      numberArg("--presence-penalty", { min: -2, max: 2 }),
      0,
    )
    .option(
      "--frequency-penalty <p>",
      "OpenAI frequency penalty, -2..2",
      numberArg("--frequency-penalty", { min: -2, max: 2 }),
      0,
    )
    .option(
      "--seed <n>",
      "sampling seed: the same seed gives the same text (default: random)",
      numberArg("--seed", { int: true }),
    )
    .option(
      "--max-tokens <n>",
      "most tokens to generate",
      numberArg("--max-tokens", { min: 1, int: true }),
      defaults.maxTokens,
    )
    .addOption(
      new Option("--stop <text>", "stop string, not printed (repeatable)")
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
        .default([] as string[], "none"),
    );
}

async function readStdin(): Promise<string> {
  let text = "";
  for await (const piece of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) text += piece;
  return text.replace(/\r?\n$/, "");
}

/** Options `generate` parses. */
interface GenerateFlags extends SamplingSettings {
  model: string;
  device: string;
  tokenizer?: string;
  prompt?: string;
  chat: boolean;
  system?: string;
}

/**
 * Builds the `generate` subcommand.
 *
 * @returns The command.
 * @example
 * ```ts ignore
 * program.addCommand(generateCommand());
 * ```
 */
export function generateCommand(): Command {
  const cmd = addDeviceOption(new Command("generate"))
    .description("complete one prompt with a trained model, streaming the text to stdout")
    .requiredOption(
      "--model <dir>",
      "trained model directory (config.json, model.safetensors, tokenizer.json)",
    )
    .option("--tokenizer <dir>", "directory of tokenizer.json (default: the --model directory)")
    .option("--prompt <text>", "the prompt (default: read stdin)")
    .option("--chat", "send the prompt as a user message through the chat template", false)
    .option("--system <text>", "system prompt (with --chat)");
  addSamplingOptions(cmd, { temperature: 0.8, maxTokens: 128 });
  return cmd.action(async (flags: GenerateFlags) => {
    chooseDevice(flags.device);
    const prompt = flags.prompt ?? await readStdin();
    const { model, tokenizer, modelId } = await loadForServing(flags.model, {
      maxSequences: 1,
      tokenizerDir: flags.tokenizer,
    });
    const engine = new Engine(model, tokenizer, { maxSequences: 1 });
    const service = new CompletionService(engine, tokenizer, { modelId });
    const enc = new TextEncoder();
    const abort = new AbortController();
    const onInt = () => abort.abort();
    Deno.addSignalListener("SIGINT", onInt);
    try {
      const r = await runGenerate(service, {
        ...flags,
        prompt,
        signal: abort.signal,
        write: async (t) => {
          await Deno.stdout.write(enc.encode(t));
        },
      });
      const speed = r.usage.completion_tokens / Math.max(r.seconds, 1e-9);
      console.error(
        `\n[${r.usage.prompt_tokens} prompt + ${r.usage.completion_tokens} completion tokens, ` +
          `finish: ${abort.signal.aborted ? "interrupted" : r.finishReason}, ${
            speed.toFixed(1)
          } tokens/s]`,
      );
    } finally {
      Deno.removeSignalListener("SIGINT", onInt);
      await engine.close();
      await model.dispose?.();
    }
  });
}
