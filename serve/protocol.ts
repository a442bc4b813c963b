/**
 * The OpenAI wire format: request validation (JSON body -> typed request, or an
 * {@linkcode ApiError} that names the field), the error body, and the response shapes.
 *
 * Supported request fields are listed on {@linkcode parseChatRequest} and
 * {@linkcode parseCompletionRequest}. Fields this server does not implement but that clients send
 * by default (`user`, `metadata`, `store`, `service_tier`, extra message fields such as Swarm's
 * `sender`, ...) are accepted and ignored; explicit nulls mean "not given". Fields whose meaning it
 * cannot honor (`suffix`, `best_of` other than 1, `response_format` `json_schema` with a schema
 * the grammar cannot follow, `audio`, `modalities` other than text, image parts) are refused with
 * 400 rather than silently ignored.
 *
 * Reference: the OpenAI API reference for `/v1/chat/completions` and `/v1/completions`.
 *
 * @module
 */

import type { ChatMessage, ToolSpec } from "../tokenizer/chat_template.ts";
import { anyObjectNode, compileSchema, type SchemaNode } from "./json_grammar.ts";
import type { SamplingParams } from "../model/sampling.ts";

/**
 * An error with an HTTP status and OpenAI's error fields.
 *
 * @example
 * ```ts
 * import { ApiError } from "./protocol.ts";
 * const e = new ApiError(400, "temperature must be a number", { param: "temperature" });
 * e.toBody(); // { error: { message: "...", type: "invalid_request_error", param: "temperature", code: null } }
 * ```
 */
export class ApiError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** OpenAI error type, e.g. `invalid_request_error`. */
  readonly type: string;
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** A machine-readable code, or null. */
  readonly code: string | null;

  /**
   * Makes the error.
   *
   * @param status HTTP status.
   * @param message What is wrong and what to do.
   * @param options `type` (default by status), `param`, `code`.
   */
  constructor(
    status: number,
    message: string,
    options: { type?: string; param?: string | null; code?: string | null } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = options.type ??
      (status === 401
        ? "authentication_error"
        : status >= 500
        ? "server_error"
        : "invalid_request_error");
    this.param = options.param ?? null;
    this.code = options.code ?? null;
  }

  /**
   * The JSON body OpenAI sends for an error.
   *
   * @returns `{ error: { message, type, param, code } }`.
   */
  toBody(): {
    error: { message: string; type: string; param: string | null; code: string | null };
  } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

function bad(param: string, message: string, code: string | null = null): ApiError {
  return new ApiError(400, message, { param, code });
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
  }
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

/** Typed access to a JSON object's fields; every error names the field. */
class Fields {
  readonly #obj: Record<string, unknown>;
  readonly #prefix: string;
  constructor(obj: Record<string, unknown>, prefix = "") {
    this.#obj = obj;
    this.#prefix = prefix;
  }
  name(key: string): string {
    return this.#prefix + key;
  }
  has(key: string): boolean {
    return this.#obj[key] !== undefined && this.#obj[key] !== null;
  }
  raw(key: string): unknown {
    return this.#obj[key];
  }
  number(
    key: string,
    range: { min?: number; max?: number; int?: boolean; minExclusive?: boolean } = {},
  ): number | undefined {
    const v = this.#obj[key];
    if (v === undefined || v === null) return undefined;
    const { min, max, int, minExclusive } = range;
    const want = (int ? "an integer" : "a number") +
      (min !== undefined && max !== undefined
        ? ` ${minExclusive ? "greater than" : "from"} ${min} ${
          minExclusive ? "and at most" : "to"
        } ${max}`
        : min !== undefined
        ? ` ${minExclusive ? ">" : ">="} ${min}`
        : "");
    const field = this.name(key);
    if (typeof v !== "number" || !Number.isFinite(v) || (int && !Number.isInteger(v))) {
      throw bad(field, `'${field}' must be ${want}; got ${describe(v)}`);
    }
    if (
      (min !== undefined && (minExclusive ? v <= min : v < min)) ||
      (max !== undefined && v > max)
    ) {
      throw bad(field, `'${field}' must be ${want}; got ${v}`);
    }
    return v;
  }
  boolean(key: string): boolean | undefined {
    const v = this.#obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") {
      throw bad(this.name(key), `'${this.name(key)}' must be a boolean; got ${describe(v)}`);
    }
    return v;
  }
  string(key: string): string | undefined {
    const v = this.#obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") {
      throw bad(this.name(key), `'${this.name(key)}' must be a string; got ${describe(v)}`);
    }
    return v;
  }
  object(key: string): Record<string, unknown> | undefined {
    const v = this.#obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "object" || Array.isArray(v)) {
      throw bad(this.name(key), `'${this.name(key)}' must be an object; got ${describe(v)}`);
    }
    return v as Record<string, unknown>;
  }
  array(key: string): unknown[] | undefined {
    const v = this.#obj[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) {
      throw bad(this.name(key), `'${this.name(key)}' must be an array; got ${describe(v)}`);
    }
    return v;
  }
}

