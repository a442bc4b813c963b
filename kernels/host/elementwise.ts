/**
 * CPU-backend implementations of the elementwise launchers (`../elementwise.ts`): the same math
 * as the WGSL kernels, in plain loops over host memory.
 *
 * Legend: N elements, C columns of a broadcast bias (N % C == 0).
 *
 * One loop per op, so each stays monomorphic for V8; `accumulate` adds into `out`. Inputs may be
 * `out` itself (an in-place add of a gradient): every element is read before it is written.
 *
 * @module
 */
import type { EwOp } from "../elementwise.ts";
import type { Tensor } from "../tensor.ts";
import { f32 } from "./_views.ts";

/** Column sums of a [rows, C] gradient, in f64 (grown, never shrunk). */
let colSums = new Float64Array(0);

/**
 * `out = op(inputs...)` (or `out += ...`); for "add", `inputs[1]` of `bcast` elements repeats
 * along `out` (bcast == N when it does not broadcast).
 */
export function hostEw(
  op: EwOp,
  out: Tensor,
  inputs: Tensor[],
  opts: { accumulate: boolean; scalar: number; bcast: number },
): void {
  const o = f32(out), n = o.length, acc = opts.accumulate;
  const a = f32(inputs[0]);
  const b = inputs.length > 1 ? f32(inputs[1]) : a;
  switch (op) {
    case "add":
      if (opts.bcast === n) addLoop(o, a, b, 0, n, 0, acc);
      else {
        for (let base = 0; base < n; base += opts.bcast) {
          addLoop(o, a, b, base, opts.bcast, -base, acc);
        }
      }
      return;
    case "mul":
      for (let i = 0; i < n; i++) {
        const r = a[i] * b[i];
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "scale": {
      const s = opts.scalar;
      for (let i = 0; i < n; i++) {
        const r = a[i] * s;
        o[i] = acc ? o[i] + r : r;
      }
      return;
    }
    case "silu":
      for (let i = 0; i < n; i++) {
        const x = a[i], r = x / (1 + Math.exp(-x));
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "sigmoid":
      for (let i = 0; i < n; i++) {
        const r = 1 / (1 + Math.exp(-a[i]));
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "swiglu":
    case "swiglu_bwd_b": // silu(a) * b: b is the gate input or the upstream gradient
      for (let i = 0; i < n; i++) {
        const x = a[i], r = x / (1 + Math.exp(-x)) * b[i];
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "silu_bwd":
      // d silu(a)/da = sig(a) (1 + a (1 - sig(a))), times the upstream gradient b
      for (let i = 0; i < n; i++) {
        const x = a[i], sg = 1 / (1 + Math.exp(-x)), r = sg * (1 + x * (1 - sg)) * b[i];
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "sigmoid_bwd":
      // a is the saved output y: y (1 - y) g
      for (let i = 0; i < n; i++) {
        const y = a[i], r = y * (1 - y) * b[i];
        o[i] = acc ? o[i] + r : r;
      }
      return;
    case "swiglu_bwd_a": {
      const c = f32(inputs[2]);
      for (let i = 0; i < n; i++) {
        const x = a[i], sg = 1 / (1 + Math.exp(-x)), r = sg * (1 + x * (1 - sg)) * c[i] * b[i];
        o[i] = acc ? o[i] + r : r;
      }
      return;
    }
  }
}

/** o[i] (+)= a[i] + b[i + bShift] for i in [start, start + len). */
function addLoop(
  o: Float32Array,
  a: Float32Array,
  b: Float32Array,
  start: number,
  len: number,
  bShift: number,
  acc: boolean,
): void {
  const end = start + len;
  if (acc) { for (let i = start; i < end; i++) o[i] = o[i] + (a[i] + b[i + bShift]); }
  else for (let i = start; i < end; i++) o[i] = a[i] + b[i + bShift];
}

/** `out[j] (+)= sum_r g[r, j]` over the rows of g [rows, C] (rows in order, summed in f64). */
export function hostSumToBias(out: Tensor, g: Tensor, accumulate: boolean): void {
  const o = f32(out), x = f32(g), c = o.length, rows = x.length / c;
  if (colSums.length < c) colSums = new Float64Array(c);
  const s = colSums;
  s.fill(0, 0, c);
  for (let r = 0, base = 0; r < rows; r++, base += c) {
    for (let j = 0; j < c; j++) s[j] += x[base + j];
  }
  if (accumulate) { for (let j = 0; j < c; j++) o[j] = o[j] + s[j]; }
  else for (let j = 0; j < c; j++) o[j] = s[j];
}

/** `out = value` for every element (f32). */
export function hostFill(out: Tensor, value: number): void {
  f32(out).fill(value);
}
