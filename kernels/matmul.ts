/**
 * Matrix multiplication: the batched GEMM kernel with either operand transposed, the `linear`
 * layer (y = x W^T, HF weight layout) and `matmul` autograd ops, and their CPU twins.
 *
 * Legend: M rows of the output, N columns of the output, K the inner (summed) dim, Z batch
 * (the product of the leading dims), TM x TN outputs per thread, L = 8 threads per workgroup.
 *
 *     C [Z, M, N] = alpha * op(A) [Z, M, K] @ op(B) [Z, K, N] (+ C when accumulating)
 *     op(A) = A [Z, M, K], or A^T when `transA` (A stored [Z, K, M]); likewise op(B), B [Z, N, K]
 *     linear:  y [..., out] = x [..., in] @ W^T,   W [out, in]
 *              dx = dy @ W (no transpose),   dW += dy^T @ x (transA)
 *
 * Either operand may be 2-D while the other is batched (a weight shared across the batch): its
 * batch stride is 0. `sumBatch` sums the Z products into one [M, N] output instead, which is the
 * gradient of such a shared operand.
 *
 * How the kernel is shaped, and why (measured on Mesa's lavapipe, see bench/matmul.ts): a
 * workgroup is L = 8 threads, one SIMD group of the CPU driver, and each thread keeps TM x TN
 * (up to 12 x 16) accumulators in registers, reading its operands straight from the storage
 * buffers with no workgroup-memory staging. On lavapipe every storage or workgroup load is an
 * emulated per-lane gather costing far more than an FMA, so the kernel is built to minimise loads
 * per FMA: (TM + TN) loads per k step for TM * TN FMAs, four k steps per loop trip, and vec4 loads
 * along whichever dim each operand is contiguous in (k for A and B^T, m for A^T, n for B) when
 * the shape keeps those vec4s aligned. Staging tiles in workgroup memory measured slower there
 * (a second round of emulated loads plus barriers); on discrete GPUs the same register blocking
 * still gives high arithmetic intensity and the caches catch the operand reuse.
 *
 * Each output element is summed by one thread in k order (four k per trip), so the same inputs
 * give the same bits. No atomics.
 *
 * The register tile's WGSL (k loop, loads, FMAs, stores) comes from `kernels/_gemm_tile.ts`,
 * which the grouped expert GEMM (`kernels/moe_gemm.ts`) shares: this file only says where a
 * tile's operands and output lie (batch offsets, transposes, the sumBatch loop).
 *
 * Left out: f16 operands, fused bias/activation epilogues, split-K for tiny M N with huge K.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { Params } from "./gpu.ts";
import { webgpu } from "./_launch.ts";
import { hostMatmul } from "./host/matmul.ts";
import type { Floats } from "./_rows.ts";
import { Tensor } from "./tensor.ts";
import { gemmTile, LANES as L, lines, storageArray } from "./_gemm_tile.ts";

/** Largest workgroup count per grid dimension WebGPU allows. */
const MAX_GROUPS = 65535;

/** Options of {@linkcode matmulForward}. */
export interface MatmulOptions {
  /** A is stored [.., K, M] and used transposed. */
  transA?: boolean;
  /** B is stored [.., N, K] and used transposed (the `x @ W^T` of a linear layer). */
  transB?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
  /** Sum the Z batch products into one [M, N] output (the gradient of a shared operand). */
  sumBatch?: boolean;
}

/** The sizes of one GEMM, as {@linkcode matmulShape} reads them off the operands. */
export interface MatmulShape {
  /** Output rows. */
  M: number;
  /** Output columns. */
  N: number;
  /** Inner dim. */
  K: number;
  /** Batch count (1 when neither operand has batch dims). */
  Z: number;
  /** Leading dims of the batched operand(s). */
  batch: number[];
  /** Whether A carries the batch (false: 2-D, shared by every batch entry). */
  batchedA: boolean;
  /** Whether B carries the batch (false: 2-D, shared by every batch entry). */
  batchedB: boolean;
}

/**
 * Reads M, N, K and the batch off operand shapes `a` [..., M, K] and `b` [..., K, N] (either
 * transposed). A 2-D operand is shared by every batch entry of the other.
 *
 * @throws when an operand has fewer than 2 dims, the inner dims disagree, or both operands are
 *   batched with different leading dims.
 * @example matmulShape([2, 3, 4], [5, 4], { transB: true }) // { M: 3, N: 5, K: 4, Z: 2, ... }
 */
