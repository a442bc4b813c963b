/**
 * The BPE trainer: counts pre-tokenizer chunks, then learns merges with the incremental algorithm.
 *
 * Training runs on the *unique* chunks with their counts (a 20 MB corpus has a few hundred
 * thousand distinct chunks, not millions of words). Every chunk's UTF-8 bytes become a doubly
 * linked list of symbols in flat typed arrays. Each distinct adjacent pair gets a dense id (a
 * typed-array hash map), a count (sum of the counts of the chunks it occurs in) and the list of
 * positions where it occurs. A max-heap holds `(count, pair)` entries with lazy invalidation: a
 * pair whose count grows gets a new entry, a popped entry whose count is stale is re-pushed or
 * dropped. Merging the best pair visits only its own positions (in ascending order, so the leftmost
 * of overlapping occurrences wins, as in encoding) and updates the counts of the neighbouring
 * pairs: the work per merge is proportional to the number of places it changes, not to the corpus
 * (the scheme of Sennrich et al. 2016 as optimized in `tokenizers`' `BpeTrainer`).
 *
 * Ties between pairs with equal counts go to the pair with the smaller left id, then the smaller
 * right id. Byte tokens are numbered in byte order, so among byte pairs this is byte order, and the
 * result does not depend on the order of the input.
 *
 * Worked example (checked in the tests, with `minFrequency: 1` and no specials, so byte `b` has
 * id `b`): chunks `{"aaab": 1, "ab": 2}` give pair counts `(a,a) = 2`, `(a,b) = 1 + 2 = 3`. Merge 0
 * is `(a,b) -> 256`: `aaab -> a a 256`, `ab -> 256`, leaving `(a,a) = 1`, `(a,256) = 1`. The tie
 * goes to the smaller right id: merge 1 is `(a,a) -> 257`, giving `257 256`; merge 2 is
 * `(257,256) -> 258` with count 1, after which no pairs remain.
 *
 * @module
 */

import { PairHeap } from "./_heap.ts";
import { PairMap } from "./_pair_map.ts";
import { compilePattern, PRETOKENIZE_PATTERN, wellFormed } from "./pretokenize.ts";
import { minVocabSize, NUM_BYTE_TOKENS, SPECIAL_TOKENS } from "./special_tokens.ts";
import { Tokenizer, type TokenizerData } from "./tokenizer.ts";

/** Default vocabulary size: small enough for the tiny models, big enough for Chinese + English. */
export const DEFAULT_VOCAB_SIZE = 6400;

/**
 * Counts pre-tokenizer chunks over a stream of documents.
 *
 * @example
 * ```ts
 * import { ChunkCounter } from "./train.ts";
 * const c = new ChunkCounter();
 * c.add("the cat the");
 * c.counts.get(" the"); // 1
 * c.counts.get("the"); // 1
 * ```
 */
export class ChunkCounter {
  /** Chunk text -> number of occurrences. */
  readonly counts: Map<string, number> = new Map();
  /** Number of characters (UTF-16 units) added. */
  chars = 0;
  #regex: RegExp;

  /**
   * Creates an empty counter.
   *
   * @param options `pattern`: pre-tokenizer pattern in `tokenizer.json` syntax (default ours).
   */
  constructor(options: { pattern?: string } = {}) {
    this.#regex = compilePattern(options.pattern ?? PRETOKENIZE_PATTERN);
  }

  /**
   * Pre-tokenizes one document (or one piece of a document cut at a safe point, see
   * `lastSafeCut`) and counts its chunks.
   *
   * @param text The text.
   */
  add(text: string): void {
    const counts = this.counts;
    const regex = this.#regex;
    const clean = wellFormed(text);
    this.chars += clean.length;
    regex.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = regex.exec(clean)) !== null) {
      const s = m[0];
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
  }
}

/** Progress of the merge phase. */
export interface TrainProgress {
  /** Merges learned so far. */
  merges: number;
  /** Merges wanted (`vocabSize - specials - 256`). */
  totalMerges: number;
}

/** Options of {@linkcode trainBpe} and {@linkcode trainBpeFromCounts}. */
export interface TrainOptions {
  /** Final vocabulary size, specials and bytes included (default 6400). */
  vocabSize?: number;
  /**
   * Pairs seen fewer times than this are never merged (default 2): a merge seen once only memorizes
   * one string. If the corpus runs out of such pairs the vocabulary comes out smaller than asked;
   * check `tokenizer.vocabSize`.
   */
  minFrequency?: number;
  /** Special tokens, placed at ids `0..n-1` (default `SPECIAL_TOKENS`). */
  specialTokens?: readonly string[];
  /** Called every 64 merges and at the end. */
  onProgress?: (progress: TrainProgress) => void;
}

