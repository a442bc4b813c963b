/**
 * Low-precision linear layers: `y = x @ W^T` with the GEMM inputs in FP8 (an emulation of
 * DeepSeek-V3's recipe) or f16, f32 accumulation and f32 outputs, with autograd, the GEMM
 * kernels, the f16 conversion kernel, and the CPU twins.
 *
 * Legend: M rows of x (tokens), N = out features, K = in features, R x C a converted operand
 * (C its reduction dim), Kw = ceil(K / 4) packed FP8 words, KB = ceil(K / 128) K blocks,
 * Kp = roundUp(K, 4) padded f16 row, TM x TN outputs per thread, L = 8 threads per workgroup.
 *
 *     every GEMM here is "NT":  C [M, N] (+)= A [M, K] . B [N, K]^T, both operands with K
 *     contiguous, so each operand is first converted (and transposed when needed) by a kernel:
 *
 *     fp8 forward  y  [M, N] = Q(x) . Q_blk(W)^T       x in 1x128 tiles, W in 128x128 blocks
 *         dgrad    dx [M, K] = Q(dy) . Q_blk(W^T)^T     dy tiled along N; W^T's blocks = W's
 *         wgrad    dW [N, K] = Q(dy^T) . Q(x^T)^T       dy and x tiled along the token dim M
 *                                                      (V3's 128x1 tiles of the backward)
 *     f16          the same three GEMMs with every operand rounded to f16 (nearest even)
 *
 * FP8 accumulation (V3 section 3.3.2, "increasing accumulation precision"): the products of
 * decoded E4M3 values (exact in f32) are summed in f32 within each 128-wide K block, then the
 * block sum is multiplied by (activation tile scale * weight block scale) and added to the f32
 * output accumulator: the "promotion to CUDA cores" every 128 elements. f16 products are exact in
 * f32 too and are summed in k order.
 *
 * Master weights, gradients (accumulated in f32) and optimizer state stay f32; the weight is
 * re-quantized (or re-converted) from the f32 master at every use. Simplifications against V3:
 * the backward re-quantizes dy and the f32 x (kept by the tape anyway) instead of caching the
 * forward's FP8 x and re-quantizing it transposed; E4M3 everywhere (V3 also uses E4M3 for
 * gradients); no kernel fusion of quantization into the producers.
 *
 * Kernel shape (as `matmul.ts`, tuned for lavapipe): L = 8 threads, each with TM x TN
 * accumulators in registers, one packed word (4 FP8 codes) or one vec4<f16> per operand row per
 * inner step. Each output is summed by one thread in a fixed order: the same inputs give the same
 * bits. No atomics.
 *
 * The f16 GEMM loads `vec4<f16>` (`enable f16;`, so it needs `shader-f16`). Reading the same bits
 * as u32 pairs through `unpack2x16float` is faster on lavapipe (bench/README.md) and would need
 * no feature; on GPUs both are one load and a conversion.
 *
 * On the CPU backend `fp8Gemm` runs `host/lowp_linear.ts` (decoded operands, one BLAS GEMM per
 * 128-wide K block, the same f32 promotion); f16 needs `shader-f16` and is refused there.
 *
 * Left out: the grouped expert GEMM (`moe_gemm.ts`) stays f32; a bias; `alpha`; caching a
 * weight's quantization across the calls of one step.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch1d, webgpu } from "./_launch.ts";
import { Params, WGSL_FLAT_INDEX } from "./gpu.ts";
import { roundUp } from "./device.ts";
import { hostFp8Gemm } from "./host/lowp_linear.ts";
import {
  codeAt,
  e4m3Decode,
  QUANT_TILE,
  quantize,
  quantizeCpu,
  type Quantized,
  type QuantizedCpu,
  scaleAt,
} from "./quant.ts";
import { f16ToF32, f32ToF16, Tensor } from "./tensor.ts";

/** Threads per workgroup: one 8-wide SIMD group of lavapipe. */
const L = 8;
/** Largest workgroup count per grid dimension. */
const MAX_GROUPS = 65535;

// ---------------------------------------------------------------------------------------------
// f16 operands

/** A matrix rounded to f16, rows padded with zeros to a multiple of 4 (vec4<f16> loads). */
export interface HalfMatrix {
  /** f16 [R, roundUp(C, 4)]. */
  t: Tensor;
  /** R */
  rows: number;
  /** C, the unpadded columns. */
  cols: number;
}

