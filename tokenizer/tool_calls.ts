/**
 * Reading back the tool calls the chat template writes: `<tool_call>{"name": ..., "arguments":
 * {...}}</tool_call>` blocks (the Hermes / Qwen format). The one parser of a block's JSON, used by
 * evaluation (`train/eval.ts`), the on-policy DPO pairs and the server (`serve/tool_calls.ts`,
 * which adds OpenAI ids, several blocks per reply and streaming). It lives beside the template
 * because `train/` may not import `serve/`.
 *
 * Two readings of a block: the default one is tolerant as a server must be (`arguments` given as
 * a JSON string or left out, `parameters` instead of `arguments`); `strict` reads only what the
 * template writes (an `arguments` object, or a JSON string of one), which is what evaluation counts
 * as a well-formed call.
 *
 * @module
 */
import { TOOL_CALL_END_TOKEN, TOOL_CALL_START_TOKEN } from "./special_tokens.ts";

/** A tool call read from model output: the function name and its arguments as a JSON string. */
export interface ParsedToolCall {
  /** The function name. */
  name: string;
  /** The arguments, a JSON object serialized to a string. */
  arguments: string;
}

/** Options of {@linkcode parseToolCallBody} and {@linkcode parseFirstToolCall}. */
export interface ToolCallBodyOptions {
  /**
   * Read only the template's form: `arguments` must be there, `parameters` is not read, and an
   * empty `name` is kept (to be graded wrong) rather than refused. Default false.
   */
  strict?: boolean;
}

/**
 * Parses the JSON inside one `<tool_call>` block.
 *
 * @param inner The text between the markers.
 * @param options `strict` (see {@linkcode ToolCallBodyOptions}).
 * @returns `{ name, arguments }` with the arguments as a JSON string, or null if malformed.
 * @example
 * ```ts
 * import { parseToolCallBody } from "./tool_calls.ts";
 * parseToolCallBody(' {"name": "f", "arguments": {"x": 1}} '); // { name: "f", arguments: '{"x":1}' }
 * parseToolCallBody('{"name": "f"}'); // { name: "f", arguments: "{}" }
 * parseToolCallBody('{"name": "f"}', { strict: true }); // null
 * parseToolCallBody("{oops"); // null
 * ```
 */
export function parseToolCallBody(
  inner: string,
  options: ToolCallBodyOptions = {},
): ParsedToolCall | null {
  const strict = Boolean(options.strict);
  let obj: unknown;
  try {
    // strict reads the JSON as written (JSON.parse skips JSON's own white space, not Unicode's)
    obj = JSON.parse(strict ? inner : inner.trim());
  } catch {
    return null;
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return null;
  const o = obj as Record<string, unknown>;
  if (typeof o.name !== "string" || (!strict && o.name.length === 0)) return null;
  let args = strict ? o.arguments : o.arguments ?? o.parameters ?? {};
  if (typeof args === "string") {
    // Some models write the arguments as a JSON string, as OpenAI transmits them.
    try {
      args = JSON.parse(args);
    } catch {
      return null;
    }
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) return null;
  return { name: o.name, arguments: JSON.stringify(args) };
}

/**
 * The first tool call in a reply: the first complete `<tool_call>` block, read by
 * {@linkcode parseToolCallBody}.
 *
 * @param text The decoded reply.
 * @param options `strict` (see {@linkcode ToolCallBodyOptions}).
 * @returns `{ name, arguments }`, or null when the first block is missing, unclosed or malformed.
 * @example
 * ```ts
 * import { parseFirstToolCall } from "./tool_calls.ts";
 * parseFirstToolCall('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>');
 * // { name: "calculator", arguments: '{"expression":"2+3"}' }
 * parseFirstToolCall("It is sunny."); // null
 * ```
 */
export function parseFirstToolCall(
  text: string,
  options: ToolCallBodyOptions = {},
): ParsedToolCall | null {
  const a = text.indexOf(TOOL_CALL_START_TOKEN);
  if (a < 0) return null;
  const b = text.indexOf(TOOL_CALL_END_TOKEN, a);
  if (b < 0) return null;
  return parseToolCallBody(text.slice(a + TOOL_CALL_START_TOKEN.length, b), options);
}
