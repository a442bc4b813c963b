/**
 * Tool calls in the model's output: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
 * blocks (the Hermes / Qwen format the chat template teaches) turned into OpenAI `tool_calls`.
 *
 * - {@linkcode parseToolCalls}: a whole reply -> `{ content, toolCalls }`.
 * - {@linkcode ToolCallStreamParser}: the same, incrementally. Text from a `<tool_call>` marker
 *   onward is held back until the block closes, then comes out as one tool call; everything else
 *   comes out as content as soon as it cannot be the start of a marker.
 *
 * Tolerated: white space around and inside the JSON, `arguments` given as a JSON string or left out
 * (`{}`), `parameters` instead of `arguments`, a last block the model did not close. A block whose
 * JSON does not parse, or lacks a string `name`, stays in the content as the model wrote it, so
 * nothing the model produced is lost. Content is trimmed when there are tool calls (the template
 * trims it too) and `null` when nothing but tool calls remain, as OpenAI returns.
 *
 * Call ids are `call_` plus 24 hex digits hashed from a per-response seed and the call's index:
 * unique enough within a conversation, and the same on a rerun with the same seed.
 *
 * @module
 */

import { TOOL_CALL_END_TOKEN, TOOL_CALL_START_TOKEN } from "../tokenizer/special_tokens.ts";
import { parseToolCallBody } from "../tokenizer/tool_calls.ts";
import type { OpenAIToolCall } from "../data/messages.ts";

/** A reply split into content and tool calls. */
export interface ParsedReply {
  /** The text outside tool calls; null when there are tool calls and no other text. */
  content: string | null;
  /** The tool calls, in order. */
  toolCalls: OpenAIToolCall[];
}

/** Options of {@linkcode parseToolCalls} and {@linkcode ToolCallStreamParser}. */
export interface ToolCallParseOptions {
  /** Seed of the call ids, e.g. the completion id (default `""`). */
  idSeed?: string;
}

/** 32-bit FNV-1a of a string's UTF-16 units, with a salt. */
function fnv1a(text: string, salt: number): number {
  let h = (0x811c9dc5 ^ salt) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h >>> 0;
}

/**
 * The id of the `index`-th tool call of a response.
 *
 * @param seed A per-response string (the completion id).
 * @param index The call's index in the response.
 * @returns `call_` + 24 hex digits.
 * @example
 * ```ts
 * import { toolCallId } from "./tool_calls.ts";
 * toolCallId("chatcmpl-1", 0) === toolCallId("chatcmpl-1", 0); // true
 * toolCallId("chatcmpl-1", 0).length; // 29
 * ```
 */
export function toolCallId(seed: string, index: number): string {
  const key = `${seed}#${index}`;
  return "call_" + [1, 2, 3].map((s) => fnv1a(key, s).toString(16).padStart(8, "0")).join("");
}

/**
 * Splits a complete reply into content and OpenAI tool calls.
 *
 * @param text The decoded reply (stop token excluded).
 * @param options `idSeed` for the call ids.
 * @returns Content and tool calls; with no valid tool call the content is `text` unchanged.
 * @example
 * ```ts
 * import { parseToolCalls } from "./tool_calls.ts";
 * const r = parseToolCalls('<tool_call>{"name": "get_weather", "arguments": {"city": "Karo"}}</tool_call>');
 * r.content; // null
 * r.toolCalls[0].function; // { name: "get_weather", arguments: '{"city":"Karo"}' }
 * ```
 */
export function parseToolCalls(text: string, options: ToolCallParseOptions = {}): ParsedReply {
  const parser = new ToolCallStreamParser(options);
  const events = [...parser.push(text), ...parser.finish()];
  const toolCalls: OpenAIToolCall[] = [];
  let content = "";
  for (const e of events) {
    if (e.type === "content") content += e.text;
    else {toolCalls.push({
        id: e.id,
        type: "function",
        function: { name: e.name, arguments: e.arguments },
      });}
  }
  if (toolCalls.length === 0) return { content: text, toolCalls };
  const trimmed = content.trim();
  return { content: trimmed.length > 0 ? trimmed : null, toolCalls };
}

/** Something {@linkcode ToolCallStreamParser} lets out. */
export type ToolCallStreamEvent =
  | { type: "content"; text: string }
  | { type: "tool_call"; index: number; id: string; name: string; arguments: string };

