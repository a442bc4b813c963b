/**
 * CPU-backend implementations of the optimizer step (`../optim.ts`): the sum of squares with its
 * non-finite flag, the clip scale, and AdamW.
 *
 *     sumSquares: ranges of f32 -> sumsq [1], nonfinite [1] (1 when any element is NaN or +-inf)
 *     clipScale:  sumsq [1]     -> scale [1] = min(1, maxNorm / (sqrt(sumsq) + 1e-6)), norm [1]
 *     adamw:      p, grad, m, v over [offset, offset + count), scale [1] -> p, m, v
 *
 * The sum of squares runs in f64 with four running sums in a fixed order (same inputs, same
 * bits). It needs no per-element finiteness test: the square of an f32 is below 2^256 and a sum
 * of fewer than 2^31 of them stays finite in f64, so the f64 sum is finite exactly when every
 * element is. Stored in f32 it overflows to inf like the kernel's f32 sum; the flag, as on the
 * GPU, only reports non-finite elements.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineJob, runJob } from "./_pool.ts";
import { f32 } from "./_views.ts";

/** `sum x^2` over `x[offset, offset + count)` in f64, four partial sums (one ILP chain each). */
function sumsq(x: Float32Array, offset: number, count: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = offset;
  const end = offset + count, end4 = offset + (count & ~3);
  for (; i < end4; i += 4) {
    const a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += d * d;
  }
  for (; i < end; i++) s0 += x[i] * x[i];
  return (s0 + s1) + (s2 + s3);
}

/** The sum of squares of every range into `out` [1] and, when given, the flag into `flag` [1]. */
export function hostSumSquares(
  out: Tensor,
  ranges: readonly { t: Tensor; offset: number; count: number }[],
  flag: Tensor | null,
): void {
  let total = 0, bad = 0;
  for (const r of ranges) {
    if (r.count === 0) continue;
    const s = sumsq(f32(r.t), r.offset, r.count);
    if (!Number.isFinite(s)) bad = 1;
    total += s;
  }
  f32(out)[0] = total;
  if (flag) f32(flag)[0] = bad;
}

/** `norm = sqrt(sumsq)`, `scale = clip ? min(1, maxNorm / (norm + 1e-6)) : 1`, in f32 steps. */
export function hostClipScale(
  out: Tensor,
  sumsq: Tensor,
  norm: Tensor | null,
  opts: { maxNorm: number; clip: boolean },
): void {
  const f = Math.fround, n = f(Math.sqrt(f32(sumsq)[0]));
  if (norm) f32(norm)[0] = n;
  f32(out)[0] = opts.clip ? Math.min(1, f(opts.maxNorm) / f(n + f(1e-6))) : 1;
}

/** The resolved hyperparameters of one AdamW call (see `AdamWHyper`). */
export interface HostAdamW {
  offset: number;
  count: number;
  lr: number;
  wd: number;
  beta1: number;
  beta2: number;
  eps: number;
  bc1: number;
  bc2: number;
}

/**
 * One AdamW step over `[offset, offset + count)`, each element in f64 from f32 inputs (the
 * hyperparameters rounded to f32 as the kernel receives them), stored in f32. Elements split over
 * the host pool's threads.
 */
export function hostAdamw(
  param: Tensor,
  state: { grad: Tensor; m: Tensor; v: Tensor },
  gradScale: Tensor | null,
  h: HostAdamW,
): void {
  const f = Math.fround;
  const s = gradScale ? f32(gradScale)[0] : 1;
  const b1 = f(h.beta1), b2 = f(h.beta2);
  const args = [
    f32(param).subarray(h.offset, h.offset + h.count),
    f32(state.grad).subarray(h.offset, h.offset + h.count),
    f32(state.m).subarray(h.offset, h.offset + h.count),
    f32(state.v).subarray(h.offset, h.offset + h.count),
    s,
    b1,
    b2,
    1 / f(h.bc1),
    1 / f(h.bc2),
    f(h.lr),
    f(h.wd),
    f(h.eps),
  ];
  runJob(ADAMW, h.count, args, 1 << 16);
}

/** Elements [j0, j1) of AdamW. Args: p, g, m, v, gradScale, beta1, beta2, 1/bc1, 1/bc2, lr, wd, eps. */
const ADAMW = defineJob("adamw", (a, j0, j1) => {
  const p = a[0] as Float32Array, g = a[1] as Float32Array;
  const m = a[2] as Float32Array, v = a[3] as Float32Array;
  const s = a[4] as number, b1 = a[5] as number, b2 = a[6] as number, c1 = 1 - b1, c2 = 1 - b2;
  const ibc1 = a[7] as number, ibc2 = a[8] as number, lr = a[9] as number;
  const wd = a[10] as number, eps = a[11] as number;
  for (let j = j0; j < j1; j++) {
    const gj = g[j] * s;
    const mj = b1 * m[j] + c1 * gj;
    const vj = b2 * v[j] + c2 * gj * gj;
    m[j] = mj;
    v[j] = vj;
    const w = p[j];
    // decoupled weight decay: the decay uses the pre-step weight
    p[j] = w - lr * ((mj * ibc1) / (Math.sqrt(vj * ibc2) + eps) + wd * w);
  }
});
