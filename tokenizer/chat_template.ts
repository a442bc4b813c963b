/**
 * The chat format: a Jinja `chat_template` (stored in `tokenizer_config.json`) and a TypeScript
 * renderer that produces exactly the same text, segment by segment, so training can tell which
 * characters the assistant wrote.
 *
 * The format is ChatML with Hermes / Qwen-style tools:
 *
 * ```text
 * <|bos|><|im_start|>system
 * You are helpful.
 *
 * # Tools
 * ...
 * <tools>
 * {"name": "get_weather", "description": "...", "parameters": {...}}
 * </tools>
 * ...<|im_end|>
 * <|im_start|>user
 * Weather in Paris?<|im_end|>
 * <|im_start|>assistant
 * <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>
 * <|im_start|>tool
 * <tool_response>{"temp": 21}</tool_response><|im_end|>
 * <|im_start|>assistant
 * It is 21 degrees.<|im_end|>
 * ```
 *
 * Assistant spans are well defined: an assistant turn is the header `<|im_start|>assistant\n`
 * followed by its *span*: optional `<think>\n...\n</think>\n\n`, the content (trimmed), the tool
 * calls (separated by `\n`), and `<|im_end|>`. Because the content is trimmed, the span starts with
 * a non-white-space character or a special token, so the header's `\n` is always a pre-tokenizer
 * chunk of its own and no token straddles the header / span boundary; the span ends with a special
 * token. The `\n` after `<|im_end|>` belongs to no span.
 *
 * Inputs are first normalized ({@linkcode normalizeMessages}): content-part arrays are joined,
 * missing contents become `""`, and tool-call arguments given as JSON strings are parsed so they
 * render in one canonical form (`tojson`: `{"a": 1, "b": [1, 2]}`, keys in insertion order,
 * non-ASCII kept). `renderChat(m)` equals `@huggingface/jinja` rendering `CHAT_TEMPLATE` with
 * `normalizeMessages(m)`; the tests check this on many conversations. Trimming uses JS
 * `String.prototype.trim` (the `trim` filter of `@huggingface/jinja`; Python's `str.strip` differs
 * only on U+FEFF and U+001C..U+001F).
 *
 * @module
 */

import {
  BOS_TOKEN,
  IM_END_TOKEN,
  IM_START_TOKEN,
  SPECIAL_TOKENS,
  THINK_END_TOKEN,
  THINK_START_TOKEN,
  TOOL_CALL_END_TOKEN,
  TOOL_CALL_START_TOKEN,
  TOOL_RESPONSE_END_TOKEN,
  TOOL_RESPONSE_START_TOKEN,
} from "./special_tokens.ts";

/** A tool call in OpenAI form. */
export interface ToolCall {
  /** Call id (not rendered). */
  id?: string;
  /** Always `"function"`. */
  type?: "function";
  /** The function and its arguments (a JSON string or an object). */
  function: { name: string; arguments: string | Record<string, unknown> };
}

/** An OpenAI content part; only text parts are rendered. */
export interface ContentPart {
  /** `"text"` for text parts; other types (images, audio) are dropped. */
  type: string;
  /** The text of a text part. */
  text?: string;
}

/** A chat message in OpenAI form. */
export interface ChatMessage {
  /** `system`, `user`, `assistant` or `tool`. */
  role: string;
  /** Text, content parts, or null (an assistant turn with only tool calls). */
  content?: string | ContentPart[] | null;
  /** Tool calls made by an assistant turn. */
  tool_calls?: ToolCall[];
  /** Reasoning text, rendered inside `<think>` (DeepSeek-R1 style). */
  reasoning_content?: string | null;
  /** For `tool` messages: the call answered (not rendered). */
  tool_call_id?: string;
  /** For `tool` messages: the tool's name (not rendered). */
  name?: string;
}

/**
 * A tool in OpenAI form: `{type: "function", function: {name, description, parameters}}`. The
 * template shows `function` as JSON, or the whole object when it has no `function` field.
 */
export interface ToolSpec {
  /** Always `"function"` in OpenAI requests. */
  type?: string;
  /** The function's name, description and JSON-schema parameters. */
  function?: { name: string; description?: string; parameters?: unknown };
}

