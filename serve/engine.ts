/**
 * The generation engine: a queue of requests feeding one batched decoding loop over a
 * {@linkcode LanguageModel} (continuous batching, as in Orca and vLLM).
 *
 * Each iteration of the loop:
 * 1. drops cancelled requests and releases their sequences;
 * 2. admits queued requests while fewer than `maxSequences` are active;
 * 3. builds one batch of at most `maxBatchSize` items, starting at a rotating position so every
 *    active request gets its turn: a request still in prefill passes its next prompt chunk (all
 *    prefill chunks together at most `maxPrefillTokens` tokens), the others their last token;
 * 4. awaits `model.step(batch)`, then samples one token per request whose prompt is complete,
 *    decodes it to text with the tokenizer's streaming decoder (whole characters only), matches
 *    stop strings, and streams the text delta to the request's consumer.
 *
 * A request ends with finish reason `stop` (a stop token or stop string), `length` (`maxTokens`
 * or the model's context) or `cancelled` (its `AbortSignal` fired, or its consumer stopped
 * reading); its sequence is released at once. Usage counts every prompt token and every output
 * token (forced and sampled, a final stop token included, as vLLM counts).
 *
 * Forced tokens (`forcedTokens`) are the start of the output given rather than sampled, e.g.
 * `<tool_call>` when a tool call is required: they are prefilled with the prompt, streamed as
 * text and counted as completion tokens.
 *
 * A `constraint` (constrained decoding, `constraint.ts`) masks each sampled token; when it allows
 * nothing (the budget is too small for the grammar) the generation ends with `length`.
 * Logprobs are the model's own distribution (log-softmax of the raw logits, before penalties,
 * temperature and masks, as vLLM reports them). Prompt logprobs need the logits after every
 * prompt token: from `model.stepAll` when the model has it, else by prefilling one token per step.
 * Embedding jobs ({@linkcode Engine.embed}) run between steps in a sequence of their own.
 *
 * @example
 * ```ts ignore
 * const engine = new Engine(model, tokenizer, { maxBatchSize: 16 });
 * const gen = engine.generate(tokenizer.encode("Once upon a time"), { maxTokens: 32 });
 * for await (const delta of gen) Deno.stdout.writeSync(new TextEncoder().encode(delta));
 * const { finishReason, usage } = await gen.result;
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { TokenConstraint } from "./constraint.ts";
import type { LanguageModel, SeqHandle, StepItem } from "./model_api.ts";
import { Sampler, type SamplingParams, StopStringMatcher } from "../model/sampling.ts";

/** Token ids in, complete characters out (the tokenizer's `StreamingDecoder` fits). */
export interface TextStreamDecoder {
  /** Feeds a token; returns the text it completes (possibly empty). */
  push(id: number): string;
  /** Ends the stream; returns any held bytes as text (U+FFFD for a broken character). */
  flush(): string;
}

/** What the engine needs from a tokenizer (the project's `Tokenizer` fits). */
export interface EngineTokenizer {
  /** Number of ids. */
  readonly vocabSize: number;
  /** Id of the end-of-document token, the default stop token. */
  readonly eosId: number;
  /** A decoder that returns only complete characters. */
  streamingDecoder(): TextStreamDecoder;
}

/** Why a generation ended. */
export type FinishReason = "stop" | "length" | "cancelled";

/** Token counts of one generation, named as in OpenAI's `usage`. */
export interface Usage {
  /** Tokens of the prompt. */
  prompt_tokens: number;
  /** Tokens produced (forced and sampled, a final stop token included). */
  completion_tokens: number;
  /** The sum. */
  total_tokens: number;
}

/** A token's log-probability under the model, and the most likely alternatives. */
export interface TokenLogprob {
  /** The token id. */
  id: number;
  /** Its log-probability. */
  logprob: number;
  /** The `top` most likely tokens at that position, most likely first. */
  top: { id: number; logprob: number }[];
}

/**
 * Log-probability of `id` and the `k` most likely tokens, from raw logits.
 *
 * @param logits Next-token logits (only the first `limit` count).
 * @param id The token to score.
 * @param options `k` alternatives (0..20), `limit` ids considered (default all).
 * @returns The entry.
 * @example
 * ```ts
 * import { tokenLogprob } from "./engine.ts";
 * tokenLogprob(Float32Array.of(0, 0), 1, { k: 1 }).logprob; // -0.693...
 * ```
 */
