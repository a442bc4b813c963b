/**
 * A multi-turn chat conversation over any {@linkcode ChatBackend}: the state and turn handling
 * behind `cli.ts chat`, without a terminal.
 *
 * A {@linkcode ChatSession} keeps the system prompt and the history. {@linkcode ChatSession.send}
 * adds a user message, streams the model's reply as {@linkcode ChatEvent}s (reasoning and content
 * pieces as they arrive, then the finished reply with its tool calls) and, when tools are given,
 * runs the reply's tool calls locally and continues the conversation with their results (at most
 * `maxToolRounds` rounds per message). The history keeps each reply's content and tool calls, not
 * its reasoning: as in DeepSeek-R1, earlier turns' reasoning is not sent back to the model. When
 * the signal aborts and the backend throws (as `httpBackend`'s `fetch` does), the
 * message is taken back out of the history; an in-process {@linkcode serviceBackend} ends the
 * reply early instead, and that partial reply stays.
 *
 * The backend is a {@linkcode CompletionService} in-process ({@linkcode serviceBackend}) or an
 * OpenAI-compatible server (`httpBackend` in `./http_backend.ts`).
 *
 * @module
 */

import type { ChatMessage } from "../tokenizer/chat_template.ts";
import type { ChatCompletionChunk, CompletionService } from "./completions.ts";
import { samplingParams, type SamplingSettings } from "./generate.ts";
import type { ChatRequest } from "./protocol.ts";
import type { ServerTools } from "./server.ts";

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

/** A tool call of a reply, its arguments as the model wrote them (JSON text). */
export interface ChatToolCall {
  /** The call id. */
  id: string;
  /** The tool's name. */
  name: string;
  /** The arguments, JSON text. */
  arguments: string;
}

/**
 * What {@linkcode ChatSession.send} yields, in order: per model turn its `reasoning` and `content`
 * pieces as they stream, then `reply`; with tools, a `tool_result` per call, and the next turn;
 * `tool_rounds_exhausted` when the last allowed turn still asked for tools.
 */
export type ChatEvent =
  | {
    /** A piece of the reply's reasoning (`reasoning_content`). */
    type: "reasoning";
    /** The piece. */
    text: string;
  }
  | {
    /** A piece of the reply's content. */
    type: "content";
    /** The piece. */
    text: string;
  }
  | {
    /** A model turn ended; its message is in the history now. */
    type: "reply";
    /** The whole content. */
    content: string;
    /** Its tool calls, in order. */
    toolCalls: ChatToolCall[];
    /** `stop`, `length`, `tool_calls`, or null when the stream ended without one. */
    finishReason: string | null;
  }
  | {
    /** A tool call ran locally; its result is in the history now. */
    type: "tool_result";
    /** The call. */
    call: ChatToolCall;
    /** What the tool returned. */
    content: string;
  }
  | {
    /** The reply still asked for tools after the most rounds allowed: the message ends. */
    type: "tool_rounds_exhausted";
    /** The round limit. */
    rounds: number;
  };

/** Options of {@linkcode ChatSession}. */
export interface ChatSessionOptions extends Partial<SamplingSettings> {
  /** Where replies come from. */
  backend: ChatBackend;
  /** Initial system prompt (default none). */
  system?: string;
  /** Tools offered to the model and run locally (default none). */
  tools?: ServerTools;
  /** Most model -> tool -> model rounds per message (default 4). */
  maxToolRounds?: number;
}

/**
 * A conversation: system prompt, history, sampling settings and tools, sent turn by turn to a
 * backend (see the module doc).
 *
 * @example
 * ```ts ignore
 * const session = new ChatSession({ backend: serviceBackend(service), temperature: 0 });
 * for await (const e of session.send("Hello")) if (e.type === "content") print(e.text);
 * session.reset();
 * ```
 */
export class ChatSession {
  /** Where replies come from. */
  readonly backend: ChatBackend;
  /** The system prompt; empty for none. Changing it applies from the next message on. */
  system: string;
  #history: ChatMessage[] = [];
  #tools: ServerTools | undefined;
  #maxRounds: number;
  #maxTokens: number;
  #stop: string[];
  #sampling: ChatRequest["sampling"];

  /**
   * Starts an empty conversation.
   *
   * @param options Backend, system prompt, tools, sampling (default temperature 0.7, 512 tokens).
   */
  constructor(options: ChatSessionOptions) {
    this.backend = options.backend;
    this.system = options.system ?? "";
    this.#tools = options.tools;
    this.#maxRounds = options.maxToolRounds ?? 4;
    this.#maxTokens = options.maxTokens ?? 512;
    this.#stop = options.stop ?? [];
    this.#sampling = samplingParams({ ...options, temperature: options.temperature ?? 0.7 });
  }

  /** The conversation so far without the system prompt: user, assistant and tool messages. */
  get messages(): readonly ChatMessage[] {
    return this.#history;
  }

  /** Forgets the conversation; the system prompt stays. */
  reset(): void {
    this.#history = [];
  }

  /**
   * Sends a user message and streams what follows (see {@linkcode ChatEvent}).
   *
   * @param text The user message.
   * @param signal Stops the reply; when the backend then throws, the message leaves the history.
   * @returns The events; errors of the backend or the model are thrown from it.
   */
  async *send(text: string, signal?: AbortSignal): AsyncGenerator<ChatEvent, void, undefined> {
    const history = this.#history;
    const tools = this.#tools;
    const maxRounds = this.#maxRounds;
    history.push({ role: "user", content: text });
    try {
      for (let round = 0; round <= maxRounds; round++) {
        const req: ChatRequest = {
          model: undefined,
          stream: true,
          includeUsage: false,
          maxTokens: this.#maxTokens,
          sampling: this.#sampling,
          stop: this.#stop,
          messages: [
            ...(this.system ? [{ role: "system", content: this.system }] : []),
            ...history,
          ],
          tools: tools ? [...tools.schemas] : null,
          toolChoice: tools ? "auto" : "none",
        };
        let content = "";
        const calls: ChatToolCall[] = [];
        let finish: string | null = null;
        for await (const chunk of this.backend.chat(req, signal)) {
          const c = chunk.choices[0];
          if (!c) continue;
          if (c.delta.reasoning_content) {
            yield { type: "reasoning", text: c.delta.reasoning_content };
          }
          if (c.delta.content) {
            content += c.delta.content;
            yield { type: "content", text: c.delta.content };
          }
          for (const tc of c.delta.tool_calls ?? []) {
            const slot = calls[tc.index] ??= { id: "", name: "", arguments: "" };
            if (tc.id) slot.id = tc.id;
            slot.name += tc.function.name ?? "";
            slot.arguments += tc.function.arguments ?? "";
          }
          finish = c.finish_reason ?? finish;
        }
        // The answer and the tool calls only: earlier reasoning is not sent back (DeepSeek-R1).
        history.push({
          role: "assistant",
          content: content || null,
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
        yield { type: "reply", content, toolCalls: calls, finishReason: finish };
        if (finish !== "tool_calls" || !tools || calls.length === 0) break;
        if (round === maxRounds) {
          yield { type: "tool_rounds_exhausted", rounds: maxRounds };
          break;
        }
        for (const c of calls) {
          const result = await tools.run(c.name, c.arguments);
          history.push({ role: "tool", tool_call_id: c.id, content: result });
          yield { type: "tool_result", call: c, content: result };
        }
      }
    } finally {
      if (signal?.aborted && history.at(-1)?.role === "user") history.pop();
    }
  }
}
