/**
 * Conversations to token ids for training (SFT, DPO) and for the server's prompts.
 *
 * {@linkcode renderChatForTraining} returns the ids of the rendered conversation and a mask that is
 * 1 exactly on the tokens of assistant spans (reasoning, content, tool-call text and the closing
 * `<|im_end|>`), 0 on everything else (system, user and tool turns, every `<|im_start|>role\n`
 * header, the `\n` between turns, the generation prompt).
 *
 * Special tokens are recognized only where the template writes them, never inside message text:
 * a user who types `<|im_end|>` gets ordinary tokens, not a turn boundary. For conversations whose
 * texts contain no special-token strings the ids equal `@huggingface/tokenizers` encoding the
 * `@huggingface/jinja` rendering of the template (the tests check this).
 *
 * Between two special tokens the text is pre-tokenized as one string, exactly as when encoding the
 * rendered text, so the ids never depend on how the renderer split it into segments. A chunk's
 * mask is the mask of the segment its first character falls in; the template guarantees that no
 * chunk crosses into or out of an assistant span (see `chat_template.ts`).
 *
 * @module
 */

import { type ChatMessage, renderChatSegments, type RenderOptions } from "./chat_template.ts";
import { wellFormed } from "./pretokenize.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Token ids of a conversation with the SFT loss mask. */
export interface ChatTokens {
  /** Token ids. */
  ids: number[];
  /** Per token: 1 inside an assistant span (trained on), 0 elsewhere. Same length as `ids`. */
  assistantMask: number[];
}

/**
 * Renders and tokenizes a conversation, with the mask of assistant tokens.
 *
 * @param tok The tokenizer (with the special tokens of `special_tokens.ts`).
 * @param messages OpenAI-style messages (`system`, `user`, `assistant` with optional
 *   `tool_calls` / `reasoning_content`, `tool`).
 * @param options `tools` shown to the model, `addGenerationPrompt`, `bosToken` (default `<|bos|>`).
 * @returns `{ ids, assistantMask }`.
 * @throws {Error} For malformed messages (naming the message index) or a tokenizer that lacks one
 *   of the template's special tokens.
 * @example
 * ```ts ignore
 * const { ids, assistantMask } = renderChatForTraining(tok, [
 *   { role: "user", content: "2+2?" },
 *   { role: "assistant", content: "4" },
 * ]);
 * tok.decode(ids.filter((_, i) => assistantMask[i])); // "4<|im_end|>"
 * ```
 */
export function renderChatForTraining(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  options: RenderOptions = {},
): ChatTokens {
  const segments = renderChatSegments(messages, options);
  const ids: number[] = [];
  const assistantMask: number[] = [];
  const regex = tok.regex;
  let i = 0;
  while (i < segments.length) {
    const seg = segments[i];
    if (seg.kind === "special") {
      ids.push(tok.specialId(seg.text));
      assistantMask.push(seg.assistant ? 1 : 0);
      i++;
      continue;
    }
    // A run of ordinary segments up to the next special token, encoded as one text.
    let j = i;
    let text = "";
    const starts: number[] = [];
    while (j < segments.length && segments[j].kind !== "special") {
      starts.push(text.length);
      text += wellFormed(segments[j].text); // same length: U+FFFD replaces each lone surrogate
      j++;
    }
    let s = 0;
    regex.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = regex.exec(text)) !== null) {
      while (s + 1 < starts.length && starts[s + 1] <= m.index) s++;
      const before = ids.length;
      tok.encodeChunk(m[0], ids);
      const bit = segments[i + s].assistant ? 1 : 0;
      for (let k = before; k < ids.length; k++) assistantMask.push(bit);
    }
    i = j;
  }
  return { ids, assistantMask };
}

/**
 * Tokenizes a prompt for generation: the conversation followed by `<|im_start|>assistant\n`.
 *
 * @param tok The tokenizer.
 * @param messages OpenAI-style messages.
 * @param options `tools` shown to the model, `bosToken`.
 * @returns Token ids to feed the model.
 * @throws {Error} For malformed messages.
 * @example
 * ```ts ignore
 * const prompt = encodeChatPrompt(tok, [{ role: "user", content: "Hi" }]);
 * ```
 */
export function encodeChatPrompt(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  options: Omit<RenderOptions, "addGenerationPrompt"> = {},
): number[] {
  return renderChatForTraining(tok, messages, { ...options, addGenerationPrompt: true }).ids;
}
