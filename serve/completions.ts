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
 * - `auto` (the default with tools): the model decides; once it opens a call, the call's JSON is
 *   constrained (`constraint.ts`) when any tool is `strict`;
 * - `required`: the reply starts with a forced `<tool_call>` and is nothing but calls, each JSON
 *   constrained to name an offered tool (`parallel_tool_calls: false`: exactly one call);
 * - `{"type": "function", "function": {"name": N}}`: the reply is forced to start with
 *   `<tool_call>{"name": "N", "arguments":` and the model writes the arguments, constrained to
 *   one JSON object (the tool's schema when it is `strict`).
 * Forced tokens count as completion tokens. `response_format` `json_object` / `json_schema`
 * constrains the whole reply to one JSON value (tools, if any, are then shown but not callable).
 *
 * DeepSeek extensions: a last assistant message with `"prefix": true` is a prefix the reply
 * continues (the prompt ends with it; the reply holds only the continuation); a reply that opens
 * with `<think>` has its reasoning split into `reasoning_content` (streamed as
 * `delta.reasoning_content`).
 *
 * `n` choices are `n` generations of the same prompt (with a `seed`, choice i uses seed + i).
 * Logprobs are the model's own distribution (see `engine.ts`).
 *
 * Text completions: the prompt string is encoded after an `<|eos|>` token, the document separator
 * the model was pretrained with, so a prompt reads as the start of a document (that token counts
 * as a prompt token; with `echo` and `logprobs` the first prompt token is scored given it); token-id
 * prompts are used as given. Generation stops at `<|eos|>`.
 *
 * Special tokens the model writes are counted but left out of the text (vLLM's default
 * `skip_special_tokens`), except, in chat, `<tool_call>`, `</tool_call>`, `<think>` and
 * `</think>`, which the reply parsers need.
 *
 * @module
 */

import { encodeChatPrompt } from "../tokenizer/chat_encode.ts";
import { jinjaJson } from "../tokenizer/chat_template.ts";
import {
  THINK_END_TOKEN,
  THINK_START_TOKEN,
  TOOL_CALL_END_TOKEN,
  TOOL_CALL_START_TOKEN,
} from "../tokenizer/special_tokens.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  type ConstrainedTool,
  jsonConstraint,
  type TokenConstraint,
  toolCallConstraint,
} from "./constraint.ts";
import {
  ContextLengthError,
  type Engine,
  EngineOverloadedError,
  type FinishReason,
  type Generation,
  type GenerationResult,
  type TokenLogprob,
} from "./engine.ts";
import { ApiError, type ChatRequest, type CompletionRequest, type UsageBody } from "./protocol.ts";
import type { SamplingParams } from "../model/sampling.ts";
import type { OpenAIToolCall } from "../data/messages.ts";
import { type ToolCallStreamEvent, ToolCallStreamParser } from "./tool_calls.ts";

/** OpenAI finish reasons this server sends. */
export type OpenAIFinishReason = "stop" | "length" | "tool_calls";

/** One token in OpenAI's chat `logprobs.content`. */
export interface ChatTokenLogprob {
  /** The token's text (U+FFFD for a partial UTF-8 character). */
  token: string;
  /** Its log-probability. */
  logprob: number;
  /** Its UTF-8 bytes. */
  bytes: number[];
  /** The most likely tokens at that position. */
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** An assistant message of a chat response. */
export interface ChatMessageBody {
  /** Always `assistant`. */
  role: "assistant";
  /** The text outside reasoning and tool calls. */
  content: string | null;
  /** The text inside `<think>...</think>`, when the reply has it. */
  reasoning_content?: string;
  /** Always null. */
  refusal: null;
  /** The calls, when there are any. */
  tool_calls?: OpenAIToolCall[];
}

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
  /** The choices (`n`). */
  choices: {
    index: number;
    message: ChatMessageBody;
    logprobs: { content: ChatTokenLogprob[] } | null;
    finish_reason: OpenAIFinishReason;
  }[];
  /** Token counts (completion tokens summed over the choices). */
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

/** What a streamed chunk's delta may carry. */
export interface ChatDelta {
  /** `assistant`, in the first chunk. */
  role?: "assistant";
  /** A piece of the content. */
  content?: string;
  /** A piece of the reasoning. */
  reasoning_content?: string;
  /** One tool-call fragment. */
  tool_calls?: ToolCallDelta[];
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
    index: number;
    delta: ChatDelta;
    logprobs: { content: ChatTokenLogprob[] } | null;
    finish_reason: OpenAIFinishReason | null;
  }[];
  /** With `stream_options.include_usage`: null, then the counts in the last chunk. */
  usage?: UsageBody | null;
}

