/**
 * The seeded pseudo-random generators of every layer, in one module that imports nothing, so
 * `data/`, `model/`, `train/`, `serve/`, the tests and the benches may all import it.
 *
 * - {@linkcode Rng}: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, PractRand) with a
 *   state of four u32s that serializes into a checkpoint's `state.json`; shuffles windows, splits
 *   documents, samples tokens in the server.
 * - {@linkcode Mulberry32} and {@linkcode mulberry32}: 32 bits of state (Tommy Ettinger, public
 *   domain); the demo corpus and the tests' random inputs.
 * - {@linkcode Xoshiro128}: xoshiro128** (Blackman and Vigna, 2018) with normal draws; parameter
 *   init.
 *
 * Three cores because each fixes bits something depends on (the demo corpus, the initial weights,
 * a checkpoint's sampler state); new code uses {@linkcode Rng}. All use 32-bit integer ops only
 * (and `Math.log` / `Math.cos` / `Math.sin` of doubles for normals), so a seed gives the same
 * stream on every platform. None is cryptographic.
 *
 * @module
 */

/**
 * Mixes a 32-bit integer with the SplitMix32 finalizer, so nearby seeds give unrelated streams.
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
 * Mixes integers into one well-spread u32 (SplitMix32 finalizer over each input), for seeding
 * and for per-item coin flips that need no generator state.
 *
 * @param values Integers (taken mod 2^32; the high half of larger ones is folded in).
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
 * FNV-1a 32-bit hash of a string's UTF-16 code units, to derive one seed per tensor name.
 *
 * @param s The string to hash.
 * @returns An unsigned 32-bit hash.
 * @example
 * ```ts
 * hashString(""); // 2166136261
 * ```
 */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Derives an independent seed for a named stream (FNV-1a over the label, then SplitMix32).
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

/** A serialized {@linkcode Rng}: four unsigned 32-bit integers. */
export type RngState = [number, number, number, number];

