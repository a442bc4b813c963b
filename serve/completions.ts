/**
 * OpenAI chat and text completions on top of the {@linkcode Engine}, independent of HTTP: the
 * server, the chat REPL and the `generate` command all go through here.
 *
 * Chat: the messages (and the tools, unless `tool_choice` is `none`) are rendered with the
 * tokenizer's chat template and the generation prompt `<|im_start|>assistant\n`; generation stops
 * at `<|im_end|>`, `<|eos|>` or `<|im_start|>` (an assistant turn never contains the latter). The
 * reply goes through the tool-call parser when tools are shown. `tool_choice`:
 * - `none`: tools are not shown and the `<tool_call>` token is banned (its logit is -Infinity), so
 *   the reply is plain content;
 * - `auto` (the default with tools): the model decides;
 * - `required`: the reply is forced to start with `<tool_call>`;
 * - `{"type": "function", "function": {"name": N}}`: the reply is forced to start with
 *   `<tool_call>{"name": "N", "arguments":` and the model writes the arguments.
 * Forced tokens count as completion tokens. A required or named call still depends on the model to
 * write valid JSON: if it does not, the text comes back as content (finish reason `stop`).
 *
 * Text completions: the prompt string is encoded after an `<|eos|>` token, the document separator
 * the model was pretrained with, so a prompt reads as the start of a document (that token counts
 * as a prompt token); token-id prompts are used as given. Generation stops at `<|eos|>`.
 *
 * Special tokens the model writes are counted but left out of the text (vLLM's default
 * `skip_special_tokens`), except, in chat, `<tool_call>`, `</tool_call>`, `<think>` and
 * `</think>`, which the reply parsers need.
 *
 * @module
 */

import { encodeChatPrompt } from "../tokenizer/chat_encode.ts";
import { jinjaJson } from "../tokenizer/chat_template.ts";
import { THINK_END_TOKEN, THINK_START_TOKEN } from "../tokenizer/special_tokens.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  ContextLengthError,
  type Engine,
  EngineOverloadedError,
  type FinishReason,
  type Generation,
  type GenerationResult,
} from "./engine.ts";
import { ApiError, type ChatRequest, type CompletionRequest, type UsageBody } from "./protocol.ts";
import type { SamplingParams } from "./sampling.ts";
import {
  type OpenAIToolCall,
  parseToolCalls,
  TOOL_CALL_CLOSE,
  TOOL_CALL_OPEN,
  type ToolCallStreamEvent,
  ToolCallStreamParser,
} from "./tool_calls.ts";

/** OpenAI finish reasons this server sends. */
export type OpenAIFinishReason = "stop" | "length" | "tool_calls";

/** A `chat.completion` response. */
export interface ChatCompletion {
  /** `chatcmpl-` + 24 hex digits. */
  id: string;
  /** Always `chat.completion`. */
  object: "chat.completion";
  /** Unix time in seconds. */
  created: number;
  /** The served model's name. */
  model: string;
  /** Always null (no fingerprinting). */
  system_fingerprint: null;
  /** The one choice. */
  choices: [{
    index: 0;
    message: {
      role: "assistant";
      content: string | null;
      refusal: null;
      tool_calls?: OpenAIToolCall[];
    };
    logprobs: null;
    finish_reason: OpenAIFinishReason;
  }];
  /** Token counts. */
  usage: UsageBody;
}

/** A tool-call fragment inside a streamed delta. */
export interface ToolCallDelta {
  /** Which call of the reply this fragment belongs to. */
  index: number;
  /** The call id, in the call's first fragment. */
  id?: string;
  /** `function`, in the call's first fragment. */
  type?: "function";
  /** The name (first fragment) and a piece of the arguments JSON. */
  function: { name?: string; arguments: string };
}

