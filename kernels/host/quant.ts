/**
 * CPU-backend implementations of `quant.ts`'s kernels: tile / block amax and scales, the E4M3
 * encoder packing four codes per word, and the dequantizer. Same bits as the WGSL kernels (and
 * the CPU twins `quantizeCpu` / `dequantizeCpu`).
 *
 * Legend as in `quant.ts`: R x C the matrix (C packed and tiled), Kp = 4 ceil(C / 4) codes per
 * row (a row of ceil(C / 4) little-endian words, byte k of a word its k-th code), CB = ceil(C /
 * 128) column tiles.
 *
 * How they stay exact: the tile amax is an integer max of |x|'s f32 bits (NaN beats Inf, f32
 * subnormals count); the scale is `fround(max(amax, 1e-4) / 448)`, whose f64 quotient never sits
 * on an f32 rounding boundary; each code rounds the f64 quotient `|x| / scale` (an f32 over an f32
 * cannot fall within 2^-53 of an E4M3 midpoint without being one) to nearest even.
 *
 * @module
 */
import type { HostBuffer } from "../cpu.ts";
import type { Tensor } from "../tensor.ts";
import { f32, u32 } from "./_views.ts";

const TILE = 128;
const MAX_CODE = 0x7e;
const NAN_CODE = 0x7f;
/** f32 bits of Inf; larger magnitude bits are NaN. */
const INF_BITS = 0x7f800000;
/** 2^52: adding and subtracting it rounds a small non-negative f64 to an integer, ties to even. */
const RNE_MAGIC = 2 ** 52;

const one = new Float32Array(1);
const oneBits = new Uint32Array(one.buffer);
const f64 = new Float64Array(1);
const f64Words = new Uint32Array(f64.buffer);

/** f32 bits of the amax floor 1e-4. */
const FLOOR_BITS = (() => {
  one[0] = 1e-4;
  return oneBits[0];
})();

/** The scale of a tile whose |x| bits max is `bits`: NaN for Inf / NaN, else amax / 448. */
function scaleOfBits(bits: number): number {
  if (bits >= INF_BITS) return NaN;
  oneBits[0] = bits > FLOOR_BITS ? bits : FLOOR_BITS;
  return Math.fround(one[0] / 448);
}

/**
 * E4M3 code magnitude (0 .. 0x7e) of a positive, finite f64 `v`: round to nearest even on its
 * bits, saturate at 448. Little-endian: word 1 holds the sign, exponent and top 20 mantissa bits.
 */
function encodeMag(v: number): number {
  f64[0] = v;
  const hi = f64Words[1];
  const e = (hi >>> 20) - 1023; // floor(log2 v)
  if (e > 8) return MAX_CODE;
  if (e < -6) return (v * 512 + RNE_MAGIC) - RNE_MAGIC; // subnormal quanta of 2^-9 (8 is 2^-6)
  const m = hi & 0xfffff;
  let code = ((e + 7) << 3) + (m >>> 17); // 3 mantissa bits; the rest decides the rounding
  const rest = m & 0x1ffff;
  if (rest > 0x10000 || (rest === 0x10000 && (f64Words[0] !== 0 || (code & 1) === 1))) code++;
  return code > MAX_CODE ? MAX_CODE : code;
}

/** The code of one element in the rare cases: a NaN scale, x zero, f32-subnormal, Inf or NaN. */
function rareCode(xb: number, xv: number, s: number): number {
  const sign = (xb >>> 24) & 0x80, ax = xb & 0x7fffffff;
  if (ax > INF_BITS || s !== s) return sign | NAN_CODE;
  if (ax === INF_BITS) return sign | MAX_CODE;
  if (ax === 0) return sign;
  return sign | encodeMag(Math.abs(xv) / s);
}

/** Offset of the exponent difference ex - es (-254 .. 253) in the encoder's tables. */
const D0 = 256;
/**
 * For d = ex - es + D0 (ex, es the biased exponents of x and the scale, less 1 when x's mantissa
 * is below the scale's): E = floor(log2 |x| / s) clamped to -6 .. 9 (below -6 the subnormal
 * quanta of 2^-9, from 9 up saturation), the inverse of one quantum 2^(3 - E), and the code of
 * 2^E less 8 ((E + 6) << 3).
 */
const INV_QUANTUM = new Float64Array(2 * D0), CODE_BASE = new Int32Array(2 * D0);
for (let d = 0; d < 2 * D0; d++) {
  const E = Math.min(Math.max(d - D0, -6), 9);
  INV_QUANTUM[d] = 2 ** (3 - E);
  CODE_BASE[d] = (E + 6) << 3;
}

/**
 * Writes the codes of `n` elements of x (f32 view `xv`, bits `xb`, from `xi`, `stride` apart)
 * under scale `s` into `q8` from `qi`. For normal x and a finite scale there is no data-dependent
 * branch (a mispredicted sign or rounding branch costs more than the arithmetic): `|x| / s` in
 * units of its quantum is rounded to nearest even by the 2^52 trick, and 16 quanta carry into the
 * exponent.
 */
function encodeRun(
  xv: Float32Array,
  xb: Uint32Array,
  xi: number,
  stride: number,
  q8: Uint8Array,
  qi: number,
  n: number,
  s: number,
): void {
  one[0] = s;
  const sb = oneBits[0], rare = sb >= INF_BITS;
  const d0 = D0 - (sb >>> 23), ms = sb & 0x7fffff;
  for (let k = 0, i = xi; k < n; k++, i += stride) {
    const b = xb[i], ex = (b >>> 23) & 0xff;
    if (ex === 0 || ex === 0xff || rare) {
      q8[qi + k] = rareCode(b, xv[i], s);
      continue;
    }
    const d = ex + d0 + (((b & 0x7fffff) - ms) >> 31);
    const m = (Math.abs(xv[i]) / s * INV_QUANTUM[d] + RNE_MAGIC) - RNE_MAGIC; // 0 .. 16
    q8[qi + k] = ((b >>> 24) & 0x80) | Math.min(CODE_BASE[d] + m, MAX_CODE);
  }
}

