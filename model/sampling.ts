/**
 * Sampling: from next-token logits to a token id, and stop strings on the decoded text.
 *
 * The pipeline a {@linkcode Sampler} runs on each step, in this order (the order of Hugging Face
 * `generate` and vLLM):
 *
 * 1. `logit_bias` (OpenAI: added to the logits; -100 bans a token in practice).
 * 2. Repetition penalty (CTRL, Keskar et al. 2019, sec. 4.1, as in HF
 *    `RepetitionPenaltyLogitsProcessor`): for every token already in the prompt or the output, a
 *    positive logit is divided by the penalty and a negative one multiplied by it.
 * 3. Presence and frequency penalties (OpenAI semantics, on the output tokens only):
 *    `logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty`.
 * 4. Temperature 0 is greedy: the argmax (lowest id on ties), no random draw.
 * 5. Otherwise temperature scaling, then top-k, top-p (nucleus, Holtzman et al. 2020) and min-p
 *    masks, softmax, and one draw from a seeded PRNG per token.
 *
 * Stop strings are matched on the decoded text by {@linkcode StopStringMatcher}, which holds text
 * back while it could still be the start of a stop string, so a stop string split across tokens
 * is never emitted.
 *
 * Everything here is pure functions on `Float32Array`s plus two small state holders: no I/O.
 *
 * @example
 * ```ts
 * import { Sampler } from "./sampling.ts";
 * const s = new Sampler({ temperature: 0 });
 * s.sample(Float32Array.of(0.1, 2, 0.3)); // 1
 * ```
 *
 * @module
 */

import { argmax } from "./decode.ts";
import { Rng } from "../random/rng.ts";

/** How to pick tokens; every field is optional in {@linkcode Sampler}'s constructor. */
export interface SamplingParams {
  /** Softmax temperature; 0 picks the argmax (default 1, as OpenAI). */
  temperature: number;
  /** Keep only the k most likely tokens; 0 turns it off (default 0). */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability sums to >= p (default 1: off). */
  topP: number;
  /** Drop tokens less likely than `minP` times the most likely one (default 0: off). */
  minP: number;
  /** CTRL repetition penalty over prompt and output tokens; 1 is off (default 1). */
  repetitionPenalty: number;
  /** OpenAI presence penalty over output tokens, -2..2 (default 0). */
  presencePenalty: number;
  /** OpenAI frequency penalty over output tokens, -2..2 (default 0). */
  frequencyPenalty: number;
  /** Token id -> value added to its logit (default none). */
  logitBias: ReadonlyMap<number, number>;
  /** Seed of the per-request PRNG; the same seed gives the same tokens (default: random). */
  seed: number | undefined;
}

/** The defaults of {@linkcode SamplingParams}: OpenAI's (temperature 1, nothing else). */
export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logitBias: new Map<number, number>(),
  seed: undefined,
});

/**
 * Softmax in float64; `-Infinity` logits get probability 0.
 *
 * @param logits Values (at least one finite).
 * @returns Probabilities summing to 1.
 * @throws {RangeError} If no logit is finite.
 * @example
 * ```ts
 * import { softmaxProbs } from "./sampling.ts";
 * softmaxProbs(Float32Array.of(0, 0, -Infinity)); // Float64Array [0.5, 0.5, 0]
 * ```
 */
export function softmaxProbs(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (!Number.isFinite(max)) throw new RangeError("softmax needs at least one finite logit");
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i] - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/**
 * CTRL repetition penalty, in place: for each distinct id in `seen`, a positive logit is divided by
 * `penalty` and a negative one multiplied by it, so penalty > 1 always makes the token less likely.
 *
 * @param logits Logits, modified.
 * @param seen Ids already in the prompt or the output (duplicates are fine).
 * @param penalty The penalty; 1 does nothing.
 * @throws {RangeError} If `penalty` is not positive.
 * @example
 * ```ts
 * import { applyRepetitionPenalty } from "./sampling.ts";
 * const l = Float32Array.of(2, -2, 1);
 * applyRepetitionPenalty(l, [0, 1, 1], 2); // l = [1, -4, 1]
 * ```
 */
export function applyRepetitionPenalty(
  logits: Float32Array,
  seen: Iterable<number>,
  penalty: number,
): void {
  if (!(penalty > 0)) throw new RangeError(`repetition penalty must be > 0, got ${penalty}`);
  if (penalty === 1) return;
  const done = new Set<number>();
  for (const id of seen) {
    if (done.has(id) || id < 0 || id >= logits.length) continue;
    done.add(id);
    const v = logits[id];
    logits[id] = v > 0 ? v / penalty : v * penalty;
  }
}

