/**
 * OpenAI `/v1/embeddings` from the served language model's hidden states.
 *
 * A vector is the model's final hidden state (the last block's output after the final RMSNorm:
 * what the output head reads) at every token of the input, averaged with weights proportional to
 * the position (1, 2, ..., T) and scaled to unit length. Why: in a causal model a token's state
 * has seen only the tokens before it, so later positions summarize more of the text and get more
 * weight (SGPT's position-weighted mean pooling, Muennighoff 2022, sec. 3.1); the final layer is
 * the one the model was trained to make linearly readable; unit length makes the dot product the
 * cosine similarity, which is what vector stores assume. Text inputs are encoded after `<|eos|>`,
 * the document separator of pretraining (as text completions do); that position is context, not
 * pooled. Token-id inputs are used as given.
 *
 * The model was not trained for retrieval, so these embeddings are a baseline: texts that share
 * words and topics land near each other, paraphrases less reliably.
 *
 * Token-id inputs are this model's ids unless the server is told that clients send ids of a
 * tiktoken encoding (`foreignTokenIds`, `serve --embedding-token-ids cl100k_base`): Microsoft
 * GraphRAG's query side, for one, chunks text with tiktoken and sends the chunks as ids. Those are
 * decoded to text with that encoding and read as text.
 *
 * @module
 */

import { encodeBase64 } from "./_base64.ts";
import { ApiError, requireObject } from "./protocol.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** The tiktoken encodings whose ids `/v1/embeddings` can take instead of the model's. */
export const TIKTOKEN_ENCODINGS = ["cl100k_base", "o200k_base", "p50k_base", "r50k_base"] as const;

/** One of {@linkcode TIKTOKEN_ENCODINGS}. */
export type TiktokenEncoding = typeof TIKTOKEN_ENCODINGS[number];

const tiktokens = new Map<string, Promise<(ids: number[]) => string>>();

/** A decoder of a tiktoken encoding's ids (js-tiktoken's bundled ranks; loaded once, on use). */
function tiktokenDecoder(name: TiktokenEncoding): Promise<(ids: number[]) => string> {
  let d = tiktokens.get(name);
  if (!d) {
    d = import("js-tiktoken").then((m) => {
      const enc = m.getEncoding(name);
      return (ids: number[]) => enc.decode(ids);
    });
    tiktokens.set(name, d);
  }
  return d;
}

/** Most inputs in one request (OpenAI's limit). */
export const MAX_EMBEDDING_INPUTS = 2048;

/** A validated `/v1/embeddings` request. */
export interface EmbeddingRequest {
  /** The model asked for. */
  model: string | undefined;
  /** Each input: text, or token ids. */
  inputs: (string | number[])[];
  /** `float` (default) or `base64` (little-endian float32). */
  encoding: "float" | "base64";
}

function bad(param: string, message: string): ApiError {
  return new ApiError(400, message, { param });
}

function isIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x >= 0);
}

/**
 * Validates a `/v1/embeddings` body: `input` as a string, an array of strings, an array of token
 * ids, or an array of such arrays; `encoding_format` `float` or `base64`; `dimensions` only equal
 * to the model's (it cannot be shortened); `user` ignored.
 *
 * @param body The parsed JSON.
 * @param dim The model's hidden size (for `dimensions`).
 * @returns The typed request.
 * @throws {ApiError} 400 naming the field at fault.
 * @example
 * ```ts
 * import { parseEmbeddingRequest } from "./embeddings.ts";
 * parseEmbeddingRequest({ input: ["a", "b"] }, 64).inputs.length; // 2
 * ```
 */
export function parseEmbeddingRequest(body: unknown, dim?: number): EmbeddingRequest {
  const o = requireObject(body);
  const model = o.model;
  if (model !== undefined && model !== null && typeof model !== "string") {
    throw bad("model", "'model' must be a string");
  }
  const input = o.input;
  let inputs: (string | number[])[];
  if (typeof input === "string") inputs = [input];
  else if (isIds(input)) inputs = [input];
  else if (Array.isArray(input) && input.length > 0) {
    inputs = input.map((x, i) => {
      if (typeof x === "string" || isIds(x)) return x;
      throw bad(
        `input[${i}]`,
        `'input[${i}]' must be a non-empty string or an array of token ids`,
      );
    });
  } else {
    throw bad(
      "input",
      "'input' is required: a string, an array of strings, or token ids (an array or arrays)",
    );
  }
  if (inputs.length > MAX_EMBEDDING_INPUTS) {
    throw bad("input", `'input' may hold at most ${MAX_EMBEDDING_INPUTS} items`);
  }
  inputs.forEach((x, i) => {
    if (x === "") throw bad(`input[${i}]`, `'input[${i}]' is empty; send some text`);
  });
  const fmt = o.encoding_format ?? "float";
  if (fmt !== "float" && fmt !== "base64") {
    throw bad("encoding_format", `'encoding_format' must be "float" or "base64"`);
  }
  const dims = o.dimensions;
  if (dims !== undefined && dims !== null && dims !== dim) {
    throw bad(
      "dimensions",
      `'dimensions' must be ${dim} (the model's hidden size) or left out: these vectors cannot be shortened`,
    );
  }
  return { model: model ?? undefined, inputs, encoding: fmt };
}

