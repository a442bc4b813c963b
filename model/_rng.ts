/**
 * A small seeded pseudo-random generator for parameter init and tests: xoshiro128** (Blackman
 * and Vigna, 2018) seeded through SplitMix32, uniform floats from 53 random bits, normals by the
 * Box-Muller transform. Deterministic across platforms: only 32-bit integer ops and Math.log /
 * Math.cos / Math.sin of doubles, then one rounding to f32 when filling a Float32Array.
 *
 * Not cryptographic. Internal to `model/` (leading underscore).
 *
 * @module
 */

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

/** One SplitMix32 step: returns [output, next state]. */
function splitmix32(state: number): [number, number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return [z >>> 0, next];
}

/**
 * xoshiro128** generator with uniform and normal draws.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * const x = rng.normal(); // a standard normal sample
 * ```
 */
export class Rng {
  #s = new Uint32Array(4);
  #spare: number | null = null;

  /**
   * @param seed Any integer (taken mod 2^32); the same seed gives the same stream everywhere.
   * @param stream An optional second integer mixed in (e.g. `hashString(tensorName)`).
   */
  constructor(seed: number, stream = 0) {
    let st = (seed ^ Math.imul(stream >>> 0, 0x9e3779b1)) | 0;
    for (let i = 0; i < 4; i++) {
      const [out, next] = splitmix32(st);
      this.#s[i] = out;
      st = next;
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