/**
 * OpenAI presence and frequency penalties, in place:
 * `logit[j] -= count[j] * frequency + (count[j] > 0 ? presence : 0)`.
 *
 * @param logits Logits, modified.
 * @param counts Id -> times it appears in the output so far.
 * @param options `presence` and `frequency` (default 0 each).
 * @example
 * ```ts
 * import { applyPresenceFrequencyPenalty } from "./sampling.ts";
 * const l = Float32Array.of(1, 1, 1);
 * applyPresenceFrequencyPenalty(l, new Map([[0, 2]]), { presence: 0.5, frequency: 0.25 });
 * // l = [0, 1, 1]: 1 - 2 * 0.25 - 0.5
 * ```
 */
export function applyPresenceFrequencyPenalty(
  logits: Float32Array,
  counts: ReadonlyMap<number, number>,
  options: { presence?: number; frequency?: number } = {},
): void {
  const presence = options.presence ?? 0, frequency = options.frequency ?? 0;
  if (presence === 0 && frequency === 0) return;
  for (const [id, count] of counts) {
    if (count <= 0 || id < 0 || id >= logits.length) continue;
    logits[id] -= count * frequency + presence;
  }
}

/**
 * Adds a bias to the logits of some tokens, in place (OpenAI `logit_bias`).
 *
 * @param logits Logits, modified.
 * @param bias Id -> value to add; ids outside the vocabulary are ignored.
 * @example
 * ```ts
 * import { applyLogitBias } from "./sampling.ts";
 * const l = Float32Array.of(0, 0);
 * applyLogitBias(l, new Map([[1, -100]])); // l = [0, -100]
 * ```
 */
export function applyLogitBias(logits: Float32Array, bias: ReadonlyMap<number, number>): void {
  for (const [id, b] of bias) if (id >= 0 && id < logits.length) logits[id] += b;
}