export function tokenLogprob(
  logits: Float32Array,
  id: number,
  options: { k: number; limit?: number },
): TokenLogprob {
  const n = Math.min(options.limit ?? logits.length, logits.length);
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const top: { id: number; logprob: number }[] = [];
  if (options.k > 0) {
    // A small sorted list: k is at most 20.
    for (let i = 0; i < n; i++) {
      const v = logits[i];
      if (top.length === options.k && v <= top[top.length - 1].logprob) continue;
      let at = top.length;
      while (at > 0 && top[at - 1].logprob < v) at--;
      top.splice(at, 0, { id: i, logprob: v });
      if (top.length > options.k) top.pop();
    }
    for (const t of top) t.logprob -= lse;
  }
  return { id, logprob: id < n ? logits[id] - lse : -Infinity, top };
}

/** The outcome of a generation. */
export interface GenerationResult {
  /** Everything streamed, concatenated. */
  text: string;
  /** Output token ids, forced ones included, a final stop token included. */
  tokenIds: number[];
  /** Why it ended. */
  finishReason: FinishReason;
  /** Token counts. */
  usage: Usage;
  /** The sampling seed used (the given one or a random one). */
  seed: number;
  /** With `logprobs`: one entry per output token (a final stop token excluded). */
  logprobs?: TokenLogprob[];
  /** With `promptLogprobs`: per prompt token, null for the first (nothing predicts it). */
  promptLogprobs?: (TokenLogprob | null)[];
}

/** Options of {@linkcode Engine.generate}. */
export interface EngineGenerateOptions {
  /** Sampling parameters (see `sampling.ts`; default temperature 1). */
  sampling?: Partial<SamplingParams>;
  /** Most output tokens (default, and at most: until the model's context is full). */
  maxTokens?: number;
  /** Stop strings, matched on the decoded text and not emitted. */
  stop?: readonly string[];
  /** Token ids that end the output and are not emitted (default: the tokenizer's eos). */
  stopTokenIds?: readonly number[];
  /** Output tokens given instead of sampled (emitted and counted as output). */
  forcedTokens?: readonly number[];
  /** Token ids counted as output but left out of the text (e.g. special tokens; default none). */
  hiddenTokenIds?: ReadonlySet<number>;
  /** Cancels the generation and frees its sequence. */
  signal?: AbortSignal;
  /** Constrained decoding: masks every sampled token (default none). */
  constraint?: TokenConstraint;
  /** Report each output token's logprob and this many alternatives, 0..20 (default: none). */
  logprobs?: number;
  /** Report the logprob of every prompt token (with `logprobs` alternatives; default false). */
  promptLogprobs?: boolean;
}

/** Options of the {@linkcode Engine} constructor. */
export interface EngineOptions {
  /** Most sequences in one `step` (default 32). */
  maxBatchSize?: number;
  /** Most requests decoding at once, each holding a sequence (default `model.maxSequences`). */
  maxSequences?: number;
  /** Most prompt tokens prefilled in one step, summed over the batch (default 4096). */
  maxPrefillTokens?: number;
  /** Most requests waiting; more are refused with {@linkcode EngineOverloadedError} (default 1024). */
  maxQueue?: number;
}

/** Counters of an {@linkcode Engine}. */
export interface EngineStats {
  /** Requests waiting for a sequence. */
  queued: number;
  /** Requests holding a sequence. */
  active: number;
  /** Model steps so far. */
  steps: number;
  /** Requests finished with `stop` or `length`. */
  completed: number;
  /** Requests cancelled. */
  cancelled: number;
  /** Requests ended by a model error. */
  failed: number;
}

/** Thrown by {@linkcode Engine.generate} when the queue is full (the server answers 503). */
export class EngineOverloadedError extends Error {
  /**
   * Makes the error.
   *
   * @param message What limit was hit.
   */
  constructor(message: string) {
    super(message);
    this.name = "EngineOverloadedError";
  }
}

