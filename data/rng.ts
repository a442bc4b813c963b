/**
 * Seeded pseudo-random numbers for the demo corpus.
 *
 * Every generator in `data/` draws from its own {@linkcode Rng} stream, derived from the world
 * seed and a label (`deriveSeed(seed, "sft")`), so adding a template to one generator never
 * shifts the output of another. The core is mulberry32 (Tommy Ettinger, public domain): 32 bits
 * of state, fast, and good enough for sampling templates; it is not cryptographic.
 *
 * @module
 */

/**
 * Mixes a 32-bit integer with the splitmix32 finalizer so nearby seeds give unrelated streams.
 *
 * @param x Any number; only its low 32 bits are used.
 * @returns An unsigned 32-bit hash.
 * @example
 * ```ts
 * splitmix32(1) !== splitmix32(2); // true, and far apart
 * ```
 */
export function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Derives an independent seed for a named stream (FNV-1a over the label, then splitmix32).
 *
 * @param seed The world seed.
 * @param label The stream's name, e.g. `"pretrain"`.
 * @returns An unsigned 32-bit seed.
 * @example
 * ```ts
 * deriveSeed(42, "sft") !== deriveSeed(42, "dpo"); // true
 * ```
 */
export function deriveSeed(seed: number, label: string): number {
  let h = 0x811c9dc5 ^ splitmix32(seed);
  for (let i = 0; i < label.length; i++) {
    h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  }
  return splitmix32(h);
}

/**
 * A mulberry32 generator with the few sampling helpers the corpus needs.
 *
 * @example
 * ```ts
 * const rng = new Rng(7);
 * rng.int(1, 6); // a die roll, the same one every run
 * ```
 */
export class Rng {
  #state: number;

  /**
   * Starts a stream.
   *
   * @param seed Any number; the same seed always gives the same sequence.
   */
  constructor(seed: number) {
    this.#state = splitmix32(seed) | 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both ends included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /**
   * One element of a non-empty array.
   *
   * @throws {RangeError} If the array is empty.
   */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Rng.pick() needs a non-empty array");
    return items[Math.floor(this.next() * items.length)];
  }

  /** A shuffled copy (Fisher-Yates); the input is left alone. */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  /** Eight hex digits, for tool-call ids. */
  hex8(): string {
    return Math.floor(this.next() * 4294967296).toString(16).padStart(8, "0");
  }
}
