/**
 * FP8 (E4M3) quantization with DeepSeek-V3's fine-grained scales: the codec, the quantize and
 * dequantize kernels, and their CPU twins.
 *
 * Legend: R rows and C columns of the matrix being quantized (C is the GEMM's reduction dim, the
 * one that is packed and tiled), W = ceil(C / 4) packed words per row, CB = ceil(C / 128) column
 * tiles, RB = ceil(R / 128) row blocks.
 *
 *     E4M3 (OCP FP8 E4M3FN): s eeee mmm, bias 7, no infinities, NaN = s.1111.111, max 448
 *       normal    e > 0: (-1)^s 2^(e-7) (1 + m/8)           2^-6 .. 448
 *       subnormal e = 0: (-1)^s 2^-6 (m/8)                  2^-9 .. 7 * 2^-9, and +-0
 *     q      u32 [R, W]    byte k of word i is the code of column 4i + k (zero codes pad the row)
 *     scales f32 [R, CB]   tiles of 1 x 128 ("activations": per row, per 128 columns), or
 *            f32 [RB, CB]  blocks of 128 x 128 ("weights")
 *     scale = max(amax, 1e-4) / 448 over the tile or block; code = E4M3(x / scale) rounded to
 *     nearest even and saturated to +-448; value = decode(code) * scale
 *
 * DeepSeek-V3 technical report, section 3.3.2 (fine-grained quantization) and 3.5.2 (the backward
 * pass re-quantizes transposed operands): `transpose` quantizes x^T without materialising it, so
 * the weight-gradient GEMM can tile along the token dim.
 *
 * Exactness: the kernels never divide in floating point (WGSL's f32 `/` may be 2.5 ulp off). The
 * scale amax / 448 and every quotient x / scale are rounded with integer arithmetic on the f32
 * bits, and the tile maximum is an integer max of |x|'s bits, so subnormal inputs are never
 * flushed. The CPU twins compute the same numbers in f64 (`Math.fround(amax / 448)`, and
 * `x / scale` whose f64 rounding cannot cross an E4M3 rounding boundary) and agree bit for bit.
 *
 * Non-finite inputs: a tile whose amax is Inf or NaN gets a NaN scale and NaN codes, so a diverged
 * activation stays visible instead of being saturated to 448.
 *
 * On the CPU backend the launchers run `host/quant.ts`, which stores the same bits.
 *
 * Left out: E5M2, power-of-two (UE8M0) scales, delayed (history-based) scaling.
 *
 * @module
 */
import { launch1d, webgpu } from "./_launch.ts";
import { hostDequantize, hostQuantize } from "./host/quant.ts";
import { WGSL_FLAT_INDEX } from "./gpu.ts";
import { Tensor } from "./tensor.ts";

/** Largest finite E4M3 magnitude. */
export const E4M3_MAX = 448;
/** Edge of a quantization tile / block (V3: 128). */
export const QUANT_TILE = 128;
/** Floor of a tile's amax, so an all-zero tile gets a finite, non-zero scale (V3: 1e-4). */
export const AMAX_FLOOR = 1e-4;

/** E4M3 code of NaN (the sign bit may be set too). */
const NAN_CODE = 0x7f;
/** E4M3 code of 448. */
const MAX_CODE = 0x7e;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The raw bits of `Math.fround(v)`. */
function bitsOf(v: number): number {
  f32[0] = v;
  return u32[0];
}

/** Bits of the f32 amax floor, inlined into the WGSL. */
const FLOOR_BITS = bitsOf(AMAX_FLOOR);

/** Rounds a non-negative number to the nearest integer, ties to even. */
function roundEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/**
 * Encodes a number as an E4M3 code: round to nearest even, saturate to +-448 (Inf too), NaN to
 * 0x7f, the sign of zero kept. The CPU reference of the kernels' codec.
 *
 * @example e4m3Encode(1) // 0x38
 * @example e4m3Encode(1.0625) // 0x38 (a tie between 1 and 1.125 goes to the even 1)
 * @example e4m3Encode(-1000) // 0xfe (-448)
 */
