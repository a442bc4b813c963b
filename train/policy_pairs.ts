/**
 * On-policy preference pairs: the rejected side of each pair becomes the policy's own greedy
 * reply to the pair's prompt whenever that reply differs from the chosen one.
 *
 * Written preference data mostly rejects replies a fine-tuned model never gives (a rambling or
 * malformed answer it already ranks low), so DPO on it has little to correct. Pairs whose
 * rejected side is what the SFT model actually says (the wrong city, a wrong fact, an
 * off-by-some sum) point DPO at the model's real mistakes, as preference data sampled from the
 * policy and ranked afterwards does.
 *
 * @module
 */

import type { DeepSeekV3 } from "../model/transformer.ts";
import {
  type ChatMessage,
  encodeChatPrompt,
  IM_END_TOKEN,
  parseFirstToolCall,
  type Tokenizer,
  type ToolSpec,
} from "../tokenizer/mod.ts";
import { generateTokens, replyText } from "./eval.ts";

/** A preference pair as written to JSONL (extra fields are kept as they are). */
export interface PairRecord {
  /** The prompt followed by the preferred assistant turn. */
  chosen: ChatMessage[];
  /** The same prompt followed by the worse assistant turn. */
  rejected: ChatMessage[];
  /** Tools shown to the model, if any. */
  tools?: ToolSpec[];
  /** Why the rejected side is worse; `"on_policy"` once replaced by the policy's reply. */
  flaw?: string;
}

/** Options of {@linkcode onPolicyPairs}. */
export interface OnPolicyOptions {
  /** The tokenizer the policy is prompted with. */
  tok: Tokenizer;
  /** Most tokens of a reply (default 48: a tool call with its arguments fits). */
  maxTokens?: number;
  /** Prompts decoded together (default 128). */
  maxBatch?: number;
}

/**
 * Replaces each pair's rejected turn by `model`'s greedy reply to the prompt (the chosen
 * conversation without its last turn) when that reply differs from the chosen turn: the text
 * after trimming, or for a chosen tool call, the function name and the parsed arguments. Pairs
 * the model already answers as chosen, or with nothing (an empty turn, which the DPO reader
 * refuses), are returned unchanged.
 *
 * @returns The pairs in order and how many were replaced.
 * @example
 * ```ts ignore
 * const { pairs, replaced } = await onPolicyPairs(sftModel, writtenPairs, { tok });
 * ```
 */
export async function onPolicyPairs<P extends PairRecord>(
  model: DeepSeekV3,
  pairs: readonly P[],
  opts: OnPolicyOptions,
): Promise<{ pairs: (P | PairRecord)[]; replaced: number }> {
  const { tok } = opts;
  const prompts = pairs.map((p) =>
    encodeChatPrompt(tok, p.chosen.slice(0, -1), { tools: p.tools })
  );
  const replies = await generateTokens(model, prompts, {
    maxTokens: opts.maxTokens ?? 48,
    maxBatch: opts.maxBatch,
    stop: [tok.specialId(IM_END_TOKEN)],
  });
  let replaced = 0;
  const out = pairs.map((p, i) => {
    const text = replyText(tok, replies[i]).trim();
    // An empty reply keeps the written reject: DPO records refuse empty turns.
    if (text === "") return p;
    const reply = replyMessage(text);
    if (sameAssistantTurn(reply, p.chosen[p.chosen.length - 1])) return p;
    replaced++;
    return { ...p, rejected: [...p.chosen.slice(0, -1), reply], flaw: "on_policy" };
  });
  return { pairs: out, replaced };
}

/** A generated reply as an assistant message: a tool call when it holds a well-formed one. */
function replyMessage(text: string): ChatMessage {
  const call = parseFirstToolCall(text, { strict: true });
  if (!call) return { role: "assistant", content: text };
  return {
    role: "assistant",
    content: null,
    tool_calls: [{ id: "call_policy", type: "function", function: call }],
  };
}

/**
 * Whether two assistant turns say the same: equal trimmed text and the same tool calls (names
 * and arguments, whether given as JSON text or objects, in any key order; call ids ignored).
 *
 * @example
 * ```ts
 * const call = (args: string) => ({
 *   role: "assistant",
 *   content: null,
 *   tool_calls: [{ function: { name: "calculator", arguments: args } }],
 * });
 * sameAssistantTurn(call('{"expression": "2+3"}'), call('{"expression":"2+3"}')); // true
 * ```
 */
export function sameAssistantTurn(a: ChatMessage, b: ChatMessage): boolean {
  const calls = (m: ChatMessage) =>
    (m.tool_calls ?? []).map((c) => {
      const args = typeof c.function.arguments === "string"
        ? JSON.parse(c.function.arguments)
        : c.function.arguments;
      return JSON.stringify([c.function.name, sortKeys(args)]);
    }).join("\n");
  const text = (m: ChatMessage) => typeof m.content === "string" ? m.content.trim() : "";
  return calls(a) === calls(b) && text(a) === text(b);
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortKeys(o[k])]));
}
