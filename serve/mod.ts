/**
 * Serving: sampling, the batched generation engine, OpenAI-compatible HTTP endpoints with tool
 * calls, and a web chat page.
 *
 * - {@linkcode LanguageModel}: what a model must offer (batched incremental decoding).
 * - {@linkcode Sampler}, {@linkcode StopStringMatcher} and the pure sampling functions.
 * - {@linkcode Engine}: the request queue and continuous-batching loop.
 * - {@linkcode parseToolCalls}, {@linkcode ToolCallStreamParser}: `<tool_call>` output to OpenAI
 *   `tool_calls`.
 * - {@linkcode CompletionService}: chat and text completions without HTTP (n choices, logprobs,
 *   DeepSeek's prefix completion and `reasoning_content`).
 * - {@linkcode compileSchema}, {@linkcode JsonMatcher}, {@linkcode jsonConstraint},
 *   {@linkcode toolCallConstraint}: constrained decoding (JSON mode, strict and required tools).
 * - {@linkcode parseEmbeddingRequest}, {@linkcode createEmbeddings}: `/v1/embeddings` from the
 *   model's pooled hidden states.
 * - {@linkcode createServer}, {@linkcode createHandler}: the HTTP server and the page at `/`.
 * - {@linkcode runGenerate}: one prompt in, one streamed completion out (`cli.ts generate`).
 * - {@linkcode ChatSession}: a multi-turn conversation with tool rounds over a
 *   {@linkcode ChatBackend}, in-process ({@linkcode serviceBackend}) or an OpenAI-compatible
 *   server ({@linkcode httpBackend}) (`cli.ts chat`).
 * - {@linkcode loadForServing}, {@linkcode loadModel}: a run, checkpoint or Hugging Face directory
 *   to serve, decoded by the GPU decoder.
 *
 * Left out: prefix caching, image input, fill-in-the-middle (`suffix`).
 *
 * @example Serve a trained run over HTTP, and generate without HTTP
 * ```ts
 * import { createServer, Engine, loadForServing } from "@minideepseek/minideepseek/serve";
 * import { encodeChatPrompt } from "@minideepseek/minideepseek/tokenizer";
 *
 * // A run directory, checkpoint or Hugging Face export; its tokenizer is found next to it.
 * const loaded = await loadForServing("runs/demo/dpo");
 * const server = createServer({ ...loaded, port: 8000 }); // OpenAI API at /v1, chat page at /
 *
 * const engine = new Engine(loaded.model, loaded.tokenizer);
 * const prompt = encodeChatPrompt(loaded.tokenizer, [{ role: "user", content: "Hi" }]);
 * const { text } = await engine.generate(prompt, { maxTokens: 32 }).result;
 * console.log(text);
 * await engine.close();
 * await server.shutdown();
 * ```
 *
 * @module
 */

export {
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatDelta,
  type ChatMessageBody,
  type ChatRun,
  type ChatTokenLogprob,
  type CompletionRun,
  CompletionService,
  type OpenAIFinishReason,
  ReasoningSplitter,
  type SplitText,
  type TextCompletion,
  type TextLogprobs,
  type ToolCallDelta,
} from "./completions.ts";
export {
  type ChatBackend,
  type ChatEvent,
  ChatSession,
  type ChatSessionOptions,
  type ChatToolCall,
  serviceBackend,
} from "./chat_session.ts";
export {
  type ConstrainedTool,
  jsonConstraint,
  type TokenConstraint,
  toolCallConstraint,
  type ToolCallConstraintOptions,
  toolCallNode,
} from "./constraint.ts";
export {
  createEmbeddings,
  type EmbeddingRequest,
  type EmbeddingResponse,
  MAX_EMBEDDING_INPUTS,
  parseEmbeddingRequest,
  poolEmbedding,
  TIKTOKEN_ENCODINGS,
  type TiktokenEncoding,
} from "./embeddings.ts";
export {
  anyObjectNode,
  compileSchema,
  JsonMatcher,
  MAX_WHITESPACE,
  type PropNode,
  type SchemaNode,
} from "./json_grammar.ts";
export {
  ContextLengthError,
  Engine,
  type EngineGenerateOptions,
  type EngineOptions,
  EngineOverloadedError,
  type EngineStats,
  type EngineTokenizer,
  type FinishReason,
  type Generation,
  type GenerationResult,
  type TextStreamDecoder,
  type TokenLogprob,
  tokenLogprob,
  type Usage,
} from "./engine.ts";
export {
  runGenerate,
  type RunGenerateOptions,
  type RunGenerateResult,
  samplingParams,
  type SamplingSettings,
} from "./generate.ts";
export { httpBackend, type HttpBackendOptions } from "./http_backend.ts";
export {
  type LoadedModel,
  loadForServing,
  type LoadForServingOptions,
  loadModel,
  type LoadModelOptions,
} from "./load.ts";
export type { LanguageModel, SeqHandle, StepItem } from "./model_api.ts";
// The chat types of the tokenizer module that requests are made of.
export type { ChatMessage, ContentPart, ToolCall, ToolSpec } from "../tokenizer/chat_template.ts";
export {
  ApiError,
  type ChatRequest,
  type CommonRequest,
  type CompletionRequest,
  MAX_N,
  parseChatRequest,
  parseCompletionRequest,
  requireObject,
  type ResponseFormat,
  type ToolChoice,
  type UsageBody,
} from "./protocol.ts";
export {
  applyLogitBias,
  applyPresenceFrequencyPenalty,
  applyRepetitionPenalty,
  DEFAULT_SAMPLING,
  minPMask,
  resolveSampling,
  sampleIndex,
  Sampler,
  type SamplingParams,
  softmaxProbs,
  type StopMatch,
  StopStringMatcher,
  topKMask,
  topPMask,
} from "../model/sampling.ts";
export { Rng } from "../random/rng.ts";
export {
  type ConnectionInfo,
  createHandler,
  createServer,
  DEFAULT_MAX_BODY_BYTES,
  type Handler,
  type HandlerOptions,
  type RunningServer,
  type ServerOptions,
  type ServerTools,
} from "./server.ts";
export type { OpenAIToolCall } from "../data/messages.ts";
export {
  type ParsedReply,
  parseToolCalls,
  toolCallId,
  type ToolCallParseOptions,
  type ToolCallStreamEvent,
  ToolCallStreamParser,
} from "./tool_calls.ts";
export { parseToolCallBody } from "../tokenizer/tool_calls.ts";