/** A `chat.completion.chunk` (one server-sent event). */
export interface ChatCompletionChunk {
  /** The completion id, the same in every chunk. */
  id: string;
  /** Always `chat.completion.chunk`. */
  object: "chat.completion.chunk";
  /** Unix time in seconds. */
  created: number;
  /** The served model's name. */
  model: string;
  /** Always null. */
  system_fingerprint: null;
  /** One choice; empty in the final usage chunk. */
  choices: {
    index: 0;
    delta: { role?: "assistant"; content?: string; tool_calls?: ToolCallDelta[] };
    logprobs: null;
    finish_reason: OpenAIFinishReason | null;
  }[];
  /** With `stream_options.include_usage`: null, then the counts in the last chunk. */
  usage?: UsageBody | null;
}

/** A `text_completion` response or stream chunk. */
export interface TextCompletion {
  /** `cmpl-` + 24 hex digits. */
  id: string;
  /** Always `text_completion`. */
  object: "text_completion";
  /** Unix time in seconds. */
  created: number;
  /** The served model's name. */
  model: string;
  /** Always null. */
  system_fingerprint: null;
  /** One choice; empty in the final usage chunk of a stream. */
  choices: {
    index: 0;
    text: string;
    logprobs: null;
    finish_reason: OpenAIFinishReason | null;
  }[];
  /** Token counts (streams: only with `include_usage`, in the last chunk). */
  usage?: UsageBody | null;
}

/** A started chat completion: consume it once, as a stream or as one response. */
export interface ChatRun {
  /** The completion id (`chatcmpl-...`). */
  readonly id: string;
  /** The prompt length in tokens. */
  readonly promptTokens: number;
  /**
   * The chunks: the role first, then content and tool-call deltas, then the finish reason, then
   * the usage when asked for. Breaking out early cancels the generation.
   */
  chunks(): AsyncGenerator<ChatCompletionChunk, void, undefined>;
  /** The whole response, when generation ends. */
  response(): Promise<ChatCompletion>;
}

/** A started text completion. */
export interface CompletionRun {
  /** The completion id (`cmpl-...`). */
  readonly id: string;
  /** Text deltas as chunks, then the finish reason, then the usage when asked for. */
  chunks(): AsyncGenerator<TextCompletion, void, undefined>;
  /** The whole response. */
  response(): Promise<TextCompletion>;
}

function randomId(prefix: string): string {
  return prefix + crypto.randomUUID().replaceAll("-", "").slice(0, 24);
}

function usageOf(r: GenerationResult): UsageBody {
  return { ...r.usage };
}

function mapFinish(reason: FinishReason, toolCalls: number): OpenAIFinishReason {
  if (reason === "length") return "length";
  return toolCalls > 0 ? "tool_calls" : "stop";
}

/**
 * Runs OpenAI-style chat and text completions on an engine.
 *
 * @example
 * ```ts ignore
 * const service = new CompletionService(engine, tokenizer, { modelId: "mini" });
 * const run = service.startChat(parseChatRequest(body));
 * for await (const chunk of run.chunks()) console.log(chunk.choices[0]?.delta);
 * ```
 */
export class CompletionService {
  /** The engine. */
  readonly engine: Engine;
  /** The tokenizer. */
  readonly tokenizer: Tokenizer;
  /** The model name in responses. */
  readonly modelId: string;
  #chatStops: number[];
  #hiddenChat: Set<number>;
  #hiddenText: Set<number>;