/** Length of the longest suffix of `text` that is a proper prefix of `marker`. */
function partialSuffix(text: string, marker: string): number {
  for (let n = Math.min(marker.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(marker.slice(0, n))) return n;
  }
  return 0;
}

/**
 * Incremental tool-call parser for streamed replies.
 *
 * White space right before a tool call, or between calls, is dropped, as in the non-streaming
 * result; so the content deltas of a reply with tool calls may differ from the untrimmed text by
 * that white space.
 *
 * @example
 * ```ts
 * import { ToolCallStreamParser } from "./tool_calls.ts";
 * const p = new ToolCallStreamParser({ idSeed: "x" });
 * p.push("Let me check. <tool"); // [{ type: "content", text: "Let me check." }]
 * p.push('_call>{"name": "f", "arguments": {}}</tool_call>'); // [{ type: "tool_call", index: 0, ... }]
 * p.finish(); // []
 * ```
 */
export class ToolCallStreamParser {
  #idSeed: string;
  #buf = "";
  #inCall = false;
  #calls = 0;
  /** White space cut before the open marker: dropped for a valid call, restored for a bad one. */
  #sep = "";
  /** True right after a call, until content comes: leading white space there is a separator. */
  #afterCall = false;

  /**
   * Makes a parser for one reply.
   *
   * @param options `idSeed` for the call ids.
   */
  constructor(options: ToolCallParseOptions = {}) {
    this.#idSeed = options.idSeed ?? "";
  }

  /** Number of tool calls let out so far. */
  get toolCallCount(): number {
    return this.#calls;
  }

  /**
   * Adds decoded text.
   *
   * @param text The next piece of the reply.
   * @returns Content and tool calls that are complete now.
   */
  push(text: string): ToolCallStreamEvent[] {
    this.#buf += text;
    const out: ToolCallStreamEvent[] = [];
    for (;;) {
      if (this.#inCall) {
        const end = this.#buf.indexOf(TOOL_CALL_END_TOKEN);
        if (end < 0) return out;
        this.#closeCall(this.#buf.slice(0, end), out, TOOL_CALL_END_TOKEN);
        this.#buf = this.#buf.slice(end + TOOL_CALL_END_TOKEN.length);
        continue;
      }
      const start = this.#buf.indexOf(TOOL_CALL_START_TOKEN);
      if (start >= 0) {
        // White space before a call is a separator, not content.
        const before = this.#buf.slice(0, start);
        const kept = before.trimEnd();
        this.#content(kept, out);
        this.#sep = before.slice(kept.length);
        this.#buf = this.#buf.slice(start + TOOL_CALL_START_TOKEN.length);
        this.#inCall = true;
        continue;
      }
      // Hold back a possible marker start and trailing white space (it may precede a call).
      const hold = partialSuffix(this.#buf, TOOL_CALL_START_TOKEN);
      const body = this.#buf.slice(0, this.#buf.length - hold);
      const kept = body.trimEnd();
      this.#content(kept, out);
      this.#buf = this.#buf.slice(kept.length);
      return out;
    }
  }

  /**
   * Ends the reply: an unclosed block becomes a tool call if its JSON is complete, or content.
   *
   * @returns The last events.
   */
  finish(): ToolCallStreamEvent[] {
    const out: ToolCallStreamEvent[] = [];
    if (this.#inCall) {
      this.#closeCall(this.#buf, out, "");
    } else if (this.#calls === 0 || this.#buf.trim().length > 0) {
      this.#content(this.#calls > 0 ? this.#buf.trimEnd() : this.#buf, out);
    }
    this.#buf = "";
    this.#inCall = false;
    return out;
  }

  #content(text: string, out: ToolCallStreamEvent[]): void {
    // After a tool call, leading white space is the separator the template writes between calls.
    const t = this.#afterCall ? text.trimStart() : text;
    if (t.length === 0) return;
    this.#afterCall = false;
    out.push({ type: "content", text: t });
  }

  #closeCall(inner: string, out: ToolCallStreamEvent[], close: string): void {
    this.#inCall = false;
    const call = parseToolCallBody(inner);
    const sep = this.#sep;
    this.#sep = "";
    if (call === null) {
      this.#afterCall = false;
      out.push({ type: "content", text: sep + TOOL_CALL_START_TOKEN + inner + close });
      return;
    }
    this.#afterCall = true;
    const index = this.#calls++;
    out.push({ type: "tool_call", index, id: toolCallId(this.#idSeed, index), ...call });
  }
}