export function e4m3Encode(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  if (Number.isNaN(v)) return NAN_CODE;
  const a = Math.abs(v);
  if (a >= E4M3_MAX) return sign | MAX_CODE;
  if (a < 2 ** -6) return sign | roundEven(a * 512); // subnormal quanta of 2^-9 (8 -> 2^-6)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const n = roundEven(a / 2 ** (e - 3)); // 8 .. 16 quanta of 2^(e-3); 16 carries the exponent
  return sign | Math.min(MAX_CODE, ((e + 6) << 3) + n);
}

/**
 * The value of an E4M3 code (0..255).
 * @example e4m3Decode(0x38) // 1
 * @example e4m3Decode(0x01) // 2 ** -9
 */
export function e4m3Decode(code: number): number {
  const s = code & 0x80 ? -1 : 1, e = (code >> 3) & 15, m = code & 7;
  if ((code & 0x7f) === NAN_CODE) return NaN;
  return s * (e === 0 ? m * 2 ** -9 : (8 + m) * 2 ** (e - 10));
}

/**
 * The scale of a tile whose largest magnitude is `amax`: `fround(max(amax, 1e-4) / 448)`, NaN
 * when amax is not finite.
 * @example e4m3Scale(448) // 1
 */
export function e4m3Scale(amax: number): number {
  if (!Number.isFinite(amax)) return NaN;
  return Math.fround(Math.max(amax, Math.fround(AMAX_FLOOR)) / E4M3_MAX);
}

// ---------------------------------------------------------------------------------------------
// WGSL

/**
 * WGSL of the codec, on raw f32 bits:
 * - `scale_of(amax_bits)`: the f32 bits of max(amax, 1e-4) / 448, correctly rounded (NaN bits for
 *   a non-finite amax), from an integer division of amax's mantissa by 7.
 * - `e4m3_div(x_bits, s_bits)`: the E4M3 code of x / s, s a positive normal f32: x's mantissa
 *   times 64 divided by s's gives 6 or 7 quotient bits plus a sticky remainder, enough to round
 *   to E4M3's 3 mantissa bits (or its subnormal quanta) exactly.
 * - `e4m3_dec(code)`: the f32 value of a code (NaN codes decode as NaN).
 */
const WGSL_E4M3 = /* wgsl */ `
fn scale_of(ab: u32) -> u32 {
  if (ab >= 0x7f800000u) { return 0x7fc00000u; }
  let a = max(ab, ${FLOOR_BITS}u);
  let ea = a >> 23u;
  let num = ((a & 0x7fffffu) | 0x800000u) << 5u;     // [2^28, 2^29)
  let q = num / 7u;                                   // 26 or 27 bits
  let s = select(2u, 3u, q >= (1u << 26u));
  var m = q >> s;                                     // 24 bits
  let low = q & ((1u << s) - 1u);
  let half = 1u << (s - 1u);
  if (low > half || (low == half && (num != q * 7u || (m & 1u) == 1u))) { m += 1u; }
  // amax / 448 = m * 2^(ea - 161 + s); m = 2^24 after rounding carries into the exponent.
  return ((ea - 11u + s) << 23u) + (m - 0x800000u);
}

fn e4m3_div(xb: u32, sb: u32) -> u32 {
  let sign = (xb >> 24u) & 0x80u;
  let ax = xb & 0x7fffffffu;
  if (sb >= 0x7f800000u || ax > 0x7f800000u) { return sign | 0x7fu; }
  if (ax == 0x7f800000u) { return sign | 0x7eu; }
  if (ax == 0u) { return sign; }
  var ex = i32(ax >> 23u);
  var mx = ax & 0x7fffffu;
  if (ex == 0) {
    let lz = countLeadingZeros(mx) - 8u;              // normalise an f32 subnormal
    mx = mx << lz;
    ex = 1 - i32(lz);
  } else {
    mx = mx | 0x800000u;
  }
  let es = i32(sb >> 23u);
  let ms = (sb & 0x7fffffu) | 0x800000u;
  let num = mx << 6u;                                 // < 2^30
  let q = num / ms;                                   // (32, 128): x / s = q' 2^(ex - es - 6)
  let sticky = num != q * ms;
  let E = ex - es - select(1, 0, q >= 64u);           // floor(log2(x / s))
  if (E > 8) { return sign | 0x7eu; }
  let qe = max(E, -6) - 3;                            // exponent of one quantum
  let sh = u32(min(qe - (ex - es - 6), 31));          // >= 2
  var n = q >> sh;
  let low = q & ((1u << sh) - 1u);
  let half = 1u << (sh - 1u);
  if (low > half || (low == half && (sticky || (n & 1u) == 1u))) { n += 1u; }
  return sign | min(u32((qe + 9) * 8) + n, 0x7eu);
}

fn e4m3_dec(c: u32) -> f32 {
  let mag = c & 0x7fu;
  if (mag == 0x7fu) { return bitcast<f32>(0x7fc00000u | ((c & 0x80u) << 24u)); }
  let sub = mag < 8u;
  // exponent field e + 120 (e + 121 for e = 0, minus 2^-6 after) keeps every value normal
  let bits = (mag << 20u) + (120u << 23u) + select(0u, 1u << 23u, sub);
  let v = bitcast<f32>(bits) - select(0.0, 0.015625, sub);
  return bitcast<f32>(bitcast<u32>(v) | ((c & 0x80u) << 24u));
}
`;