/** What {@linkcode assertF16} needs of a device. */
export interface F16Capable {
  /** Whether the device has `shader-f16`. */
  readonly hasF16: boolean;
  /** The adapter or backend, for the error message. */
  readonly info: { description: string; backend?: string };
}

/**
 * Throws unless the device has the `shader-f16` feature, saying what to use instead.
 * @throws on the CPU backend (it computes in f32) and on adapters without `shader-f16`.
 * @example assertF16(gpu); // before building an f16 model
 */
export function assertF16(gpu: F16Capable): void {
  if (gpu.hasF16) return;
  if (gpu.info.backend === "cpu") {
    throw new Error(
      `--precision f16 needs a WebGPU adapter with the feature "shader-f16"; the CPU backend ` +
        `computes in f32: use --precision f32 or --precision fp8 (or --device gpu)`,
    );
  }
  throw new Error(
    `--precision f16 needs the WebGPU feature "shader-f16", which this adapter ` +
      `(${gpu.info.description}) does not offer; use --precision f32 or --precision fp8`,
  );
}

/** f32 -> f16 bits with round to nearest even (as `f32ToF16` in tensor.ts), on raw bits. */
const WGSL_HALF = /* wgsl */ `
fn half_of(x: u32) -> u32 {
  let sign = (x >> 16u) & 0x8000u;
  let exp = i32((x >> 23u) & 0xffu);
  var mant = x & 0x7fffffu;
  if (exp == 255) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = exp - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    var h = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u) == 1u)) { h += 1u; }
    return sign | h;
  }
  var h = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) { h += 1u; }
  return sign | h;
}`;

const HALF_WG = 64;