/** Thrown by {@linkcode Engine.generate} for a prompt that does not fit (the server answers 400). */
export class ContextLengthError extends Error {
  /**
   * Makes the error.
   *
   * @param message The lengths involved.
   */
  constructor(message: string) {
    super(message);
    this.name = "ContextLengthError";
  }
}

/** A push-based async queue of text deltas with a terminal state. */
class DeltaChannel {
  #items: string[] = [];
  #done = false;
  #error: unknown = undefined;
  #wake: (() => void) | undefined;

  push(text: string): void {
    if (this.#done || text.length === 0) return;
    this.#items.push(text);
    this.#notify();
  }

  close(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async *drain(onStop: () => void): AsyncGenerator<string, void, undefined> {
    let finished = false;
    try {
      for (;;) {
        if (this.#items.length > 0) {
          // Deltas that piled up while the consumer was busy go out as one.
          const text = this.#items.join("");
          this.#items.length = 0;
          yield text;
          continue;
        }
        if (this.#done) {
          finished = true;
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((r) => (this.#wake = r));
      }
    } finally {
      // The consumer broke out of its loop (or threw): nobody reads this generation any more.
      if (!finished) onStop();
    }
  }
}

/**
 * One request in flight: iterate it for text deltas, await `result` for the outcome.
 *
 * Iterating is optional; the generation runs either way. Breaking out of the iteration cancels
 * it. The iterator can be taken once; it throws if the model failed.
 */
export interface Generation extends AsyncIterable<string> {
  /** Resolves when the generation ends; rejects if the model failed. */
  readonly result: Promise<GenerationResult>;
  /** The prompt length in tokens. */
  readonly promptTokens: number;
  /** Cancels the generation: it ends with finish reason `cancelled` and frees its sequence. */
  cancel(): void;
  /** With `logprobs`: the entries so far, growing as tokens come (read, do not modify). */
  readonly logprobs: readonly TokenLogprob[];
}

function makeGeneration(
  channel: DeltaChannel,
  result: Promise<GenerationResult>,
  cancel: () => void,
  promptTokens: number,
  logprobs: readonly TokenLogprob[],
): Generation {
  // Callers that only iterate must not see an unhandled rejection from `result`.
  result.catch(() => {});
  let iterated = false;
  return {
    result,
    promptTokens,
    cancel,
    logprobs,
    [Symbol.asyncIterator](): AsyncIterator<string> {
      if (iterated) throw new Error("a Generation can be iterated only once");
      iterated = true;
      return channel.drain(cancel);
    },
  };
}

/** Per-request state inside the engine. */
interface Request {
  feed: number[];
  promptLength: number;
  fed: number;
  seq: SeqHandle | undefined;
  lastToken: number;
  output: number[];
  text: string;
  forced: number;
  maxTokens: number;
  sampler: Sampler;
  stopIds: Set<number>;
  hidden: ReadonlySet<number>;
  decoder: TextStreamDecoder;
  matcher: StopStringMatcher;
  channel: DeltaChannel;
  cancelled: boolean;
  done: boolean;
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
  unlisten: () => void;
  constraint: TokenConstraint | undefined;
  /** Alternatives per logprob entry, or -1 for no logprobs. */
  topK: number;
  logprobs: TokenLogprob[];
  promptLogprobs: (TokenLogprob | null)[] | undefined;
  /** Needs the logits after every prefilled token (prompt or forced logprobs). */
  wantAll: boolean;
}

/** An embedding job: the hidden states of a token sequence. */
interface EmbedJob {
  tokens: readonly number[];
  resolve: (h: Float32Array[]) => void;
  reject: (e: unknown) => void;
}

/**
 * Batched generation over one model. See the module docs for the scheduling.
 *
 * @example
 * ```ts ignore
 * const engine = new Engine(model, tokenizer);
 * const { text } = await engine.generate(ids, { sampling: { temperature: 0 } }).result;
 * ```
 */
export class Engine {
  /** The model. */
  readonly model: LanguageModel;
  /** The tokenizer. */
  readonly tokenizer: EngineTokenizer;
  readonly #maxBatchSize: number;
  readonly #maxSequences: number;
  readonly #maxPrefillTokens: number;
  readonly #maxQueue: number;
  #queue: Request[] = [];
  #embeds: EmbedJob[] = [];
  #active: Request[] = [];
  #cursor = 0;
  #running: Promise<void> | undefined;
  #closed = false;
  #stats = { steps: 0, completed: 0, cancelled: 0, failed: 0 };

  /**
   * Makes an idle engine; the decoding loop runs while there is work.
   *
   * @param model The model.
   * @param tokenizer The tokenizer the prompts were encoded with.
   * @param options Batch and queue limits.
   * @throws {RangeError} Naming the option that is not a positive integer, or a model whose
   *   vocabulary is smaller than the tokenizer's.
   */
  constructor(model: LanguageModel, tokenizer: EngineTokenizer, options: EngineOptions = {}) {
    const positive = (name: string, v: number): number => {
      if (!Number.isInteger(v) || v < 1) {
        throw new RangeError(`engine option ${name} must be a positive integer, got ${v}`);
      }
      return v;
    };
    if (model.vocabSize < tokenizer.vocabSize) {
      throw new RangeError(
        `the model's vocabulary (${model.vocabSize}) is smaller than the tokenizer's ` +
          `(${tokenizer.vocabSize}): they were not trained together`,
      );
    }
    this.model = model;
    this.tokenizer = tokenizer;
    this.#maxBatchSize = positive("maxBatchSize", options.maxBatchSize ?? 32);
    this.#maxSequences = positive(
      "maxSequences",
      Math.min(options.maxSequences ?? model.maxSequences, model.maxSequences),
    );
    this.#maxPrefillTokens = positive("maxPrefillTokens", options.maxPrefillTokens ?? 4096);
    this.#maxQueue = positive("maxQueue", options.maxQueue ?? 1024);
  }

  /**
   * Counters: queued and active requests, steps, finished requests.
   *
   * @returns A snapshot.
   */
  stats(): EngineStats {
    return {
      queued: this.#queue.filter((r) => !r.done).length,
      active: this.#active.filter((r) => !r.done).length,
      ...this.#stats,
    };
  }

  /**
   * Queues a generation.
   *
   * @param prompt Prompt token ids (at least one).
   * @param options Sampling, limits, stop conditions, forced tokens, cancellation.
   * @returns The running {@linkcode Generation}.
   * @throws {ContextLengthError} If the prompt (with forced tokens) leaves no room to generate.
   * @throws {EngineOverloadedError} If `maxQueue` requests are already waiting.
   * @throws {RangeError} For an empty prompt, a bad `maxTokens`, an id outside the vocabulary or
   *   a sampling parameter out of range (naming it).
   * @throws {Error} After {@linkcode Engine.close}.
   */
  generate(prompt: readonly number[], options: EngineGenerateOptions = {}): Generation {
    if (this.#closed) throw new Error("the engine is closed");
    if (prompt.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    const forced = options.forcedTokens ?? [];
    const vocab = this.model.vocabSize;
    for (const id of [...prompt, ...forced]) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new RangeError(`token id ${id} is outside the model's vocabulary 0..${vocab - 1}`);
      }
    }
    const maxLen = this.model.maxSeqLen;
    if (prompt.length + forced.length >= maxLen) {
      throw new ContextLengthError(
        `the prompt has ${prompt.length + forced.length} tokens; the model's context is ` +
          `${maxLen} tokens, so at most ${maxLen - 1} leave room for an answer`,
      );
    }
    const room = maxLen - prompt.length;
    const maxTokens = options.maxTokens ?? room;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new RangeError(`max_tokens must be a positive integer, got ${options.maxTokens}`);
    }
    if (this.#queue.length >= this.#maxQueue) {
      throw new EngineOverloadedError(
        `the server is busy: ${this.#queue.length} requests are waiting (limit ${this.#maxQueue})`,
      );
    }
    const sampler = new Sampler(options.sampling ?? {}, {
      promptTokens: prompt,
      // Padded rows of the model's vocabulary have no text: never sample them.
      vocabLimit: this.tokenizer.vocabSize,
    });
    const channel = new DeltaChannel();
    let resolve!: (r: GenerationResult) => void, reject!: (e: unknown) => void;
    const result = new Promise<GenerationResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const keptForced = forced.slice(0, Math.min(forced.length, maxTokens));
    const topK = options.logprobs ?? -1;
    if (!Number.isInteger(topK) || topK < -1 || topK > 20) {
      throw new RangeError(`logprobs must be an integer from 0 to 20, got ${options.logprobs}`);
    }
    const promptLogprobs = options.promptLogprobs ?? false;
    const req: Request = {
      feed: [...prompt, ...keptForced],
      promptLength: prompt.length,
      fed: 0,
      seq: undefined,
      lastToken: -1,
      output: [],
      text: "",
      forced: keptForced.length,
      maxTokens: Math.min(maxTokens, room),
      sampler,
      stopIds: new Set(options.stopTokenIds ?? [this.tokenizer.eosId]),
      hidden: options.hiddenTokenIds ?? new Set(),
      decoder: this.tokenizer.streamingDecoder(),
      matcher: new StopStringMatcher(options.stop ?? []),
      channel,
      cancelled: false,
      done: false,
      resolve,
      reject,
      unlisten: () => {},
      constraint: options.constraint,
      topK,
      logprobs: [],
      promptLogprobs: promptLogprobs ? [null] : undefined,
      wantAll: promptLogprobs || (topK >= 0 && keptForced.length > 0),
    };
    const cancel = () => this.#cancel(req);
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) req.cancelled = true;
      signal.addEventListener("abort", cancel, { once: true });
      req.unlisten = () => signal.removeEventListener("abort", cancel);
    }
    this.#queue.push(req);
    this.#wake();
    return makeGeneration(channel, result, cancel, prompt.length, req.logprobs);
  }

  /**
   * The model's final hidden state after every token of a text (see
   * `LanguageModel.stepHidden`), computed between decoding steps in a sequence of its own.
   *
   * @param tokens Token ids (at least one, at most the context length).
   * @returns One array per token.
   * @throws {RangeError} For an empty input, an id outside the vocabulary, or a model without
   *   `stepHidden`.
   * @throws {ContextLengthError} For more tokens than the context holds.
   */
  embed(tokens: readonly number[]): Promise<Float32Array[]> {
    if (this.#closed) return Promise.reject(new Error("the engine is closed"));
    if (!this.model.stepHidden) {
      return Promise.reject(new RangeError("this model does not expose hidden states"));
    }
    if (tokens.length === 0) return Promise.reject(new RangeError("the input is empty"));
    const vocab = this.model.vocabSize;
    for (const id of tokens) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        return Promise.reject(
          new RangeError(`token id ${id} is outside the model's vocabulary 0..${vocab - 1}`),
        );
      }
    }
    if (tokens.length > this.model.maxSeqLen) {
      return Promise.reject(
        new ContextLengthError(
          `the input has ${tokens.length} tokens; the model's context is ${this.model.maxSeqLen}`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.#embeds.push({ tokens, resolve, reject });
      this.#wake();
    });
  }

  /**
   * Stops accepting requests, cancels every queued and active one, waits for the loop to end and
   * releases every sequence.
   *
   * @returns When the engine is idle.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const r of [...this.#queue, ...this.#active]) r.cancelled = true;
    this.#wake();
    await this.#running;
    for (const j of this.#embeds.splice(0)) j.reject(new Error("the engine is closed"));
  }

  #cancel(req: Request): void {
    if (req.done || req.cancelled) return;
    req.cancelled = true;
    // Queued requests hold nothing; an active one is released at the top of the next iteration
    // (never during a step: the model may be using its sequence).
    this.#wake();
  }

  #wake(): void {
    if (this.#running) return;
    this.#running = this.#loop().finally(() => {
      this.#running = undefined;
      // Work that arrived while the loop was winding down.
      if (this.#queue.length > 0 || this.#active.length > 0 || this.#embeds.length > 0) {
        this.#wake();
      }
    });
  }

  async #loop(): Promise<void> {
    while (this.#queue.length > 0 || this.#active.length > 0 || this.#embeds.length > 0) {
      this.#dropCancelled();
      if (this.#closed) { for (const j of this.#embeds.splice(0)) j.reject(new Error("closed")); }
      // An embedding needs a free sequence slot; otherwise it waits for a generation to end.
      if (this.#embeds.length > 0 && this.#active.length < this.model.maxSequences) {
        await this.#runEmbed(this.#embeds.shift()!);
      }
      this.#admit();
      if (this.#active.length === 0) {
        await new Promise((res) => setImmediate(res));
        continue;
      }
      const { items, members } = this.#buildBatch();
      let logits: Float32Array[];
      let all: Float32Array[][] | undefined;
      try {
        this.#stats.steps++;
        const wantAll = this.model.stepAll &&
          members.some((r) => r.wantAll && r.fed < r.promptLength + r.forced);
        if (wantAll) {
          all = await this.model.stepAll!(items);
          logits = all.map((a) => a[a.length - 1]);
        } else logits = await this.model.step(items);
        if (logits.length !== items.length) {
          throw new Error(`model.step returned ${logits.length} logits for ${items.length} items`);
        }
      } catch (e) {
        for (const r of members) this.#fail(r, e);
        continue;
      }
      for (let i = 0; i < members.length; i++) {
        const r = members[i];
        if (r.done || r.cancelled) continue;
        const n = items[i].tokens.length;
        if (r.wantAll) {
          const rows = all?.[i] ?? (n === 1 ? [logits[i]] : []);
          rows.forEach((row, k) => this.#scorePrefill(r, r.fed + k, row));
        }
        r.fed += n;
        if (r.fed < r.feed.length) continue; // more prompt to prefill
        try {
          this.#sampleNext(r, logits[i]);
        } catch (e) {
          this.#fail(r, e);
        }
      }
      // The model may have answered without leaving the microtask queue (CPU models); let I/O
      // run. setImmediate, unlike setTimeout(0), is not clamped to 4 ms when nested.
      await new Promise((res) => setImmediate(res));
    }
  }

  /** Logprob of the prefilled token after position `p` (a prompt or forced token). */
  #scorePrefill(r: Request, p: number, logits: Float32Array): void {
    const next = p + 1;
    if (next >= r.promptLength + r.forced) return;
    const k = Math.max(r.topK, 0);
    const entry = tokenLogprob(logits, r.feed[next], { k, limit: this.tokenizer.vocabSize });
    if (next < r.promptLength) r.promptLogprobs?.push(entry);
    else if (r.topK >= 0) r.logprobs.push(entry);
  }