/**
 * Checks that a parsed JSON body is an object.
 *
 * @param body The parsed JSON.
 * @returns The object.
 * @throws {ApiError} 400 if it is not a JSON object.
 */
export function requireObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError(400, `the request body must be a JSON object; got ${describe(body)}`);
  }
  return body as Record<string, unknown>;
}

/** How the model may use tools; see {@linkcode parseChatRequest}. */
export type ToolChoice = "none" | "auto" | "required" | { name: string };

/** Fields shared by chat and text completions. */
export interface CommonRequest {
  /** The model asked for (checked against the served one by the server). */
  model: string | undefined;
  /** Stream server-sent events. */
  stream: boolean;
  /** With `stream`: send a last chunk with the usage (`stream_options.include_usage`). */
  includeUsage: boolean;
  /** Most output tokens (`max_completion_tokens` or `max_tokens`). */
  maxTokens: number | undefined;
  /**
   * The field `maxTokens` came from (`max_tokens` when defaulted); set by the parsers, and then a
   * `maxTokens` past the context is a 400 naming it rather than a cap.
   */
  maxTokensParam?: string;
  /** Choices to generate (`n`, 1..{@linkcode MAX_N}). */
  n?: number;
  /** Sampling parameters, in `sampling.ts` names. */
  sampling: Partial<SamplingParams>;
  /** Stop strings. */
  stop: string[];
}

/** The reply's format: free text, or JSON following a grammar. */
export type ResponseFormat = { type: "text" } | { type: "json"; node: SchemaNode };

/** A validated `/v1/chat/completions` request. */
export interface ChatRequest extends CommonRequest {
  /** The conversation, in OpenAI form (without a final prefix message). */
  messages: ChatMessage[];
  /** Tools shown to the model (null: none). */
  tools: ToolSpec[] | null;
  /** How the model may use them (default `auto` with tools, `none` without). */
  toolChoice: ToolChoice;
  /** More than one tool call per reply (`parallel_tool_calls`, default true). */
  parallelToolCalls?: boolean;
  /** `response_format`. */
  responseFormat?: ResponseFormat;
  /** `logprobs: true`: the alternatives per token (`top_logprobs`, 0..20), else undefined. */
  topLogprobs?: number | undefined;
  /**
   * DeepSeek's chat prefix completion: the text of a last assistant message with
   * `"prefix": true`, which the reply continues.
   */
  prefix?: string | undefined;
}

/** A validated `/v1/completions` request. */
export interface CompletionRequest extends CommonRequest {
  /** The prompt: text, or token ids. */
  prompt: string | number[];
  /** Return the prompt before the completion. */
  echo: boolean;
  /** `logprobs`: alternatives per token (0..20), else undefined. */
  logprobs?: number | undefined;
}

/** Most choices per request (`n`). */
export const MAX_N = 16;

