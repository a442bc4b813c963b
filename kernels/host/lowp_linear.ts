/**
 * CPU-backend implementation of `lowp_linear.ts`'s FP8 GEMM,
 * `out [M, N] (+)= A [M, K] . B [N, K]^T` on E4M3 operands with 1 x 128 tile scales (A) and
 * tile or 128 x 128 block scales (B).
 *
 * Legend: M, N output rows and columns, K the reduction dim, Kp = 4 ceil(K / 4) the padded row of
 * the decoded operands, KB = ceil(K / 128) K blocks.
 *
 * The recipe's structure is kept: both operands' codes are decoded to f32 (exact: E4M3 values fit
 * f32), and each 128-wide K block is one BLAS GEMM into an f32 block sum `ps [M, N]`; the
 * promotion `acc = acc + ps * (sa * sb)` is then done in f32 exactly as the WGSL kernel does it.
 * Only the order of the f32 additions inside a block differs from the kernel (BLAS's, fixed for a
 * fixed thread count); products of E4M3 values have 8-bit mantissas, so block sums are mostly
 * exact and outputs mostly equal the kernel's bits. Folding the scales into the decoded operands
 * (one GEMM over all of K, no promotion pass) would be faster but rounds every product: outputs
 * then land up to ~90x the tests' twin tolerance (1e-6) away.
 *
 * f16 has no host implementation: it needs the GPU's `shader-f16`, and the CPU backend computes
 * in f32 (`assertF16` refuses it before any work).
 *
 * @module
 */
import type { Cpu } from "../cpu.ts";
import { ptrOf } from "../blas.ts";
import type { Quantized } from "../quant.ts";
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";
import { decodeCodes } from "./quant.ts";

const TILE = 128;

/** Grow-only scratch arrays, one per role, so a training step allocates nothing here. */
const scratch: Float32Array[] = [];

function scratchOf(role: number, n: number): Float32Array {
  if (!scratch[role] || scratch[role].length < n) {
    scratch[role] = new Float32Array(Math.max(n, Math.ceil((scratch[role]?.length ?? 0) * 1.25)));
  }
  return scratch[role].subarray(0, n);
}

const A_ROLE = 0, B_ROLE = 1, PS_ROLE = 2, ACC_ROLE = 3, SB_ROLE = 4;

/**
 * The host version of `fp8Gemm`: `out [M, N] (+)= sum over K blocks of
 * (A_kb . B_kb^T) * (sa * sb)`, each block sum in f32 (BLAS), promoted in f32.
 */
export function hostFp8Gemm(
  out: Tensor,
  a: Quantized,
  b: Quantized,
  opts: { accumulate: boolean },
): void {
  const M = a.rows, N = b.rows, K = a.cols;
  if (M === 0 || N === 0) return;
  const Kp = 4 * Math.ceil(K / 4), KB = Math.ceil(K / TILE);
  const blas = (out.device as Cpu).blas;
  const ov = f32(out);
  // acc [M, N]: the f32 accumulator, out itself unless the result is added to out's contents
  const acc = opts.accumulate ? scratchOf(ACC_ROLE, M * N) : ov;
  acc.fill(0);
  if (KB > 0) {
    const A = scratchOf(A_ROLE, M * Kp), B = scratchOf(B_ROLE, N * Kp);
    const ps = scratchOf(PS_ROLE, M * N);
    decodeCodes(a.q, A); // [M, Kp]
    decodeCodes(b.q, B); // [N, Kp]
    const sa = f32(a.scales), sb = f32(b.scales); // [M, KB]; [N or ceil(N / 128), KB]
    const pPs = ptrOf(ps);
    for (let kb = 0; kb < KB; kb++) {
      const k0 = kb * TILE, kl = Math.min(TILE, Kp - k0);
      // ps [M, N] = A[:, k0 : k0 + kl] . B[:, k0 : k0 + kl]^T
      blas.sgemm(
        false,
        true,
        M,
        N,
        kl,
        1,
        ptrOf(A, k0),
        Kp,
        ptrOf(B, k0),
        Kp,
        0,
        pPs,
        N,
      );
      promote(acc, ps, sa, sb, { M, N, KB, kb, bBlock: b.block });
    }
  }
  if (opts.accumulate) {
    for (let i = 0; i < M * N; i++) ov[i] = acc[i] + ov[i];
  }
}

/**
 * `acc = fround(acc + fround(ps * fround(sa * sb)))` over [M, N] for K block `kb`, in the
 * kernel's f32 operation order.
 */
function promote(
  acc: Float32Array,
  ps: Float32Array,
  sa: Float32Array,
  sb: Float32Array,
  o: { M: number; N: number; KB: number; kb: number; bBlock: boolean },
): void {
  const { M, N, KB, kb } = o;
  if (o.bBlock) {
    // one scale of b per 128 output columns
    for (let m = 0; m < M; m++) {
      const s = sa[m * KB + kb], row = m * N;
      for (let n0 = 0; n0 < N; n0 += TILE) {
        const t = Math.fround(s * sb[(n0 >> 7) * KB + kb]), n1 = row + Math.min(N, n0 + TILE);
        for (let i = row + n0; i < n1; i++) acc[i] += Math.fround(ps[i] * t);
      }
    }
    return;
  }
  const sbk = scratchOf(SB_ROLE, N); // [N] b's scale of each output column in this K block
  for (let n = 0; n < N; n++) sbk[n] = sb[n * KB + kb];
  for (let m = 0; m < M; m++) {
    const s = sa[m * KB + kb], row = m * N;
    for (let n = 0; n < N; n++) {
      acc[row + n] += Math.fround(ps[row + n] * Math.fround(s * sbk[n]));
    }
  }
}
