/**
 * The CPU backend's GEMMs: `matmulForward` (batched, either operand transposed, a shared 2-D
 * operand, `sumBatch`, `accumulate`) and the grouped expert GEMMs, each a few `cblas_sgemm`
 * calls on the tensors' host memory.
 *
 * @module
 */
import { ptrOf } from "../blas.ts";
import type { Cpu, HostBuffer } from "../cpu.ts";
import type { Tensor } from "../tensor.ts";

/** Sizes and flags of one (batched) GEMM, as the launcher has validated them. */
export interface HostGemm {
  M: number;
  N: number;
  K: number;
  Z: number;
  /** Elements from one batch entry of A (B) to the next; 0 for a shared 2-D operand. */
  strideA: number;
  strideB: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  accumulate: boolean;
  /** Sum the Z products into one [M, N] output. */
  sumBatch: boolean;
}

/** The f32 array of a host tensor's whole buffer and the tensor's first element in it. */
export function base(t: Tensor): [Float32Array, number] {
  return [(t.buffer as HostBuffer).f32, t.offset / 4];
}

/** `out = alpha op(a) op(b) (+ out)` per batch entry, or summed over the batch. */
export function hostMatmul(out: Tensor, a: Tensor, b: Tensor, g: HostGemm): void {
  const blas = (out.device as Cpu).blas;
  const [A, a0] = base(a), [B, b0] = base(b), [C, c0] = base(out);
  const { M, N, K } = g;
  const lda = Math.max(1, g.transA ? M : K), ldb = Math.max(1, g.transB ? K : N);
  for (let z = 0; z < g.Z; z++) {
    const co = g.sumBatch ? c0 : c0 + z * M * N;
    const beta = g.accumulate || (g.sumBatch && z > 0) ? 1 : 0;
    blas.sgemm(
      g.transA,
      g.transB,
      M,
      N,
      K,
      g.alpha,
      ptrOf(A, a0 + z * g.strideA),
      lda,
      ptrOf(B, b0 + z * g.strideB),
      ldb,
      beta,
      ptrOf(C, co),
      N,
    );
  }
}

/** Sizes of a grouped expert GEMM (see kernels/moe_gemm.ts). */
export interface HostGrouped {
  E: number;
  Kin: number;
  Kout: number;
  strideElems: number;
}

/** The row tile table of the grouped GEMMs, as `groupedTiles` builds it on the GPU. */
export function hostGroupedTiles(tiles: Tensor, offsets: Tensor, tm: number): void {
  const off = new Int32Array((offsets.buffer as HostBuffer).data, offsets.offset, offsets.size);
  const t = new Uint32Array((tiles.buffer as HostBuffer).data, tiles.offset, tiles.size);
  let n = 0;
  for (let e = 0; e + 1 < off.length; e++) {
    for (let r = off[e]; r < off[e + 1]; r += tm) {
      const i = 4 * (1 + n++);
      t[i] = e;
      t[i + 1] = r;
      t[i + 2] = Math.min(r + tm, off[e + 1]);
      t[i + 3] = 0;
    }
  }
  t[0] = n;
  t[1] = t[2] = t[3] = 0;
}

/**
 * `y[r] = x[r] @ W_e^T` ("fwd") or `dx[r] = dy[r] @ W_e` ("dx") for each expert's rows: one
 * GEMM per expert over the rows its tiles cover.
 */
export function hostGroupedRows(
  mode: "fwd" | "dx",
  out: Tensor,
  a: Tensor,
  w: Tensor,
  s: HostGrouped,
  tiles: Tensor,
  accumulate: boolean,
): void {
  const blas = (out.device as Cpu).blas;
  const t = new Uint32Array((tiles.buffer as HostBuffer).data, tiles.offset, tiles.size);
  const [A, a0] = base(a), [W, w0] = base(w), [C, c0] = base(out);
  const [aCols, outCols] = mode === "fwd" ? [s.Kin, s.Kout] : [s.Kout, s.Kin];
  const count = t[0], beta = accumulate ? 1 : 0;
  let i = 0;
  while (i < count) {
    // Tiles of one expert are consecutive and cover consecutive rows.
    const e = t[4 * (1 + i)], lo = t[4 * (1 + i) + 1];
    let hi = t[4 * (1 + i) + 2];
    while (i + 1 < count && t[4 * (2 + i)] === e) hi = t[4 * (2 + i++) + 2];
    i++;
    blas.sgemm(
      false,
      mode === "fwd",
      hi - lo,
      outCols,
      aCols,
      1,
      ptrOf(A, a0 + lo * aCols),
      aCols,
      ptrOf(W, w0 + e * s.strideElems),
      s.Kin,
      beta,
      ptrOf(C, c0 + lo * outCols),
      outCols,
    );
  }
}

/**
 * `dW_e = dy_e^T @ x_e` per expert (rows from `offsets`); an expert without rows keeps its
 * gradient with `accumulate` and gets zeros without. Padding between experts is not written.
 */
export function hostGroupedWeight(
  dw: Tensor,
  dy: Tensor,
  x: Tensor,
  s: HostGrouped,
  offsets: Tensor,
  accumulate: boolean,
): void {
  const blas = (dw.device as Cpu).blas;
  const off = new Int32Array((offsets.buffer as HostBuffer).data, offsets.offset, offsets.size);
  const [D, d0] = base(dy), [X, x0] = base(x), [G, g0] = base(dw);
  for (let e = 0; e < s.E; e++) {
    const lo = off[e], n = off[e + 1] - lo;
    if (n === 0) {
      if (!accumulate) G.fill(0, g0 + e * s.strideElems, g0 + e * s.strideElems + s.Kout * s.Kin);
      continue;
    }
    blas.sgemm(
      true,
      false,
      s.Kout,
      s.Kin,
      n,
      1,
      ptrOf(D, d0 + lo * s.Kout),
      s.Kout,
      ptrOf(X, x0 + lo * s.Kin),
      s.Kin,
      accumulate ? 1 : 0,
      ptrOf(G, g0 + e * s.strideElems),
      s.Kin,
    );
  }
}