/** Validates `max_completion_tokens` and `max_tokens` (both, when both are given). */
function parseMaxTokens(f: Fields, fallback?: number): { maxTokens?: number; param: string } {
  const range = { int: true, min: 1, max: Number.MAX_SAFE_INTEGER };
  const mct = f.number("max_completion_tokens", range);
  const mt = f.number("max_tokens", range);
  if (mct !== undefined) return { maxTokens: mct, param: "max_completion_tokens" };
  return { maxTokens: mt ?? fallback, param: "max_tokens" };
}

function requireOne(f: Fields, key: string, what: string): void {
  const v = f.number(key, { int: true, min: 1 });
  if (v !== undefined && v !== 1) {
    throw bad(f.name(key), `'${f.name(key)}' must be 1: this server returns one ${what}`);
  }
}

function parseCommon(f: Fields, defaultMaxTokens?: number): CommonRequest {
  const model = f.string("model");
  const stream = f.boolean("stream") ?? false;
  const so = f.object("stream_options");
  const includeUsage = so
    ? new Fields(so, "stream_options.").boolean("include_usage") ?? false
    : false;
  const { maxTokens, param: maxTokensParam } = parseMaxTokens(f, defaultMaxTokens);
  const n = f.number("n", { int: true, min: 1, max: MAX_N }) ?? 1;

  const sampling: Partial<SamplingParams> = {
    temperature: f.number("temperature", { min: 0, max: 2 }),
    topP: f.number("top_p", { min: 0, max: 1, minExclusive: true }),
    topK: f.number("top_k", { int: true, min: 0 }),
    minP: f.number("min_p", { min: 0, max: 1 }),
    presencePenalty: f.number("presence_penalty", { min: -2, max: 2 }),
    frequencyPenalty: f.number("frequency_penalty", { min: -2, max: 2 }),
    repetitionPenalty: f.number("repetition_penalty", { min: 0, max: 10, minExclusive: true }),
    seed: f.number("seed", { int: true }),
  };
  // `top_k: -1` means "off" in vLLM; accept it as a courtesy.
  if (f.raw("top_k") === -1) sampling.topK = 0;
  const bias = f.object("logit_bias");
  if (bias) {
    const map = new Map<number, number>();
    for (const [k, v] of Object.entries(bias)) {
      const field = `logit_bias.${k}`;
      if (!/^\d+$/.test(k)) throw bad(field, `'logit_bias' keys must be token ids; got "${k}"`);
      if (typeof v !== "number" || !(v >= -100 && v <= 100)) {
        throw bad(field, `'${field}' must be a number from -100 to 100; got ${describe(v)}`);
      }
      map.set(Number(k), v);
    }
    sampling.logitBias = map;
  }

  let stop: string[] = [];
  const s = f.raw("stop");
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) {
    s.forEach((x, i) => {
      if (typeof x !== "string") {
        throw bad(`stop[${i}]`, `'stop[${i}]' must be a string; got ${describe(x)}`);
      }
    });
    stop = s as string[];
  } else if (s !== undefined && s !== null) {
    throw bad("stop", `'stop' must be a string or an array of strings; got ${describe(s)}`);
  }
  if (stop.length > 16) throw bad("stop", `'stop' may hold at most 16 strings; got ${stop.length}`);
  stop = stop.filter((x) => x.length > 0);

  return { model, stream, includeUsage, maxTokens, maxTokensParam, n, sampling, stop };
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function parseMessages(list: unknown[]): ChatMessage[] {
  if (list.length === 0) throw bad("messages", "'messages' must hold at least one message");
  return list.map((m, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw bad(where, `'${where}' must be an object {role, content}; got ${describe(m)}`);
    }
    const f = new Fields(m as Record<string, unknown>, `${where}.`);
    const role = f.string("role");
    if (role === undefined || !ROLES.has(role)) {
      throw bad(
        `${where}.role`,
        `'${where}.role' must be one of system, developer, user, assistant, tool; got ` +
          describe(f.raw("role")),
      );
    }
    const content = f.raw("content");
    if (content !== undefined && content !== null && typeof content !== "string") {
      if (!Array.isArray(content)) {
        throw bad(
          `${where}.content`,
          `'${where}.content' must be a string or an array of content parts; got ${
            describe(content)
          }`,
        );
      }
      content.forEach((p, j) => {
        const pf = `${where}.content[${j}]`;
        if (
          typeof p !== "object" || p === null || typeof (p as { type?: unknown }).type !== "string"
        ) {
          throw bad(pf, `'${pf}' must be a content part {"type": "text", "text": "..."}`);
        }
        const part = p as { type: string; text?: unknown };
        if (part.type === "text" && typeof part.text !== "string") {
          throw bad(`${pf}.text`, `'${pf}.text' must be a string`);
        }
        if (part.type !== "text") {
          throw bad(
            `${pf}.type`,
            `'${pf}.type' is "${part.type}": this model reads text only; send {"type": "text"} parts`,
          );
        }
      });
    }
    const out: ChatMessage = {
      // OpenAI's newer "developer" role is the system role of older models.
      role: role === "developer" ? "system" : role,
      content: content as ChatMessage["content"],
    };
    if (role === "assistant") {
      const calls = f.array("tool_calls");
      if (calls) {
        out.tool_calls = calls.map((c, j) => {
          const cw = `${where}.tool_calls[${j}]`;
          if (typeof c !== "object" || c === null) throw bad(cw, `'${cw}' must be an object`);
          const fn = new Fields(c as Record<string, unknown>, `${cw}.`).object("function");
          if (!fn) throw bad(`${cw}.function`, `'${cw}.function' is required: {name, arguments}`);
          const ff = new Fields(fn, `${cw}.function.`);
          const name = ff.string("name");
          if (!name) {
            throw bad(`${cw}.function.name`, `'${cw}.function.name' must be a non-empty string`);
          }
          const args = ff.raw("arguments");
          if (
            args !== undefined && typeof args !== "string" &&
            (typeof args !== "object" || args === null)
          ) {
            throw bad(
              `${cw}.function.arguments`,
              `'${cw}.function.arguments' must be a JSON string`,
            );
          }
          const id = (c as { id?: unknown }).id;
          return {
            ...(typeof id === "string" ? { id } : {}),
            type: "function" as const,
            function: { name, arguments: (args ?? "{}") as string | Record<string, unknown> },
          };
        });
      }
      const reasoning = f.string("reasoning_content");
      if (reasoning) out.reasoning_content = reasoning;
    }
    if (role === "tool") {
      const id = f.string("tool_call_id");
      if (id !== undefined) out.tool_call_id = id;
    }
    if (f.boolean("prefix")) {
      if (role !== "assistant" || i !== list.length - 1) {
        throw bad(
          `${where}.prefix`,
          `'${where}.prefix' may only be set on the last message, an assistant message`,
        );
      }
      (out as { prefix?: boolean }).prefix = true;
    }
    return out;
  });
}