function checkVocabSize(vocabSize: number, numSpecial: number): void {
  const min = minVocabSize(numSpecial);
  if (!Number.isInteger(vocabSize) || vocabSize < min) {
    throw new Error(
      `--vocab-size ${vocabSize} is too small: it must be an integer of at least ${min} ` +
        `(256 byte tokens + ${numSpecial} special tokens); try the default ${DEFAULT_VOCAB_SIZE}`,
    );
  }
  if (vocabSize > 1 << 21) {
    throw new Error(`--vocab-size ${vocabSize} is too large: at most ${1 << 21} is supported`);
  }
}

/**
 * Trains a tokenizer on in-memory documents.
 *
 * @param texts Documents.
 * @param options See {@linkcode TrainOptions}.
 * @returns The trained tokenizer.
 * @throws {Error} If the vocabulary size is too small or there is no text.
 * @example
 * ```ts
 * import { trainBpe } from "./train.ts";
 * const tok = trainBpe(["low lower lowest ".repeat(50)], { vocabSize: 280 });
 * tok.decode(tok.encode("lowest")); // "lowest"
 * ```
 */
export function trainBpe(texts: Iterable<string>, options: TrainOptions = {}): Tokenizer {
  checkVocabSize(
    options.vocabSize ?? DEFAULT_VOCAB_SIZE,
    (options.specialTokens ?? SPECIAL_TOKENS).length,
  );
  const counter = new ChunkCounter();
  for (const t of texts) counter.add(t);
  return new Tokenizer(trainBpeFromCounts(counter.counts, options));
}

/**
 * Learns merges from chunk counts (the output of {@linkcode ChunkCounter}).
 *
 * @param counts Chunk text -> count.
 * @param options See {@linkcode TrainOptions}.
 * @returns Tokenizer data: specials at `0..S-1`, bytes at `S..S+255`, merges after.
 * @throws {Error} If the vocabulary size is too small or `counts` holds no text.
 * @example
 * ```ts
 * import { trainBpeFromCounts } from "./train.ts";
 * const data = trainBpeFromCounts(new Map([["ab", 3]]), { vocabSize: 273, specialTokens: [] });
 * data.merges; // [[97, 98]]
 * ```
 */