// ---------------------------------------------------------------------------------------------
// Kernels

/** A matrix quantized to E4M3 with tile or block scales. */
export interface Quantized {
  /** u32 [R, ceil(C / 4)]: four codes per word, zero codes padding each row. */
  q: Tensor;
  /** f32 [R, ceil(C / 128)] (1 x 128 tiles) or [ceil(R / 128), ceil(C / 128)] (blocks). */
  scales: Tensor;
  /** R, rows of the quantized matrix. */
  rows: number;
  /** C, columns (the packed, tiled dim). */
  cols: number;
  /** Whether the scales are per 128 x 128 block (else per 1 x 128 tile). */
  block: boolean;
}

/** Options of {@linkcode quantize}. */
export interface QuantizeOptions {
  /** 128 x 128 block scales (weights) instead of 1 x 128 tile scales (activations). */
  block?: boolean;
  /**
   * Quantize x^T: x is read as [C, R] (its last dim is R) and the result is [R, C], packed and
   * tiled along x's leading dims (the token dim of a weight-gradient GEMM).
   */
  transpose?: boolean;
  /**
   * Use this scale for every tile instead of amax / 448 (tests of the codec: ties, saturation;
   * per-tensor scaling), rounded to f32, which must be positive and normal. Inputs are then
   * not checked for finiteness: Inf encodes as 448, NaN as NaN.
   */
  fixedScale?: number;
}

/** x read as a matrix [rows, last dim]. */
function matrixOf(x: Tensor): { rows: number; cols: number } {
  if (x.shape.length === 0) throw new Error("quantize: expected a tensor with at least one dim");
  const cols = x.shape[x.shape.length - 1];
  return { rows: cols === 0 ? 0 : x.size / cols, cols };
}

const WG = 64;