/** Ids sorted by logit, largest first; equal logits keep id order, so results are deterministic. */
function order(logits: Float32Array): Uint32Array {
  const idx = new Uint32Array(logits.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  return idx.sort((a, b) => logits[b] - logits[a] || a - b);
}

/**
 * Top-k mask, in place: every logit outside the k largest becomes `-Infinity` (ties at the k-th
 * value go to the lower ids, so exactly k survive).
 *
 * @param logits Logits, modified.
 * @param k How many to keep; 0 or k >= length keeps all.
 * @throws {RangeError} If k is negative or not an integer.
 * @example
 * ```ts
 * import { topKMask } from "./sampling.ts";
 * const l = Float32Array.of(1, 4, 2, 3);
 * topKMask(l, 2); // l = [-Infinity, 4, -Infinity, 3]
 * ```
 */
export function topKMask(logits: Float32Array, k: number): void {
  if (!Number.isInteger(k) || k < 0) {
    throw new RangeError(`top_k must be an integer >= 0, got ${k}`);
  }
  if (k === 0 || k >= logits.length) return;
  const idx = order(logits);
  for (let r = k; r < idx.length; r++) logits[idx[r]] = -Infinity;
}

/**
 * Top-p (nucleus) mask, in place: keeps the smallest set of most likely tokens whose probabilities
 * sum to at least `p` (always at least one token); the rest become `-Infinity`.
 *
 * @param logits Logits (already temperature-scaled), modified.
 * @param p Probability mass in (0, 1]; 1 keeps all.
 * @throws {RangeError} If p is outside (0, 1].
 * @example
 * ```ts
 * import { topPMask } from "./sampling.ts";
 * const l = Float32Array.of(Math.log(0.5), Math.log(0.3), Math.log(0.2));
 * topPMask(l, 0.7); // keeps ids 0 and 1 (0.5 + 0.3 >= 0.7)
 * ```
 */
export function topPMask(logits: Float32Array, p: number): void {
  if (!(p > 0 && p <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${p}`);
  if (p === 1) return;
  const probs = softmaxProbs(logits);
  const idx = order(logits);
  let cum = 0;
  let r = 0;
  // A tiny tolerance so that a mass of exactly p (0.5 + 0.3 vs 0.8 in floats) counts as reached.
  for (; r < idx.length; r++) {
    cum += probs[idx[r]];
    if (cum >= p - 1e-9) break;
  }
  for (let q = r + 1; q < idx.length; q++) logits[idx[q]] = -Infinity;
}

/**
 * Min-p mask, in place: drops tokens whose probability is below `minP` times the largest one.
 *
 * @param logits Logits (already temperature-scaled), modified.
 * @param minP In [0, 1]; 0 keeps all.
 * @throws {RangeError} If minP is outside [0, 1].
 * @example
 * ```ts
 * import { minPMask } from "./sampling.ts";
 * const l = Float32Array.of(0, Math.log(0.5), Math.log(0.05));
 * minPMask(l, 0.1); // l[2] = -Infinity (0.05 < 0.1 * 1)
 * ```
 */
export function minPMask(logits: Float32Array, minP: number): void {
  if (!(minP >= 0 && minP <= 1)) throw new RangeError(`min_p must be in [0, 1], got ${minP}`);
  if (minP === 0) return;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const cut = max + Math.log(minP); // p_i >= minP * p_max  <=>  l_i >= l_max + log(minP)
  for (let i = 0; i < logits.length; i++) if (logits[i] < cut) logits[i] = -Infinity;
}

/**
 * Draws an index from a probability vector with a uniform number `u` in [0, 1) (inverse CDF).
 *
 * @param probs Probabilities summing to 1.
 * @param u A uniform draw.
 * @returns The index; never one with probability 0.
 * @example
 * ```ts
 * import { sampleIndex } from "./sampling.ts";
 * sampleIndex(Float64Array.of(0.25, 0, 0.75), 0.3); // 2
 * ```
 */
export function sampleIndex(probs: ArrayLike<number>, u: number): number {
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return i;
  }
  return last < 0 ? 0 : last; // rounding left u >= the total: the last possible token
}

/**
 * Fills in defaults and checks ranges.
 *
 * @param params Any subset of {@linkcode SamplingParams}.
 * @returns A complete, validated set.
 * @throws {RangeError} Naming the field (OpenAI spelling) that is out of range.
 * @example
 * ```ts
 * import { resolveSampling } from "./sampling.ts";
 * resolveSampling({ temperature: 0.7 }).topP; // 1
 * ```
 */
export function resolveSampling(params: Partial<SamplingParams> = {}): SamplingParams {
  const p: SamplingParams = { ...DEFAULT_SAMPLING };
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined) (p as unknown as Record<string, unknown>)[k] = v;
  }
  const check = (ok: boolean, field: string, want: string, got: unknown): void => {
    if (!ok) throw new RangeError(`${field} must be ${want}, got ${got}`);
  };
  check(p.temperature >= 0 && p.temperature <= 100, "temperature", "in [0, 100]", p.temperature);
  check(Number.isInteger(p.topK) && p.topK >= 0, "top_k", "an integer >= 0", p.topK);
  check(p.topP > 0 && p.topP <= 1, "top_p", "in (0, 1]", p.topP);
  check(p.minP >= 0 && p.minP <= 1, "min_p", "in [0, 1]", p.minP);
  check(
    p.repetitionPenalty > 0 && Number.isFinite(p.repetitionPenalty),
    "repetition_penalty",
    "a number > 0",
    p.repetitionPenalty,
  );
  check(
    p.presencePenalty >= -2 && p.presencePenalty <= 2,
    "presence_penalty",
    "in [-2, 2]",
    p.presencePenalty,
  );
  check(
    p.frequencyPenalty >= -2 && p.frequencyPenalty <= 2,
    "frequency_penalty",
    "in [-2, 2]",
    p.frequencyPenalty,
  );
  check(p.seed === undefined || Number.isFinite(p.seed), "seed", "a finite number", p.seed);
  return p;
}

/**
 * The per-request sampling state: parameters, the PRNG, and the counts the penalties need.
 *
 * @example
 * ```ts
 * import { Sampler } from "./sampling.ts";
 * const a = new Sampler({ seed: 7 }), b = new Sampler({ seed: 7 });
 * const logits = Float32Array.of(1, 1, 1, 1);
 * a.sample(logits) === b.sample(logits); // true
 * ```
 */
export class Sampler {
  /** The resolved parameters. */
  readonly params: Readonly<SamplingParams>;
  /** The seed in use (the given one, or the random one chosen). */
  readonly seed: number;
  #rng: Rng;
  #limit: number | undefined;
  #seen: Set<number>;
  #counts = new Map<number, number>();

  /**
   * Makes the state for one request.
   *
   * @param params Sampling parameters (defaults: {@linkcode DEFAULT_SAMPLING}).
   * @param options `promptTokens`: ids the repetition penalty also covers; `vocabLimit`: only ids
   *   below it are ever picked (a model's vocabulary may be padded past the tokenizer's).
   * @throws {RangeError} If a parameter is out of range (see {@linkcode resolveSampling}).
   */
  constructor(
    params: Partial<SamplingParams> = {},
    options: { promptTokens?: Iterable<number>; vocabLimit?: number } = {},
  ) {
    this.#limit = options.vocabLimit;
    this.params = resolveSampling(params);
    this.seed = this.params.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
    this.#rng = Rng.fromSeed64(this.seed);
    this.#seen = new Set(options.promptTokens ?? []);
  }

  /**
   * Records a token as output without sampling it (a forced token), for the penalties.
   *
   * @param id The token id.
   */
  accept(id: number): void {
    this.#seen.add(id);
    this.#counts.set(id, (this.#counts.get(id) ?? 0) + 1);
  }

  /**
   * Picks the next token and records it (see {@linkcode Sampler.accept}).
   *
   * @param logits Next-token logits; not modified.
   * @param mask Tokens allowed (1) or not (0), from constrained decoding (default: all allowed).
   *   Applied first, so penalties and sampling only ever see allowed tokens.
   * @returns The token id.
   * @throws {RangeError} If `logits` is empty.
   */
  sample(logits: Float32Array, mask?: Uint8Array): number {
    const p = this.params;
    const l = new Float32Array(
      this.#limit !== undefined && this.#limit < logits.length
        ? logits.subarray(0, this.#limit)
        : logits,
    );
    if (mask) { for (let i = 0; i < l.length; i++) if (!mask[i]) l[i] = -Infinity; }
    if (p.logitBias.size > 0) applyLogitBias(l, p.logitBias);
    applyRepetitionPenalty(l, this.#seen, p.repetitionPenalty);
    applyPresenceFrequencyPenalty(l, this.#counts, {
      presence: p.presencePenalty,
      frequency: p.frequencyPenalty,
    });
    let id: number;
    if (p.temperature === 0 || !hasFinite(l)) {
      id = argmax(l);
    } else {
      for (let i = 0; i < l.length; i++) l[i] /= p.temperature;
      topKMask(l, p.topK);
      topPMask(l, p.topP);
      minPMask(l, p.minP);
      id = sampleIndex(softmaxProbs(l), this.#rng.next());
    }
    this.accept(id);
    return id;
  }
}

function hasFinite(l: Float32Array): boolean {
  for (let i = 0; i < l.length; i++) if (Number.isFinite(l[i])) return true;
  return false;
}

/** What {@linkcode StopStringMatcher.push} returns. */
export interface StopMatch {
  /** Text that is safe to emit now. */
  text: string;
  /** True once a stop string was found; `text` then ends right before it. */
  stopped: boolean;
}

/**
 * Finds stop strings in streamed text. Text that could still be the start of a stop string is held
 * back until it is either completed (a stop: the stop string and everything after are dropped) or
 * ruled out (emitted).
 *
 * @example
 * ```ts
 * import { StopStringMatcher } from "./sampling.ts";
 * const m = new StopStringMatcher(["\nUser:"]);
 * m.push("Hi!\nUs"); // { text: "Hi!", stopped: false }: "\nUs" is held back
 * m.push("er: more"); // { text: "", stopped: true }
 * ```
 */
export class StopStringMatcher {
  #stops: string[];
  #pending = "";
  #stopped = false;

  /**
   * Makes a matcher.
   *
   * @param stops Stop strings; empty strings are ignored.
   */
  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** True once a stop string was seen. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Adds text.
   *
   * @param text Newly decoded text.
   * @returns The text that can be emitted, and whether a stop string was found.
   */
  push(text: string): StopMatch {
    if (this.#stopped) return { text: "", stopped: true };
    if (this.#stops.length === 0) return { text, stopped: false };
    const pending = this.#pending + text;
    let at = -1;
    for (const s of this.#stops) {
      const i = pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.#stopped = true;
      this.#pending = "";
      return { text: pending.slice(0, at), stopped: true };
    }
    const hold = this.#heldLength(pending);
    this.#pending = pending.slice(pending.length - hold);
    return { text: pending.slice(0, pending.length - hold), stopped: false };
  }

  /**
   * Ends the stream: returns the held-back text (it never became a stop string).
   *
   * @returns The remaining text; empty after a stop.
   */
  flush(): string {
    const out = this.#stopped ? "" : this.#pending;
    this.#pending = "";
    return out;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  #heldLength(text: string): number {
    let best = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
        if (text.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
