/**
 * The CPU backend's scalar exp, shared by every host op that exponentiates (activations,
 * softmax, cross-entropy, attention's leftover columns).
 *
 * @module
 */

/** 64 log2(e): `x` in 64ths of a power of two. */
const LOG2E_64 = 64 * Math.LOG2E;
const LN2_64 = Math.LN2 / 64;
/** 1075 * 64: shifts `x log2(e) 64` positive for every x > -745, so `| 0` floors it. */
const SHIFT = 68800;
/** 2^(k - 1075) for k in [0, 2100): every power of two a double holds, and 0 below. */
const POW2 = Float64Array.from({ length: 2100 }, (_, k) => 2 ** (k - 1075));
/** 2^(j / 64) for j in [0, 64). */
const FRAC = Float64Array.from({ length: 64 }, (_, j) => 2 ** (j / 64));

/**
 * `e^x` in f64 to 6e-10 relative error, three times as fast as `Math.exp` in V8's loops:
 * `x log2(e) = n / 64 + f`, `e^x = 2^(n >> 6) 2^((n & 63) / 64) e^(f ln 2)`, the last factor a
 * cubic (error f^4 / 24 for f ln 2 < ln2 / 64). Far below the f32 rounding of what it feeds;
 * deterministic. x is clamped to [-745, 709] (e^-745 is 0; e^709 overflows f32), NaN stays NaN.
 * Branch-free and small, so V8 inlines it into the callers' loops.
 * @example fastExp(1) // 2.71828182844...
 */
export function fastExp(x: number): number {
  const t = x < -745 ? -745 : x > 709 ? 709 : x;
  const y = t * LOG2E_64 + SHIFT, n = y | 0, f = (y - n) * LN2_64;
  return POW2[n >> 6] * FRAC[n & 63] * (1 + f * (1 + f * (0.5 + f * (1 / 6))));
}
