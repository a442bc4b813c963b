/**
 * `cli.ts chat`: a streaming chat REPL in the terminal, with a model loaded in-process
 * (`--model DIR`) or any OpenAI-compatible server (`--url http://127.0.0.1:8000`).
 *
 * ```text
 * $ deno run -A cli.ts chat --model runs/sft --system "You are terse." --tools
 * > What is the weather in Lutal?
 * [tool call] get_weather {"city":"Lutal"}
 * [tool result] {"city":"Lutal","condition":"sunny","temperature_c":26}
 * It is sunny in Lutal, 26 degrees.
 * > /reset
 * ```
 *
 * Commands: `/reset` forgets the conversation (the system prompt stays), `/system <text>` sets the
 * system prompt (`/system` alone clears it), `/think` (or `/think on|off`) shows or folds the
 * reasoning, `/exit` (or end of input) quits. Ctrl-C stops a reply mid-stream; at the prompt it
 * quits. With `--tools` the demo world's `get_weather` and `calculator` are offered to the model
 * and run locally, and the reply continues with their results (at most four rounds per message).
 *
 * A reply's reasoning (`<think>...</think>`, streamed by the server as `reasoning_content`) is
 * folded by default: on a terminal a dimmed line `▸ thinking… N tokens` counts up as it streams and
 * becomes `▸ thought for N tokens`; `--show-reasoning` or `/think` prints the text itself, dimmed,
 * above the answer. Without a terminal (or with `NO_COLOR`) the output is plain text: the
 * reasoning, when shown, between a `[reasoning]` line and a `[thought for N tokens]` line, and only
 * the latter when folded. The count is of streamed pieces, one per decoded token (a few may be
 * merged). Earlier turns' reasoning is not sent back to the model (DeepSeek-R1's convention).
 *
 * This file is the terminal: flags, reading lines, printing events, Ctrl-C. The conversation
 * (history, tool rounds) is `serve/chat_session.ts`'s {@linkcode ChatSession}; replies come from
 * {@linkcode serviceBackend} (`--model`) or `serve/http_backend.ts`'s {@linkcode httpBackend}
 * (`--url`).
 *
 * @module
 */

import { chooseDevice } from "../kernels/backend.ts";
import { addDeviceOption } from "./device.ts";
import { Command } from "commander";
import { generateWorld, runTool, toolSchemas } from "../data/mod.ts";
import {
  type ChatBackend,
  ChatSession,
  type ChatSessionOptions,
  serviceBackend,
} from "../serve/chat_session.ts";
import { CompletionService } from "../serve/completions.ts";
import { Engine } from "../serve/engine.ts";
import type { SamplingSettings } from "../serve/generate.ts";
import { httpBackend } from "../serve/http_backend.ts";
import { loadForServing } from "../serve/load.ts";
import type { ServerTools } from "../serve/server.ts";
import { addSamplingOptions, numberArg } from "./generate.ts";

/** Options of {@linkcode runChatRepl}. */
export interface ChatReplOptions extends ChatSessionOptions {
  /** Input lines (stdin, or a list in tests). */
  input: AsyncIterable<string>;
  /** Receives everything printed. */
  write: (text: string) => void | Promise<void>;
  /**
   * Hooks Ctrl-C: called with a handler that stops the current reply (or returns false when none
   * is running); returns the unhook function. Default: no interrupt handling.
   */
  onInterrupt?: (handler: () => boolean) => () => void;
  /** Print the prompt marker `> ` before reading a line (default true). */
  showPrompt?: boolean;
  /** Print each reply's reasoning in full rather than folded to one line (default false). */
  showReasoning?: boolean;
  /**
   * Style the output for a terminal: reasoning dimmed, its folded line rewritten in place with
   * ANSI escapes (default false: plain text, for pipes, `NO_COLOR` and tests).
   */
  ansi?: boolean;
}

const DIM = "\x1b[2m", UNDIM = "\x1b[22m", CLEAR_LINE = "\r\x1b[2K";

/**
 * Prints one reply's reasoning, folded or in full, as its pieces stream in (see the module doc).
 */
class ReasoningPrinter {
  #write: (text: string) => void | Promise<void>;
  #ansi: boolean;
  #show: boolean;
  #tokens = 0;
  #open = false;
  #atLineStart = true;

  /**
   * @param write The REPL's output.
   * @param ansi Terminal styling.
   * @param show Print the text, not just the count.
   */
  constructor(write: (text: string) => void | Promise<void>, ansi: boolean, show: boolean) {
    this.#write = write;
    this.#ansi = ansi;
    this.#show = show;
  }

