/**
 * Encoding: byte-level BPE on one pre-tokenizer chunk, with a cache for frequent chunks, and the
 * split of text on the special tokens a caller allows.
 *
 * A chunk is turned into UTF-8 bytes, each byte into its byte token, and then the learned merges
 * are applied lowest rank first, leftmost first among equal ranks. That is the rule of
 * Sennrich et al. 2016 as implemented by GPT-2 and `tokenizers`, so the ids equal those of
 * `@huggingface/tokenizers` loading the same `tokenizer.json`. Short chunks (almost all of them) use
 * an O(n^2) scan over a rank array, long ones (CJK runs, long whitespace) a heap, O(n log n).
 *
 * Worked example (minbpe style): bytes `a a a b` with merges `[(a,a) -> X, (X,b) -> Y]`:
 * `a a a b` -> `X a b` (leftmost `aa` first) -> no `(a,b)` merge exists, `(X,a)` neither -> `X a b`.
 *
 * @module
 */

import { PairMap } from "./_pair_map.ts";

/** Chunks longer than this many UTF-16 units are not cached (they are rarely repeated). */
const MAX_CACHED_CHUNK = 256;
/** Byte length above which the heap algorithm replaces the quadratic scan. */
const HEAP_THRESHOLD = 96;
const NO_RANK = 0x7fffffff;

/** The merge rules a {@linkcode ChunkEncoder} applies. */
export interface MergeRules {
  /** Token id of each byte value. */
  byteToId: Int32Array;
  /** `(left id, right id) -> rank`. */
  ranks: PairMap;
  /** Token id produced by the merge of each rank. */
  mergeResult: Int32Array;
}

/**
 * BPE for single pre-tokenizer chunks, with a bounded cache keyed by the chunk's text.
 *
 * @example
 * ```ts
 * import { ChunkEncoder } from "./encode.ts";
 * import { PairMap } from "./_pair_map.ts";
 * const byteToId = Int32Array.from({ length: 256 }, (_, b) => b);
 * const ranks = new PairMap();
 * ranks.set(97, 97, 0); // (a, a) -> 256
 * const enc = new ChunkEncoder({ byteToId, ranks, mergeResult: Int32Array.of(256) });
 * const out: number[] = [];
 * enc.encodeChunk("aaab", out); // out = [256, 97, 98]
 * ```
 */
export class ChunkEncoder {
  #rules: MergeRules;
  // Two generations: when the young one fills up it becomes the old one, and hits in the old
  // one are promoted. Frequent chunks survive; memory stays below 2 x cacheSize entries.
  #cache = new Map<string, number[]>();
  #old = new Map<string, number[]>();
  #cacheSize: number;
  #bytes = new Uint8Array(1024);
  #ids = new Int32Array(1024);
  #rank = new Int32Array(1024);

  /**
   * Creates an encoder with an empty cache.
   *
   * @param rules The merge rules.
   * @param options `cacheSize`: chunks per cache generation (default 100 000; at most twice that
   *   are kept).
   */
  constructor(rules: MergeRules, options: { cacheSize?: number } = {}) {
    this.#rules = rules;
    this.#cacheSize = options.cacheSize ?? 100_000;
  }

  /** Empties the chunk cache. */
  clearCache(): void {
    this.#cache.clear();
    this.#old.clear();
  }