  /** Samples the next token under the request's constraint and emits it. */
  #sampleNext(r: Request, logits: Float32Array): void {
    let mask: Uint8Array | undefined;
    if (r.constraint) {
      mask = r.constraint.allowed(r.maxTokens - r.output.length);
      if (!mask.includes(1)) {
        // The grammar cannot be followed in the tokens left.
        this.#deliver(r, r.decoder.flush(), true);
        this.#finish(r, "length");
        return;
      }
    }
    const id = r.sampler.sample(logits, mask);
    if (r.topK >= 0 && !r.stopIds.has(id)) {
      r.logprobs.push(tokenLogprob(logits, id, { k: r.topK, limit: this.tokenizer.vocabSize }));
    }
    r.constraint?.accept(id);
    this.#emit(r, id);
  }

  async #runEmbed(job: EmbedJob): Promise<void> {
    let seq: SeqHandle | undefined;
    try {
      seq = this.model.newSequence();
      const out: Float32Array[] = [];
      for (let at = 0; at < job.tokens.length; at += this.#maxPrefillTokens) {
        const tokens = job.tokens.slice(at, at + this.#maxPrefillTokens);
        const [h] = await this.model.stepHidden!([{ seq, tokens }]);
        // Copies: the model may reuse its buffers on the next call.
        for (const v of h) out.push(new Float32Array(v));
      }
      job.resolve(out);
    } catch (e) {
      job.reject(e);
    } finally {
      if (seq !== undefined) {
        try {
          this.model.release(seq);
        } catch { /* nothing to free */ }
      }
    }
  }

  #dropCancelled(): void {
    if (this.#queue.some((r) => r.cancelled)) {
      for (const r of this.#queue) if (r.cancelled) this.#finish(r, "cancelled");
      this.#queue = this.#queue.filter((r) => !r.done);
    }
    for (const r of this.#active) if (r.cancelled && !r.done) this.#finish(r, "cancelled");
    this.#active = this.#active.filter((r) => !r.done);
  }

  #admit(): void {
    while (this.#queue.length > 0 && this.#active.length < this.#maxSequences) {
      const r = this.#queue.shift()!;
      try {
        r.seq = this.model.newSequence();
      } catch (e) {
        this.#fail(r, e);
        continue;
      }
      this.#active.push(r);
      // Forced tokens are output from the start: stream them now.
      for (let k = r.promptLength; k < r.feed.length && !r.done; k++) {
        r.sampler.accept(r.feed[k]);
        this.#emit(r, r.feed[k], { forced: true });
      }
    }
    this.#active = this.#active.filter((r) => !r.done);
  }

  #buildBatch(): { items: StepItem[]; members: Request[] } {
    const items: StepItem[] = [];
    const members: Request[] = [];
    const n = this.#active.length;
    let budget = this.#maxPrefillTokens;
    const start = this.#cursor % n;
    let k = 0;
    for (; k < n && items.length < this.#maxBatchSize; k++) {
      const r = this.#active[(start + k) % n];
      if (r.fed < r.feed.length) {
        if (budget <= 0) continue;
        // Without stepAll, a prompt whose every position needs logits goes one token per step.
        const one = r.wantAll && !this.model.stepAll;
        const take = Math.min(budget, r.feed.length - r.fed, one ? 1 : Infinity);
        budget -= take;
        items.push({ seq: r.seq!, tokens: r.feed.slice(r.fed, r.fed + take) });
      } else {
        items.push({ seq: r.seq!, tokens: [r.lastToken] });
        // From now on the sampled token is part of the sequence.
        r.feed.push(r.lastToken);
      }
      members.push(r);
    }
    // Requests left out this time come first next time.
    this.#cursor = (start + k) % n;
    return { items, members };
  }

  /** Appends one output token: stop checks, decoding, streaming. */
  #emit(r: Request, id: number, options: { forced?: boolean } = {}): void {
    r.output.push(id);
    if (!options.forced && r.stopIds.has(id)) {
      this.#deliver(r, r.decoder.flush(), true);
      this.#finish(r, "stop");
      return;
    }
    if (!r.hidden.has(id)) this.#deliver(r, r.decoder.push(id), false);
    if (r.done) return;
    if (r.matcher.stopped) {
      this.#finish(r, "stop");
    } else if (r.output.length >= r.maxTokens) {
      this.#deliver(r, r.decoder.flush(), true);
      this.#finish(r, "length");
    } else {
      r.lastToken = id;
    }
  }

  #deliver(r: Request, text: string, last: boolean): void {
    const m = r.matcher.push(text);
    let out = m.text;
    if (last && !m.stopped) out += r.matcher.flush();
    r.text += out;
    r.channel.push(out);
  }

  #finish(r: Request, reason: FinishReason): void {
    if (r.done) return;
    r.done = true;
    this.#release(r);
    r.unlisten();
    if (reason === "cancelled") this.#stats.cancelled++;
    else this.#stats.completed++;
    r.channel.close();
    r.resolve({
      text: r.text,
      tokenIds: r.output,
      finishReason: reason,
      usage: {
        prompt_tokens: r.promptLength,
        completion_tokens: r.output.length,
        total_tokens: r.promptLength + r.output.length,
      },
      seed: r.sampler.seed,
      ...(r.topK >= 0 ? { logprobs: r.logprobs } : {}),
      ...(r.promptLogprobs ? { promptLogprobs: r.promptLogprobs } : {}),
    });
  }

  #fail(r: Request, error: unknown): void {
    if (r.done) return;
    r.done = true;
    this.#release(r);
    r.unlisten();
    this.#stats.failed++;
    r.channel.close(error);
    r.reject(error);
  }

  #release(r: Request): void {
    if (r.seq === undefined) return;
    const seq = r.seq;
    r.seq = undefined;
    try {
      this.model.release(seq);
    } catch {
      // A model that cannot release a sequence has bigger problems; the request is over anyway.
    }
  }
}