/**
 * Position-weighted mean of hidden states, scaled to unit length (see the module docs).
 *
 * @param states Per token, a hidden state (at least one).
 * @returns The embedding.
 * @example
 * ```ts
 * import { poolEmbedding } from "./embeddings.ts";
 * poolEmbedding([Float32Array.of(1, 0), Float32Array.of(0, 1)]); // [0.447, 0.894]: weights 1, 2
 * ```
 */
export function poolEmbedding(states: readonly Float32Array[]): Float32Array {
  const D = states[0].length;
  const acc = new Float64Array(D);
  states.forEach((h, t) => {
    for (let d = 0; d < D; d++) acc[d] += (t + 1) * h[d];
  });
  let norm = 0;
  for (let d = 0; d < D; d++) norm += acc[d] * acc[d];
  norm = Math.sqrt(norm) || 1;
  return Float32Array.from(acc, (v) => v / norm);
}

/** An `/v1/embeddings` response. */
export interface EmbeddingResponse {
  /** Always `list`. */
  object: "list";
  /** One entry per input, in order. */
  data: { object: "embedding"; index: number; embedding: number[] | string }[];
  /** The served model. */
  model: string;
  /** Tokens read (the `<|eos|>` before each text input included). */
  usage: { prompt_tokens: number; total_tokens: number };
}

/**
 * Computes a request's embeddings.
 *
 * @param req The validated request.
 * @param options The tokenizer, the engine's `embed`, the model name and context length.
 * @returns The response body.
 * @throws {ApiError} 400 for an input longer than the context or with ids outside the vocabulary.
 */
export async function createEmbeddings(
  req: EmbeddingRequest,
  options: {
    tokenizer: Tokenizer;
    embed: (tokens: readonly number[]) => Promise<Float32Array[]>;
    modelId: string;
    maxSeqLen: number;
    /** Token-id inputs are ids of this tiktoken encoding (default: the model's own ids). */
    foreignTokenIds?: TiktokenEncoding;
  },
): Promise<EmbeddingResponse> {
  const tok = options.tokenizer;
  let inputs = req.inputs;
  if (options.foreignTokenIds && inputs.some((x) => typeof x !== "string")) {
    const decode = await tiktokenDecoder(options.foreignTokenIds);
    inputs = inputs.map((x, i) => {
      if (typeof x === "string") return x;
      try {
        return decode(x);
      } catch {
        throw bad(
          `input[${i}]`,
          `'input[${i}]' holds ids that are not ${options.foreignTokenIds} tokens`,
        );
      }
    });
  }
  const encoded = inputs.map((x, i) => {
    const ids = typeof x === "string" ? [tok.eosId, ...tok.encode(x)] : x;
    if (ids.length > options.maxSeqLen) {
      throw new ApiError(
        400,
        `'input[${i}]' has ${ids.length} tokens; the model reads at most ${options.maxSeqLen}`,
        { param: `input[${i}]`, code: "context_length_exceeded" },
      );
    }
    const badId = ids.find((t) => t >= tok.vocabSize);
    if (badId !== undefined) {
      throw bad(`input[${i}]`, `'input[${i}]' holds token id ${badId}, outside the vocabulary`);
    }
    return { ids, skip: typeof x === "string" ? 1 : 0 };
  });
  let tokens = 0;
  const data: EmbeddingResponse["data"] = [];
  for (const [index, { ids, skip }] of encoded.entries()) {
    const states = await options.embed(ids);
    tokens += ids.length;
    const v = poolEmbedding(states.length > skip ? states.slice(skip) : states);
    data.push({
      object: "embedding",
      index,
      embedding: req.encoding === "base64"
        ? encodeBase64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
        : Array.from(v),
    });
  }
  return {
    object: "list",
    data,
    model: options.modelId,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  };
}