function halfSource(transpose: boolean): string {
  const at = (c: string) => transpose ? `x[${c} * p.R + r]` : `x[r * p.C + ${c}]`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
struct P { R: u32, C: u32, W: u32, _p: u32 }
@group(0) @binding(2) var<storage, read> p: P;
${WGSL_FLAT_INDEX}
${WGSL_HALF}
@compute @workgroup_size(${HALF_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wid, nwg, li, ${HALF_WG}u);
  if (i >= p.R * p.W) { return; }
  ${transpose ? "let r = i % p.R; let w = i / p.R;" : "let r = i / p.W; let w = i % p.W;"}
  let c = 2u * w;
  var lo = 0u;
  var hi = 0u;
  if (c < p.C) { lo = half_of(${at("c")}); }
  if (c + 1u < p.C) { hi = half_of(${at("(c + 1u)")}); }
  out[r * p.W + w] = lo | (hi << 16u);
}`;
}

/**
 * Rounds `x`, read as a matrix [rows, last dim] (or its transpose), to f16 with rows padded to a
 * multiple of 4. The result belongs to the current scope.
 *
 * @param x f32 [..., C] ([..., R] with `transpose`: the result is x^T).
 * @returns f16 [R, roundUp(C, 4)], zero padded.
 * @throws when x is not f32 or the device lacks `shader-f16` (the CPU backend does).
 * @example const h = toHalf(x); // x [M, 30] -> h.t f16 [M, 32]
 */
export function toHalf(x: Tensor, opts: { transpose?: boolean } = {}): HalfMatrix {
  assertF16(x.device);
  if (x.dtype !== "f32") throw new Error(`toHalf: x must be f32, got ${x.dtype}`);
  const transpose = Boolean(opts.transpose);
  const cols0 = x.shape[x.shape.length - 1], rows0 = cols0 === 0 ? 0 : x.size / cols0;
  const R = transpose ? cols0 : rows0, C = transpose ? rows0 : cols0;
  const Cp = roundUp(C, 4), W = Cp / 2;
  const t = Tensor.empty(x.device, [R, Cp], "f16");
  launch1d(
    x.device,
    "to_half",
    `${+transpose}`,
    () => halfSource(transpose),
    [x.binding, t.binding],
    R * W,
    (p) => p.u32(R).u32(C).u32(W).u32(0),
    HALF_WG,
  );
  return { t, rows: R, cols: C };
}

/**
 * CPU twin of {@linkcode toHalf}: f16 bits [R, roundUp(C, 4)]; equals the kernel bit for bit.
 * @example toHalfCpu(x, { rows: M, cols: K })
 */
export function toHalfCpu(
  x: Float32Array,
  opts: { rows: number; cols: number; transpose?: boolean },
): Uint16Array {
  const { rows: R, cols: C } = opts, Cp = roundUp(C, 4);
  const out = new Uint16Array(R * Cp);
  const one = new Float32Array(1);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      one[0] = opts.transpose ? x[c * R + r] : x[r * C + c];
      out[r * Cp + c] = f32ToF16(one)[0];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The GEMM kernel

/** Operand formats of the GEMM. */
export type LowpFormat = "fp8" | "f16";

/** One compiled specialization. */
interface Spec {
  fmt: LowpFormat;
  TM: number;
  TN: number;
  /** B's scales are per 128 x 128 block (else per 1 x 128 tile); fp8 only. */
  bBlock: boolean;
  accumulate: boolean;
}

/**
 * The register tile: 8 x 16 outputs per thread (the best of 4x8 .. 16x8 measured on lavapipe for
 * both formats at the nano/mini shapes, see bench/precision.ts), smaller for small outputs so no
 * thread computes rows and columns that are thrown away.
 */
function pickTile(M: number, N: number): [number, number] {
  const TM = M > 4 ? 8 : M > 2 ? 4 : Math.max(1, M);
  let TN = 1;
  while (TN < 16 && N > L * TN) TN *= 2;
  return [TM, TN];
}

/** Decodes four E4M3 codes of a word (byte k = element k) as in `e4m3_dec`, NaN codes aside. */
const WGSL_DEC4 = /* wgsl */ `
fn dec4(w: u32) -> vec4<f32> {
  let c = (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
  let mag = c & vec4<u32>(0x7fu);
  let sub = mag < vec4<u32>(8u);
  let bits = (mag << vec4<u32>(20u)) + vec4<u32>(120u << 23u) +
    select(vec4<u32>(0u), vec4<u32>(1u << 23u), sub);
  let v = bitcast<vec4<f32>>(bits) - select(vec4<f32>(0.0), vec4<f32>(0.015625), sub);
  return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) | ((c & vec4<u32>(0x80u)) << vec4<u32>(24u)));
}`;

/**
 * WGSL of one specialization. Thread `lane` of workgroup (x, y) owns rows m0 + i (i < TM) and
 * columns n0 + lane + 8 j (j < TN); rows and columns past M, N read clamped rows and are not
 * stored. Operand rows are `p.W` words (fp8: 4 codes; f16: one vec4<f16>) long.
 */
function lowpSource(s: Spec): string {
  const { fmt, TM, TN } = s;
  const I = [...Array(TM).keys()], J = [...Array(TN).keys()];
  const fp8 = fmt === "fp8";
  const load = (arr: string, idx: string) =>
    fp8 ? `dec4(${arr}[${idx}])` : `vec4<f32>(${arr}[${idx}])`;
  const sum = fp8 ? "ps" : "acc";
  const inner: string[] = [];
  for (const i of I) inner.push(`let a${i} = ${load("A", `ra${i} + w`)};`);
  for (const j of J) inner.push(`let b${j} = ${load("B", `rb${j} + w`)};`);
  for (const kk of ["x", "y", "z", "w"]) {
    for (const i of I) {
      for (const j of J) {
        inner.push(`${sum}${i}_${j} = fma(a${i}.${kk}, b${j}.${kk}, ${sum}${i}_${j});`);
      }
    }
  }
  const decl = (name: string) => I.flatMap((i) => J.map((j) => `var ${name}${i}_${j} = 0.0;`));
  const bases = [
    ...I.map((i) => `let ri${i} = min(m0 + ${i}u, p.M - 1u); let ra${i} = ri${i} * p.W;`),
    ...J.map((j) => `let cj${j} = min(n0 + ${8 * j}u, p.N - 1u); let rb${j} = cj${j} * p.W;`),
  ];
  let loop: string;
  if (fp8) {
    const sb = (j: number) => s.bBlock ? `(cj${j} / ${QUANT_TILE}u)` : `cj${j}`;
    loop = `
  for (var kb = 0u; kb < p.KB; kb++) {
    ${decl("ps").join(" ")}
    let w1 = min(kb * ${QUANT_TILE / 4}u + ${QUANT_TILE / 4}u, p.W);
    for (var w = kb * ${QUANT_TILE / 4}u; w < w1; w++) {
      ${inner.join("\n      ")}
    }
    // promotion: scale this K block's sum and add it to the f32 accumulator
    ${I.map((i) => `let sa${i} = SA[ri${i} * p.KB + kb];`).join(" ")}
    ${J.map((j) => `let sb${j} = SB[${sb(j)} * p.KB + kb];`).join(" ")}
    ${
      I.flatMap((i) =>
        J.map((j) => `acc${i}_${j} = acc${i}_${j} + ps${i}_${j} * (sa${i} * sb${j});`)
      ).join("\n    ")
    }
  }`;
  } else {
    loop = `
  for (var w = 0u; w < p.W; w++) {
    ${inner.join("\n    ")}
  }`;
  }
  const stores = I.flatMap((i) =>
    J.map((j) => {
      const idx = `(m0 + ${i}u) * p.N + n0 + ${8 * j}u`;
      const v = s.accumulate ? `acc${i}_${j} + C[${idx}]` : `acc${i}_${j}`;
      return `if (m0 + ${i}u < p.M && n0 + ${8 * j}u < p.N) { C[${idx}] = ${v}; }`;
    })
  );
  const operand = fp8 ? "array<u32>" : "array<vec4<f16>>";
  const bindings = fp8
    ? `