  /**
   * Makes the service.
   *
   * @param engine The engine (whose tokenizer this must be).
   * @param tokenizer The tokenizer, with the chat special tokens.
   * @param options `modelId` (default `engine.model.id`).
   * @throws {Error} If the tokenizer lacks `<|im_end|>` or `<tool_call>`.
   */
  constructor(engine: Engine, tokenizer: Tokenizer, options: { modelId?: string } = {}) {
    this.engine = engine;
    this.tokenizer = tokenizer;
    this.modelId = options.modelId ?? engine.model.id;
    this.#chatStops = [tokenizer.imEndId, tokenizer.eosId, tokenizer.imStartId];
    // Special tokens never reach the text (as with vLLM's skip_special_tokens), except in chat the
    // markup the reply parsers read: tool calls and reasoning.
    const shown = new Set([TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_START_TOKEN, THINK_END_TOKEN]);
    this.#hiddenText = new Set(tokenizer.specialTokens.map((s) => s.id));
    this.#hiddenChat = new Set(
      tokenizer.specialTokens.filter((s) => !shown.has(s.content)).map((s) => s.id),
    );
    tokenizer.specialId(TOOL_CALL_OPEN);
  }

  /**
   * Starts a chat completion.
   *
   * @param req A validated request (see `parseChatRequest`).
   * @param signal Cancels the generation (a client that went away).
   * @returns The run.
   * @throws {ApiError} 400 for messages the template rejects or a prompt longer than the context,
   *   503 when the engine's queue is full.
   */
  startChat(req: ChatRequest, signal?: AbortSignal): ChatRun {
    const tok = this.tokenizer;
    const showTools = req.tools !== null && req.toolChoice !== "none";
    let prompt: number[];
    try {
      prompt = encodeChatPrompt(tok, req.messages, { tools: showTools ? req.tools : null });
    } catch (e) {
      throw new ApiError(400, (e as Error).message, { param: "messages" });
    }
    const toolCallId = tok.specialId(TOOL_CALL_OPEN);
    let forced: number[] = [];
    const sampling: Partial<SamplingParams> = { ...req.sampling };
    if (!showTools) {
      const bias = new Map(sampling.logitBias ?? []);
      bias.set(toolCallId, -Infinity);
      sampling.logitBias = bias;
    } else if (req.toolChoice === "required") {
      forced = [toolCallId];
    } else if (typeof req.toolChoice === "object") {
      forced = [
        toolCallId,
        ...tok.encode(`{"name": ${jinjaJson(req.toolChoice.name)}, "arguments":`),
      ];
    }
    const gen = this.#start(prompt, req, sampling, {
      forced,
      stopIds: this.#chatStops,
      hidden: this.#hiddenChat,
      signal,
      param: "messages",
    });
    const id = randomId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);
    const model = this.modelId;
    const base = {
      id,
      object: "chat.completion.chunk" as const,
      created,
      model,
      system_fingerprint: null,
    };
    const includeUsage = req.includeUsage;
    const withUsage = includeUsage ? { usage: null } : {};
    const chunk = (
      delta: ChatCompletionChunk["choices"][0]["delta"],
      finish: OpenAIFinishReason | null = null,
    ): ChatCompletionChunk => ({
      ...base,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...withUsage,
    });
    let consumed = false;
    const once = () => {
      if (consumed) throw new Error("a chat run can be consumed once");
      consumed = true;
    };

    return {
      id,
      promptTokens: prompt.length,
      async *chunks() {
        once();
        yield chunk({ role: "assistant", content: "" });
        const parser = showTools ? new ToolCallStreamParser({ idSeed: id }) : null;
        const toChunks = function* (events: ToolCallStreamEvent[]) {
          for (const e of events) {
            if (e.type === "content") {
              yield chunk({ content: e.text });
            } else {
              // OpenAI's streaming shape: id, type and name first, then the arguments.
              yield chunk({
                tool_calls: [{
                  index: e.index,
                  id: e.id,
                  type: "function",
                  function: { name: e.name, arguments: "" },
                }],
              });
              yield chunk({
                tool_calls: [{ index: e.index, function: { arguments: e.arguments } }],
              });
            }
          }
        };
        for await (const delta of gen) {
          if (parser) yield* toChunks(parser.push(delta));
          else yield chunk({ content: delta });
        }
        const result = await gen.result;
        if (parser) yield* toChunks(parser.finish());
        yield chunk({}, mapFinish(result.finishReason, parser?.toolCallCount ?? 0));
        if (includeUsage) yield { ...base, choices: [], usage: usageOf(result) };
      },
      async response(): Promise<ChatCompletion> {
        once();
        const result = await gen.result;
        const parsed = showTools
          ? parseToolCalls(result.text, { idSeed: id })
          : { content: result.text, toolCalls: [] };
        return {
          id,
          object: "chat.completion",
          created,
          model,
          system_fingerprint: null,
          choices: [{
            index: 0,
            message: {
              role: "assistant",
              content: parsed.content,
              refusal: null,
              ...(parsed.toolCalls.length > 0 ? { tool_calls: parsed.toolCalls } : {}),
            },
            logprobs: null,
            finish_reason: mapFinish(result.finishReason, parsed.toolCalls.length),
          }],
          usage: usageOf(result),
        };
      },
    };
  }

  /**
   * Starts a text completion.
   *
   * @param req A validated request (see `parseCompletionRequest`).
   * @param signal Cancels the generation.
   * @returns The run.
   * @throws {ApiError} 400 for a prompt longer than the context or token ids outside the
   *   vocabulary, 503 when the queue is full.
   */
  startCompletion(req: CompletionRequest, signal?: AbortSignal): CompletionRun {
    const tok = this.tokenizer;
    const prompt = typeof req.prompt === "string"
      ? [tok.eosId, ...tok.encode(req.prompt)]
      : req.prompt;
    const echoText = !req.echo
      ? ""
      : typeof req.prompt === "string"
      ? req.prompt
      : tok.decode(req.prompt);
    const gen = this.#start(prompt, req, req.sampling, {
      forced: [],
      stopIds: [tok.eosId],
      hidden: this.#hiddenText,
      signal,
      param: "prompt",
    });
    const id = randomId("cmpl-");
    const created = Math.floor(Date.now() / 1000);
    const model = this.modelId;
    const base = {
      id,
      object: "text_completion" as const,
      created,
      model,
      system_fingerprint: null,
    };
    const includeUsage = req.includeUsage;
    const chunk = (text: string, finish: OpenAIFinishReason | null = null): TextCompletion => ({
      ...base,
      choices: [{ index: 0, text, logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    });
    let consumed = false;
    const once = () => {
      if (consumed) throw new Error("a completion run can be consumed once");
      consumed = true;
    };
    return {
      id,
      async *chunks() {
        once();
        if (echoText) yield chunk(echoText);
        for await (const delta of gen) yield chunk(delta);
        const result = await gen.result;
        yield chunk("", mapFinish(result.finishReason, 0));
        if (includeUsage) yield { ...base, choices: [], usage: usageOf(result) };
      },
      async response(): Promise<TextCompletion> {
        once();
        const result = await gen.result;
        return {
          ...base,
          choices: [{
            index: 0,
            text: echoText + result.text,
            logprobs: null,
            finish_reason: mapFinish(result.finishReason, 0),
          }],
          usage: usageOf(result),
        };
      },
    };
  }

  #start(
    prompt: number[],
    req: ChatRequest | CompletionRequest,
    sampling: Partial<SamplingParams>,
    options: {
      forced: number[];
      stopIds: number[];
      hidden: ReadonlySet<number>;
      signal?: AbortSignal;
      param: string;
    },
  ): Generation {
    try {
      return this.engine.generate(prompt, {
        sampling,
        maxTokens: req.maxTokens,
        stop: req.stop,
        stopTokenIds: options.stopIds,
        forcedTokens: options.forced,
        hiddenTokenIds: options.hidden,
        signal: options.signal,
      });
    } catch (e) {
      if (e instanceof ContextLengthError) {
        throw new ApiError(400, e.message, {
          param: options.param,
          code: "context_length_exceeded",
        });
      }
      if (e instanceof EngineOverloadedError) {
        throw new ApiError(503, e.message, { type: "server_error", code: "server_overloaded" });
      }
      if (e instanceof RangeError) throw new ApiError(400, e.message, { param: options.param });
      throw e;
    }
  }
}
