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
 * system prompt (`/system` alone clears it), `/think` (or `/think on|off`) shows or folds the reasoning, `/exit`
 * (or end of input) quits. Ctrl-C stops a reply mid-stream; at the prompt it quits.
 *
 * A reply's reasoning (`<think>...</think>`, streamed by the server as `reasoning_content`) is
 * folded by default: on a terminal a dimmed line `▸ thinking… N tokens` counts up as it streams and
 * becomes `▸ thought for N tokens`; `--show-reasoning` or `/think` prints the text itself, dimmed,
 * above the answer. Without a terminal (or with `NO_COLOR`) the output is plain text: the
 * reasoning, when shown, between a `[reasoning]` line and a `[thought for N tokens]` line, and only
 * the latter when folded. The count is of streamed pieces, one per decoded token (a few may be
 * merged). The history keeps only each reply's answer and tool calls: as in DeepSeek-R1, earlier
 * turns' reasoning is not sent back to the model. With `--tools` the demo world's `get_weather` and
 * `calculator` are offered to the model and run locally, and the reply continues with their
 * results (at most four rounds per message).
 *
 * @module
 */

import { chooseDevice } from "../kernels/backend.ts";
import { addDeviceOption } from "./device.ts";
import { Command } from "commander";
import { generateWorld, runTool, toolSchemas } from "../data/mod.ts";
import type { ChatMessage } from "../tokenizer/chat_template.ts";
import { type ChatCompletionChunk, CompletionService } from "../serve/completions.ts";
import { Engine } from "../serve/engine.ts";
import { loadForServing } from "../serve/load.ts";
import type { ChatRequest } from "../serve/protocol.ts";
import type { SamplingParams } from "../model/sampling.ts";
import type { ServerTools } from "../serve/server.ts";
import { addSamplingOptions, numberArg, type SamplingFlags } from "./generate.ts";

/** Where chat replies come from. */
export interface ChatBackend {
  /** The model's name, for the banner. */
  readonly modelId: string;
  /**
   * Streams one reply.
   *
   * @param req The request (`stream` is implied).
   * @param signal Stops the reply.
   * @returns OpenAI chat chunks.
   */
  chat(req: ChatRequest, signal?: AbortSignal): AsyncIterable<ChatCompletionChunk>;
}

/**
 * A backend that runs an in-process {@linkcode CompletionService}.
 *
 * @param service The service.
 * @returns The backend.
 * @example
 * ```ts ignore
 * const backend = serviceBackend(new CompletionService(engine, tokenizer));
 * ```
 */
export function serviceBackend(service: CompletionService): ChatBackend {
  return {
    modelId: service.modelId,
    chat: (req, signal) => service.startChat(req, signal).chunks(),
  };
}

/**
 * A backend that talks to an OpenAI-compatible server with `fetch` and server-sent events.
 *
 * @param url Base URL of the server (with or without `/v1`).
 * @param options `apiKey`, and `modelId` (default: the first model the server lists).
 * @returns The backend.
 * @throws {Error} If the server cannot be reached or refuses the key.
 * @example
 * ```ts ignore
 * const backend = await httpBackend("http://127.0.0.1:8000");
 * ```
 */
export async function httpBackend(
  url: string,
  options: { apiKey?: string; modelId?: string } = {},
): Promise<ChatBackend> {
  const base = url.replace(/\/+$/, "").replace(/\/v1$/, "") + "/v1";
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  const failure = async (res: Response): Promise<Error> => {
    let detail = `${res.status} ${res.statusText}`;
    try {
      detail = (await res.json()).error?.message ?? detail;
    } catch { /* not JSON */ }
    return new Error(`${base}: ${detail}`);
  };
  let modelId = options.modelId;
  if (modelId === undefined) {
    let res: Response;
    try {
      res = await fetch(`${base}/models`, { headers });
    } catch (e) {
      throw new Error(`--url ${url}: cannot reach the server (${(e as Error).message})`);
    }
    if (!res.ok) throw await failure(res);
    modelId = (await res.json()).data?.[0]?.id ?? "default";
  }
  return {
    modelId: modelId!,
    async *chat(req, signal) {
      const body = {
        model: modelId,
        messages: req.messages,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: req.maxTokens,
        stop: req.stop.length > 0 ? req.stop : undefined,
        temperature: req.sampling.temperature,
        top_p: req.sampling.topP,
        top_k: req.sampling.topK || undefined,
        min_p: req.sampling.minP || undefined,
        repetition_penalty: req.sampling.repetitionPenalty,
        presence_penalty: req.sampling.presencePenalty,
        frequency_penalty: req.sampling.frequencyPenalty,
        seed: req.sampling.seed,
        tools: req.tools ?? undefined,
      };
      const send = () =>
        fetch(`${base}/chat/completions`, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          signal,
        });
      let res = await send();
      if (res.status === 400 && body.max_tokens !== undefined) {
        // --max-tokens is a cap: when it passes what the context leaves, the server refuses it
        // (as OpenAI does), and "until the context is full" is the same cap.
        const err = await res.clone().json().catch(() => null);
        if (err?.error?.code === "context_length_exceeded" && err.error.param === "max_tokens") {
          body.max_tokens = undefined;
          res = await send();
        }
      }
      if (!res.ok || res.body === null) throw await failure(res);
      let buf = "";
      for await (const piece of res.body.pipeThrough(new TextDecoderStream())) {
        buf += piece;
        let cut: number;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart()).join("\n");
          if (data === "") continue;
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(`${base}: ${chunk.error.message}`);
          yield chunk as ChatCompletionChunk;
        }
      }
    },
  };
}

