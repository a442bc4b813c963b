/**
 * RoPE inverse frequencies with the YaRN correction, cos/sin tables, and the MLA softmax scale:
 * pure CPU functions (no GPU) that the RoPE kernel and the CPU model reference both import, so
 * both rotate by the same f32 tables.
 *
 * Layout: RoPE rotates adjacent pairs (2i, 2i+1) of the dr rope dims (interleaved, as the
 * DeepSeek-V3 reference code's `view_as_complex`):
 *
 *     y[2i]   = x[2i] * cos(t * f_i) - x[2i+1] * sin(t * f_i)
 *     y[2i+1] = x[2i] * sin(t * f_i) + x[2i+1] * cos(t * f_i)
 *
 * YaRN follows `precompute_freqs_cis` of the DeepSeek-V3 reference inference code (YaRN paper,
 * arXiv 2309.00071): dims that rotate fewer than `betaSlow` times over the original context are
 * interpolated (f / factor), dims that rotate more than `betaFast` times keep f, a linear ramp
 * blends the dims in between. The softmax scale gains m^2, m = 0.1 * mscale * ln(factor) + 1
 * (docs/deepseek-v3.md, MLA). Both apply only when maxSeqLen > originalSeqLen.
 *
 * Shape legend: T positions, dr rope dims (`dim`), dr/2 frequency pairs.
 *
 * @module
 */

/** Options of `ropeFrequencies`. */
export interface RopeFrequencyOptions {
  /** dr, the rotated dims (even). */
  dim: number;
  /** RoPE base (10000 in V3). */
  theta: number;
  /** Longest sequence served; YaRN applies when this exceeds `originalSeqLen`. */
  maxSeqLen: number;
  /** Context the base frequencies were trained for (4096 in V3). */
  originalSeqLen: number;
  /** YaRN scale factor s (40 in V3). */
  factor: number;
  /** Rotation count above which a dim keeps its frequency (32 in V3). */
  betaFast: number;
  /** Rotation count below which a dim is fully interpolated (1 in V3). */
  betaSlow: number;
}

/** The dim index whose wavelength fits `rotations` times into `seqLen` (YaRN eq. 17). */
function correctionDim(rotations: number, dim: number, base: number, seqLen: number): number {
  return (dim * Math.log(seqLen / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

/**
 * Inverse RoPE frequencies f_i = theta^(-2i/dim), i < dim/2, YaRN-corrected when
 * maxSeqLen > originalSeqLen. Computed in f64, rounded once to f32.
 *
 * @param options See `RopeFrequencyOptions`.
 * @returns Float32Array [dim / 2].
 * @throws {RangeError} If dim is not a positive even integer or a number is not positive.
 * @example
 * ```ts
 * ropeFrequencies({ dim: 4, theta: 10000, maxSeqLen: 16, originalSeqLen: 16, factor: 1,
 *   betaFast: 32, betaSlow: 1 }); // [1, 0.01]
 * ```
 */
export function ropeFrequencies(options: RopeFrequencyOptions): Float32Array {
  const { dim, theta, maxSeqLen, originalSeqLen, factor, betaFast, betaSlow } = options;
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2 !== 0) {
    throw new RangeError(`ropeFrequencies: dim must be a positive even integer, got ${dim}`);
  }
  for (const [k, v] of Object.entries({ theta, maxSeqLen, originalSeqLen, factor })) {
    if (!(v > 0) || !Number.isFinite(v)) {
      throw new RangeError(`ropeFrequencies: ${k} must be a positive number, got ${v}`);
    }
  }
  const half = dim / 2;
  const freqs = new Float64Array(half);
  for (let i = 0; i < half; i++) freqs[i] = 1 / Math.pow(theta, (2 * i) / dim);
  if (maxSeqLen > originalSeqLen) {
    // find_correction_range: note the upper clamp is dim - 1 (not dim/2 - 1), as in the
    // reference code; the ramp then spans dim/2 entries.
    const low = Math.max(Math.floor(correctionDim(betaFast, dim, theta, originalSeqLen)), 0);
    let high = Math.min(Math.ceil(correctionDim(betaSlow, dim, theta, originalSeqLen)), dim - 1);
    if (low === high) high += 0.001; // linear_ramp_factor's guard against division by zero
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
      const smooth = 1 - ramp; // 1: keep the frequency, 0: fully interpolate
      freqs[i] = (freqs[i] / factor) * (1 - smooth) + freqs[i] * smooth;
    }
  }
  return Float32Array.from(freqs);
}

/**
 * cos and sin tables of the angles t * f_i for positions 0..T-1.
 *
 * @param freqs Float32Array [dr/2] from `ropeFrequencies`.
 * @param T Number of positions.
 * @returns `{ cos, sin }`, each Float32Array [T, dr/2] (row t, column i).
 * @throws {RangeError} If T is not a non-negative integer.
 * @example
 * ```ts
 * const { cos, sin } = ropeTables(new Float32Array([1, 0.01]), 3);
 * cos[1 * 2 + 0]; // Math.fround(Math.cos(1))
 * ```
 */
export function ropeTables(
  freqs: Float32Array,
  T: number,
): { cos: Float32Array; sin: Float32Array } {
  if (!Number.isInteger(T) || T < 0) {
    throw new RangeError(`ropeTables: T must be a non-negative integer, got ${T}`);
  }
  const half = freqs.length;
  const cos = new Float32Array(T * half); // [T, dr/2]
  const sin = new Float32Array(T * half); // [T, dr/2]
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      // The angle in f64 from the f32 frequency: the same number every consumer sees.
      const a = t * freqs[i];
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** Options of `softmaxScale`. */
export interface SoftmaxScaleOptions {
  /** dn + dr, the query/key width per head. */
  headDim: number;
  /** Longest sequence served. */
  maxSeqLen: number;
  /** Context the RoPE frequencies were trained for. */
  originalSeqLen: number;
  /** YaRN factor s. */
  factor: number;
  /** YaRN mscale coefficient. */
  mscale: number;
}

/**
 * The attention softmax scale: 1/sqrt(headDim), times m^2 with m = 0.1 * mscale * ln(factor) + 1
 * when YaRN is active (maxSeqLen > originalSeqLen).
 *
 * @param options See `SoftmaxScaleOptions`.
 * @returns The scale.
 * @throws {RangeError} If headDim is not positive.
 * @example
 * ```ts
 * softmaxScale({ headDim: 192, maxSeqLen: 4096, originalSeqLen: 4096, factor: 40, mscale: 1 });
 * // 1 / Math.sqrt(192)
 * ```
 */
export function softmaxScale(options: SoftmaxScaleOptions): number {
  const { headDim, maxSeqLen, originalSeqLen, factor, mscale } = options;
  if (!(headDim > 0)) throw new RangeError(`softmaxScale: headDim must be > 0, got ${headDim}`);
  let scale = 1 / Math.sqrt(headDim);
  if (maxSeqLen > originalSeqLen) {
    const m = 0.1 * mscale * Math.log(factor) + 1;
    scale *= m * m;
  }
  return scale;
}