export function trainBpeFromCounts(
  counts: ReadonlyMap<string, number>,
  options: TrainOptions = {},
): TokenizerData {
  const specials = options.specialTokens ?? SPECIAL_TOKENS;
  const vocabSize = options.vocabSize ?? DEFAULT_VOCAB_SIZE;
  const minFrequency = Math.max(1, options.minFrequency ?? 2);
  checkVocabSize(vocabSize, specials.length);
  if (counts.size === 0) {
    throw new Error("the training corpus is empty: no text was found in the input");
  }
  const S = specials.length;
  const totalMerges = vocabSize - S - NUM_BYTE_TOKENS;
  const tokenBytes: Array<Uint8Array | null> = specials.map(() => null);
  for (let b = 0; b < 256; b++) tokenBytes.push(Uint8Array.of(b));

  // --- Symbols: one doubly linked list per unique chunk, in flat arrays. -----------------------
  const utf8 = new TextEncoder();
  const chunkBytes: Uint8Array[] = [];
  const chunkCounts: number[] = [];
  let numSymbols = 0;
  for (const [chunk, count] of counts) {
    const bytes = utf8.encode(chunk);
    if (bytes.length < 2) continue; // no pairs
    chunkBytes.push(bytes);
    chunkCounts.push(count);
    numSymbols += bytes.length;
  }
  const sym = new Int32Array(numSymbols); // token id, -1 once merged away
  const next = new Int32Array(numSymbols); // -1 at the end of a chunk
  const prev = new Int32Array(numSymbols); // -1 at the start of a chunk
  const weight = new Float64Array(chunkBytes.length);
  const chunkOf = new Int32Array(numSymbols);
  {
    let p = 0;
    for (let c = 0; c < chunkBytes.length; c++) {
      const bytes = chunkBytes[c];
      weight[c] = chunkCounts[c];
      for (let i = 0; i < bytes.length; i++, p++) {
        sym[p] = S + bytes[i];
        prev[p] = i === 0 ? -1 : p - 1;
        next[p] = i === bytes.length - 1 ? -1 : p + 1;
        chunkOf[p] = c;
      }
    }
  }
  chunkBytes.length = 0;

  // --- Pairs: dense ids, counts, positions. ------------------------------------------------------
  const pairIds = new PairMap(1 << 16);
  let numPairs = 0;
  let pairLeft: Int32Array = new Int32Array(1 << 16);
  let pairRight: Int32Array = new Int32Array(1 << 16);
  let pairCount: Float64Array = new Float64Array(1 << 16);
  let pairStamp: Int32Array = new Int32Array(1 << 16); // last merge that raised the count
  const pairPos: Array<number[] | null> = [];

  const pairId = (a: number, b: number): number => {
    let id = pairIds.get(a, b);
    if (id >= 0) return id;
    id = numPairs++;
    if (id === pairLeft.length) {
      const cap = pairLeft.length * 2;
      pairLeft = grow(pairLeft, cap);
      pairRight = grow(pairRight, cap);
      pairCount = growF(pairCount, cap);
      pairStamp = grow(pairStamp, cap);
    }
    pairIds.set(a, b, id);
    pairLeft[id] = a;
    pairRight[id] = b;
    pairCount[id] = 0;
    pairStamp[id] = -1;
    pairPos.push([]);
    return id;
  };

  for (let p = 0; p < numSymbols; p++) {
    const q = next[p];
    if (q < 0) continue;
    const id = pairId(sym[p], sym[q]);
    pairCount[id] += weight[chunkOf[p]];
    pairPos[id]!.push(p);
  }

  const heap = new PairHeap();
  const TIE = 1 << 21; // ids < 2^21, so left * 2^21 + right orders by (left, right)
  for (let id = 0; id < numPairs; id++) {
    heap.push(pairCount[id], pairLeft[id] * TIE + pairRight[id], id);
  }

  // --- Merge loop. -------------------------------------------------------------------------------
  const merges: Array<[number, number]> = [];
  const raised: number[] = [];
  let nextId = S + NUM_BYTE_TOKENS;
  while (merges.length < totalMerges && heap.size > 0) {
    const best = heap.topId;
    const stale = heap.topCount;
    heap.pop();
    const count = pairCount[best];
    if (count !== stale) {
      // Raised counts have a newer entry already; lowered ones go back in with the true count.
      if (count > 0 && count < stale) {
        heap.push(count, pairLeft[best] * TIE + pairRight[best], best);
      }
      continue;
    }
    if (count < minFrequency) break;

    const a = pairLeft[best], b = pairRight[best];
    const created = nextId++;
    const mergeIndex = merges.length;
    merges.push([a, b]);
    const ba = tokenBytes[a]!, bb = tokenBytes[b]!;
    const joined = new Uint8Array(ba.length + bb.length);
    joined.set(ba);
    joined.set(bb, ba.length);
    tokenBytes.push(joined);

    const positions = Int32Array.from(pairPos[best]!).sort();
    pairPos[best] = null;
    for (let k = 0; k < positions.length; k++) {
      const p = positions[k];
      if (sym[p] !== a) continue;
      const q = next[p];
      if (q < 0 || sym[q] !== b) continue; // overlapped by the previous occurrence, or stale
      const w = weight[chunkOf[p]];
      const l = prev[p], r = next[q];
      if (l >= 0) {
        pairCount[pairId(sym[l], a)] -= w;
        const id = pairId(sym[l], created);
        pairCount[id] += w;
        pairPos[id]!.push(l);
        if (pairStamp[id] !== mergeIndex) {
          pairStamp[id] = mergeIndex;
          raised.push(id);
        }
      }
      if (r >= 0) {
        pairCount[pairId(b, sym[r])] -= w;
        const id = pairId(created, sym[r]);
        pairCount[id] += w;
        pairPos[id]!.push(p);
        if (pairStamp[id] !== mergeIndex) {
          pairStamp[id] = mergeIndex;
          raised.push(id);
        }
        prev[r] = p;
      }
      sym[p] = created;
      next[p] = r;
      sym[q] = -1;
    }
    pairCount[best] = 0;
    for (const id of raised) {
      if (pairCount[id] > 0) heap.push(pairCount[id], pairLeft[id] * TIE + pairRight[id], id);
    }
    raised.length = 0;
    if (options.onProgress && merges.length % 64 === 0) {
      options.onProgress({ merges: merges.length, totalMerges });
    }
  }
  options.onProgress?.({ merges: merges.length, totalMerges });

  return {
    tokenBytes,
    merges,
    specialTokens: specials.map((content, id) => ({ content, id })),
    pattern: PRETOKENIZE_PATTERN,
  };
}

function grow(a: Int32Array, cap: number): Int32Array {
  const out = new Int32Array(cap);
  out.set(a);
  return out;
}

function growF(a: Float64Array, cap: number): Float64Array {
  const out = new Float64Array(cap);
  out.set(a);
  return out;
}
