/**
 * Small deterministic CPU models that implement {@linkcode LanguageModel}, for tests and demos of
 * the server without a GPU:
 *
 * - {@linkcode ScriptedModel}: answers each prompt with a reply chosen by a function of the prompt
 *   text (the reply's tokens get a logit of 30, every other token 0, so sampling at any usual
 *   temperature follows the script), then the stop token.
 * - {@linkcode BigramModel}: next-token log-probabilities counted from a few strings (lightly
 *   smoothed), so sampling settings visibly matter.
 * - {@linkcode testTokenizer}: a small byte-level BPE trained on a fixed text, with the project's
 *   special tokens.
 *
 * Both models count open sequences and record batch sizes, so tests can check that the engine
 * batches and frees sequences. `stepDelayMs` makes each step take time, like a GPU would.
 *
 * @module
 */

import { trainBpe } from "../tokenizer/train.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { LanguageModel, SeqHandle, StepItem } from "./model_api.ts";

/** Options shared by the CPU test models. */
export interface CpuModelOptions {
  /** Model id (default per class). */
  id?: string;
  /** Context length (default 512). */
  maxSeqLen?: number;
  /** Most open sequences (default 64). */
  maxSequences?: number;
  /** Milliseconds each `step` waits, to act like a GPU (default 0). */
  stepDelayMs?: number;
}

/** Bookkeeping shared by the CPU models: the sequence table, limits, statistics. */
abstract class CpuModel implements LanguageModel {
  readonly id: string;
  readonly vocabSize: number;
  readonly maxSeqLen: number;
  readonly maxSequences: number;
  /** Length of `stepHidden`'s vectors. */
  readonly hiddenSize = 64;
  /** Batch size of every `step` so far. */
  readonly batchSizes: number[] = [];
  #stepDelayMs: number;
  #next = 1;
  #seqs = new Map<SeqHandle, number[]>();
  #opened = 0;
  #peak = 0;
  #failNext: Error | undefined;

  constructor(vocabSize: number, options: CpuModelOptions, defaultId: string) {
    this.id = options.id ?? defaultId;
    this.vocabSize = vocabSize;
    this.maxSeqLen = options.maxSeqLen ?? 512;
    this.maxSequences = options.maxSequences ?? 64;
    this.#stepDelayMs = options.stepDelayMs ?? 0;
  }

  /** Sequences open now. */
  get liveSequences(): number {
    return this.#seqs.size;
  }

  /** Sequences ever opened. */
  get openedSequences(): number {
    return this.#opened;
  }

  /** Most sequences open at the same time so far. */
  get peakSequences(): number {
    return this.#peak;
  }

  /**
   * Makes the next `step` throw, as a GPU error would.
   *
   * @param error The error to throw.
   */
  failNextStep(error: Error): void {
    this.#failNext = error;
  }

  newSequence(): SeqHandle {
    if (this.#seqs.size >= this.maxSequences) {
      throw new Error(`all ${this.maxSequences} sequences are in use`);
    }
    const h = this.#next++;
    this.#seqs.set(h, []);
    this.#opened++;
    this.#peak = Math.max(this.#peak, this.#seqs.size);
    return h;
  }

  release(seq: SeqHandle): void {
    this.#seqs.delete(seq);
  }

  async step(items: readonly StepItem[]): Promise<Float32Array[]> {
    this.batchSizes.push(items.length);
    const seen = new Set<SeqHandle>();
    for (const { seq, tokens } of items) {
      const ctx = this.#seqs.get(seq);
      if (ctx === undefined) throw new Error(`step: unknown or released sequence ${seq}`);
      if (seen.has(seq)) throw new Error(`step: sequence ${seq} appears twice in one batch`);
      seen.add(seq);
      if (tokens.length === 0) throw new Error(`step: sequence ${seq} got no tokens`);
      if (ctx.length + tokens.length > this.maxSeqLen) {
        throw new Error(`step: sequence ${seq} would pass maxSeqLen ${this.maxSeqLen}`);
      }
      for (const t of tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= this.vocabSize) {
          throw new Error(`step: token id ${t} is outside the vocabulary`);
        }
      }
    }
    if (this.#stepDelayMs > 0) await new Promise((r) => setTimeout(r, this.#stepDelayMs));
    const fail = this.#failNext;
    this.#failNext = undefined;
    if (fail) throw fail;
    return items.map(({ seq, tokens }) => {
      const ctx = this.#seqs.get(seq);
      // Released while the step was in flight: the engine ignores these logits.
      if (ctx === undefined) return new Float32Array(this.vocabSize);
      ctx.push(...tokens);
      return this.logits(ctx, tokens.length);
    });
  }

