/**
 * The GRPO prompt reader: one prompt per JSONL line with what its replies are graded against.
 *
 * Records (the form `data/`'s `grpoPrompts` writes):
 *
 *     {"messages": [{"role": "system", ...}?, {"role": "user", "content": "..."}],
 *      "answer"?: "17", "tools"?: [...], "tool_call"?: {"name": ..., "arguments": {...}},
 *      "lang"?: "en", "kind"?: "arithmetic"}
 *
 * or the shorthand `{"prompt": "text", "answer": "17"}` for one user turn. The conversation must
 * end with a user turn (the policy writes the next assistant turn); `tool_call` needs the tools
 * it calls among `tools`; `answer` is a string or a number. A record with neither target is
 * graded only by the rewards that always apply (format, length).
 *
 * @module
 */
import type { ChatMessage, ToolSpec } from "../tokenizer/mod.ts";
import { type JsonlCheck, readJsonl } from "./jsonl.ts";
import type { RewardTarget } from "./rewards.ts";
import { checkMessages, checkTools, type ReadChatOptions } from "./sft.ts";

/** One GRPO prompt as read from a file. */
export interface GrpoPrompt {
  /** The conversation so far; its last message is the user's turn. */
  messages: ChatMessage[];
  /** Tools shown to the model, if any. */
  tools?: ToolSpec[];
  /** What replies are graded against. */
  target: RewardTarget;
  /** The prompt's language, when the record says. */
  lang?: string;
  /** What kind of prompt it is (`"arithmetic"`, `"tool"`), when the record says. */
  kind?: string;
  /** The file it came from. */
  file: string;
  /** Its 1-based line there. */
  line: number;
}

/**
 * The schema check of a GRPO prompt record (either form); returns the reason it is malformed,
 * naming the field.
 *
 * @example
 * ```ts
 * grpoPromptCheck({ prompt: "2 + 2?", answer: [4] }); // 'field "answer" must be a string or a number, got array'
 * ```
 */
export const grpoPromptCheck: JsonlCheck = (value: unknown): string | undefined => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected a JSON object {"messages": [...], "answer"?, "tool_call"?} or ` +
      `{"prompt": "...", "answer": "..."}`;
  }
  const v = value as Record<string, unknown>;
  if ("prompt" in v && "messages" in v) return `give "prompt" or "messages", not both`;
  if ("prompt" in v) {
    if (typeof v.prompt !== "string") return `field "prompt" must be a string`;
    if (v.prompt.trim() === "") return `field "prompt" is empty`;
  } else {
    if (!("messages" in v)) {
      return `missing field "messages" (a list of chat messages ending with the user's turn) ` +
        `or "prompt" (one user turn)`;
    }
    const bad = checkMessages(v.messages, "messages");
    if (bad) return bad;
    const messages = v.messages as { role: string }[];
    const last = messages.at(-1)!;
    if (last.role !== "user") {
      return `the last message must be the user's turn (the policy writes the reply), got role ` +
        `"${last.role}" at messages[${messages.length - 1}]`;
    }
  }
  if ("answer" in v && typeof v.answer !== "string" && typeof v.answer !== "number") {
    return `field "answer" must be a string or a number, got ${typeName(v.answer)}`;
  }
  if (typeof v.answer === "string" && v.answer.trim() === "") return `field "answer" is empty`;
  if (typeof v.answer === "number" && !Number.isFinite(v.answer)) {
    return `field "answer" must be a finite number`;
  }
  const badTools = checkTools(v.tools);
  if (badTools) return badTools;
  if ("tool_call" in v) {
    const c = v.tool_call as Record<string, unknown> | null;
    const form = `{"name": "...", "arguments": {...}}`;
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      return `field "tool_call" must be an object ${form}`;
    }
    if (typeof c.name !== "string" || c.name.trim() === "") {
      return `tool_call.name must be a non-empty string`;
    }
    const args = c.arguments;
    if (typeof args !== "object" || args === null || Array.isArray(args)) {
      return `tool_call.arguments must be an object of argument values, e.g. {"city": "Verin"}`;
    }
    const tools = (v.tools ?? []) as { function?: { name?: string } }[];
    if (tools.length === 0) {
      return `field "tool_call" needs "tools": the model must be shown the tool it should call`;
    }
    const names = tools.map((t) => t.function?.name);
    if (!names.includes(c.name)) {
      return `tool_call.name ${JSON.stringify(c.name)} is not among "tools" (${names.join(", ")})`;
    }
  }
  for (const k of ["lang", "kind"]) {
    if (k in v && typeof v[k] !== "string") return `field "${k}" must be a string`;
  }
  return undefined;
};

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/**
 * Reads GRPO prompts from a JSONL file.
 *
 * @param path The file.
 * @param opts `skipBad` (skip and count malformed lines) and `onBad`.
 * @returns The prompts, in file order.
 * @throws {JsonlError} `file:line: reason` for the first malformed line unless `skipBad`.
 * @example const prompts = await readGrpoPrompts("corpus/grpo.jsonl");
 */
export async function readGrpoPrompts(
  path: string,
  opts: ReadChatOptions = {},
): Promise<GrpoPrompt[]> {
  const stream = readJsonl<Record<string, unknown>>(path, {
    check: grpoPromptCheck,
    skipBad: opts.skipBad,
    onBad: (e) => opts.onBad?.(e.message),
  });
  const out: GrpoPrompt[] = [];
  for await (const { value: v, line } of stream) {
    const messages = typeof v.prompt === "string"
      ? [{ role: "user", content: v.prompt }]
      : v.messages as ChatMessage[];
    const target: RewardTarget = {};
    if (v.answer !== undefined) {
      target.answer = String(v.answer);
      const last = messages.at(-1)?.content;
      if (typeof last === "string") target.question = last;
    }
    if (v.tool_call !== undefined) target.toolCall = v.tool_call as RewardTarget["toolCall"];
    const p: GrpoPrompt = { messages, target, file: path, line };
    if (Array.isArray(v.tools) && v.tools.length > 0) p.tools = v.tools as ToolSpec[];
    if (typeof v.lang === "string") p.lang = v.lang;
    if (typeof v.kind === "string") p.kind = v.kind;
    out.push(p);
  }
  return out;
}