function parseTools(list: unknown[]): ToolSpec[] {
  return list.map((t, i) => {
    const where = `tools[${i}]`;
    if (typeof t !== "object" || t === null || Array.isArray(t)) {
      throw bad(where, `'${where}' must be {"type": "function", "function": {...}}`);
    }
    const f = new Fields(t as Record<string, unknown>, `${where}.`);
    const type = f.string("type") ?? "function";
    if (type !== "function") {
      throw bad(`${where}.type`, `'${where}.type' must be "function"; got ${describe(type)}`);
    }
    const fn = f.object("function");
    if (!fn) {
      throw bad(
        `${where}.function`,
        `'${where}.function' is required: {name, description, parameters}`,
      );
    }
    const ff = new Fields(fn, `${where}.function.`);
    const name = ff.string("name");
    if (!name || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
      throw bad(
        `${where}.function.name`,
        `'${where}.function.name' must be 1-64 letters, digits, _ . or -; got ${
          describe(ff.raw("name"))
        }`,
      );
    }
    ff.string("description");
    const params = ff.object("parameters");
    if (ff.boolean("strict") && params) {
      try {
        compileSchema(params);
      } catch (e) {
        throw bad(
          `${where}.function.parameters`,
          `${where}.function.parameters: ${(e as Error).message}`,
        );
      }
    }
    return t as ToolSpec;
  });
}