  /** @param piece A `reasoning_content` delta. */
  async push(piece: string): Promise<void> {
    if (!this.#open) {
      this.#open = true;
      if (this.#show) {
        await this.#write(this.#ansi ? `${DIM}▾ thinking${UNDIM}\n` : "[reasoning]\n");
      }
    }
    this.#tokens++;
    if (this.#show) {
      await this.#write(this.#ansi ? DIM + piece + UNDIM : piece);
      this.#atLineStart = piece.endsWith("\n");
    } else if (this.#ansi) {
      await this.#write(`${CLEAR_LINE}${DIM}▸ thinking… ${this.#count()}${UNDIM}`);
    }
  }

  /** Ends the reasoning (the answer, a tool call or the end of the reply came): the summary line. */
  async end(): Promise<void> {
    if (!this.#open) return;
    this.#open = false;
    const summary = `thought for ${this.#count()}`;
    if (this.#show) {
      const nl = this.#atLineStart ? "" : "\n";
      await this.#write(this.#ansi ? `${nl}${DIM}▴ ${summary}${UNDIM}\n` : `${nl}[${summary}]\n`);
    } else {
      await this.#write(
        this.#ansi ? `${CLEAR_LINE}${DIM}▸ ${summary}${UNDIM}\n` : `[${summary}]\n`,
      );
    }
  }

  #count(): string {
    return `${this.#tokens} token${this.#tokens === 1 ? "" : "s"}`;
  }
}

/**
 * Lines of a byte stream, without their line ends.
 *
 * @param stream E.g. `Deno.stdin.readable`.
 * @returns The lines; the last one even without a final newline.
 * @example
 * ```ts ignore
 * for await (const line of readLines(Deno.stdin.readable)) console.log(line);
 * ```
 */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const piece of stream.pipeThrough(new TextDecoderStream())) {
    buf += piece;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
    }
  }
  if (buf.length > 0) yield buf;
}

const HELP =
  "commands: /reset (forget the conversation), /system <text> (set the system prompt), " +
  "/think (show or fold reasoning), /exit (quit)";

/**
 * Runs the chat loop until `/exit` or the end of the input.
 *
 * @param options Backend, input, output, system prompt, sampling, tools.
 * @returns When the session ends.
 * @throws {Error} Only for programming errors: a failing reply is printed and the loop goes on.
 * @example
 * ```ts ignore
 * await runChatRepl({ backend, input: readLines(Deno.stdin.readable), write: (t) => print(t) });
 * ```
 */
export async function runChatRepl(options: ChatReplOptions): Promise<void> {
  const { backend, write } = options;
  const showPrompt = options.showPrompt ?? true;
  const ansi = options.ansi ?? false;
  let showReasoning = options.showReasoning ?? false;
  const session = new ChatSession(options);
  let current: AbortController | undefined;
  const unhook = options.onInterrupt?.(() => {
    if (!current) return false;
    current.abort();
    return true;
  });

  await write(`Chatting with ${backend.modelId}. ${HELP}. Ctrl-C stops a reply.\n`);
  try {
    const lines = options.input[Symbol.asyncIterator]();
    for (;;) {
      if (showPrompt) await write("> ");
      const next = await lines.next();
      if (next.done) break;
      const line = next.value.trim();
      if (line === "") continue;
      if (line === "/exit" || line === "/quit") break;
      if (line === "/reset") {
        session.reset();
        await write("(conversation cleared)\n");
        continue;
      }
      if (line === "/system" || line.startsWith("/system ")) {
        session.system = line.slice("/system".length).trim();
        await write(session.system ? `(system prompt set)\n` : "(system prompt cleared)\n");
        continue;
      }
      if (line === "/think" || line.startsWith("/think ")) {
        const arg = line.slice("/think".length).trim();
        if (arg !== "" && arg !== "on" && arg !== "off") {
          await write("usage: /think [on|off]\n");
          continue;
        }
        showReasoning = arg === "" ? !showReasoning : arg === "on";
        await write(showReasoning ? "(reasoning shown)\n" : "(reasoning folded)\n");
        continue;
      }
      if (line.startsWith("/")) {
        await write(`unknown command ${line.split(/\s/)[0]}; ${HELP}\n`);
        continue;
      }
      current = new AbortController();
      let thought = new ReasoningPrinter(write, ansi, showReasoning);
      try {
        for await (const e of session.send(line, current.signal)) {
          if (e.type === "reasoning") await thought.push(e.text);
          else if (e.type === "content") {
            await thought.end();
            await write(e.text);
          } else if (e.type === "reply") {
            await thought.end();
            thought = new ReasoningPrinter(write, ansi, showReasoning);
            if (e.content && !e.content.endsWith("\n")) await write("\n");
            for (const c of e.toolCalls) await write(`[tool call] ${c.name} ${c.arguments}\n`);
          } else if (e.type === "tool_result") await write(`[tool result] ${e.content}\n`);
          else await write(`(stopped after ${e.rounds} tool rounds)\n`);
        }
      } catch (e) {
        await thought.end();
        if (current.signal.aborted) await write("\n(stopped)\n");
        else await write(`\nerror: ${(e as Error).message}\n`);
      } finally {
        current = undefined;
      }
    }
  } finally {
    unhook?.();
  }
}