/** Scratch for the per-(row, tile) amax bits, grown on demand. */
let amaxScratch = new Uint32Array(0);
/**
 * Fills `sc` [R or ceil(R / 128), CB] with the scales of x's 1 x 128 tiles or 128 x 128 blocks,
 * x read as [R, C] (element (r, c) at `r * rs + c * cs`).
 */
function hostScales(
  xb: Uint32Array,
  sc: Float32Array,
  o: { R: number; C: number; rs: number; cs: number; block: boolean },
): void {
  const { R, C, rs, cs, block } = o, CB = Math.ceil(C / TILE);
  if (amaxScratch.length < sc.length) amaxScratch = new Uint32Array(sc.length);
  const am = amaxScratch.subarray(0, sc.length); // [R or RB, CB] amax bits
  am.fill(0);
  for (let cb = 0; cb < CB; cb++) {
    const c0 = cb * TILE, n = Math.min(C - c0, TILE);
    for (let r = 0; r < R; r++) {
      const si = (block ? r >> 7 : r) * CB + cb;
      let m = am[si];
      for (let k = 0, i = r * rs + c0 * cs; k < n; k++, i += cs) {
        m = Math.max(m, xb[i] & 0x7fffffff);
      }
      am[si] = m;
    }
  }
  for (let i = 0; i < sc.length; i++) sc[i] = scaleOfBits(am[i]);
}

/**
 * The host version of `quantize`'s kernels: writes `scales` (unless `fixed`: then they hold the
 * fixed scale already) and the packed codes `q` [R, ceil(C / 4)] of x read as [R, C] (as x^T with
 * `transpose`). `q` is written as bytes [R, Kp], padding bytes zero. With `transpose` a run of a
 * tile reads a column of x; the next row's run reads the neighbouring column, which is in cache.
 */
export function hostQuantize(
  x: Tensor,
  q: Tensor,
  scales: Tensor,
  o: { R: number; C: number; transpose: boolean; block: boolean; fixed: boolean },
): void {
  const { R, C, block } = o;
  const Kp = 4 * Math.ceil(C / 4), CB = Math.ceil(C / TILE);
  const q8 = new Uint8Array((q.buffer as HostBuffer).data, q.offset, R * Kp);
  if (R * C === 0) {
    q8.fill(0);
    return;
  }
  // element (r, c) of the matrix is x[r * rs + c * cs]
  const rs = o.transpose ? 1 : C, cs = o.transpose ? R : 1;
  const xv = f32(x), xb = u32(x), sc = f32(scales);
  if (!o.fixed) hostScales(xb, sc, { R, C, rs, cs, block });
  for (let cb = 0; cb < CB; cb++) {
    const c0 = cb * TILE, n = Math.min(C - c0, TILE);
    for (let r = 0; r < R; r++) {
      const s = sc[(block ? r >> 7 : r) * CB + cb];
      encodeRun(xv, xb, r * rs + c0 * cs, cs, q8, r * Kp + c0, n, s);
    }
  }
  for (let r = 0; r < R; r++) q8.fill(0, r * Kp + C, r * Kp + Kp);
}

/**
 * Decode tables of the 256 codes as f64: `DECODE` gives NaN for the NaN codes (dequantize),
 * `DECODE_GEMM` gives 480 for them, as the GEMM kernel's branch-free decoder does.
 */
const DECODE = new Float64Array(256), DECODE_GEMM = new Float32Array(256);
for (let c = 0; c < 256; c++) {
  const s = c & 0x80 ? -1 : 1, e = (c >> 3) & 15, m = c & 7;
  const v = s * (e === 0 ? m * 2 ** -9 : (8 + m) * 2 ** (e - 10));
  DECODE_GEMM[c] = v;
  DECODE[c] = (c & 0x7f) === NAN_CODE ? NaN : v;
}

/** The host version of `dequantize`'s kernel: out [R, C] = decode(code) * scale, in f32. */
export function hostDequantize(
  out: Tensor,
  q: Tensor,
  scales: Tensor,
  o: { R: number; C: number; block: boolean },
): void {
  const { R, C, block } = o;
  const Kp = 4 * Math.ceil(C / 4), CB = Math.ceil(C / TILE);
  const q8 = new Uint8Array((q.buffer as HostBuffer).data, q.offset, R * Kp);
  const sc = f32(scales), ov = f32(out);
  for (let r = 0; r < R; r++) {
    const srow = (block ? r >> 7 : r) * CB, row = r * C, qrow = r * Kp;
    for (let c = 0; c < C; c++) ov[row + c] = DECODE[q8[qrow + c]] * sc[srow + (c >> 7)];
  }
}

/**
 * Decodes the packed codes of `q` [R, W] into f32 [R, 4W] (padding codes give 0), with NaN codes
 * as 480 like the GEMM kernel: the operand of the CPU backend's FP8 GEMM, exact in f32.
 */
export function decodeCodes(q: Tensor, out: Float32Array): void {
  const n = q.size * 4, T = DECODE_GEMM;
  const q8 = new Uint8Array((q.buffer as HostBuffer).data, q.offset, n);
  for (let i = 0; i < n; i++) out[i] = T[q8[i]];
}