function toolName(t: ToolSpec): string {
  return (t as { function: { name: string } }).function.name;
}

/**
 * Validates a `/v1/chat/completions` body.
 *
 * Supported: `model`, `messages` (roles system, developer (= system), user, assistant with
 * `tool_calls`, `reasoning_content` and DeepSeek's `prefix` on the last one, tool; string or
 * text-part content; other fields such as Swarm's `sender` / `tool_name` ignored), `stream`,
 * `stream_options.include_usage`, `max_completion_tokens` / `max_tokens` (each >= 1), `n`
 * (1..{@linkcode MAX_N}), `temperature` (0..2), `top_p`, `top_k`, `min_p`, `presence_penalty`,
 * `frequency_penalty`, `repetition_penalty`, `logit_bias`, `seed`, `stop`, `logprobs`,
 * `top_logprobs` (0..20), `tools` (with `strict`), `tool_choice` (`none`, `auto`, `required`, or
 * `{"type": "function", "function": {"name"}}`), `parallel_tool_calls`, `response_format`
 * (`text`, `json_object`, `json_schema`). Explicit nulls mean "not given".
 *
 * @param body The parsed JSON body.
 * @returns The typed request.
 * @throws {ApiError} 400 naming the first field that is missing, of the wrong type or out of range.
 * @example
 * ```ts
 * import { parseChatRequest } from "./protocol.ts";
 * parseChatRequest({ messages: [{ role: "user", content: "Hi" }], temperature: 0 }).sampling.temperature; // 0
 * ```
 */