  /**
   * Appends the token ids of one pre-tokenizer chunk to `out`.
   *
   * @param chunk A chunk produced by the pre-tokenizer (well-formed UTF-16).
   * @param out Array the ids are pushed onto.
   */
  encodeChunk(chunk: string, out: number[]): void {
    let cached = this.#cache.get(chunk);
    if (cached === undefined && (cached = this.#old.get(chunk)) !== undefined) {
      this.#remember(chunk, cached);
    }
    if (cached !== undefined) {
      for (let i = 0; i < cached.length; i++) out.push(cached[i]);
      return;
    }
    const n = this.#utf8(chunk);
    const start = out.length;
    this.encodeBytes(this.#bytes, n, out);
    if (chunk.length <= MAX_CACHED_CHUNK) this.#remember(chunk, out.slice(start));
  }

  #remember(chunk: string, ids: number[]): void {
    if (this.#cache.size >= this.#cacheSize) {
      this.#old = this.#cache;
      this.#cache = new Map();
    }
    this.#cache.set(chunk, ids);
  }

  /**
   * Appends the BPE token ids of `bytes[0..length)` to `out` (no cache).
   *
   * @param bytes UTF-8 bytes of one chunk.
   * @param length Number of bytes to use.
   * @param out Array the ids are pushed onto.
   */
  encodeBytes(bytes: Uint8Array, length: number, out: number[]): void {
    const byteToId = this.#rules.byteToId;
    if (length === 1) {
      out.push(byteToId[bytes[0]]);
      return;
    }
    if (length > this.#ids.length) {
      this.#ids = new Int32Array(length * 2);
      this.#rank = new Int32Array(length * 2);
    }
    const ids = this.#ids;
    for (let i = 0; i < length; i++) ids[i] = byteToId[bytes[i]];
    const n = length > HEAP_THRESHOLD ? this.#mergeHeap(length) : this.#mergeScan(length);
    for (let i = 0; i < n; i++) out.push(ids[i]);
  }

  /** Quadratic merge over `this.#ids[0..n)`; returns the new length. */
  #mergeScan(n: number): number {
    const ids = this.#ids, rank = this.#rank;
    const { ranks, mergeResult } = this.#rules;
    for (let i = 0; i < n - 1; i++) {
      const r = ranks.get(ids[i], ids[i + 1]);
      rank[i] = r < 0 ? NO_RANK : r;
    }
    while (n > 1) {
      let best = NO_RANK, at = -1;
      for (let i = 0; i < n - 1; i++) {
        if (rank[i] < best) {
          best = rank[i];
          at = i;
        }
      }
      if (at < 0) break;
      ids[at] = mergeResult[best];
      ids.copyWithin(at + 1, at + 2, n);
      rank.copyWithin(at + 1, at + 2, n - 1);
      n--;
      if (at > 0) {
        const r = ranks.get(ids[at - 1], ids[at]);
        rank[at - 1] = r < 0 ? NO_RANK : r;
      }
      if (at < n - 1) {
        const r = ranks.get(ids[at], ids[at + 1]);
        rank[at] = r < 0 ? NO_RANK : r;
      }
    }
    return n;
  }

