/**
 * Test helpers: a seeded PRNG, closeness assertions that print the worst element, and central
 * finite differences in f64.
 *
 * @module
 */
import { type Device, getDevice } from "../kernels/backend.ts";
import { mulberry32 } from "../random/rng.ts";

/** A seeded PRNG (mulberry32, the state starting at `seed`) returning floats in [0, 1). */
export const rng: (seed: number) => () => number = mulberry32;

/** `n` seeded normal(0, std) values (Box-Muller). */
export function randn(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** `n` seeded uniform values in [lo, hi). */
export function randu(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** `n` seeded integers in [0, max). */
export function randint(n: number, seed: number, max: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * max));
}

/**
 * Asserts `|got - want| <= atol + rtol * |want|` elementwise; on failure the message names the
 * worst element, its index, both values and how many elements failed.
 */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  opts: { atol?: number; rtol?: number; label?: string } = {},
): void {
  const atol = opts.atol ?? 1e-5, rtol = opts.rtol ?? 1e-4;
  const label = opts.label ? `${opts.label}: ` : "";
  if (got.length !== want.length) {
    throw new Error(`${label}length ${got.length} != expected ${want.length}`);
  }
  let worst = -1, worstExcess = 0, bad = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    const err = Math.abs(g - w);
    const tol = atol + rtol * Math.abs(w);
    if (!(err <= tol) || Number.isNaN(g) !== Number.isNaN(w)) {
      bad++;
      const excess = Number.isFinite(err) ? err / tol : Infinity;
      if (worst < 0 || excess > worstExcess) {
        worst = i;
        worstExcess = excess;
      }
    }
  }
  if (bad) {
    throw new Error(
      `${label}${bad}/${got.length} elements differ; worst at [${worst}]: got ${got[worst]}, ` +
        `want ${want[worst]} (|diff| ${Math.abs(got[worst] - want[worst])}, ` +
        `atol ${atol}, rtol ${rtol})`,
    );
  }
}

/** Asserts two arrays hold identical bits (NaN payloads included). */
export function assertSameBits(a: Float32Array, b: Float32Array, label = ""): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (ua.length !== ub.length) throw new Error(`${label} lengths differ`);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) throw new Error(`${label} bits differ at [${i}]: ${a[i]} vs ${b[i]}`);
  }
}

/**
 * Central finite differences of a scalar function `f(x)` in f64 at the given indices
 * (all when omitted): `(f(x + h e_i) - f(x - h e_i)) / 2h`.
 */
export function finiteDiff(
  f: (x: Float64Array) => number,
  x: Float64Array,
  opts: { h?: number; indices?: number[] } = {},
): Float64Array {
  const h = opts.h ?? 1e-6;
  const idx = opts.indices ?? [...x.keys()];
  const out = new Float64Array(idx.length);
  idx.forEach((i, k) => {
    const keep = x[i];
    x[i] = keep + h;
    const fp = f(x);
    x[i] = keep - h;
    const fm = f(x);
    x[i] = keep;
    out[k] = (fp - fm) / (2 * h);
  });
  return out;
}

/**
 * The backend the suite runs on: `MINIDEEPSEEK_DEVICE` (gpu or cpu; CI runs the suite once with
 * each), else WebGPU, whose WGSL kernels most tests were written to check (lavapipe in CI).
 */
export function testDevice(): Promise<Device> {
  return getDevice(Deno.env.get("MINIDEEPSEEK_DEVICE") ? "auto" : "gpu");
}

/** Deno.test options shared by GPU tests: WebGPU keeps resources alive across tests. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;