  /** Like `step`, with the logits after every token (the engine's prompt logprobs). */
  async stepAll(items: readonly StepItem[]): Promise<Float32Array[][]> {
    const last = await this.step(items);
    return items.map(({ seq, tokens }, i) => {
      const ctx = this.#seqs.get(seq) ?? [];
      const before = ctx.length - tokens.length;
      return tokens.map((_, k) =>
        k === tokens.length - 1 ? last[i] : this.logits(ctx.slice(0, before + k + 1), 1)
      );
    });
  }

  /**
   * Like `step`, with a hidden state per token: a fixed pseudo-random unit vector of the token id
   * (64 floats), so texts that share tokens get similar pooled embeddings.
   */
  async stepHidden(items: readonly StepItem[]): Promise<Float32Array[][]> {
    await this.step(items);
    return items.map(({ tokens }) => tokens.map((t) => tokenVector(t)));
  }

  /**
   * Next-token logits for a context.
   *
   * @param context Every token of the sequence so far (the same array for the whole sequence).
   * @param added How many tokens this step added (1 when decoding).
   */
  protected abstract logits(context: readonly number[], added: number): Float32Array;
}

/** A fixed pseudo-random unit vector per token id (the CPU models' hidden states). */
function tokenVector(id: number): Float32Array {
  const v = new Float32Array(64);
  let x = (id + 1) * 2654435761 >>> 0;
  let norm = 0;
  for (let i = 0; i < v.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[i] = ((x >>> 0) / 4294967296) * 2 - 1;
    norm += v[i] * v[i];
  }
  for (let i = 0; i < v.length; i++) v[i] /= Math.sqrt(norm);
  return v;
}

/** Options of {@linkcode ScriptedModel}. */
export interface ScriptedModelOptions extends CpuModelOptions {
  /** Token appended after each reply (default the tokenizer's `<|im_end|>`). */
  stopId?: number;
}

/**
 * A model that replies with scripted text. The prompt is everything up to the last step that added
 * more than one token, or the first step (prefill passes many tokens, decoding one); the reply is
 * `respond(decodedPrompt)` encoded with special tokens allowed, followed by the stop token, then
 * the stop token forever. Forced tokens (prefilled with the prompt) are thus part of the prompt.
 *
 * @example
 * ```ts ignore
 * const tok = testTokenizer();
 * const model = new ScriptedModel(tok, (prompt) => prompt.includes("Hi") ? "Hello!" : "What?");
 * ```
 */
export class ScriptedModel extends CpuModel {
  #tok: Tokenizer;
  #respond: (prompt: string) => string;
  #stopId: number;
  #replies = new WeakMap<readonly number[], { start: number; ids: number[] }>();

  /**
   * @param tok The tokenizer the server uses.
   * @param respond Prompt text -> reply text.
   * @param options Limits, delay, stop token.
   */
  constructor(
    tok: Tokenizer,
    respond: (prompt: string) => string,
    options: ScriptedModelOptions = {},
  ) {
    super(tok.vocabSize, options, "scripted-test-model");
    this.#tok = tok;
    this.#respond = respond;
    this.#stopId = options.stopId ?? tok.imEndId;
  }

  protected logits(context: readonly number[], added: number): Float32Array {
    let reply = this.#replies.get(context);
    if (added > 1 || reply === undefined) {
      const text = this.#respond(this.#tok.decode(context));
      reply = {
        start: context.length,
        ids: [...this.#tok.encode(text, { allowedSpecial: "all" }), this.#stopId],
      };
      this.#replies.set(context, reply);
    }
    const k = context.length - reply.start;
    const next = k < reply.ids.length ? reply.ids[k] : this.#stopId;
    const out = new Float32Array(this.vocabSize);
    out[next] = 30;
    return out;
  }
}

/**
 * A bigram model counted from texts:
 * `logit[j] = log((count(prev, j) + 0.0001) / (count(prev) + 0.0001 V))`.
 *
 * @example
 * ```ts ignore
 * const model = new BigramModel(testTokenizer(), ["the cat sat on the mat"]);
 * ```
 */
export class BigramModel extends CpuModel {
  #table = new Map<number, Float32Array>();
  #uniform: Float32Array;