  /** Heap merge over `this.#ids[0..n)` with a linked list; returns the new length. */
  #mergeHeap(n: number): number {
    const ids = this.#ids;
    const { ranks, mergeResult } = this.#rules;
    const next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    // Entries are rank * 2^31 + position: exact in a double, ordered by rank then position.
    const heap: number[] = [];
    const SHIFT = 2147483648;
    for (let i = 0; i + 1 < n; i++) {
      const r = ranks.get(ids[i], ids[i + 1]);
      if (r >= 0) heapPush(heap, r * SHIFT + i);
    }
    while (heap.length > 0) {
      const top = heapPop(heap);
      const r = Math.floor(top / SHIFT), i = top - r * SHIFT;
      const j = next[i];
      if (ids[i] < 0 || j < 0 || ranks.get(ids[i], ids[j]) !== r) continue;
      ids[i] = mergeResult[r];
      ids[j] = -1;
      const k = next[j];
      next[i] = k;
      if (k >= 0) prev[k] = i;
      const p = prev[i];
      if (p >= 0) {
        const rp = ranks.get(ids[p], ids[i]);
        if (rp >= 0) heapPush(heap, rp * SHIFT + p);
      }
      if (k >= 0) {
        const rk = ranks.get(ids[i], ids[k]);
        if (rk >= 0) heapPush(heap, rk * SHIFT + i);
      }
    }
    let m = 0;
    for (let i = 0; i >= 0; i = next[i]) ids[m++] = ids[i];
    return m;
  }

  /**
   * UTF-8 encodes `chunk` into `this.#bytes`; returns the byte length. A hand-written loop: for the
   * short strings chunks are, it beats `TextEncoder.encodeInto`'s call overhead. Lone surrogates
   * become U+FFFD (EF BF BD), as `TextEncoder` would write them.
   */
  #utf8(chunk: string): number {
    const len = chunk.length;
    if (this.#bytes.length < len * 3) this.#bytes = new Uint8Array(len * 3 + 64);
    const bytes = this.#bytes;
    let n = 0;
    for (let i = 0; i < len; i++) {
      let c = chunk.charCodeAt(i);
      if (c < 0x80) {
        bytes[n++] = c;
      } else if (c < 0x800) {
        bytes[n++] = 0xc0 | (c >> 6);
        bytes[n++] = 0x80 | (c & 63);
      } else if (c < 0xd800 || c >= 0xe000) {
        bytes[n++] = 0xe0 | (c >> 12);
        bytes[n++] = 0x80 | ((c >> 6) & 63);
        bytes[n++] = 0x80 | (c & 63);
      } else {
        const d = i + 1 < len ? chunk.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          bytes[n++] = 0xf0 | (c >> 18);
          bytes[n++] = 0x80 | ((c >> 12) & 63);
          bytes[n++] = 0x80 | ((c >> 6) & 63);
          bytes[n++] = 0x80 | (c & 63);
        } else {
          bytes[n++] = 0xef;
          bytes[n++] = 0xbf;
          bytes[n++] = 0xbd;
        }
      }
    }
    return n;
  }
}

function heapPush(heap: number[], v: number): void {
  let i = heap.length;
  heap.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (heap[p] <= v) break;
    heap[i] = heap[p];
    i = p;
  }
  heap[i] = v;
}

function heapPop(heap: number[]): number {
  const top = heap[0];
  const last = heap.pop()!;
  const n = heap.length;
  if (n > 0) {
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && heap[c + 1] < heap[c]) c++;
      if (heap[c] >= last) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = last;
  }
  return top;
}

/** Which special tokens `encode` recognizes in the text. */
export type AllowedSpecial = "all" | "none" | Iterable<string>;

/**
 * Splits text at the occurrences of the allowed special tokens.
 *
 * @param text Input text.
 * @param specials The allowed special tokens' contents (empty: no split).
 * @returns Alternating pieces: `{ text }` for ordinary text, `{ special }` for a special token.
 * @example
 * ```ts
 * import { splitOnSpecials } from "./encode.ts";
 * splitOnSpecials("a<|eos|>b", ["<|eos|>"]);
 * // [{ text: "a" }, { special: "<|eos|>" }, { text: "b" }]
 * ```
 */
export function splitOnSpecials(
  text: string,
  specials: readonly string[],
): Array<{ text: string } | { special: string }> {
  if (specials.length === 0) return text.length > 0 ? [{ text }] : [];
  const regex = specialsRegex(specials);
  const out: Array<{ text: string } | { special: string }> = [];
  let last = 0;
  for (const m of text.matchAll(regex)) {
    if (m.index > last) out.push({ text: text.slice(last, m.index) });
    out.push({ special: m[0] });
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last) });
  return out;
}

const regexCache = new Map<string, RegExp>();

function specialsRegex(specials: readonly string[]): RegExp {
  const key = specials.join("\u0000");
  let regex = regexCache.get(key);
  if (regex === undefined) {
    // Longest first, so that a special that is a prefix of another never wins.
    const sorted = [...specials].sort((a, b) => b.length - a.length);
    regex = new RegExp(sorted.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "g");
    if (regexCache.size > 64) regexCache.clear();
    regexCache.set(key, regex);
  }
  return regex;
}