@group(0) @binding(0) var<storage, read> A: ${operand};
@group(0) @binding(1) var<storage, read> SA: array<f32>;
@group(0) @binding(2) var<storage, read> B: ${operand};
@group(0) @binding(3) var<storage, read> SB: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;
@group(0) @binding(5) var<storage, read> p: P;`
    : `
@group(0) @binding(0) var<storage, read> A: ${operand};
@group(0) @binding(1) var<storage, read> B: ${operand};
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<storage, read> p: P;`;
  return /* wgsl */ `${fp8 ? "" : "enable f16;"}
struct P { M: u32, N: u32, W: u32, KB: u32, m_off: u32, n_off: u32, _a: u32, _b: u32 }
${bindings}
${fp8 ? WGSL_DEC4 : ""}
@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let m0 = (wid.y + p.m_off) * ${TM}u;
  let n0 = (wid.x + p.n_off) * ${L * TN}u + lane;
  ${bases.join("\n  ")}
  ${decl("acc").join(" ")}
  ${loop}
  ${stores.join("\n  ")}
}`;
}

/** Throws unless `out` is f32 with M * N elements. */
function checkGemmOut(out: Tensor, fmt: LowpFormat, M: number, N: number): void {
  if (out.dtype !== "f32" || out.size !== M * N) {
    throw new Error(`${fmt} GEMM: out is [${out.shape}] ${out.dtype}, want f32 [${M}, ${N}]`);
  }
}

/** Options of the GEMM launchers. */
export interface LowpGemmOptions {
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

function encodeGemm(
  out: Tensor,
  spec: Spec,
  bindings: Tensor[],
  size: { M: number; N: number; W: number; KB: number },
): void {
  const { M, N, W, KB } = size;
  if (M === 0 || N === 0) return;
  const gpu = webgpu(out.device, `gemm_${spec.fmt}`);
  const key = `${spec.TM}x${spec.TN}|${+spec.bBlock}${+spec.accumulate}`;
  const pipeline = gpu.pipeline(`gemm_${spec.fmt}`, key, () => lowpSource(spec));
  const gx = Math.ceil(N / (L * spec.TN)), gy = Math.ceil(M / spec.TM);
  const binds = [...bindings.map((t) => t.binding), out.binding];
  for (let y0 = 0; y0 < gy; y0 += MAX_GROUPS) {
    for (let x0 = 0; x0 < gx; x0 += MAX_GROUPS) {
      const params = new Params().u32(M).u32(N).u32(W).u32(KB).u32(y0).u32(x0).u32(0).u32(0);
      const groups: [number, number, number] = [
        Math.min(MAX_GROUPS, gx - x0),
        Math.min(MAX_GROUPS, gy - y0),
        1,
      ];
      gpu.dispatch(pipeline, binds, groups, params);
    }
  }
}

/**
 * Encodes `out [M, N] (+)= dequant(a) [M, K] @ dequant(b) [N, K]^T` the FP8 way: E4M3 products
 * summed in f32 per 128-wide K block, each block sum times (a's tile scale * b's scale) added to
 * the f32 accumulator. `a` must have 1 x 128 tile scales; `b` may have tile or block scales.
 * NaN codes, which `quantize` writes only into tiles with a NaN scale, decode as 480 here; the
 * NaN scale still makes those outputs NaN.
 *
 * @param out f32 [M, N] (any shape of M * N elements).
 * @param a quantized [M, K], tile scales.
 * @param b quantized [N, K].
 * @throws when the K dims differ, `a` has block scales, or out's size is wrong.
 * @example fp8Gemm(y, quantizeActivations(x), quantizeWeights(w)); // y = x @ w^T
 */
export function fp8Gemm(
  out: Tensor,
  a: Quantized,
  b: Quantized,
  opts: LowpGemmOptions = {},
): void {
  if (a.cols !== b.cols) {
    throw new Error(`fp8Gemm: a is [${a.rows}, ${a.cols}] but b is [${b.rows}, ${b.cols}] (NT)`);
  }
  if (a.block) throw new Error("fp8Gemm: a must have 1x128 tile scales, not block scales");
  const M = a.rows, N = b.rows;
  checkGemmOut(out, "fp8", M, N);
  if (out.device.kind === "cpu") {
    hostFp8Gemm(out, a, b, { accumulate: Boolean(opts.accumulate) });
    return;
  }
  const [TM, TN] = pickTile(M, N);
  const spec: Spec = { fmt: "fp8", TM, TN, bBlock: b.block, accumulate: Boolean(opts.accumulate) };
  encodeGemm(out, spec, [a.q, a.scales, b.q, b.scales], {
    M,
    N,
    W: Math.ceil(a.cols / 4),
    KB: Math.ceil(a.cols / QUANT_TILE),
  });
}

/**
 * Encodes `out [M, N] (+)= a [M, K] @ b [N, K]^T` with f16 operands: products (exact in f32)
 * summed in f32 in k order.
 *
 * @param out f32 [M, N] (any shape of M * N elements).
 * @throws when the device lacks `shader-f16` (the CPU backend does), the K dims differ or out's
 *   size is wrong.
 * @example f16Gemm(y, toHalf(x), toHalf(w)); // y = x @ w^T
 */
export function f16Gemm(
  out: Tensor,
  a: HalfMatrix,
  b: HalfMatrix,
  opts: LowpGemmOptions = {},
): void {
  assertF16(out.device);
  if (a.cols !== b.cols) {
    throw new Error(`f16Gemm: a is [${a.rows}, ${a.cols}] but b is [${b.rows}, ${b.cols}] (NT)`);
  }
  const M = a.rows, N = b.rows;
  checkGemmOut(out, "f16", M, N);
  const [TM, TN] = pickTile(M, N);
  const spec: Spec = { fmt: "f16", TM, TN, bBlock: false, accumulate: Boolean(opts.accumulate) };
  encodeGemm(out, spec, [a.t, b.t], { M, N, W: roundUp(a.cols, 4) / 4, KB: 0 });
}

// ---------------------------------------------------------------------------------------------
// Autograd ops

function linearDims(x: readonly number[], w: readonly number[]) {
  if (w.length !== 2 || x.length < 1 || x[x.length - 1] !== w[1]) {
    throw new Error(
      `linear: x [${x}] needs its last dim to be w's in_features (w [${w}] = [out, in])`,
    );
  }
  return { M: x.slice(0, -1).reduce((p, d) => p * d, 1), fin: w[1], fout: w[0] };
}