/** Options `chat` parses. */
interface ChatFlags extends SamplingSettings {
  model?: string;
  device: string;
  tokenizer?: string;
  url?: string;
  apiKey?: string;
  modelId?: string;
  system?: string;
  tools: boolean;
  worldSeed?: number;
  showReasoning: boolean;
}

/**
 * The demo world's tools, run locally.
 *
 * @param seed World seed (default the data module's).
 * @returns Schemas and a runner.
 * @example
 * ```ts ignore
 * const tools = demoTools(); await tools.run("calculator", '{"expression": "6 * 7"}');
 * ```
 */
export function demoTools(seed?: number): ServerTools {
  const world = generateWorld(seed === undefined ? {} : { seed });
  return { schemas: toolSchemas(), run: (name, args) => runTool(world, name, args) };
}

/**
 * Builds the `chat` subcommand.
 *
 * @returns The command.
 * @example
 * ```ts ignore
 * program.addCommand(chatCommand());
 * ```
 */
export function chatCommand(): Command {
  const cmd = addDeviceOption(new Command("chat"))
    .description("chat with a model in the terminal (streaming, multi-turn)")
    .option("--model <dir>", "trained model directory to load in-process")
    .option("--tokenizer <dir>", "directory of tokenizer.json (default: the --model directory)")
    .option("--url <url>", "an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000")
    .option("--api-key <key>", "API key for --url (default: $MINIDEEPSEEK_API_KEY)")
    .option("--model-id <name>", "model name to ask --url for (default: the first it lists)")
    .option("--system <text>", "system prompt")
    .option(
      "--show-reasoning",
      "print each reply's reasoning in full instead of one folded line (/think toggles it)",
      false,
    )
    .option(
      "--tools",
      "offer the demo world's get_weather and calculator tools, run locally",
      false,
    )
    .option(
      "--world-seed <n>",
      "seed of the demo world the tools answer from",
      numberArg("--world-seed", { int: true }),
    );
  addSamplingOptions(cmd, { temperature: 0.7, maxTokens: 512 });
  return cmd.action(async (flags: ChatFlags) => {
    chooseDevice(flags.device);
    if ((flags.model === undefined) === (flags.url === undefined)) {
      throw new Error("chat needs exactly one of --model <dir> or --url <server>");
    }
    let backend: ChatBackend;
    let close = async () => {};
    if (flags.url !== undefined) {
      backend = await httpBackend(flags.url, {
        apiKey: flags.apiKey ?? Deno.env.get("MINIDEEPSEEK_API_KEY"),
        modelId: flags.modelId,
      });
    } else {
      const { model, tokenizer, modelId } = await loadForServing(flags.model!, {
        maxSequences: 1,
        tokenizerDir: flags.tokenizer,
      });
      const engine = new Engine(model, tokenizer, { maxSequences: 1 });
      backend = serviceBackend(new CompletionService(engine, tokenizer, { modelId }));
      close = async () => {
        await engine.close();
        await model.dispose?.();
      };
    }
    const enc = new TextEncoder();
    try {
      await runChatRepl({
        ...flags,
        backend,
        input: readLines(Deno.stdin.readable),
        write: async (t) => {
          await Deno.stdout.write(enc.encode(t));
        },
        tools: flags.tools ? demoTools(flags.worldSeed) : undefined,
        ansi: Deno.stdout.isTerminal() && !Deno.noColor,
        onInterrupt: (handler) => {
          const listener = () => {
            if (!handler()) Deno.exit(130); // Ctrl-C at the prompt quits
          };
          Deno.addSignalListener("SIGINT", listener);
          return () => Deno.removeSignalListener("SIGINT", listener);
        },
      });
    } finally {
      await close();
    }
  });
}