/** Logprobs of a text completion, in OpenAI's legacy form. */
export interface TextLogprobs {
  /** Token texts. */
  tokens: string[];
  /** Their log-probabilities (null for a first prompt token, which nothing predicts). */
  token_logprobs: (number | null)[];
  /** Per token, the most likely alternatives: text -> logprob. */
  top_logprobs: (Record<string, number> | null)[];
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
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
  /** The choices; empty in the final usage chunk of a stream. */
  choices: {
    index: number;
    text: string;
    logprobs: TextLogprobs | null;
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
   * The chunks: per choice the role first, then content, reasoning and tool-call deltas, then the
   * finish reason; then the usage when asked for. Breaking out early cancels the generation.
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

function mapFinish(reason: FinishReason, toolCalls: number): OpenAIFinishReason {
  if (reason === "length") return "length";
  return toolCalls > 0 ? "tool_calls" : "stop";
}

function sumUsage(promptTokens: number, results: GenerationResult[]): UsageBody {
  const completion = results.reduce((a, r) => a + r.usage.completion_tokens, 0);
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completion,
    total_tokens: promptTokens + completion,
  };
}

/** What {@linkcode ReasoningSplitter.push} returns. */
export interface SplitText {
  /** Reasoning text (inside `<think>`). */
  reasoning: string;
  /** Content text (after `</think>`, or all of it without `<think>`). */
  content: string;
}

/**
 * Splits a streamed reply that may open with `<think>...</think>` into reasoning and content
 * (DeepSeek-R1's `reasoning_content`). Text that could still be the start of a marker is held
 * back; the blank lines around the markers are dropped.
 *
 * @example
 * ```ts
 * import { ReasoningSplitter } from "./completions.ts";
 * const s = new ReasoningSplitter();
 * s.push("<think>\nhm"); // { reasoning: "hm", content: "" }
 * s.push("</think>\n\nHi"); // { reasoning: "", content: "Hi" }
 * ```
 */
export class ReasoningSplitter {
  #mode: "start" | "reasoning" | "content" = "start";
  #held = "";
  #skipWs = false;

  /**
   * Adds text.
   *
   * @param text A delta of the reply.
   * @returns What can be emitted now.
   */
  push(text: string): SplitText {
    const out = { reasoning: "", content: "" };
    let t = this.#held + text;
    this.#held = "";
    for (;;) {
      if (this.#mode === "start") {
        const lead = t.trimStart();
        if (lead.startsWith(THINK_START_TOKEN)) {
          t = lead.slice(THINK_START_TOKEN.length);
          this.#mode = "reasoning";
          this.#skipWs = true;
          continue;
        }
        if (THINK_START_TOKEN.startsWith(lead)) {
          this.#held = t; // could still become <think>
          return out;
        }
        this.#mode = "content";
      }
      if (this.#skipWs) {
        t = t.trimStart();
        if (t === "") return out;
        this.#skipWs = false;
      }
      if (this.#mode === "content") {
        out.content += t;
        return out;
      }
      const end = t.indexOf(THINK_END_TOKEN);
      if (end >= 0) {
        out.reasoning += t.slice(0, end).trimEnd();
        t = t.slice(end + THINK_END_TOKEN.length);
        this.#mode = "content";
        this.#skipWs = true;
        continue;
      }
      let keep = 0;
      for (let n = Math.min(THINK_END_TOKEN.length - 1, t.length); n > 0; n--) {
        if (THINK_END_TOKEN.startsWith(t.slice(t.length - n))) {
          keep = n;
          break;
        }
      }
      // Trailing white space may precede </think>: hold it too.
      const body = t.slice(0, t.length - keep);
      const trimmed = body.trimEnd();
      out.reasoning += trimmed;
      this.#held = body.slice(trimmed.length) + t.slice(t.length - keep);
      return out;
    }
  }