function checkF32(x: Tensor, w: Tensor, what: string): void {
  if (x.dtype !== "f32" || w.dtype !== "f32") {
    throw new Error(`${what}: x and w must be f32 (master copies), got ${x.dtype}, ${w.dtype}`);
  }
}

function free(...qs: (Quantized | HalfMatrix)[]): void {
  // Encoded work may still read them: the pool hands a buffer out again only to work encoded
  // later, which the queue runs after.
  for (const q of qs) {
    if ("t" in q) q.t.dispose();
    else {
      q.q.dispose();
      q.scales.dispose();
    }
  }
}

/**
 * A linear layer `y = x @ W^T` with FP8 (E4M3) GEMM inputs: x quantized per 1 x 128 tile, W per
 * 128 x 128 block, f32 accumulation promoted every 128 K elements; f32 output. Backward (V3):
 * dx = dy @ W and dW += dy^T @ x with FP8 inputs too (dy tiled along out for dx; dy and x tiled
 * along the tokens for dW), accumulated in f32 into f32 gradients.
 *
 * @param x f32 [..., in].
 * @param w f32 [out, in], the master weight.
 * @returns f32 [..., out].
 * @throws when x's last dim is not w's second, or either is not f32.
 * @example const q = linearFp8(h, qProj); // [N, D] -> [N, H * dh]
 */
