/**
 * The reserved special tokens of the MiniDeepSeek tokenizer.
 *
 * Special tokens sit at the start of the vocabulary (ids 0..15), before the 256 byte tokens and
 * the learned merges, so their ids never change when the vocabulary size does. They follow the
 * ChatML convention (`<|im_start|>role\n ... <|im_end|>`) that Qwen and many open models use,
 * plus the Hermes / Qwen tool-call tags and DeepSeek-R1's `<think>` tags. Five reserved tokens
 * leave room for later additions without shifting ids.
 *
 * | id | token | role |
 * |---:|---|---|
 * | 0 | `<|bos|>` | start of a document or conversation |
 * | 1 | `<|eos|>` | end of a document |
 * | 2 | `<|pad|>` | padding in batches (never trained on) |
 * | 3 | `<|im_start|>` | opens a chat turn: `<|im_start|>user\n` |
 * | 4 | `<|im_end|>` | closes a chat turn; the assistant's stop token |
 * | 5 | `<tool_call>` | opens a tool call inside an assistant turn |
 * | 6 | `</tool_call>` | closes a tool call |
 * | 7 | `<tool_response>` | opens a tool result inside a `tool` turn |
 * | 8 | `</tool_response>` | closes a tool result |
 * | 9 | `<think>` | opens reasoning text |
 * | 10 | `</think>` | closes reasoning text |
 * | 11..15 | `<|reserved_0|>` .. `<|reserved_4|>` | unused, reserved |
 *
 * @module
 */

/** A special token: its text and its id in the vocabulary. */
export interface SpecialToken {
  /** The literal text, e.g. `<|im_end|>`. */
  content: string;
  /** The token id. */
  id: number;
}

/** Beginning of a document or conversation. */
export const BOS_TOKEN = "<|bos|>";
/** End of a document (pretraining) or of generation. */
export const EOS_TOKEN = "<|eos|>";
/** Padding; masked out of every loss. */
export const PAD_TOKEN = "<|pad|>";
/** Opens a chat turn. */
export const IM_START_TOKEN = "<|im_start|>";
/** Closes a chat turn; the assistant's stop token. */
export const IM_END_TOKEN = "<|im_end|>";
/** Opens a tool call inside an assistant turn. */
export const TOOL_CALL_START_TOKEN = "<tool_call>";
/** Closes a tool call. */
export const TOOL_CALL_END_TOKEN = "</tool_call>";
/** Opens a tool result inside a `tool` turn. */
export const TOOL_RESPONSE_START_TOKEN = "<tool_response>";
/** Closes a tool result. */
export const TOOL_RESPONSE_END_TOKEN = "</tool_response>";
/** Opens reasoning text. */
export const THINK_START_TOKEN = "<think>";
/** Closes reasoning text. */
export const THINK_END_TOKEN = "</think>";

/**
 * Every special token in id order. Index = id.
 *
 * @example
 * ```ts
 * import { SPECIAL_TOKENS } from "./special_tokens.ts";
 * SPECIAL_TOKENS.indexOf("<|im_end|>"); // 4
 * ```
 */
export const SPECIAL_TOKENS: readonly string[] = Object.freeze([
  BOS_TOKEN,
  EOS_TOKEN,
  PAD_TOKEN,
  IM_START_TOKEN,
  IM_END_TOKEN,
  TOOL_CALL_START_TOKEN,
  TOOL_CALL_END_TOKEN,
  TOOL_RESPONSE_START_TOKEN,
  TOOL_RESPONSE_END_TOKEN,
  THINK_START_TOKEN,
  THINK_END_TOKEN,
  "<|reserved_0|>",
  "<|reserved_1|>",
  "<|reserved_2|>",
  "<|reserved_3|>",
  "<|reserved_4|>",
]);

/** Number of byte tokens: one per byte value, so any input can be encoded. */
export const NUM_BYTE_TOKENS = 256;

/**
 * The smallest vocabulary a tokenizer with the given specials can have: the specials plus the 256
 * byte tokens.
 *
 * @param numSpecial How many special tokens (default: all of {@linkcode SPECIAL_TOKENS}).
 * @returns `numSpecial + 256`.
 * @example
 * ```ts
 * import { minVocabSize } from "./special_tokens.ts";
 * minVocabSize(); // 272
 * ```
 */
export function minVocabSize(numSpecial: number = SPECIAL_TOKENS.length): number {
  return numSpecial + NUM_BYTE_TOKENS;
}