export function matmulShape(
  a: readonly number[],
  b: readonly number[],
  opts: { transA?: boolean; transB?: boolean } = {},
): MatmulShape {
  if (a.length < 2 || b.length < 2) {
    throw new Error(`matmul: operands need at least 2 dims, got [${a}] and [${b}]`);
  }
  const [ra, ca] = a.slice(-2), [rb, cb] = b.slice(-2);
  const M = opts.transA ? ca : ra, K = opts.transA ? ra : ca;
  const Kb = opts.transB ? cb : rb, N = opts.transB ? rb : cb;
  if (K !== Kb) {
    throw new Error(
      `matmul: inner dims differ: op(A) of [${a}] is ${M}x${K} but op(B) of [${b}] is ${Kb}x${N}` +
        ` (transA ${Boolean(opts.transA)}, transB ${Boolean(opts.transB)})`,
    );
  }
  const ba = a.slice(0, -2), bb = b.slice(0, -2);
  const batchedA = ba.length > 0, batchedB = bb.length > 0;
  if (batchedA && batchedB && ba.join() !== bb.join()) {
    throw new Error(`matmul: batch dims [${ba}] and [${bb}] differ; only a 2-D operand broadcasts`);
  }
  const batch = batchedA ? ba : bb;
  return { M, N, K, Z: batch.reduce((p, d) => p * d, 1), batch, batchedA, batchedB };
}

/** One compiled specialization of the GEMM kernel (what {@linkcode matmulSource} bakes in). */
export interface MatmulSpec {
  /** A is stored [K, M]. */
  transA: boolean;
  /** B is stored [N, K]. */
  transB: boolean;
  /** A is read as vec4s: 4 consecutive elements along its contiguous dim (K, or M with transA). */
  vecA: boolean;
  /** B is read as vec4s: 4 consecutive elements along its contiguous dim (N, or K with transB). */
  vecB: boolean;
  /** Output rows per thread (a multiple of 4 when A^T is read as vec4). */
  TM: number;
  /** Output columns per thread (a multiple of 4 with quadC). */
  TN: number;
  /** N % 4 == 0: each thread's columns come in aligned runs of 4, and C is stored as vec4s. */
  quadC: boolean;
  /** K % 4 != 0: the kernel needs the one-k-at-a-time tail loop. */
  tailK: boolean;
  /** C += instead of C =. */
  accumulate: boolean;
}

/**
 * The register tile for a GEMM of M x N: as large as the shape allows, up to 12 x 16 (the best
 * of the tiles measured on lavapipe at 1024^3 and the transformer shapes), so small outputs do
 * not compute rows and columns that are thrown away. Unaligned operands (scalar loads, four
 * times the load code) get at most 8 x 8: the 12 x 16 scalar variant takes seconds to compile
 * on lavapipe, for shapes the model rarely has.
 */
function pickTile(
  M: number,
  N: number,
  s: { quadM: boolean; quadN: boolean; vec: boolean },
): [number, number] {
  let TM = M >= 12 ? 12 : M > 4 ? 8 : M > 2 ? 4 : Math.max(1, M);
  // L threads cover L * TN columns.
  let TN = N > 8 * L ? 16 : N > 4 * L ? 8 : N > 2 * L ? 4 : N > L ? 2 : 1;
  if (!s.vec) [TM, TN] = [Math.min(TM, 8), Math.min(TN, 8)];
  if (s.quadM) TM = Math.max(4, TM);
  if (s.quadN) TN = Math.max(4, TN);
  return [TM, TN];
}

/**
 * The WGSL of one specialization of the GEMM kernel (exported for bench/ experiments; kernels
 * call {@linkcode matmulForward}). Bindings: A, B, C, then the params uniform.
 *
 * Thread `lane` of workgroup (x, y, z) owns rows x * TM + i (i < TM) and columns col(j) (j < TN)
 * of batch z:
 *   col(j) = y * L * TN + lane * 4 + (j % 4) + 32 * (j / 4)   with quadC (N % 4 == 0),
 *   col(j) = y * L * TN + lane + 8 * j                        otherwise.
 * Row tiles along x, which the driver runs first, so neighbouring workgroups share B's panel.
 * Rows and columns past M, N read stray values (in bounds or robust-access zeros) that are never
 * stored.
 *
 * @example const wgsl = matmulSource({ transA: false, transB: true, vecA: true, vecB: true,
 *   TM: 12, TN: 16, quadC: true, tailK: false, accumulate: false });
 */