export function linearFp8(x: Tensor, w: Tensor): Tensor {
  checkF32(x, w, "linearFp8");
  const { M, fin, fout } = linearDims(x.shape, w.shape);
  const y = Tensor.empty(x.device, [...x.shape.slice(0, -1), fout]);
  const x2 = x.reshape([M, fin]);
  const qx = quantize(x2), qw = quantize(w, { block: true });
  fp8Gemm(y, qx, qw);
  free(qx, qw);
  if (needsGrad(x, w)) {
    record("linear_fp8", [y], () => {
      if (!y.grad) return;
      const dy = y.grad.reshape([M, fout]);
      if (x.requiresGrad) {
        const { grad, accumulate } = gradFor(x);
        // dgrad: dx [M, in] = dy [M, out] . (W^T [in, out])^T; W^T's 128x128 blocks are W's
        const a = quantize(dy), b = quantize(w, { block: true, transpose: true });
        fp8Gemm(grad, a, b, { accumulate });
        free(a, b);
      }
      if (w.requiresGrad) {
        const { grad, accumulate } = gradFor(w);
        // wgrad: dW [out, in] = dy^T [out, M] . (x^T [in, M])^T, tiles along the tokens
        const a = quantize(dy, { transpose: true }), b = quantize(x2, { transpose: true });
        fp8Gemm(grad, a, b, { accumulate });
        free(a, b);
      }
    });
  }
  return y;
}

/**
 * A linear layer `y = x @ W^T` with f16 GEMM inputs (x and W rounded to f16 by a kernel at each
 * call), f32 accumulation and f32 output; the backward likewise (dy, W^T, dy^T, x^T in f16).
 *
 * @param x f32 [..., in].
 * @param w f32 [out, in], the master weight.
 * @returns f32 [..., out].
 * @throws when the device lacks `shader-f16` (the CPU backend does: use f32 or fp8), or the
 *   shapes do not fit.
 * @example const q = linearF16(h, qProj);
 */
export function linearF16(x: Tensor, w: Tensor): Tensor {
  assertF16(x.device);
  checkF32(x, w, "linearF16");
  const { M, fin, fout } = linearDims(x.shape, w.shape);
  const y = Tensor.empty(x.device, [...x.shape.slice(0, -1), fout]);
  const x2 = x.reshape([M, fin]);
  const hx = toHalf(x2), hw = toHalf(w);
  f16Gemm(y, hx, hw);
  free(hx, hw);
  if (needsGrad(x, w)) {
    record("linear_f16", [y], () => {
      if (!y.grad) return;
      const dy = y.grad.reshape([M, fout]);
      if (x.requiresGrad) {
        const { grad, accumulate } = gradFor(x);
        const a = toHalf(dy), b = toHalf(w, { transpose: true });
        f16Gemm(grad, a, b, { accumulate });
        free(a, b);
      }
      if (w.requiresGrad) {
        const { grad, accumulate } = gradFor(w);
        const a = toHalf(dy, { transpose: true }), b = toHalf(x2, { transpose: true });
        f16Gemm(grad, a, b, { accumulate });
        free(a, b);
      }
    });
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// CPU twins

/**
 * CPU twin of {@linkcode fp8Gemm}: `[M, N]`, each block sum accumulated in f32 in k order, then
 * `acc = fround(acc + fround(blockSum * fround(sa * sb)))`. Bit for bit the kernel on lavapipe; a
 * compiler that contracts the kernel's promotion into an fma may differ in the last bit.
 * @example const y = fp8GemmCpu(quantizeCpu(x, { rows: M, cols: K }), qwCpu);
 */
export function fp8GemmCpu(a: QuantizedCpu, b: QuantizedCpu): Float32Array {
  const M = a.rows, N = b.rows, K = a.cols;
  const out = new Float32Array(M * N);
  const da = Float64Array.from(
    { length: M * K },
    (_, i) => e4m3Decode(codeAt(a, Math.floor(i / K), i % K)),
  );
  const db = Float64Array.from(
    { length: N * K },
    (_, i) => e4m3Decode(codeAt(b, Math.floor(i / K), i % K)),
  );
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k0 = 0; k0 < K; k0 += QUANT_TILE) {
        let ps = 0;
        const k1 = Math.min(K, k0 + QUANT_TILE);
        for (let k = k0; k < k1; k++) ps = Math.fround(ps + da[m * K + k] * db[n * K + k]);
        const s = Math.fround(scaleAt(a, m, k0) * scaleAt(b, n, k0));
        acc = Math.fround(Math.fround(ps * s) + acc);
      }
      out[m * N + n] = acc;
    }
  }
  return out;
}

