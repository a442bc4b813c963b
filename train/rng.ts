/**
 * A small seeded PRNG for `train/`: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator,
 * from PractRand) seeded through SplitMix32, with a state that is four u32s so it serializes
 * into a checkpoint's `state.json` and resumes exactly. Used to shuffle window order per epoch
 * and to split documents between train and val.
 *
 * Deterministic on every platform (32-bit integer ops only). Not cryptographic.
 *
 * @module
 */

/** A serialized generator: four unsigned 32-bit integers. */
export type RngState = [number, number, number, number];

/**
 * Mixes integers into one well-spread u32 (SplitMix32 finalizer over each input), for seeding
 * and for per-item coin flips that need no generator state.
 *
 * @param values Integers (taken mod 2^32).
 * @returns An unsigned 32-bit hash.
 * @example
 * ```ts
 * hash32(42, 7) === hash32(42, 7); // true
 * hash32(42, 7) !== hash32(42, 8); // true
 * ```
 */
export function hash32(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    h = (h ^ (v >>> 0)) >>> 0;
    h = (h + 0x9e3779b9) | 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    h = (h ^ (h >>> 16)) >>> 0;
    // Fold in the high half of values above 2^32 (e.g. document indices of huge corpora).
    const hi = Math.floor(v / 2 ** 32) >>> 0;
    if (hi !== 0) h = Math.imul(h ^ hi, 0x27d4eb2f) >>> 0;
  }
  return h >>> 0;
}

/**
 * sfc32 with a serializable state.
 *
 * @example
 * ```ts
 * const rng = new Rng(1234, 0); // seed, stream (e.g. the epoch)
 * const i = rng.int(10); // in [0, 10)
 * const saved = rng.state();
 * const again = Rng.fromState(saved); // continues identically
 * ```
 */
export class Rng {
  #s: Uint32Array;

  /**
   * Seeds a generator.
   *
   * @param seed Any integer; the same (seed, stream) gives the same sequence everywhere.
   * @param stream A second integer giving an independent sequence (e.g. the epoch).
   */
  constructor(seed: number, stream = 0) {
    const h = hash32(seed, stream);
    this.#s = new Uint32Array([h, hash32(h, 1), hash32(h, 2), 1]);
    for (let i = 0; i < 12; i++) this.nextU32(); // sfc32's recommended warm-up
  }

  /**
   * Restores a generator saved with {@linkcode Rng.state}.
   *
   * @param state Four u32s.
   * @returns A generator continuing where the saved one stopped.
   * @throws {TypeError} when `state` is not four unsigned 32-bit integers.
   * @example
   * ```ts
   * const rng = Rng.fromState([1, 2, 3, 4]);
   * ```
   */
  static fromState(state: readonly number[]): Rng {
    if (
      !Array.isArray(state) || state.length !== 4 ||
      !state.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32)
    ) {
      throw new TypeError(
        `RNG state must be four unsigned 32-bit integers, got ${JSON.stringify(state)}`,
      );
    }
    const r = new Rng(0);
    r.#s = new Uint32Array(state);
    return r;
  }

  /**
   * The state, to save and later pass to {@linkcode Rng.fromState}.
   *
   * @returns Four u32s (a copy).
   * @example
   * ```ts
   * JSON.stringify(rng.state()); // "[...]"
   * ```
   */
  state(): RngState {
    const s = this.#s;
    return [s[0], s[1], s[2], s[3]];
  }

  /**
   * The next unsigned 32-bit integer.
   *
   * @returns An integer in [0, 2^32).
   * @example
   * ```ts
   * rng.nextU32();
   * ```
   */
  nextU32(): number {
    const s = this.#s;
    const t = (s[0] + s[1] + s[3]) >>> 0;
    s[3] = s[3] + 1;
    s[0] = s[1] ^ (s[1] >>> 9);
    s[1] = s[2] + (s[2] << 3);
    s[2] = ((s[2] << 21) | (s[2] >>> 11)) + t;
    return t;
  }

  /**
   * A uniform double in [0, 1) from 53 random bits.
   *
   * @returns The sample.
   * @example
   * ```ts
   * rng.uniform() < 1; // true
   * ```
   */
  uniform(): number {
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /**
   * A uniform integer in [0, n), without modulo bias (rejection sampling).
   *
   * @param n The bound, 1 <= n <= 2^32.
   * @returns The sample.
   * @example
   * ```ts
   * rng.int(6) + 1; // a die roll
   * ```
   */
  int(n: number): number {
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /**
   * Shuffles an array in place (Fisher-Yates).
   *
   * @param a The array.
   * @returns `a`.
   * @example
   * ```ts
   * rng.shuffle([1, 2, 3, 4]);
   * ```
   */
  shuffle<A extends { length: number; [i: number]: number }>(a: A): A {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }
}