export function matmulSource(s: MatmulSpec): string {
  const { transA, transB, vecA, vecB, TM, TN, quadC, tailK } = s;
  const t = gemmTile({
    TM,
    TN,
    quad: quadC,
    a: transA
      ? { along: "m", vec: vecA, row: (k) => `aOff + ${k} * p.M + m0` }
      : { along: "k", vec: vecA, rowBase: (i) => `aOff + (m0 + ${i}u) * p.K` },
    b: transB
      ? { along: "k", vec: vecB, colBase: (c) => `bOff + (${c}) * p.K` }
      : { along: "n", vec: vecB, row: (k) => `bOff + ${k} * p.N` },
    colTile: "(wid.y + p.n_off)",
    kBegin: "0u",
    kEnd: "p.K",
    tail: tailK,
    c: {
      base: "cOff",
      cols: "p.N",
      rowEnd: "p.M",
      value: (acc, old) => s.accumulate ? `p.alpha * ${acc} + ${old}` : `p.alpha * ${acc}`,
    },
  });
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: ${storageArray(vecA)};
@group(0) @binding(1) var<storage, read> B: ${storageArray(vecB)};
@group(0) @binding(2) var<storage, read_write> C: ${storageArray(quadC)};
struct P {
  M: u32, N: u32, K: u32, alpha: f32,
  sa: u32, sb: u32, sc: u32, R: u32,
  ra: u32, rb: u32, m_off: u32, n_off: u32,
  z_off: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let z = wid.z + p.z_off;
  let m0 = (wid.x + p.m_off) * ${TM}u;
  ${t.n0}
  let cOff = z * p.sc;
  ${lines(t.decl, "  ")}
  // R > 1 sums R batch entries into this output (sumBatch); R == 1 otherwise.
  for (var r = 0u; r < p.R; r++) {
    let aOff = z * p.sa + r * p.ra;
    let bOff = z * p.sb + r * p.rb;
    ${lines(t.bases, "    ")}
    ${lines(t.loop, "    ")}
  }
  ${lines(t.stores, "  ")}
}`;
}

function assertF32(t: Tensor, what: string): void {
  if (t.dtype !== "f32") throw new Error(`matmul: ${what} must be f32, got ${t.dtype}`);
}

function overlaps(x: Tensor, y: Tensor): boolean {
  return x.buffer === y.buffer && x.offset < y.offset + y.bytes && y.offset < x.offset + x.bytes;
}

/**
 * Encodes `out = alpha * op(a) @ op(b)` (or `out += ...`), batched.
 *
 * @param out f32 [...batch, M, N] (or [M, N] with `sumBatch`); must not overlap a or b.
 * @param a f32 [...batch, M, K] ([..., K, M] with `transA`), or 2-D shared by every batch entry.
 * @param b f32 [...batch, K, N] ([..., N, K] with `transB`), or 2-D shared by every batch entry.
 * @throws when the shapes do not fit together (the message gives both shapes), a tensor is not
 *   f32, or `out` overlaps an input.
 * @example
 * matmulForward(y, x, w, { transB: true }); // y [T, out] = x [T, in] @ w [out, in]^T
 */
export function matmulForward(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
  assertF32(out, "out");
  assertF32(a, "a");
  assertF32(b, "b");
  const transA = Boolean(opts.transA), transB = Boolean(opts.transB);
  const sh = matmulShape(a.shape, b.shape, { transA, transB });
  const { M, N, K, Z } = sh;
  const sumBatch = Boolean(opts.sumBatch) && Z > 1;
  const want = opts.sumBatch ? [M, N] : [...sh.batch, M, N];
  if (out.shape.join() !== want.join()) {
    throw new Error(
      `matmul: out is [${out.shape}] but op(a) [${a.shape}] @ op(b) [${b.shape}] ` +
        `gives [${want}]`,
    );
  }
  if (overlaps(out, a) || overlaps(out, b)) throw new Error("matmul: out overlaps an input");
  if (M === 0 || N === 0) return;
  // vec4 reads need the operand's contiguous dim, and so every row start, to be a multiple of 4.
  const vecA = (transA ? M : K) % 4 === 0;
  const vecB = (transB ? K : N) % 4 === 0;
  const quadC = N % 4 === 0, tailK = K % 4 !== 0;
  const [TM, TN] = pickTile(M, N, { quadM: transA && vecA, quadN: quadC, vec: vecA && vecB });
  const accumulate = Boolean(opts.accumulate);
  const strideA = sh.batchedA ? M * K : 0, strideB = sh.batchedB ? K * N : 0;
  if (out.device.kind === "cpu") {
    const alpha = opts.alpha ?? 1;
    hostMatmul(out, a, b, {
      M,
      N,
      K,
      Z,
      strideA,
      strideB,
      transA,
      transB,
      alpha,
      accumulate,
      sumBatch,
    });
    return;
  }
  const spec: MatmulSpec = { transA, transB, vecA, vecB, TM, TN, quadC, tailK, accumulate };
  const gpu = webgpu(out.device, "matmul");
  const flags = [transA, transB, vecA, vecB, quadC, tailK, accumulate].map(Number).join("");
  const key = `${flags}|${TM}x${TN}`;
  const pipeline = gpu.pipeline("matmul", key, () => matmulSource(spec));
  // sumBatch: one output (z = 0) looping r over the Z entries; the z strides are unused.
  const R = sumBatch ? Z : 1, zCount = sumBatch ? 1 : Z;
  // Row tiles run fastest, so consecutive workgroups (and the CPU driver's threads working
  // side by side) share one column panel of B, the larger operand block, while it is in cache.
  const gx = Math.ceil(M / TM), gy = Math.ceil(N / (L * TN));
  const bindings = [a.binding, b.binding, out.binding];
  // Fold grids past the 65535-workgroup limit into several dispatches with offsets.
  for (let z0 = 0; z0 < zCount; z0 += MAX_GROUPS) {
    for (let y0 = 0; y0 < gy; y0 += MAX_GROUPS) {
      for (let x0 = 0; x0 < gx; x0 += MAX_GROUPS) {
        const params = new Params()
          .u32(M).u32(N).u32(K).f32(opts.alpha ?? 1)
          .u32(sumBatch ? 0 : strideA).u32(sumBatch ? 0 : strideB).u32(M * N).u32(R)
          .u32(sumBatch ? strideA : 0).u32(sumBatch ? strideB : 0).u32(x0).u32(y0)
          .u32(z0).u32(0).u32(0).u32(0);
        const groups: [number, number, number] = [
          Math.min(MAX_GROUPS, gx - x0),
          Math.min(MAX_GROUPS, gy - y0),
          Math.min(MAX_GROUPS, zCount - z0),
        ];
        gpu.dispatch(pipeline, bindings, groups, params);
      }
    }
  }
}

/**
 * Encodes the gradients of `c = alpha * op(a) @ op(b)`: `da` and/or `db` (null to skip), each
 * overwritten or added into (`accumulateA`, `accumulateB`). A 2-D operand shared across the
 * batch gets the sum over the batch.
 *
 *     d op(A) = alpha * dC @ op(B)^T,   d op(B) = alpha * op(A)^T @ dC
 *
 * @param da f32, a's shape, or null.
 * @param db f32, b's shape, or null.
 * @param dc f32, c's shape: the upstream gradient.
 * @throws as {@linkcode matmulForward}.
 * @example matmulBackward(dq, dk, dScores, q, k, { transB: true });
 */
export function matmulBackward(
  da: Tensor | null,
  db: Tensor | null,
  dc: Tensor,
  a: Tensor,
  b: Tensor,
  opts: MatmulBackwardOptions = {},
): void {
  const transA = Boolean(opts.transA), transB = Boolean(opts.transB), alpha = opts.alpha ?? 1;
  const sh = matmulShape(a.shape, b.shape, { transA, transB });
  if (da) {
    const o = { alpha, accumulate: opts.accumulateA, sumBatch: sh.batchedB && !sh.batchedA };
    // dA = alpha dC op(B)^T, stored transposed when A is: dA^T = alpha op(B) dC^T
    if (!transA) matmulForward(da, dc, b, { ...o, transB: !transB });
    else matmulForward(da, b, dc, { ...o, transA: transB, transB: true });
  }
  if (db) {
    const o = { alpha, accumulate: opts.accumulateB, sumBatch: sh.batchedA && !sh.batchedB };
    // dB = alpha op(A)^T dC, stored transposed when B is: dB^T = alpha dC^T op(A)
    if (!transB) matmulForward(db, a, dc, { ...o, transA: !transA });
    else matmulForward(db, dc, a, { ...o, transA: true, transB: transA });
  }
}

/** Options of {@linkcode matmulBackward}: the forward's options plus where to add. */
export interface MatmulBackwardOptions {
  /** As in the forward. */
  transA?: boolean;
  /** As in the forward. */
  transB?: boolean;
  /** As in the forward. */
  alpha?: number;
  /** Add into `da` instead of overwriting it. */
  accumulateA?: boolean;
  /** Add into `db` instead of overwriting it. */
  accumulateB?: boolean;
}

/**
 * `alpha * op(a) @ op(b)`, batched (a 2-D operand is shared by every batch entry), with
 * autograd for both operands.
 *
 * @param a f32 [...batch, M, K] ([..., K, M] with `transA`).
 * @param b f32 [...batch, K, N] ([..., N, K] with `transB`).
 * @returns f32 [...batch, M, N].
 * @throws as {@linkcode matmulForward}.
 * @example const scores = matmul(q, k, { transB: true, alpha: 1 / Math.sqrt(dk) }); // [BH, T, T]
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  opts: { transA?: boolean; transB?: boolean; alpha?: number } = {},
): Tensor {
  const sh = matmulShape(a.shape, b.shape, opts);
  const c = Tensor.empty(a.device, [...sh.batch, sh.M, sh.N]);
  matmulForward(c, a, b, opts);
  if (needsGrad(a, b)) {
    record("matmul", [c], () => {
      if (!c.grad) return;
      const ga = a.requiresGrad ? gradFor(a) : null;
      const gb = b.requiresGrad ? gradFor(b) : null;
      matmulBackward(ga?.grad ?? null, gb?.grad ?? null, c.grad, a, b, {
        ...opts,
        accumulateA: ga?.accumulate,
        accumulateB: gb?.accumulate,
      });
    });
  }
  return c;
}

/**
 * A linear layer without bias, `y = alpha * x @ W^T`, with W in the HF layout [out, in], and
 * autograd: dx = alpha dy @ W, dW += alpha dy^T @ x.
 *
 * @param x f32 [..., in].
 * @param w f32 [out, in].
 * @returns f32 [..., out].
 * @throws when x's last dim is not w's second.
 * @example const q = linear(h, qProj); // [B, T, D] -> [B, T, H * dh]
 */
export function linear(x: Tensor, w: Tensor, opts: { alpha?: number } = {}): Tensor {
  const { M, fin, fout } = linearDims(x.shape, w.shape);
  const y = Tensor.empty(x.device, [...x.shape.slice(0, -1), fout]);
  const x2 = x.reshape([M, fin]), y2 = y.reshape([M, fout]);
  matmulForward(y2, x2, w, { transB: true, alpha: opts.alpha });
  if (needsGrad(x, w)) {
    record("linear", [y], () => {
      if (!y.grad) return;
      const ga = x.requiresGrad ? gradFor(x) : null;
      const gw = w.requiresGrad ? gradFor(w) : null;
      matmulBackward(
        ga?.grad.reshape([M, fin]) ?? null,
        gw?.grad ?? null,
        y.grad.reshape([M, fout]),
        x2,
        w,
        {
          transB: true,
          alpha: opts.alpha,
          accumulateA: ga?.accumulate,
          accumulateB: gw?.accumulate,
        },
      );
    });
  }
  return y;
}

function linearDims(x: readonly number[], w: readonly number[]) {
  if (w.length !== 2 || x.length < 1 || x[x.length - 1] !== w[1]) {
    throw new Error(
      `linear: x [${x}] needs its last dim to be w's in_features (w [${w}] = [out, in])`,
    );
  }
  return { M: x.slice(0, -1).reduce((p, d) => p * d, 1), fin: w[1], fout: w[0] };
}

