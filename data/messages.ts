/**
 * Chat message and record shapes, in the OpenAI chat-completions form the rest of the project
 * reads and serves (`tool_calls`, `tool_call_id`, JSON-string `arguments`).
 *
 * @module
 */

/** One tool call made by the assistant, as in OpenAI's `tool_calls`. */
export interface OpenAIToolCall {
  /** Unique within its conversation; the tool's reply repeats it as `tool_call_id`. */
  id: string;
  /** Always `"function"`, the only kind of tool OpenAI defines. */
  type: "function";
  /** Which function to call, with what. */
  function: {
    /** The tool name, e.g. `"get_weather"`. */
    name: string;
    /** The arguments as a JSON object serialized to a string, as OpenAI sends them. */
    arguments: string;
  };
}

/** One chat message in OpenAI form. */
export interface Message {
  /** Who speaks: `"tool"` carries a tool's result back to the assistant. */
  role: "system" | "user" | "assistant" | "tool";
  /** Text; `null` on an assistant message that only makes tool calls. */
  content: string | null;
  /**
   * Assistant only: the reasoning before the answer (DeepSeek-R1's `reasoning_content`); the chat
   * template renders it as `<think>\n...\n</think>\n\n` before `content`.
   */
  reasoning_content?: string;
  /** Assistant only: the calls it makes. */
  tool_calls?: OpenAIToolCall[];
  /** Tool only: the id of the call this message answers. */
  tool_call_id?: string;
  /** Tool only: the name of the tool that answered. */
  name?: string;
}

/** A tool definition in OpenAI `tools` form. */
export interface ToolSchema {
  /** Always `"function"`. */
  type: "function";
  /** The function's name, description and argument schema. */
  function: {
    /** The name the model calls it by. */
    name: string;
    /** What it does, shown to the model. */
    description: string;
    /** JSON Schema of the arguments object. */
    parameters: {
      type: "object";
      properties: Record<string, { type: string; description: string }>;
      required: string[];
    };
  };
}

/** One SFT record: `{"conversations": [...]}`, plus `tools` when the conversation may call them. */
export interface SftRecord {
  /** The conversation, first message first; it always ends with an assistant turn. */
  conversations: Message[];
  /** The tools offered to the model, rendered by the chat template like a request's `tools`. */
  tools?: ToolSchema[];
}

/** Why the rejected side of a DPO pair is worse. */
export type DpoFlaw = "wrong_fact" | "broken_format" | "rambling";

/**
 * One DPO pair as two full conversations. They share every message except the last, which is
 * the assistant turn being compared: `chosen.slice(0, -1)` deep-equals `rejected.slice(0, -1)`.
 */
export interface DpoPair {
  /** The prompt followed by the preferred assistant turn. */
  chosen: Message[];
  /** The same prompt followed by the worse assistant turn. */
  rejected: Message[];
  /** Tools offered, when the compared turn is (or should have been) a tool call. */
  tools?: ToolSchema[];
  /** What is wrong with `rejected`; extra metadata that trainers may ignore. */
  flaw: DpoFlaw;
}

/**
 * Serializes records as JSON Lines: one `JSON.stringify` per record, each line ending in `\n`.
 *
 * @param records Any JSON-serializable records.
 * @returns The JSONL text (empty string for no records).
 * @example
 * ```ts
 * toJsonl([{ text: "a" }, { text: "b" }]); // '{"text":"a"}\n{"text":"b"}\n'
 * ```
 */
export function toJsonl(records: Iterable<unknown>): string {
  let out = "";
  for (const r of records) out += JSON.stringify(r) + "\n";
  return out;
}