/**
 * CPU twin of {@linkcode f16Gemm} on f16 bits `a` [M, Kp], `b` [N, Kp]: products summed in f32 in
 * k order.
 * @example f16GemmCpu(toHalfCpu(x, { rows: M, cols: K }), toHalfCpu(w, { rows: N, cols: K }), { M, N, K })
 */
export function f16GemmCpu(
  a: Uint16Array,
  b: Uint16Array,
  size: { M: number; N: number; K: number },
): Float32Array {
  const { M, N } = size, Kp = roundUp(size.K, 4);
  const fa = f16ToF32(a), fb = f16ToF32(b);
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < Kp; k++) s = Math.fround(s + fa[m * Kp + k] * fb[n * Kp + k]);
      out[m * N + n] = s;
    }
  }
  return out;
}

/** Sizes of a host linear layer: x [rows, fin], w [fout, fin]. */
function hostDims(x: Float32Array, w: Float32Array, fout: number) {
  const fin = w.length / fout;
  return { fin, M: x.length / fin };
}

/**
 * CPU twin of {@linkcode linearFp8}'s forward: `y [rows, fout]`.
 * @example linearFp8Cpu(x, w, { fout: 64 })
 */
export function linearFp8Cpu(
  x: Float32Array,
  w: Float32Array,
  opts: { fout: number },
): Float32Array {
  const { fin, M } = hostDims(x, w, opts.fout);
  return fp8GemmCpu(
    quantizeCpu(x, { rows: M, cols: fin }),
    quantizeCpu(w, { rows: opts.fout, cols: fin, block: true }),
  );
}

/**
 * CPU twin of {@linkcode linearFp8}'s backward: `{ dx [rows, fin], dw [fout, fin] }` (dw not
 * accumulated).
 * @example const { dx, dw } = linearFp8BackwardCpu(dy, { x, w, fout });
 */
export function linearFp8BackwardCpu(
  dy: Float32Array,
  opts: { x: Float32Array; w: Float32Array; fout: number },
): { dx: Float32Array; dw: Float32Array } {
  const { x, w, fout } = opts;
  const { fin, M } = hostDims(x, w, fout);
  const dx = fp8GemmCpu(
    quantizeCpu(dy, { rows: M, cols: fout }),
    quantizeCpu(w, { rows: fin, cols: fout, block: true, transpose: true }),
  );
  const dw = fp8GemmCpu(
    quantizeCpu(dy, { rows: fout, cols: M, transpose: true }),
    quantizeCpu(x, { rows: fin, cols: M, transpose: true }),
  );
  return { dx, dw };
}

/**
 * CPU twin of {@linkcode linearF16}'s forward.
 * @example linearF16Cpu(x, w, { fout: 64 })
 */
export function linearF16Cpu(
  x: Float32Array,
  w: Float32Array,
  opts: { fout: number },
): Float32Array {
  const { fin, M } = hostDims(x, w, opts.fout);
  return f16GemmCpu(
    toHalfCpu(x, { rows: M, cols: fin }),
    toHalfCpu(w, { rows: opts.fout, cols: fin }),
    { M, N: opts.fout, K: fin },
  );
}

/**
 * CPU twin of {@linkcode linearF16}'s backward: `{ dx, dw }`.
 * @example const { dx, dw } = linearF16BackwardCpu(dy, { x, w, fout });
 */
export function linearF16BackwardCpu(
  dy: Float32Array,
  opts: { x: Float32Array; w: Float32Array; fout: number },
): { dx: Float32Array; dw: Float32Array } {
  const { x, w, fout } = opts;
  const { fin, M } = hostDims(x, w, fout);
  const dx = f16GemmCpu(
    toHalfCpu(dy, { rows: M, cols: fout }),
    toHalfCpu(w, { rows: fin, cols: fout, transpose: true }),
    { M, N: fin, K: fout },
  );
  const dw = f16GemmCpu(
    toHalfCpu(dy, { rows: fout, cols: M, transpose: true }),
    toHalfCpu(x, { rows: fin, cols: M, transpose: true }),
    { M: fout, N: fin, K: M },
  );
  return { dx, dw };
}