/** Options of {@linkcode matmulCpu}: the operand shapes and the forward's options. */
export interface MatmulCpuOptions {
  /** Shape of `a` ([...batch, M, K], or [..., K, M] with transA). */
  aShape: readonly number[];
  /** Shape of `b` ([...batch, K, N], or [..., N, K] with transB). */
  bShape: readonly number[];
  /** As {@linkcode MatmulOptions.transA}. */
  transA?: boolean;
  /** As {@linkcode MatmulOptions.transB}. */
  transB?: boolean;
  /** As {@linkcode MatmulOptions.alpha}. */
  alpha?: number;
  /** As {@linkcode MatmulOptions.sumBatch}. */
  sumBatch?: boolean;
  /** Initial output to add into (the `accumulate` of the GPU launcher). */
  out?: ArrayLike<number>;
}

/**
 * CPU twin of {@linkcode matmulForward}: `alpha * op(a) @ op(b)` (+ `out`), each element summed
 * in k order in f64 and returned in `a`'s array type (Float64Array for finite differences).
 *
 * @returns [...batch, M, N] (or [M, N] with sumBatch), row-major.
 * @example matmulCpu(new Float64Array([1, 2]), new Float64Array([3, 4]), { aShape: [1, 2], bShape: [2, 1] }) // [11]
 */