export function parseChatRequest(body: unknown): ChatRequest {
  const f = new Fields(requireObject(body));
  const list = f.array("messages");
  if (!list) throw bad("messages", "'messages' is required: an array of {role, content}");
  const messages = parseMessages(list);
  let prefix: string | undefined;
  const last = messages[messages.length - 1] as ChatMessage & { prefix?: boolean };
  if (last.prefix) {
    messages.pop();
    if (messages.length === 0) {
      throw bad("messages", "a prefix message needs at least one message before it");
    }
    prefix = typeof last.content === "string"
      ? last.content
      : (last.content ?? []).map((p) => (p as { text?: string }).text ?? "").join("");
  }
  const common = parseCommon(f);
  const responseFormat = parseResponseFormat(f);
  if (prefix !== undefined && responseFormat.type === "json") {
    throw bad(
      "response_format",
      "'response_format' JSON modes cannot continue a prefix message; send one or the other",
    );
  }
  let topLogprobs: number | undefined;
  const lp = f.boolean("logprobs");
  const top = f.number("top_logprobs", { int: true, min: 0, max: 20 });
  if (top !== undefined && !lp) {
    throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  if (lp) topLogprobs = top ?? 0;
  const parallelToolCalls = f.boolean("parallel_tool_calls") ?? true;
  const modalities = f.array("modalities");
  if (modalities && modalities.some((m) => m !== "text")) {
    throw bad("modalities", "'modalities' may only hold \"text\": this model writes text");
  }
  if (f.has("audio")) throw bad("audio", "'audio' output is not supported: this model writes text");
  const toolList = f.array("tools");
  const tools = toolList && toolList.length > 0 ? parseTools(toolList) : null;
  let toolChoice: ToolChoice = tools ? "auto" : "none";
  const tc = f.raw("tool_choice");
  if (typeof tc === "string") {
    if (tc !== "none" && tc !== "auto" && tc !== "required") {
      throw bad(
        "tool_choice",
        `'tool_choice' must be "none", "auto", "required" or a named function; got ${describe(tc)}`,
      );
    }
    toolChoice = tc;
  } else if (typeof tc === "object" && tc !== null && !Array.isArray(tc)) {
    const fn = new Fields(tc as Record<string, unknown>, "tool_choice.").object("function");
    const name = fn ? new Fields(fn, "tool_choice.function.").string("name") : undefined;
    if (!name) {
      throw bad(
        "tool_choice",
        `'tool_choice' as an object must be {"type": "function", "function": {"name": "..."}}`,
      );
    }
    toolChoice = { name };
  } else if (tc !== undefined && tc !== null) {
    throw bad("tool_choice", `'tool_choice' must be a string or an object; got ${describe(tc)}`);
  }
  if (toolChoice !== "none" && toolChoice !== "auto" && !tools) {
    throw bad("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty");
  }
  if (
    typeof toolChoice === "object" &&
    !tools!.some((t) => toolName(t) === (toolChoice as { name: string }).name)
  ) {
    throw bad(
      "tool_choice",
      `'tool_choice' names the function '${toolChoice.name}', which is not in 'tools'`,
    );
  }
  return {
    ...common,
    messages,
    tools,
    toolChoice,
    parallelToolCalls,
    responseFormat,
    topLogprobs,
    prefix,
  };
}

function parseResponseFormat(f: Fields): ResponseFormat {
  const rf = f.object("response_format");
  if (!rf) return { type: "text" };
  const type = rf.type;
  if (type === "text" || type === undefined) return { type: "text" };
  if (type === "json_object") return { type: "json", node: anyObjectNode() };
  if (type === "json_schema") {
    const js = new Fields(rf, "response_format.").object("json_schema");
    if (!js) {
      throw bad(
        "response_format.json_schema",
        "'response_format.json_schema' is required: {name, schema, strict}",
      );
    }
    const schema = js.schema ?? {};
    try {
      return { type: "json", node: compileSchema(schema) };
    } catch (e) {
      throw bad("response_format.json_schema.schema", (e as Error).message);
    }
  }
  throw bad(
    "response_format.type",
    `'response_format.type' must be "text", "json_object" or "json_schema"; got ${describe(type)}`,
  );
}

/**
 * Validates a `/v1/completions` body.
 *
 * Supported: `model`, `prompt` (a string, an array of one string, or an array of token ids),
 * `echo`, `logprobs` (0..20 alternatives), `stream`, `stream_options.include_usage`, `max_tokens`
 * (default 16, as OpenAI), `temperature`, `top_p`, `top_k`, `min_p`, penalties, `logit_bias`,
 * `seed`, `stop`, `n`, `best_of` (1).
 *
 * @param body The parsed JSON body.
 * @returns The typed request.
 * @throws {ApiError} 400 naming the field at fault.
 * @example
 * ```ts
 * import { parseCompletionRequest } from "./protocol.ts";
 * parseCompletionRequest({ prompt: "Once" }).maxTokens; // 16
 * ```
 */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  const f = new Fields(requireObject(body));
  const p = f.raw("prompt");
  let prompt: string | number[];
  if (typeof p === "string") prompt = p;
  else if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") prompt = p[0];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x) && x >= 0)) {
    prompt = p as number[];
  } else if (p === undefined || p === null) {
    throw bad("prompt", "'prompt' is required: a string");
  } else {
    throw bad(
      "prompt",
      `'prompt' must be a string, an array of one string, or an array of token ids; got ${
        describe(p)
      }`,
    );
  }
  if (f.has("suffix")) throw bad("suffix", "'suffix' (fill in the middle) is not supported");
  requireOne(f, "best_of", "completion");
  const common = parseCommon(f, 16);
  const logprobs = f.number("logprobs", { int: true, min: 0, max: 20 });
  return { ...common, prompt, echo: f.boolean("echo") ?? false, logprobs };
}

/** Token counts in OpenAI form. */
export interface UsageBody {
  /** Tokens of the prompt. */
  prompt_tokens: number;
  /** Tokens generated. */
  completion_tokens: number;
  /** The sum. */
  total_tokens: number;
}