/** Tile amax (as bits), or the tile's scale when `final`: one thread per (row, column tile). */
function amaxSource(transpose: boolean, final: boolean): string {
  const at = transpose ? "x[c * p.R + r]" : "x[r * p.C + c]";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
struct P { R: u32, C: u32, CB: u32, _p: u32 }
@group(0) @binding(2) var<storage, read> p: P;
${WGSL_FLAT_INDEX}
${WGSL_E4M3}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wid, nwg, li, ${WG}u);
  if (i >= p.R * p.CB) { return; }
  // neighbouring threads take neighbouring ${
    transpose ? "rows (contiguous in x^T's storage)" : "tiles"
  }
  ${transpose ? "let r = i % p.R; let cb = i / p.R;" : "let r = i / p.CB; let cb = i % p.CB;"}
  let c1 = min(cb * ${QUANT_TILE}u + ${QUANT_TILE}u, p.C);
  var m = 0u;
  for (var c = cb * ${QUANT_TILE}u; c < c1; c++) { m = max(m, ${at} & 0x7fffffffu); }
  out[r * p.CB + cb] = ${final ? "scale_of(m)" : "m"};
}`;
}

/** Block scales from the tile amaxes [R, CB]: one thread per (row block, column tile). */
const BLOCK_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> amax: array<u32>;
@group(0) @binding(1) var<storage, read_write> scales: array<u32>;
struct P { R: u32, CB: u32, RB: u32, _p: u32 }
@group(0) @binding(2) var<storage, read> p: P;
${WGSL_FLAT_INDEX}
${WGSL_E4M3}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wid, nwg, li, ${WG}u);
  if (i >= p.RB * p.CB) { return; }
  let rb = i / p.CB;
  let cb = i % p.CB;
  let r1 = min(rb * ${QUANT_TILE}u + ${QUANT_TILE}u, p.R);
  var m = 0u;
  for (var r = rb * ${QUANT_TILE}u; r < r1; r++) { m = max(m, amax[r * p.CB + cb]); }
  scales[i] = scale_of(m);
}`;

