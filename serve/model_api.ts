/**
 * What the server needs from a language model: batched, incremental decoding over sequences that
 * each keep their own KV cache.
 *
 * A sequence is opened with {@linkcode LanguageModel.newSequence}, fed tokens with
 * {@linkcode LanguageModel.step} and closed with {@linkcode LanguageModel.release}. One `step` call
 * advances many sequences at once: a sequence that was just opened passes its whole prompt
 * (prefill, possibly in several chunks), the others pass the one token sampled last (decode). The
 * model appends the tokens to each sequence's cache and returns, per item, the logits that predict
 * the token after the last one passed. This is the contract of continuous batching (Orca, OSDI '22;
 * vLLM): requests join and leave the batch at every step.
 *
 * The GPU decoder (`model/decode.ts`, latent KV cache with absorbed MLA) implements this interface;
 * `serve/_test_model.ts` has small deterministic CPU implementations for tests.
 *
 * Left out: speculative drafting (MTP) and cache sharing between
 * sequences (prefix caching). An implementation may add them without changing the server.
 *
 * @example
 * ```ts ignore
 * const seq = model.newSequence();
 * let [logits] = await model.step([{ seq, tokens: promptIds }]); // prefill
 * const next = argmax(logits);
 * [logits] = await model.step([{ seq, tokens: [next] }]); // decode
 * model.release(seq);
 * ```
 *
 * @module
 */

import type { SeqHandle } from "../model/decode.ts";

export type { SeqHandle };

/** One sequence's share of a {@linkcode LanguageModel.step}. */
export interface StepItem {
  /** The sequence, from {@linkcode LanguageModel.newSequence}. */
  seq: SeqHandle;
  /**
   * Tokens appended to the sequence, in order: the prompt (or a chunk of it) on the first steps,
   * then one sampled token per step. Never empty.
   */
  tokens: readonly number[];
}

/**
 * A language model that decodes many sequences in one batched call.
 *
 * Calls are never concurrent: the engine awaits each `step` before the next call of any method.
 * Implementations may therefore reuse buffers between steps.
 *
 * @example
 * ```ts ignore
 * class MyModel implements LanguageModel {
 *   readonly id = "my-model";
 *   readonly vocabSize = 6400;
 *   readonly maxSeqLen = 2048;
 *   readonly maxSequences = 64;
 *   newSequence(): SeqHandle { ... }
 *   release(seq: SeqHandle): void { ... }
 *   async step(items: readonly StepItem[]): Promise<Float32Array[]> { ... }
 * }
 * ```
 */
export interface LanguageModel {
  /** Name shown by `/v1/models` when the server is not given another one. */
  readonly id: string;
  /** Length of each logits vector; token ids are below this. */
  readonly vocabSize: number;
  /** Most tokens one sequence can hold (prompt plus generated). */
  readonly maxSeqLen: number;
  /** Most sequences open at once (KV-cache slots); `newSequence` beyond this throws. */
  readonly maxSequences: number;
  /** Length of `stepHidden`'s vectors (optional, with `stepHidden`). */
  readonly hiddenSize?: number;
  /**
   * Opens an empty sequence.
   *
   * @returns Its handle.
   * @throws {Error} When `maxSequences` sequences are already open.
   */
  newSequence(): SeqHandle;
  /**
   * Closes a sequence and frees its cache. Releasing twice, or a handle never returned, is a no-op.
   *
   * @param seq The sequence.
   */
  release(seq: SeqHandle): void;
  /**
   * Appends tokens to several sequences at once and returns the next-token logits of each.
   *
   * @param items At most one item per sequence; each with at least one token, and the sequence's
   *   total length staying within `maxSeqLen`.
   * @returns One `Float32Array(vocabSize)` per item, in item order: the logits after the item's
   *   last token. The engine does not keep them past the next call, so they may be views of a
   *   reused buffer.
   * @throws {Error} For an unknown or released handle, an empty token list, an id outside the
   *   vocabulary, or a sequence that would pass `maxSeqLen`.
   */
  step(items: readonly StepItem[]): Promise<Float32Array[]>;
  /**
   * {@linkcode LanguageModel.step}, returning the logits after EVERY token of each item: item i
   * gets `tokens.length` arrays, the k-th predicting the token after `tokens[k]`. Optional: the
   * engine uses it for prompt logprobs (`echo` with `logprobs`) and otherwise prefills such
   * prompts one token per step.
   *
   * @param items As for `step`.
   * @returns Per item, per token, a `Float32Array(vocabSize)`.
   */
  stepAll?(items: readonly StepItem[]): Promise<Float32Array[][]>;
  /**
   * {@linkcode LanguageModel.step}, returning the final hidden state (the input of the output head,
   * after the final norm) after every token of each item instead of logits. Optional: the server's
   * `/v1/embeddings` needs it.
   *
   * @param items As for `step`.
   * @returns Per item, per token, a `Float32Array(hiddenSize)`.
   */
  stepHidden?(items: readonly StepItem[]): Promise<Float32Array[][]>;
  /** Frees everything (GPU buffers). Optional; the server calls it on shutdown if present. */
  dispose?(): void | Promise<void>;
}