  /**
   * Ends the stream.
   *
   * @returns Held text (an unclosed `<think>` block stays reasoning).
   */
  finish(): SplitText {
    const t = this.#held;
    this.#held = "";
    if (this.#mode === "reasoning") return { reasoning: t.trimEnd(), content: "" };
    return { reasoning: "", content: this.#mode === "start" ? t : t };
  }
}

/** Merges async generators, yielding values as they come. */
async function* mergeStreams<T>(gens: AsyncGenerator<T, void, undefined>[]): AsyncGenerator<T> {
  const next = gens.map((g, i) => g.next().then((r) => ({ r, i })));
  const live = new Set(gens.map((_, i) => i));
  try {
    while (live.size > 0) {
      const { r, i } = await Promise.race([...live].map((k) => next[k]));
      if (r.done) {
        live.delete(i);
        continue;
      }
      next[i] = gens[i].next().then((r) => ({ r, i }));
      yield r.value;
    }
  } finally {
    for (const k of live) gens[k].return(undefined).catch(() => {});
  }
}

/** One choice's reply, split into reasoning, content and tool calls. */
interface ReplyParts {
  reasoning: string;
  content: string;
  toolCalls: OpenAIToolCall[];
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
  #tokenText = new Map<number, string>();

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
    const shown = new Set([
      TOOL_CALL_START_TOKEN,
      TOOL_CALL_END_TOKEN,
      THINK_START_TOKEN,
      THINK_END_TOKEN,
    ]);
    this.#hiddenText = new Set(tokenizer.specialTokens.map((s) => s.id));
    this.#hiddenChat = new Set(
      tokenizer.specialTokens.filter((s) => !shown.has(s.content)).map((s) => s.id),
    );
    tokenizer.specialId(TOOL_CALL_START_TOKEN);
  }

  /** A token's text for logprobs (special tokens by name, partial characters as U+FFFD). */
  #text(id: number): string {
    let t = this.#tokenText.get(id);
    if (t === undefined) {
      t = this.tokenizer.isSpecial(id)
        ? this.tokenizer.idToToken(id)
        : new TextDecoder().decode(this.tokenizer.tokenBytes(id));
      this.#tokenText.set(id, t);
    }
    return t;
  }

  #bytes(id: number): number[] {
    return [...new TextEncoder().encode(this.#text(id))];
  }

  #chatLogprob(e: TokenLogprob): ChatTokenLogprob {
    return {
      token: this.#text(e.id),
      logprob: e.logprob,
      bytes: this.#bytes(e.id),
      top_logprobs: e.top.map((t) => ({
        token: this.#text(t.id),
        logprob: t.logprob,
        bytes: this.#bytes(t.id),
      })),
    };
  }