/** Packs four codes per word: one thread per word of q [R, W]. */
function encodeSource(transpose: boolean, block: boolean): string {
  const at = transpose ? "x[c * p.R + r]" : "x[r * p.C + c]";
  const scale = `scales[${block ? `(r / ${QUANT_TILE}u)` : "r"} * p.CB + w / ${QUANT_TILE / 4}u]`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read_write> q: array<u32>;
struct P { R: u32, C: u32, CB: u32, W: u32 }
@group(0) @binding(3) var<storage, read> p: P;
${WGSL_FLAT_INDEX}
${WGSL_E4M3}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wid, nwg, li, ${WG}u);
  if (i >= p.R * p.W) { return; }
  ${transpose ? "let r = i % p.R; let w = i / p.R;" : "let r = i / p.W; let w = i % p.W;"}
  let s = ${scale};
  var word = 0u;
  for (var k = 0u; k < 4u; k++) {
    let c = 4u * w + k;
    if (c < p.C) { word = word | (e4m3_div(${at}, s) << (8u * k)); }
  }
  q[r * p.W + w] = word;
}`;
}

/**
 * Quantizes `x`, read as a matrix [rows, last dim] (or its transpose), to E4M3 with tile or block
 * scales. The result's tensors belong to the current scope.
 *
 * @param x f32 [..., C] ([..., R] with `transpose`).
 * @returns q u32 [R, ceil(C/4)] and scales f32 [R or ceil(R/128), ceil(C/128)].
 * @throws when x is not f32 or `fixedScale` is not a positive normal f32.
 * @example
 * const { q, scales } = quantize(x, {}); // x [M, K]: q [M, ceil(K/4)], scales [M, ceil(K/128)]
 */
export function quantize(x: Tensor, opts: QuantizeOptions = {}): Quantized {
  if (x.dtype !== "f32") throw new Error(`quantize: x must be f32, got ${x.dtype}`);
  const transpose = Boolean(opts.transpose), block = Boolean(opts.block);
  const m = matrixOf(x);
  const R = transpose ? m.cols : m.rows, C = transpose ? m.rows : m.cols;
  const W = Math.ceil(C / 4), CB = Math.ceil(C / QUANT_TILE), RB = Math.ceil(R / QUANT_TILE);
  const fixed = opts.fixedScale !== undefined;
  const s = Math.fround(opts.fixedScale ?? 1);
  if (!(s >= 2 ** -126 && s < Infinity)) {
    throw new Error(`quantize: fixedScale ${opts.fixedScale} must be a positive normal f32`);
  }
  const q = Tensor.empty(x.device, [R, W], "u32");
  const scales = Tensor.empty(x.device, [block ? RB : R, CB]);
  if (fixed) scales.upload(new Float32Array(scales.size).fill(s));
  if (x.device.kind === "cpu") {
    hostQuantize(x, q, scales, { R, C, transpose, block, fixed });
    return { q, scales, rows: R, cols: C, block };
  }
  const gpu = webgpu(x.device, "quantize");
  if (!fixed && R * C > 0) {
    const tiles = block ? Tensor.empty(gpu, [R, CB], "u32") : scales;
    launch1d(
      gpu,
      "quant_amax",
      `${+transpose}${+!block}`,
      () => amaxSource(transpose, !block),
      [x.binding, tiles.binding],
      R * CB,
      (p) => p.u32(R).u32(C).u32(CB).u32(0),
      WG,
    );
    if (block) {
      launch1d(
        gpu,
        "quant_block",
        "",
        () => BLOCK_SRC,
        [tiles.binding, scales.binding],
        RB * CB,
        (p) => p.u32(R).u32(CB).u32(RB).u32(0),
        WG,
      );
      tiles.dispose();
    }
  }
  launch1d(
    gpu,
    "quant_encode",
    `${+transpose}${+block}`,
    () => encodeSource(transpose, block),
    [x.binding, scales.binding, q.binding],
    R * W,
    (p) => p.u32(R).u32(C).u32(CB).u32(W),
    WG,
  );
  return { q, scales, rows: R, cols: C, block };
}

/**
 * Quantizes activations `x` [M, K] (any leading dims) per 1 x 128 tile.
 * @returns q u32 [M, ceil(K/4)], scales f32 [M, ceil(K/128)].
 * @example const qx = quantizeActivations(x);
 */
export function quantizeActivations(x: Tensor): Quantized {
  return quantize(x, {});
}

/**
 * Quantizes weights `w` [N, K] per 128 x 128 block.
 * @returns q u32 [N, ceil(K/4)], scales f32 [ceil(N/128), ceil(K/128)].
 * @example const qw = quantizeWeights(w);
 */
export function quantizeWeights(w: Tensor): Quantized {
  return quantize(w, { block: true });
}

const DEQUANT_SRC = (block: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
struct P { R: u32, C: u32, CB: u32, W: u32 }
@group(0) @binding(3) var<storage, read> p: P;
${WGSL_FLAT_INDEX}
${WGSL_E4M3}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wid, nwg, li, ${WG}u);
  if (i >= p.R * p.C) { return; }
  let r = i / p.C;
  let c = i % p.C;
  let code = (q[r * p.W + c / 4u] >> (8u * (c % 4u))) & 0xffu;
  let s = scales[${block ? `(r / ${QUANT_TILE}u)` : "r"} * p.CB + c / ${QUANT_TILE}u];
  out[i] = e4m3_dec(code) * s;
}`;

/**
 * The f32 values a {@linkcode Quantized} matrix stands for, `decode(code) * scale` (tests and
 * debugging).
 * @returns f32 [R, C].
 * @example const back = dequantize(quantizeWeights(w)); // within 1/16 relative of w
 */
