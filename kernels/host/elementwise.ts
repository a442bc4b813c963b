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
import { fastExp } from "./_exp.ts";
import { defineJob, runJob } from "./_pool.ts";
import { f32 } from "./_views.ts";

/** Column sums of a [rows, C] gradient, in f64 (grown, never shrunk). */
let colSums = new Float64Array(0);

/**
 * One op's loop over n elements: o (+)= op(a, b, c, s). Each op has its own function so V8
 * optimizes each loop on its own (one function with every loop optimizes worse).
 */
type Loop = (
  o: Float32Array,
  a: Float32Array,
  b: Float32Array,
  c: Float32Array,
  s: number,
  acc: boolean,
  start: number,
  end: number,
) => void;

const LOOPS: Record<EwOp, Loop> = {
  add: (o, a, b, _c, _s, acc, start, end) => addRun(o, a, b, start, end - start, 0, acc),
  mul: (o, a, b, _c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const r = a[i] * b[i];
      o[i] = acc ? o[i] + r : r;
    }
  },
  scale: (o, a, _b, _c, s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const r = a[i] * s;
      o[i] = acc ? o[i] + r : r;
    }
  },
  silu: (o, a, _b, _c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const x = a[i], r = x / (1 + fastExp(-x));
      o[i] = acc ? o[i] + r : r;
    }
  },
  sigmoid: (o, a, _b, _c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const r = 1 / (1 + fastExp(-a[i]));
      o[i] = acc ? o[i] + r : r;
    }
  },
  swiglu: siluTimes,
  // d silu(a)/da = sig(a) (1 + a (1 - sig(a))), times the upstream gradient b
  silu_bwd: (o, a, b, _c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const x = a[i], sg = 1 / (1 + fastExp(-x)), r = sg * (1 + x * (1 - sg)) * b[i];
      o[i] = acc ? o[i] + r : r;
    }
  },
  // a is the saved output y: y (1 - y) g
  sigmoid_bwd: (o, a, b, _c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const y = a[i], r = y * (1 - y) * b[i];
      o[i] = acc ? o[i] + r : r;
    }
  },
  // d/da of silu(a) * c, times the upstream gradient b
  swiglu_bwd_a: (o, a, b, c, _s, acc, start, end) => {
    for (let i = start; i < end; i++) {
      const x = a[i], sg = 1 / (1 + fastExp(-x)), r = sg * (1 + x * (1 - sg)) * c[i] * b[i];
      o[i] = acc ? o[i] + r : r;
    }
  },
  swiglu_bwd_b: siluTimes,
};

/** silu(a) * b: swiglu (b the up projection) and its gradient in b (b the upstream gradient). */
function siluTimes(
  o: Float32Array,
  a: Float32Array,
  b: Float32Array,
  _c: Float32Array,
  _s: number,
  acc: boolean,
  start: number,
  end: number,
): void {
  for (let i = start; i < end; i++) {
    const x = a[i], r = x / (1 + fastExp(-x)) * b[i];
    o[i] = acc ? o[i] + r : r;
  }
}

/** o[i] (+)= a[i] + b[i + bShift] for i in [start, start + len). */
function addRun(
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
  const c = inputs.length > 2 ? f32(inputs[2]) : a;
  if (op === "add" && opts.bcast !== n) {
    for (let base = 0; base < n; base += opts.bcast) addRun(o, a, b, base, opts.bcast, -base, acc);
    return;
  }
  runJob(EW, n, [OPS.indexOf(op), o, a, b, c, opts.scalar, acc ? 1 : 0], 1 << 16);
}

const OPS = Object.keys(LOOPS) as EwOp[];

/** Elements [start, end) of one op. Args: op index in OPS, o, a, b, c, scalar, accumulate. */
const EW = defineJob("ew", (x, start, end) => {
  const [op, o, a, b, c, s, acc] = x as [
    number,
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
    number,
    number,
  ];
  LOOPS[OPS[op]](o, a, b, c, s, acc === 1, start, end);
});

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