  /**
   * @param tok The tokenizer.
   * @param texts Training texts; each ends with the eos token.
   * @param options Limits and delay.
   */
  constructor(tok: Tokenizer, texts: readonly string[], options: CpuModelOptions = {}) {
    super(tok.vocabSize, options, "bigram-test-model");
    const V = tok.vocabSize;
    const counts = new Map<number, Float64Array>();
    for (const text of texts) {
      const ids = [...tok.encode(text), tok.eosId];
      for (let i = 1; i < ids.length; i++) {
        let row = counts.get(ids[i - 1]);
        if (!row) counts.set(ids[i - 1], row = new Float64Array(V));
        row[ids[i]]++;
      }
    }
    for (const [prev, row] of counts) {
      let total = 0;
      for (const c of row) total += c;
      const logits = new Float32Array(V);
      // Add-0.0001 smoothing: unseen tokens stay possible but rare, so samples read like the texts.
      for (let j = 0; j < V; j++) logits[j] = Math.log((row[j] + 1e-4) / (total + 1e-4 * V));
      this.#table.set(prev, logits);
    }
    this.#uniform = new Float32Array(V).fill(-Math.log(V));
  }

  protected logits(context: readonly number[]): Float32Array {
    return new Float32Array(this.#table.get(context[context.length - 1]) ?? this.#uniform);
  }
}

const TEST_CORPUS = [
  "The cat sat on the mat. The dog sat on the log. Hello, how are you today?",
  "I am fine, thank you. The weather in Karo is rainy and cold. What is 6 * 7? It is 42.",
  'Tool calls look like {"name": "get_weather", "arguments": {"city": "Karo"}} in JSON.',
  '{"name": "calculator", "arguments": {"expression": "6 * 7"}} {"result": 42}',
  "You said: hello world. Stop here. 你好，世界！天气很好。 Ünïcödé and emoji 😀 too.",
];

let cached: Tokenizer | undefined;

/**
 * A small BPE tokenizer (vocabulary 400) trained once on a fixed text; the same object every call.
 *
 * @returns The tokenizer, with the project's special tokens at ids 0..15.
 * @example
 * ```ts ignore
 * const tok = testTokenizer();
 * tok.decode(tok.encode("hello")); // "hello"
 * ```
 */
export function testTokenizer(): Tokenizer {
  cached ??= trainBpe(TEST_CORPUS.map((t) => t.repeat(3)), { vocabSize: 400 });
  return cached;
}

/** The texts {@linkcode testTokenizer} was trained on, also handy for {@linkcode BigramModel}. */
export const TEST_TEXTS: readonly string[] = TEST_CORPUS;

/**
 * A scripted chat assistant for tests and demos of the server, reading the ChatML prompt:
 *
 * - a prompt that ends inside a forced tool call (`<tool_call>` or `<tool_call>{"name": "f",
 *   "arguments":`) is completed with arguments `{"city": "Karo"}`;
 * - with tools shown, a last user message that mentions "weather" gets a `get_weather` call for
 *   the word after "in" (default "Karo"), and "calculate X" a `calculator` call;
 * - a tool result gets `The tool says: <result>`;
 * - anything else gets `You said: <last user message>`.
 *
 * @param prompt The decoded prompt.
 * @returns The reply text.
 * @example
 * ```ts ignore
 * const model = new ScriptedModel(testTokenizer(), demoResponder);
 * ```
 */
export function demoResponder(prompt: string): string {
  const args = '{"city": "Karo"}';
  const named = /<tool_call>\{"name": "[^"]*", "arguments":$/.exec(prompt);
  if (named) return ` ${args}}</tool_call>`;
  if (prompt.endsWith("<tool_call>")) {
    return `{"name": "get_weather", "arguments": ${args}}</tool_call>`;
  }
  const turns = prompt.split("<|im_start|>");
  const last = turns[turns.length - 2] ?? "";
  if (last.startsWith("tool\n")) {
    const result = /<tool_response>([\s\S]*?)<\/tool_response>/.exec(last)?.[1] ?? "";
    return `The tool says: ${result}`;
  }
  const user = last.startsWith("user\n") ? last.slice(5).replace(/<\|im_end\|>\n?$/, "") : "";
  if (prompt.includes("<tools>")) {
    if (/weather/i.test(user)) {
      const city = /\bin ([^\s?.!,]+)/.exec(user)?.[1] ?? "Karo";
      return `<tool_call>{"name": "get_weather", "arguments": {"city": ${
        JSON.stringify(city)
      }}}</tool_call>`;
    }
    const calc = /calculate (.+?)[?.!]*$/i.exec(user);
    if (calc) {
      return `<tool_call>{"name": "calculator", "arguments": {"expression": ${
        JSON.stringify(calc[1])
      }}}</tool_call>`;
    }
  }
  return `You said: ${user}`;
}