/** Options of the renderers. */
export interface RenderOptions {
  /** Tools shown to the model in the system turn. */
  tools?: readonly ToolSpec[] | null;
  /** Append `<|im_start|>assistant\n` for the model to continue (default false). */
  addGenerationPrompt?: boolean;
  /** Text placed first (default `<|bos|>`; `""` for none). */
  bosToken?: string;
}

/**
 * The Jinja chat template, as stored in `tokenizer_config.json` under `chat_template`.
 * Variables: `messages`, `tools`, `add_generation_prompt`, `bos_token`.
 */
export const CHAT_TEMPLATE: string = String.raw`{{- bos_token }}
{%- if messages and messages[0].role == 'system' %}
    {%- set system_message = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if system_message or tools %}
    {{- '<|im_start|>system\n' + system_message }}
    {%- if tools %}
        {%- if system_message %}
            {{- '\n\n' }}
        {%- endif %}
        {{- '# Tools\n\nYou may call one or more of these functions. Their signatures are JSON objects within <tools></tools>:\n<tools>' }}
        {%- for tool in tools %}
            {{- '\n' }}
            {%- if tool.function is defined %}
                {{- tool.function | tojson }}
            {%- else %}
                {{- tool | tojson }}
            {%- endif %}
        {%- endfor %}
        {{- '\n</tools>\n\nTo call a function, reply with one JSON object per call within <tool_call></tool_call>: <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>' }}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.reasoning_content %}
            {{- '<think>\n' + (message.reasoning_content | trim) + '\n</think>\n\n' }}
        {%- endif %}
        {%- if message.content %}
            {%- set content = message.content | trim %}
        {%- else %}
            {%- set content = '' %}
        {%- endif %}
        {{- content }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if content or not loop.first %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function is defined %}
                    {%- set call = tool_call.function %}
                {%- else %}
                    {%- set call = tool_call %}
                {%- endif %}
                {{- '<tool_call>{"name": ' + (call.name | tojson) + ', "arguments": ' }}
                {%- if call.arguments is string %}
                    {{- call.arguments }}
                {%- else %}
                    {{- call.arguments | tojson }}
                {%- endif %}
                {{- '}</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>tool\n<tool_response>' + message.content + '</tool_response><|im_end|>\n' }}
    {%- elif message.role == 'system' %}
        {{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' }}
    {%- else %}
        {{- raise_exception('Unknown role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`;

const ROLES = new Set(["system", "user", "assistant", "tool"]);

function contentToString(content: unknown, where: string): string {
  if (content == null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part, i) => {
      if (typeof part === "string") return part;
      if (typeof part === "object" && part !== null && typeof part.text === "string") {
        return part.text;
      }
      if (typeof part === "object" && part !== null && part.type !== "text") return "";
      throw new Error(`${where}[${i}] must be a text part {"type": "text", "text": "..."}`);
    }).join("");
  }
  return jinjaJson(content);
}

/**
 * Brings OpenAI messages into the form the template renders: content parts joined into one
 * string (non-text parts dropped), null or missing content as `""` (kept null for assistant turns
 * with tool calls), non-string tool results serialized with `tojson`, tool-call arguments given as
 * JSON-object strings parsed into objects. Idempotent.
 *
 * @param messages Chat messages.
 * @returns New message objects; the input is not modified.
 * @throws {Error} Naming the message index, for an unknown role or a malformed tool call.
 * @example
 * ```ts
 * import { normalizeMessages } from "./chat_template.ts";
 * normalizeMessages([{ role: "assistant", content: null, tool_calls: [
 *   { type: "function", function: { name: "f", arguments: '{"x":1}' } },
 * ] }])[0].tool_calls![0].function.arguments; // { x: 1 }
 * ```
 */