  /** 400 when the prompt plus the asked-for tokens pass the context. */
  #checkRoom(promptTokens: number, req: ChatRequest | CompletionRequest, param: string): void {
    const ctx = this.engine.model.maxSeqLen;
    if (promptTokens >= ctx) {
      throw new ApiError(
        400,
        `the prompt has ${promptTokens} tokens; the model's context is ${ctx} tokens, so at ` +
          `most ${ctx - 1} leave room for an answer`,
        { param, code: "context_length_exceeded" },
      );
    }
    // Requests that came through the parser (the HTTP API) are refused past the context, as
    // OpenAI does; in-process callers (the REPL, `generate`) get the engine's cap.
    if (
      req.maxTokensParam !== undefined && req.maxTokens !== undefined &&
      promptTokens + req.maxTokens > ctx
    ) {
      const field = req.maxTokensParam;
      throw new ApiError(
        400,
        `'${field}' is ${req.maxTokens}, but the model's context is ${ctx} tokens and the prompt ` +
          `takes ${promptTokens}: ask for at most ${ctx - promptTokens}, or leave it out`,
        { param: field, code: "context_length_exceeded" },
      );
    }
  }

  /**
   * Starts a chat completion.
   *
   * @param req A validated request (see `parseChatRequest`).
   * @param signal Cancels the generation (a client that went away).
   * @returns The run.
   * @throws {ApiError} 400 for messages the template rejects, a prompt longer than the context or
   *   a `max_tokens` past it; 503 when the engine's queue is full.
   */
  startChat(req: ChatRequest, signal?: AbortSignal): ChatRun {
    const tok = this.tokenizer;
    const showTools = req.tools !== null && req.toolChoice !== "none";
    const json = req.responseFormat?.type === "json" ? req.responseFormat.node : null;
    let prompt: number[];
    try {
      prompt = encodeChatPrompt(tok, req.messages, { tools: showTools ? req.tools : null });
    } catch (e) {
      throw new ApiError(400, (e as Error).message, { param: "messages" });
    }
    if (req.prefix) prompt = [...prompt, ...tok.encode(req.prefix)];
    const toolCallId = tok.specialId(TOOL_CALL_START_TOKEN);
    let forced: number[] = [];
    const sampling: Partial<SamplingParams> = { ...req.sampling };
    let makeConstraint: (() => TokenConstraint) | undefined;
    const tools: ConstrainedTool[] = (req.tools ?? []).map((t) => {
      const fn = (t as { function: ConstrainedTool }).function;
      return { name: fn.name, parameters: fn.parameters, strict: fn.strict === true };
    });
    const callOptions = {
      tools,
      stopIds: this.#chatStops,
      parallel: req.parallelToolCalls ?? true,
    };
    if (!showTools || json) {
      const bias = new Map(sampling.logitBias ?? []);
      bias.set(toolCallId, -Infinity);
      sampling.logitBias = bias;
    }
    if (showTools && !json && !req.prefix && req.toolChoice === "required") {
      forced = [toolCallId];
      makeConstraint = () => toolCallConstraint(tok, { ...callOptions, mode: "calls", opened: "" });
    } else if (showTools && !json && !req.prefix && typeof req.toolChoice === "object") {
      const name = req.toolChoice.name;
      const opened = `{"name": ${jinjaJson(name)}, "arguments":`;
      forced = [toolCallId, ...tok.encode(opened)];
      makeConstraint = () =>
        toolCallConstraint(tok, {
          ...callOptions,
          tools: tools.filter((t) => t.name === name),
          parallel: false,
          mode: "calls",
          opened,
        });
    } else if (json) {
      makeConstraint = () => jsonConstraint(tok, { node: json, stopIds: this.#chatStops });
    } else if (showTools && tools.some((t) => t.strict)) {
      makeConstraint = () => toolCallConstraint(tok, { ...callOptions, mode: "auto" });
    }
    this.#checkRoom(prompt.length + forced.length, req, "messages");
    const n = req.n ?? 1;
    const gens: Generation[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const seed = sampling.seed;
        gens.push(this.#start(prompt, req, {
          ...sampling,
          seed: seed === undefined ? undefined : seed + i,
        }, {
          forced,
          stopIds: this.#chatStops,
          hidden: this.#hiddenChat,
          signal,
          param: "messages",
          constraint: makeConstraint?.(),
          logprobs: req.topLogprobs,
        }));
      }
    } catch (e) {
      for (const g of gens) g.cancel();
      throw e;
    }
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
    const wantLogprobs = req.topLogprobs !== undefined;
    const chunk = (
      index: number,
      delta: ChatDelta,
      finish: OpenAIFinishReason | null = null,
      logprobs: ChatTokenLogprob[] | null = null,
    ): ChatCompletionChunk => ({
      ...base,
      choices: [{
        index,
        delta,
        logprobs: logprobs ? { content: logprobs } : null,
        finish_reason: finish,
      }],
      ...withUsage,
    });
    let consumed = false;
    const once = () => {
      if (consumed) throw new Error("a chat run can be consumed once");
      consumed = true;
    };
    const chatLogprob = (e: TokenLogprob) => this.#chatLogprob(e);
    const splitReply = (text: string, seed: string) => this.#splitReply(text, showTools, seed);
    const promptTokens = prompt.length;

    /** One choice as chunks; `results[index]` is set when it ends. */
    async function* choiceChunks(
      index: number,
      gen: Generation,
      results: GenerationResult[],
    ): AsyncGenerator<ChatCompletionChunk, void, undefined> {
      yield chunk(index, { role: "assistant", content: "" });
      const splitter = new ReasoningSplitter();
      const parser = showTools ? new ToolCallStreamParser({ idSeed: `${id}#${index}` }) : null;
      let sentLogprobs = 0;
      const newLogprobs = (): ChatTokenLogprob[] | null => {
        if (!wantLogprobs) return null;
        const all = gen.logprobs;
        const out = all.slice(sentLogprobs).map((e) => chatLogprob(e));
        sentLogprobs = all.length;
        return out;
      };
      const emit = function* (parts: SplitText) {
        if (parts.reasoning) yield chunk(index, { reasoning_content: parts.reasoning });
        if (!parts.content) return;
        const events: ToolCallStreamEvent[] = parser
          ? parser.push(parts.content)
          : [{ type: "content", text: parts.content }];
        yield* toChunks(events);
      };
      const toChunks = function* (events: ToolCallStreamEvent[]) {
        for (const e of events) {
          if (e.type === "content") {
            if (e.text) yield chunk(index, { content: e.text });
          } else {
            // Swarm-compatible: one call per chunk, id / type / name once, then the arguments.
            yield chunk(index, {
              tool_calls: [{
                index: e.index,
                id: e.id,
                type: "function",
                function: { name: e.name, arguments: "" },
              }],
            });
            yield chunk(index, {
              tool_calls: [{ index: e.index, function: { arguments: e.arguments } }],
            });
          }
        }
      };
      for await (const delta of gen) {
        const lps = newLogprobs();
        if (lps && lps.length > 0) yield chunk(index, {}, null, lps);
        yield* emit(splitter.push(delta));
      }
      const result = await gen.result;
      results[index] = result;
      const lps = newLogprobs();
      if (lps && lps.length > 0) yield chunk(index, {}, null, lps);
      yield* emit(splitter.finish());
      if (parser) yield* toChunks(parser.finish());
      yield chunk(index, {}, mapFinish(result.finishReason, parser?.toolCallCount ?? 0));
    }

    return {
      id,
      promptTokens,
      async *chunks() {
        once();
        const results: GenerationResult[] = [];
        const streams = gens.map((g, i) => choiceChunks(i, g, results));
        try {
          yield* (streams.length === 1 ? streams[0] : mergeStreams(streams));
        } finally {
          for (const g of gens) g.cancel();
        }
        if (includeUsage) {
          yield { ...base, choices: [], usage: sumUsage(promptTokens, results) };
        }
      },
      async response(): Promise<ChatCompletion> {
        once();
        let results: GenerationResult[];
        try {
          results = await Promise.all(gens.map((g) => g.result));
        } catch (e) {
          for (const g of gens) g.cancel();
          throw e;
        }
        return {
          id,
          object: "chat.completion",
          created,
          model,
          system_fingerprint: null,
          choices: results.map((result, index) => {
            const parts = splitReply(result.text, `${id}#${index}`);
            return {
              index,
              message: {
                role: "assistant" as const,
                content: parts.toolCalls.length > 0 && parts.content === "" ? null : parts.content,
                ...(parts.reasoning ? { reasoning_content: parts.reasoning } : {}),
                refusal: null,
                ...(parts.toolCalls.length > 0 ? { tool_calls: parts.toolCalls } : {}),
              },
              logprobs: wantLogprobs
                ? { content: (result.logprobs ?? []).map((e) => chatLogprob(e)) }
                : null,
              finish_reason: mapFinish(result.finishReason, parts.toolCalls.length),
            };
          }),
          usage: sumUsage(promptTokens, results),
        };
      },
    };
  }

  #splitReply(text: string, showTools: boolean, idSeed: string): ReplyParts {
    const s = new ReasoningSplitter();
    const a = s.push(text), b = s.finish();
    const reasoning = a.reasoning + b.reasoning, body = a.content + b.content;
    if (!showTools) return { reasoning, content: body, toolCalls: [] };
    const parser = new ToolCallStreamParser({ idSeed });
    let content = "";
    const toolCalls: OpenAIToolCall[] = [];
    for (const e of [...parser.push(body), ...parser.finish()]) {
      if (e.type === "content") content += e.text;
      else {
        toolCalls.push({
          id: e.id,
          type: "function",
          function: { name: e.name, arguments: e.arguments },
        });
      }
    }
    return { reasoning, content: toolCalls.length > 0 ? content.trim() : content, toolCalls };
  }

  /**
   * Starts a text completion.
   *
   * @param req A validated request (see `parseCompletionRequest`).
   * @param signal Cancels the generation.
   * @returns The run.
   * @throws {ApiError} 400 for a prompt longer than the context, a `max_tokens` past it, or token
   *   ids outside the vocabulary; 503 when the queue is full.
   */
  startCompletion(req: CompletionRequest, signal?: AbortSignal): CompletionRun {
    const tok = this.tokenizer;
    if (typeof req.prompt !== "string") {
      const bad = req.prompt.findIndex((t) => t >= tok.vocabSize);
      if (bad >= 0) {
        throw new ApiError(
          400,
          `'prompt[${bad}]' is token id ${req.prompt[bad]}, outside the vocabulary ` +
            `0..${tok.vocabSize - 1}`,
          { param: "prompt" },
        );
      }
    }
    const textPrompt = typeof req.prompt === "string";
    const prompt = textPrompt
      ? [tok.eosId, ...tok.encode(req.prompt as string)]
      : req.prompt as number[];
    const echoText = !req.echo ? "" : textPrompt ? req.prompt as string : tok.decode(prompt);
    this.#checkRoom(prompt.length, req, "prompt");
    const wantLogprobs = req.logprobs !== undefined;
    const n = req.n ?? 1;
    const gens: Generation[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const seed = req.sampling.seed;
        gens.push(this.#start(prompt, req, {
          ...req.sampling,
          seed: seed === undefined ? undefined : seed + i,
        }, {
          forced: [],
          stopIds: [tok.eosId],
          hidden: this.#hiddenText,
          signal,
          param: "prompt",
          logprobs: req.logprobs,
          promptLogprobs: wantLogprobs && req.echo,
        }));
      }
    } catch (e) {
      for (const g of gens) g.cancel();
      throw e;
    }
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
    const chunk = (
      index: number,
      text: string,
      finish: OpenAIFinishReason | null = null,
      logprobs: TextLogprobs | null = null,
    ): TextCompletion => ({
      ...base,
      choices: [{ index, text, logprobs, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    });
    let consumed = false;
    const once = () => {
      if (consumed) throw new Error("a completion run can be consumed once");
      consumed = true;
    };
    const textOf = (tokenId: number) => this.#text(tokenId);
    const promptTokens = prompt.length;
    // With a text prompt, the leading <|eos|> is context, not echoed text.
    const skip = textPrompt ? 1 : 0;
    const legacy = (
      entries: (TokenLogprob | null)[],
      ids: readonly number[],
      offset: number,
    ): TextLogprobs => {
      const out: TextLogprobs = {
        tokens: [],
        token_logprobs: [],
        top_logprobs: [],
        text_offset: [],
      };
      let at = offset;
      entries.forEach((e, k) => {
        const t = textOf(ids[k]);
        out.tokens.push(t);
        out.token_logprobs.push(e ? e.logprob : null);
        out.top_logprobs.push(
          e ? Object.fromEntries(e.top.map((x) => [textOf(x.id), x.logprob])) : null,
        );
        out.text_offset.push(at);
        at += t.length;
      });
      return out;
    };
    const echoLogprobs = (r: GenerationResult): TextLogprobs =>
      legacy((r.promptLogprobs ?? []).slice(skip), prompt.slice(skip), 0);

    async function* choiceChunks(
      index: number,
      gen: Generation,
      results: GenerationResult[],
    ): AsyncGenerator<TextCompletion, void, undefined> {
      let sent = 0, offset = echoText.length;
      const next = (): TextLogprobs | null => {
        if (!wantLogprobs) return null;
        const all = gen.logprobs.slice(sent);
        sent += all.length;
        const lp = legacy(all, all.map((e) => e.id), offset);
        offset += lp.tokens.reduce((a, t) => a + t.length, 0);
        return lp;
      };
      // A streamed echo carries no prompt logprobs (they come with the non-streamed response).
      if (echoText) yield chunk(index, echoText);
      for await (const delta of gen) yield chunk(index, delta, null, next());
      const result = await gen.result;
      results[index] = result;
      yield chunk(index, "", mapFinish(result.finishReason, 0), next());
    }

    return {
      id,
      async *chunks() {
        once();
        const results: GenerationResult[] = [];
        const streams = gens.map((g, i) => choiceChunks(i, g, results));
        try {
          yield* (streams.length === 1 ? streams[0] : mergeStreams(streams));
        } finally {
          for (const g of gens) g.cancel();
        }
        if (includeUsage) {
          yield { ...base, choices: [], usage: sumUsage(promptTokens, results) };
        }
      },
      async response(): Promise<TextCompletion> {
        once();
        let results: GenerationResult[];
        try {
          results = await Promise.all(gens.map((g) => g.result));
        } catch (e) {
          for (const g of gens) g.cancel();
          throw e;
        }
        return {
          ...base,
          choices: results.map((result, index) => {
            let logprobs: TextLogprobs | null = null;
            if (wantLogprobs) {
              const out = result.logprobs ?? [];
              const gen = legacy(out, out.map((e) => e.id), echoText.length);
              logprobs = gen;
              if (req.echo) {
                const p = echoLogprobs(result);
                logprobs = {
                  tokens: [...p.tokens, ...gen.tokens],
                  token_logprobs: [...p.token_logprobs, ...gen.token_logprobs],
                  top_logprobs: [...p.top_logprobs, ...gen.top_logprobs],
                  text_offset: [...p.text_offset, ...gen.text_offset],
                };
              }
            }
            return {
              index,
              text: echoText + result.text,
              logprobs,
              finish_reason: mapFinish(result.finishReason, 0),
            };
          }),
          usage: sumUsage(promptTokens, results),
        };
      },
    };
  }

  /**
   * Embeds texts or token-id lists: see `embeddings.ts` for the pooling.
   *
   * @param tokens Token ids of one input.
   * @returns Per token, the model's final hidden state.
   */
  hiddenStates(tokens: readonly number[]): Promise<Float32Array[]> {
    return this.engine.embed(tokens);
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
      constraint?: TokenConstraint;
      logprobs?: number;
      promptLogprobs?: boolean;
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
        constraint: options.constraint,
        logprobs: options.logprobs,
        promptLogprobs: options.promptLogprobs,
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