/** Options of {@linkcode runChatRepl}. */
export interface ChatReplOptions extends Partial<SamplingFlags> {
  /** Where replies come from. */
  backend: ChatBackend;
  /** Input lines (stdin, or a list in tests). */
  input: AsyncIterable<string>;
  /** Receives everything printed. */
  write: (text: string) => void | Promise<void>;
  /** Initial system prompt. */
  system?: string;
  /** Tools offered to the model and run locally (default none). */
  tools?: ServerTools;
  /** Most model -> tool -> model rounds per message (default 4). */
  maxToolRounds?: number;
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
  const maxRounds = options.maxToolRounds ?? 4;
  const showPrompt = options.showPrompt ?? true;
  const ansi = options.ansi ?? false;
  let showReasoning = options.showReasoning ?? false;
  let system = options.system ?? "";
  let history: ChatMessage[] = [];
  let current: AbortController | undefined;
  const unhook = options.onInterrupt?.(() => {
    if (!current) return false;
    current.abort();
    return true;
  });
  const tools = options.tools;
  const sampling: Partial<SamplingParams> = {
    temperature: options.temperature ?? 0.7,
    topP: options.topP,
    topK: options.topK,
    minP: options.minP,
    repetitionPenalty: options.repetitionPenalty,
    presencePenalty: options.presencePenalty,
    frequencyPenalty: options.frequencyPenalty,
    seed: options.seed,
  };

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
        history = [];
        await write("(conversation cleared)\n");
        continue;
      }
      if (line === "/system" || line.startsWith("/system ")) {
        system = line.slice("/system".length).trim();
        await write(system ? `(system prompt set)\n` : "(system prompt cleared)\n");
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
      history.push({ role: "user", content: line });
      current = new AbortController();
      let thought: ReasoningPrinter | undefined;
      try {
        for (let round = 0; round <= maxRounds; round++) {
          const req: ChatRequest = {
            model: undefined,
            stream: true,
            includeUsage: false,
            maxTokens: options.maxTokens ?? 512,
            sampling,
            stop: options.stop ?? [],
            messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
            tools: tools ? [...tools.schemas] : null,
            toolChoice: tools ? "auto" : "none",
          };
          let text = "";
          const calls: { id: string; name: string; arguments: string }[] = [];
          let finish: string | null = null;
          thought = new ReasoningPrinter(write, ansi, showReasoning);
          for await (const chunk of backend.chat(req, current.signal)) {
            const c = chunk.choices[0];
            if (!c) continue;
            if (c.delta.reasoning_content) await thought.push(c.delta.reasoning_content);
            if (c.delta.content) {
              await thought.end();
              text += c.delta.content;
              await write(c.delta.content);
            }
            for (const tc of c.delta.tool_calls ?? []) {
              const slot = calls[tc.index] ??= { id: "", name: "", arguments: "" };
              if (tc.id) slot.id = tc.id;
              slot.name += tc.function.name ?? "";
              slot.arguments += tc.function.arguments ?? "";
            }
            finish = c.finish_reason ?? finish;
          }
          await thought.end();
          if (text && !text.endsWith("\n")) await write("\n");
          // The answer and the tool calls only: earlier reasoning is not sent back (DeepSeek-R1).
          history.push({
            role: "assistant",
            content: text || null,
            ...(calls.length > 0
              ? {
                tool_calls: calls.map((c) => ({
                  id: c.id,
                  type: "function" as const,
                  function: { name: c.name, arguments: c.arguments },
                })),
              }
              : {}),
          });
          for (const c of calls) await write(`[tool call] ${c.name} ${c.arguments}\n`);
          if (finish !== "tool_calls" || !tools || calls.length === 0) break;
          if (round === maxRounds) {
            await write(`(stopped after ${maxRounds} tool rounds)\n`);
            break;
          }
          for (const c of calls) {
            const result = await tools.run(c.name, c.arguments);
            await write(`[tool result] ${result}\n`);
            history.push({ role: "tool", tool_call_id: c.id, content: result });
          }
        }
      } catch (e) {
        await thought?.end();
        if (current.signal.aborted) await write("\n(stopped)\n");
        else await write(`\nerror: ${(e as Error).message}\n`);
      } finally {
        if (current.signal.aborted && history.at(-1)?.role === "user") history.pop();
        current = undefined;
      }
    }
  } finally {
    unhook?.();
  }
}

/** Options `chat` parses. */
interface ChatFlags extends SamplingFlags {
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