export function normalizeMessages(messages: readonly ChatMessage[]): ChatMessage[] {
  if (!Array.isArray(messages)) throw new Error("messages must be an array of {role, content}");
  return messages.map((m, i) => {
    if (typeof m !== "object" || m === null || typeof m.role !== "string") {
      throw new Error(`messages[${i}] must be an object with a string "role"`);
    }
    if (!ROLES.has(m.role)) {
      throw new Error(
        `messages[${i}].role is ${JSON.stringify(m.role)}; use system, user, assistant or tool`,
      );
    }
    const out: ChatMessage = {
      role: m.role,
      content: contentToString(m.content, `messages[${i}].content`),
    };
    if (m.role === "assistant") {
      if (m.reasoning_content) out.reasoning_content = String(m.reasoning_content);
      if (m.tool_calls != null) {
        if (!Array.isArray(m.tool_calls)) {
          throw new Error(`messages[${i}].tool_calls must be an array`);
        }
        out.tool_calls = m.tool_calls.map((tc: ToolCall, j: number) =>
          normalizeToolCall(tc, `messages[${i}].tool_calls[${j}]`)
        );
      }
    }
    if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    return out;
  });
}

function normalizeToolCall(tc: ToolCall, where: string): ToolCall {
  const fn = (tc && typeof tc === "object" && "function" in tc ? tc.function : tc) as
    | ToolCall["function"]
    | undefined;
  if (!fn || typeof fn.name !== "string") {
    throw new Error(`${where} must be {"type": "function", "function": {"name", "arguments"}}`);
  }
  let args: ToolCall["function"]["arguments"] = fn.arguments ?? {};
  if (typeof args === "string") {
    try {
      const parsed = JSON.parse(args);
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) args = parsed;
    } catch {
      // Not JSON: rendered verbatim, as the template does with any string.
    }
  } else if (typeof args !== "object" || args === null || Array.isArray(args)) {
    throw new Error(`${where}.function.arguments must be a JSON object or a JSON string`);
  }
  const out: ToolCall = { type: "function", function: { name: fn.name, arguments: args } };
  if (tc.id !== undefined) out.id = tc.id;
  return out;
}

/**
 * JSON the way `@huggingface/jinja`'s `tojson` filter writes it (Python `json.dumps` style:
 * `", "` and `": "` separators, keys in insertion order, non-ASCII kept, undefined as null).
 *
 * @param value Any JSON-like value.
 * @returns The JSON text.
 * @example
 * ```ts
 * import { jinjaJson } from "./chat_template.ts";
 * jinjaJson({ a: [1, "é"], b: null }); // '{"a": [1, "é"], "b": null}'
 * ```
 */
export function jinjaJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "number":
    case "boolean":
    case "string":
      return JSON.stringify(value);
    case "object":
      if (Array.isArray(value)) return `[${value.map(jinjaJson).join(", ")}]`;
      return `{${
        Object.entries(value as Record<string, unknown>)
          .map(([k, v]) => `${JSON.stringify(k)}: ${jinjaJson(v)}`)
          .join(", ")
      }}`;
    default:
      throw new Error(`cannot convert a ${typeof value} to JSON`);
  }
}

/** A piece of rendered chat text. */
export interface ChatSegment {
  /** The text. */
  text: string;
  /** `special`: one special token; `template`: fixed template text; `content`: message text. */
  kind: "special" | "template" | "content";
  /** True inside an assistant span (what SFT trains on). */
  assistant: boolean;
}

const SPECIALS_IN_TEMPLATE = new RegExp(
  [...SPECIAL_TOKENS].sort((a, b) => b.length - a.length)
    .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"),
  "g",
);

class SegmentWriter {
  readonly segments: ChatSegment[] = [];
  /** Fixed template text: special tokens in it become `special` segments. */
  template(text: string, assistant: boolean): void {
    let last = 0;
    for (const m of text.matchAll(SPECIALS_IN_TEMPLATE)) {
      if (m.index > last) this.#push(text.slice(last, m.index), "template", assistant);
      this.segments.push({ text: m[0], kind: "special", assistant });
      last = m.index + m[0].length;
    }
    if (last < text.length) this.#push(text.slice(last), "template", assistant);
  }
  /** Message text: never scanned for special tokens. */
  content(text: string, assistant: boolean): void {
    if (text.length > 0) this.#push(text, "content", assistant);
  }
  #push(text: string, kind: ChatSegment["kind"], assistant: boolean): void {
    this.segments.push({ text, kind, assistant });
  }
}