/**
 * sfc32 with a serializable state: the generator new code uses.
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
   * Seeds a generator from any finite number, keeping all the bits of an integer up to 2^53
   * (negative ones too): the serving API's `seed`.
   *
   * @param seed The seed.
   * @returns A warmed-up generator.
   * @throws {RangeError} If the seed is not finite.
   * @example
   * ```ts
   * Rng.fromSeed64(2 ** 40).next() !== Rng.fromSeed64(2 ** 40 + 1).next(); // true
   * ```
   */
  static fromSeed64(seed: number): Rng {
    if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
    const big = BigInt.asUintN(64, BigInt(Math.trunc(seed)));
    let s = Number(big & 0xffffffffn) ^ Math.imul(Number(big >> 32n), 0x9e3779b9);
    const split = (): number => {
      const out = splitmix32(s);
      s = (s + 0x9e3779b9) | 0;
      return out;
    };
    const r = new Rng(0);
    r.#s = new Uint32Array([split(), split(), split(), split()]);
    for (let i = 0; i < 12; i++) r.nextU32();
    return r;
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
   * JSON.stringify(new Rng(1).state()); // "[...]"
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
   * new Rng(1).nextU32();
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
   * A uniform float in [0, 1) from 32 random bits (one step).
   *
   * @returns The sample.
   * @example
   * ```ts
   * new Rng(42).next() === new Rng(42).next(); // true
   * ```
   */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /**
   * A uniform double in [0, 1) from 53 random bits (two steps).
   *
   * @returns The sample.
   * @example
   * ```ts
   * new Rng(1).uniform() < 1; // true
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
   * new Rng(1).int(6) + 1; // a die roll
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
   * new Rng(1).shuffle([1, 2, 3, 4]);
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

/**
 * One mulberry32 step on a state, returning [float in [0, 1), next state].
 */
function mulberryStep(state: number): [number, number] {
  const next = (state + 0x6d2b79f5) | 0;
  let t = next;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return [((t ^ (t >>> 14)) >>> 0) / 4294967296, next];
}

/**
 * A bare mulberry32 stream whose state starts at `seed` itself (no mixing): the tests' and
 * benches' random inputs.
 *
 * @param seed The initial state (low 32 bits).
 * @returns A function giving the next float in [0, 1) on each call.
 * @example
 * ```ts
 * const r = mulberry32(1);
 * r() < 1; // true
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    const [out, next] = mulberryStep(state);
    state = next;
    return out;
  };
}

/**
 * mulberry32 seeded through {@linkcode splitmix32}, with the few sampling helpers the demo
 * corpus needs (each corpus generator draws from its own stream, `deriveSeed(seed, "sft")`).
 *
 * @example
 * ```ts
 * const rng = new Mulberry32(7);
 * rng.int(1, 6); // a die roll, the same one every run
 * ```
 */
export class Mulberry32 {
  #state: number;

  /**
   * Starts a stream.
   *
   * @param seed Any number; the same seed always gives the same sequence.
   */
  constructor(seed: number) {
    this.#state = splitmix32(seed) | 0;
  }

  /**
   * A float in [0, 1).
   *
   * @returns The sample.
   */
  next(): number {
    const [out, next] = mulberryStep(this.#state);
    this.#state = next;
    return out;
  }

  /**
   * An integer in [lo, hi], both ends included.
   *
   * @param lo The smallest value.
   * @param hi The largest value.
   * @returns The sample.
   */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /**
   * True with probability `p`.
   *
   * @param p The probability.
   * @returns The coin flip.
   */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /**
   * One element of a non-empty array.
   *
   * @param items The array.
   * @returns The element.
   * @throws {RangeError} If the array is empty.
   */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Mulberry32.pick() needs a non-empty array");
    return items[Math.floor(this.next() * items.length)];
  }

  /**
   * A shuffled copy (Fisher-Yates); the input is left alone.
   *
   * @param items The array.
   * @returns The copy.
   */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  /**
   * Eight hex digits, for tool-call ids.
   *
   * @returns The digits.
   */
  hex8(): string {
    return Math.floor(this.next() * 4294967296).toString(16).padStart(8, "0");
  }
}

/**
 * xoshiro128** seeded through SplitMix32, with uniform and normal draws (Box-Muller, both
 * outputs used); parameter init. Filling a Float32Array rounds each double once.
 *
 * @example
 * ```ts
 * const rng = new Xoshiro128(42, hashString("model.embed_tokens.weight"));
 * const x = rng.normal(); // a standard normal sample
 * ```
 */
export class Xoshiro128 {
  #s = new Uint32Array(4);
  #spare: number | null = null;

  /**
   * @param seed Any integer (taken mod 2^32); the same seed gives the same stream everywhere.
   * @param stream An optional second integer mixed in (e.g. `hashString(tensorName)`).
   */
  constructor(seed: number, stream = 0) {
    let st = (seed ^ Math.imul(stream >>> 0, 0x9e3779b1)) | 0;
    for (let i = 0; i < 4; i++) {
      this.#s[i] = splitmix32(st);
      st = (st + 0x9e3779b9) | 0;
    }
    // The all-zero state is a fixed point of xoshiro; SplitMix32 never outputs four zeros in a
    // row, but guard anyway.
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1;
  }

  /**
   * The next unsigned 32-bit integer.
   *
   * @returns An integer in [0, 2^32).
   */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /**
   * A uniform double in the open interval (0, 1), from 53 random bits.
   *
   * @returns The sample; never 0, so `Math.log` of it is finite.
   */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo + 0.5) / 9007199254740992;
  }

  /**
   * A standard normal sample (Box-Muller, both outputs used).
   *
   * @returns The sample.
   */
  normal(): number {
    if (this.#spare !== null) {
      const v = this.#spare;
      this.#spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const a = 2 * Math.PI * this.uniform();
    this.#spare = r * Math.sin(a);
    return r * Math.cos(a);
  }

  /**
   * Fills an array with normal samples of the given mean and standard deviation.
   *
   * @param out The array to fill (Float32Array rounds each sample once).
   * @param options `std` (default 1) and `mean` (default 0).
   * @returns `out`.
   */
  fillNormal<A extends Float32Array | Float64Array>(
    out: A,
    options: { std?: number; mean?: number } = {},
  ): A {
    const std = options.std ?? 1, mean = options.mean ?? 0;
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