export function dequantize(qt: Quantized): Tensor {
  const { rows: R, cols: C, block } = qt;
  const out = Tensor.empty(qt.q.device, [R, C]);
  if (out.device.kind === "cpu") {
    hostDequantize(out, qt.q, qt.scales, { R, C, block });
    return out;
  }
  launch1d(
    qt.q.device,
    "quant_dequant",
    `${+block}`,
    () => DEQUANT_SRC(block),
    [qt.q.binding, qt.scales.binding, out.binding],
    R * C,
    (p) => p.u32(R).u32(C).u32(Math.ceil(C / QUANT_TILE)).u32(Math.ceil(C / 4)),
    WG,
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU twins

/** A quantized matrix on the host (the CPU twins' {@linkcode Quantized}). */
export interface QuantizedCpu {
  /** [R, ceil(C / 4)] packed codes. */
  q: Uint32Array;
  /** [R or ceil(R/128), ceil(C/128)] scales. */
  scales: Float32Array;
  /** R: rows of the quantized matrix. */
  rows: number;
  /** C: its columns. */
  cols: number;
  /** True for 128x128 weight blocks, false for 1x128 activation tiles. */
  block: boolean;
}

/**
 * CPU twin of {@linkcode quantize}: `x` is read as [rows, cols] (as [cols, rows] with
 * `transpose`); equals the kernel bit for bit.
 *
 * @example const qx = quantizeCpu(x, { rows: M, cols: K }); // activations
 * @example const qw = quantizeCpu(w, { rows: N, cols: K, block: true }); // weights
 */
export function quantizeCpu(
  x: Float32Array,
  opts: { rows: number; cols: number } & QuantizeOptions,
): QuantizedCpu {
  const { rows: R, cols: C } = opts;
  const block = Boolean(opts.block), transpose = Boolean(opts.transpose);
  const at = (r: number, c: number) => transpose ? x[c * R + r] : x[r * C + c];
  const W = Math.ceil(C / 4), CB = Math.ceil(C / QUANT_TILE);
  const SR = block ? Math.ceil(R / QUANT_TILE) : R;
  const scales = new Float32Array(SR * CB);
  if (opts.fixedScale !== undefined) scales.fill(opts.fixedScale);
  else {
    const amax = new Float64Array(SR * CB);
    for (let r = 0; r < R; r++) {
      const sr = block ? Math.floor(r / QUANT_TILE) : r;
      for (let c = 0; c < C; c++) {
        const i = sr * CB + Math.floor(c / QUANT_TILE);
        // NaN wins the max, like the kernel's integer max of the bits
        amax[i] = Math.max(amax[i], Math.abs(at(r, c)));
      }
    }
    for (let i = 0; i < amax.length; i++) scales[i] = e4m3Scale(amax[i]);
  }
  const q = new Uint32Array(R * W);
  for (let r = 0; r < R; r++) {
    const sr = block ? Math.floor(r / QUANT_TILE) : r;
    for (let c = 0; c < C; c++) {
      const s = scales[sr * CB + Math.floor(c / QUANT_TILE)], v = at(r, c);
      // the sign comes from the bits, so -0 and NaN keep theirs
      const sign = bitsOf(v) >>> 31 ? 0x80 : 0;
      const code = Number.isNaN(s) || Number.isNaN(v)
        ? sign | NAN_CODE
        : sign | e4m3Encode(Math.abs(v) / s);
      q[r * W + (c >> 2)] |= code << (8 * (c & 3));
    }
  }
  return { q, scales, rows: R, cols: C, block };
}

/**
 * The code of element (r, c) of a host quantized matrix.
 * @example codeAt(qx, 0, 5) // byte 1 of word 1 of row 0
 */
export function codeAt(qt: QuantizedCpu, r: number, c: number): number {
  return (qt.q[r * Math.ceil(qt.cols / 4) + (c >> 2)] >>> (8 * (c & 3))) & 0xff;
}

/**
 * The scale of element (r, c) of a host quantized matrix.
 * @example scaleAt(qw, 130, 7) // scales[1 * CB + 0] for block scales
 */
export function scaleAt(qt: QuantizedCpu, r: number, c: number): number {
  const sr = qt.block ? Math.floor(r / QUANT_TILE) : r;
  return qt.scales[sr * Math.ceil(qt.cols / QUANT_TILE) + Math.floor(c / QUANT_TILE)];
}

/**
 * CPU twin of {@linkcode dequantize}: `fround(decode(code) * scale)`, [R, C].
 * @example const back = dequantizeCpu(quantizeCpu(w, { rows: N, cols: K, block: true }));
 */
export function dequantizeCpu(qt: QuantizedCpu): Float32Array {
  const { rows: R, cols: C } = qt;
  const out = new Float32Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) out[r * C + c] = e4m3Decode(codeAt(qt, r, c)) * scaleAt(qt, r, c);
  }
  return out;
}
