/**
 * CPU-backend implementations of `quant.ts`'s kernels: tile / block amax and scales, the E4M3
 * encoder packing four codes per word, and the dequantizer. Same bits as the WGSL kernels (and
 * the CPU twins `quantizeCpu` / `dequantizeCpu`).
 *
 * Legend as in `quant.ts`: R x C the matrix (C packed and tiled), W = ceil(C / 4) words per row,
 * CB = ceil(C / 128) column tiles, RB = ceil(R / 128) row blocks.
 *
 * How they stay exact: the tile amax is an integer max of |x|'s f32 bits (NaN beats Inf, f32
 * subnormals count); the scale is `fround(max(amax, 1e-4) / 448)`, whose f64 quotient never sits
 * on an f32 rounding boundary; each code is read off the f64 bits of `|x| / scale` (exact enough:
 * an f32 over an f32 cannot fall within 2^-53 of an E4M3 midpoint without being one), rounded to
 * nearest even on the bits.
 *
 * @module
 */
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

/** The code of an element with f32 bits `xb` and value `xv`, under scale `s` (NaN allowed). */
function encode(xb: number, xv: number, s: number): number {
  const sign = (xb >>> 24) & 0x80, ax = xb & 0x7fffffff;
  if (ax > INF_BITS || s !== s) return sign | NAN_CODE;
  if (ax === INF_BITS) return sign | MAX_CODE;
  if (ax === 0) return sign;
  return sign | encodeMag((xv < 0 ? -xv : xv) / s);
}

/** Scratch for the per-(row, tile) amax bits, grown on demand. */
let amaxScratch = new Uint32Array(0);

function amaxBuffer(n: number): Uint32Array {
  if (amaxScratch.length < n) amaxScratch = new Uint32Array(n);
  const a = amaxScratch.subarray(0, n);
  a.fill(0);
  return a;
}

/**
 * Fills `scales` from the tile (or block) amaxes of x read as [R, C] (x^T, stored [C, R], with
 * `transpose`).
 */
function hostScales(
  xb: Uint32Array,
  sc: Float32Array,
  R: number,
  C: number,
  transpose: boolean,
  block: boolean,
): void {
  const CB = Math.ceil(C / TILE);
  // amax bits per scale entry: [R or RB, CB]
  const am = amaxBuffer(sc.length);
  if (!transpose) {
    for (let r = 0; r < R; r++) {
      const row = r * C, base = (block ? Math.floor(r / TILE) : r) * CB;
      for (let cb = 0; cb < CB; cb++) {
        const c1 = Math.min(C, cb * TILE + TILE);
        let m = am[base + cb];
        for (let c = cb * TILE; c < c1; c++) {
          const b = xb[row + c] & 0x7fffffff;
          if (b > m) m = b;
        }
        am[base + cb] = m;
      }
    }
  } else {
    // x is [C, R]: walk its rows, so the inner loop over r reads contiguous memory
    for (let c = 0; c < C; c++) {
      const row = c * R, cb = Math.floor(c / TILE);
      if (block) {
        for (let r = 0; r < R; r++) {
          const i = Math.floor(r / TILE) * CB + cb, b = xb[row + r] & 0x7fffffff;
          if (b > am[i]) am[i] = b;
        }
      } else {
        for (let r = 0; r < R; r++) {
          const i = r * CB + cb, b = xb[row + r] & 0x7fffffff;
          if (b > am[i]) am[i] = b;
        }
      }
    }
  }
  for (let i = 0; i < sc.length; i++) sc[i] = scaleOfBits(am[i]);
}

/**
 * The host version of `quantize`'s kernels: writes `scales` (unless `fixed`: then they hold the
 * fixed scale already) and the packed codes `q` [R, ceil(C / 4)] of x read as [R, C] (as x^T with
 * `transpose`).
 */
export function hostQuantize(
  x: Tensor,
  q: Tensor,
  scales: Tensor,
  o: { R: number; C: number; transpose: boolean; block: boolean; fixed: boolean },
): void {
  const { R, C, transpose, block } = o;
  const W = Math.ceil(C / 4), CB = Math.ceil(C / TILE);
  const xv = f32(x), xb = u32(x), qv = u32(q), sc = f32(scales);
  if (R * C === 0) {
    qv.fill(0);
    return;
  }
  if (!o.fixed) hostScales(xb, sc, R, C, transpose, block);
  if (!transpose) {
    for (let r = 0; r < R; r++) {
      const row = r * C, srow = (block ? Math.floor(r / TILE) : r) * CB;
      for (let w = 0; w < W; w++) {
        const s = sc[srow + (w >> 5)], c0 = 4 * w;
        let word = 0;
        if (c0 + 4 <= C) {
          const i = row + c0;
          word = encode(xb[i], xv[i], s) | (encode(xb[i + 1], xv[i + 1], s) << 8) |
            (encode(xb[i + 2], xv[i + 2], s) << 16) | (encode(xb[i + 3], xv[i + 3], s) << 24);
        } else {
          for (let c = c0; c < C; c++) {
            word |= encode(xb[row + c], xv[row + c], s) << (8 * (c - c0));
          }
        }
        qv[r * W + w] = word >>> 0;
      }
    }
  } else {
    // x is [C, R]: word (r, w) packs x[4w .. 4w + 3, r]; four rows of x are read side by side
    for (let w = 0; w < W; w++) {
      const c0 = 4 * w, n = Math.min(4, C - c0), cb = w >> 5;
      const r0 = c0 * R, r1 = r0 + R, r2 = r1 + R, r3 = r2 + R;
      for (let r = 0; r < R; r++) {
        const s = sc[(block ? Math.floor(r / TILE) : r) * CB + cb];
        let word = encode(xb[r0 + r], xv[r0 + r], s);
        if (n > 1) word |= encode(xb[r1 + r], xv[r1 + r], s) << 8;
        if (n > 2) word |= encode(xb[r2 + r], xv[r2 + r], s) << 16;
        if (n > 3) word |= encode(xb[r3 + r], xv[r3 + r], s) << 24;
        qv[r * W + w] = word >>> 0;
      }
    }
  }
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
  const W = Math.ceil(C / 4), CB = Math.ceil(C / TILE);
  const qv = u32(q), sc = f32(scales), ov = f32(out);
  for (let r = 0; r < R; r++) {
    const srow = (block ? Math.floor(r / TILE) : r) * CB, row = r * C;
    for (let c = 0; c < C; c++) {
      const code = (qv[r * W + (c >> 2)] >>> (8 * (c & 3))) & 0xff;
      ov[row + c] = DECODE[code] * sc[srow + (c >> 7)];
    }
  }
}

/**
 * Decodes packed codes [R, W] into f32 [R, 4W] (padding codes give 0), with NaN codes as 480 like
 * the GEMM kernel: the operand of the CPU backend's FP8 GEMM, exact in f32.
 */
export function decodeCodes(q: Uint32Array, out: Float32Array): void {
  const T = DECODE_GEMM;
  for (let i = 0, j = 0; i < q.length; i++, j += 4) {
    const w = q[i];
    out[j] = T[w & 0xff];
    out[j + 1] = T[(w >>> 8) & 0xff];
    out[j + 2] = T[(w >>> 16) & 0xff];
    out[j + 3] = T[w >>> 24];
  }
}
