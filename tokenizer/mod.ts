/**
 * The MiniDeepSeek tokenizer: byte-level BPE with a CJK-aware pre-tokenizer, reserved special
 * tokens, a Jinja chat template with tool calls, and Hugging Face `tokenizer.json` I/O.
 *
 * - Train: {@linkcode trainBpe} (in memory), {@linkcode trainTokenizerFromFiles} (JSONL / text).
 * - Use: {@linkcode Tokenizer} (`encode`, `decode`, `streamingDecoder`, special ids).
 * - Chat: {@linkcode renderChat}, {@linkcode renderChatForTraining} (ids + assistant mask),
 *   {@linkcode encodeChatPrompt}, {@linkcode CHAT_TEMPLATE}; {@linkcode parseFirstToolCall} and
 *   {@linkcode parseToolCallBody} read the template's `<tool_call>` blocks back.
 * - Files: {@linkcode saveTokenizer}, {@linkcode loadTokenizer}, {@linkcode loadTokenizerConfig}.
 *
 * Left out: normalizers (text is encoded as given), unigram / WordPiece models, offsets.
 *
 * @example Train a small vocabulary, render a chat for training, save it for transformers
 * ```ts
 * import {
 *   encodeChatPrompt,
 *   renderChatForTraining,
 *   saveTokenizer,
 *   trainBpe,
 * } from "@minideepseek/minideepseek/tokenizer";
 *
 * const tok = trainBpe(["the weather in Rona is sunny. ".repeat(50)], { vocabSize: 300 });
 * const chat = [
 *   { role: "user" as const, content: "Weather in Rona?" },
 *   { role: "assistant" as const, content: "Sunny." },
 * ];
 * const { ids, assistantMask } = renderChatForTraining(tok, chat);
 * const prompt = encodeChatPrompt(tok, chat.slice(0, 1)); // ends with "<|im_start|>assistant\n"
 * console.log(ids.length, assistantMask.length, prompt.at(-1));
 * await saveTokenizer(tok, "runs/tokenizer"); // tokenizer.json + tokenizer_config.json
 * ```
 *
 * @module
 */

export { BYTE_TO_CHAR, byteLevelToBytes, bytesToByteLevel } from "./byte_level.ts";
export { type ChatTokens, encodeChatPrompt, renderChatForTraining } from "./chat_encode.ts";
export {
  CHAT_TEMPLATE,
  type ChatMessage,
  type ChatSegment,
  type ContentPart,
  jinjaJson,
  normalizeMessages,
  renderChat,
  renderChatSegments,
  type RenderOptions,
  type ToolCall,
  type ToolSpec,
} from "./chat_template.ts";
export {
  isJsonlPath,
  readCorpus,
  type ReadCorpusOptions,
  type TrainFilesOptions,
  type TrainFilesProgress,
  trainTokenizerFromFiles,
} from "./corpus.ts";
export {
  decodeBytes,
  decodeIds,
  type DecodeOptions,
  StreamingDecoder,
  type TokenBytesSource,
} from "./decode.ts";
export { type AllowedSpecial, splitOnSpecials } from "./encode.ts";
export {
  DEFAULT_MODEL_MAX_LENGTH,
  type HfAddedToken,
  type HfTokenizerJson,
  parseTokenizerConfig,
  type TokenizerConfig,
  tokenizerFromJson,
  toTokenizerConfig,
  toTokenizerJson,
} from "./hf_json.ts";
export { loadTokenizer, loadTokenizerConfig, saveTokenizer } from "./io.ts";
export {
  type ParsedToolCall,
  parseFirstToolCall,
  parseToolCallBody,
  type ToolCallBodyOptions,
} from "./tool_calls.ts";
export {
  compilePattern,
  lastSafeCut,
  patternToJsSource,
  pretokenize,
  PRETOKENIZE_PATTERN,
  wellFormed,
} from "./pretokenize.ts";
export {
  BOS_TOKEN,
  EOS_TOKEN,
  IM_END_TOKEN,
  IM_START_TOKEN,
  minVocabSize,
  NUM_BYTE_TOKENS,
  PAD_TOKEN,
  SPECIAL_TOKENS,
  type SpecialToken,
  THINK_END_TOKEN,
  THINK_START_TOKEN,
  TOOL_CALL_END_TOKEN,
  TOOL_CALL_START_TOKEN,
  TOOL_RESPONSE_END_TOKEN,
  TOOL_RESPONSE_START_TOKEN,
} from "./special_tokens.ts";
export { type EncodeOptions, Tokenizer, type TokenizerData } from "./tokenizer.ts";
export {
  ChunkCounter,
  DEFAULT_VOCAB_SIZE,
  trainBpe,
  trainBpeFromCounts,
  type TrainOptions,
  type TrainProgress,
} from "./train.ts";