export function matmulCpu<A extends Floats>(a: A, b: Floats, opts: MatmulCpuOptions): A {
  const transA = Boolean(opts.transA), transB = Boolean(opts.transB), alpha = opts.alpha ?? 1;
  const { M, N, K, Z, batchedA, batchedB } = matmulShape(opts.aShape, opts.bShape, opts);
  const sum = Boolean(opts.sumBatch);
  const c =
    (a instanceof Float64Array
      ? new Float64Array((sum ? 1 : Z) * M * N)
      : new Float32Array((sum ? 1 : Z) * M * N)) as A;
  for (let z = 0; z < Z; z++) {
    const ao = batchedA ? z * M * K : 0, bo = batchedB ? z * K * N : 0, co = sum ? 0 : z * M * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          s += a[ao + (transA ? k * M + m : m * K + k)] * b[bo + (transB ? n * K + k : k * N + n)];
        }
        c[co + m * N + n] += alpha * s;
      }
    }
  }
  if (opts.out) { for (let i = 0; i < c.length; i++) c[i] += opts.out[i]; }
  return c;
}

/**
 * CPU twin of {@linkcode matmulBackward}: `{ da, db }` in the shapes of a and b (a shared 2-D
 * operand's gradient summed over the batch).
 *
 * @example const { da, db } = matmulBackwardCpu(dc, { a, b, aShape, bShape, transB: true });
 */
