/**
 * Gradient-check helpers for the kernel tests: CPU twins run in f64 against central finite
 * differences of the scalar `L(x) = sum(f(x) * G)` for a fixed random `G`.
 *
 * @module
 */
import { assertClose, finiteDiff } from "./_util.ts";

/** A Float64Array copy of `a`. */
export function f64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/** `sum(a * b)` in f64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Asserts that `grad` (the analytic gradient of `L(x) = sum(f(x) * G)` at `x`) matches central
 * finite differences of L, on every index (or `indices`).
 */
export function checkFiniteDiff(
  f: (x: Float64Array) => ArrayLike<number>,
  x: Float64Array,
  G: ArrayLike<number>,
  grad: ArrayLike<number>,
  opts: { label?: string; indices?: number[]; atol?: number; rtol?: number; h?: number } = {},
): void {
  const idx = opts.indices ?? [...x.keys()];
  const fd = finiteDiff((v) => dot(f(v), G), x, { indices: idx, h: opts.h });
  assertClose(idx.map((i) => grad[i]), fd, {
    atol: opts.atol ?? 1e-6,
    rtol: opts.rtol ?? 1e-5,
    label: opts.label,
  });
}