/**
 * Renders a conversation into segments whose texts concatenate to {@linkcode renderChat}'s output.
 *
 * @param messages OpenAI-style messages (normalized first).
 * @param options Tools, generation prompt, BOS text.
 * @returns The segments, in order.
 * @throws {Error} For malformed messages (see {@linkcode normalizeMessages}).
 * @example
 * ```ts
 * import { renderChatSegments } from "./chat_template.ts";
 * renderChatSegments([{ role: "assistant", content: "Hi" }], { bosToken: "" })
 *   .filter((s) => s.assistant).map((s) => s.text).join(""); // "Hi<|im_end|>"
 * ```
 */
export function renderChatSegments(
  messages: readonly ChatMessage[],
  options: RenderOptions = {},
): ChatSegment[] {
  const msgs = normalizeMessages(messages);
  const tools = options.tools && options.tools.length > 0 ? options.tools : null;
  const w = new SegmentWriter();
  w.template(options.bosToken ?? BOS_TOKEN, false);

  let systemMessage = "";
  let loop = msgs;
  if (msgs.length > 0 && msgs[0].role === "system") {
    systemMessage = msgs[0].content as string;
    loop = msgs.slice(1);
  }
  if (systemMessage || tools) {
    w.template(`${IM_START_TOKEN}system\n`, false);
    w.content(systemMessage, false);
    if (tools) {
      if (systemMessage) w.template("\n\n", false);
      w.template(
        "# Tools\n\nYou may call one or more of these functions. Their signatures are JSON " +
          "objects within <tools></tools>:\n<tools>",
        false,
      );
      for (const tool of tools) {
        w.template("\n", false);
        w.content(jinjaJson(tool.function !== undefined ? tool.function : tool), false);
      }
      w.template(
        "\n</tools>\n\nTo call a function, reply with one JSON object per call within " +
          `${TOOL_CALL_START_TOKEN}${TOOL_CALL_END_TOKEN}: ${TOOL_CALL_START_TOKEN}{"name": ` +
          `<function-name>, "arguments": <args-json-object>}${TOOL_CALL_END_TOKEN}`,
        false,
      );
    }
    w.template(`${IM_END_TOKEN}\n`, false);
  }

  for (const m of loop) {
    const content = m.content as string;
    if (m.role === "user" || m.role === "system") {
      w.template(`${IM_START_TOKEN}${m.role}\n`, false);
      w.content(content, false);
      w.template(`${IM_END_TOKEN}\n`, false);
    } else if (m.role === "tool") {
      w.template(`${IM_START_TOKEN}tool\n${TOOL_RESPONSE_START_TOKEN}`, false);
      w.content(content, false);
      w.template(`${TOOL_RESPONSE_END_TOKEN}${IM_END_TOKEN}\n`, false);
    } else {
      w.template(`${IM_START_TOKEN}assistant\n`, false);
      if (m.reasoning_content) {
        w.template(`${THINK_START_TOKEN}\n`, true);
        w.content(m.reasoning_content.trim(), true);
        w.template(`\n${THINK_END_TOKEN}\n\n`, true);
      }
      const text = content ? content.trim() : "";
      w.content(text, true);
      (m.tool_calls ?? []).forEach((tc, i) => {
        if (text || i > 0) w.template("\n", true);
        w.template(`${TOOL_CALL_START_TOKEN}{"name": `, true);
        w.content(jinjaJson(tc.function.name), true);
        w.template(`, "arguments": `, true);
        const args = tc.function.arguments;
        w.content(typeof args === "string" ? args : jinjaJson(args), true);
        w.template(`}${TOOL_CALL_END_TOKEN}`, true);
      });
      w.template(IM_END_TOKEN, true);
      w.template("\n", false);
    }
  }
  if (options.addGenerationPrompt) w.template(`${IM_START_TOKEN}assistant\n`, false);
  return w.segments;
}

/**
 * Renders a conversation to the text the model sees; identical to `@huggingface/jinja` rendering
 * {@linkcode CHAT_TEMPLATE} with `normalizeMessages(messages)`.
 *
 * @param messages OpenAI-style messages.
 * @param options Tools, generation prompt, BOS text.
 * @returns The prompt text.
 * @throws {Error} For malformed messages (see {@linkcode normalizeMessages}).
 * @example
 * ```ts
 * import { renderChat } from "./chat_template.ts";
 * renderChat([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
 * // "<|bos|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
 * ```
 */
export function renderChat(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
  return renderChatSegments(messages, options).map((s) => s.text).join("");
}