export function matmulBackwardCpu<A extends Floats>(
  dc: A,
  opts: { a: Floats; b: Floats } & Omit<MatmulCpuOptions, "out" | "sumBatch">,
): { da: A; db: A } {
  const { aShape, bShape, transA = false, transB = false, alpha = 1 } = opts;
  const sh = matmulShape(aShape, bShape, opts);
  const cShape = [...sh.batch, sh.M, sh.N];
  const sumA = sh.batchedB && !sh.batchedA, sumB = sh.batchedA && !sh.batchedB;
  const run = (
    x: Floats,
    xs: readonly number[],
    y: Floats,
    ys: readonly number[],
    ta: boolean,
    tb: boolean,
    sumBatch: boolean,
  ) => matmulCpu(x as A, y, { aShape: xs, bShape: ys, transA: ta, transB: tb, alpha, sumBatch });
  const da = !transA
    ? run(dc, cShape, opts.b, bShape, false, !transB, sumA)
    : run(opts.b, bShape, dc, cShape, transB, true, sumA);
  const db = !transB
    ? run(opts.a, aShape, dc, cShape, !transA, false, sumB)
    : run(dc, cShape, opts.a, aShape, true, transA, sumB);
  return { da: toLike(dc, da), db: toLike(dc, db) };
}

function toLike<A extends Floats>(like: A, x: Floats): A {
  return (like instanceof Float64Array ? Float64Array.from(x) : Float32Array.from(x)) as A;
}

/**
 * CPU twin of {@linkcode linear}: `y [rows, out] = alpha * x [rows, in] @ w^T`.
 * @example linearCpu(new Float64Array([1, 2]), new Float64Array([3, 4]), { fout: 1 }) // [11]
 */
export function linearCpu<A extends Floats>(
  x: A,
  w: Floats,
  opts: { fout: number; alpha?: number },
): A {
  const fin = w.length / opts.fout, rows = x.length / fin;
  return matmulCpu(x, w, {
    aShape: [rows, fin],
    bShape: [opts.fout, fin],
    transB: true,
    alpha: opts.alpha,
  });
}

/**
 * CPU twin of the backward of {@linkcode linear}: `{ dx: alpha dy @ w, dw: alpha dy^T @ x }`.
 * @example const { dx, dw } = linearBackwardCpu(dy, { x, w, fout });
 */
export function linearBackwardCpu<A extends Floats>(
  dy: A,
  opts: { x: Floats; w: Floats; fout: number; alpha?: number },
): { dx: A; dw: A } {
  const fin = opts.w.length / opts.fout, rows = opts.x.length / fin;
  const { da, db } = matmulBackwardCpu(dy, {
    a: opts.x,
    b: opts.w,
    aShape: [rows, fin],
    bShape: [opts.fout, fin],
    transB: true,
    alpha: opts.alpha,
  });
  return { dx: da, dw: db };
}
