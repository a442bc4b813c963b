/**
 * Elementwise kernels: add, mul, scale, silu, sigmoid, swiglu, fill and axpy, with their
 * backwards and CPU twins, plus the differentiable reshape.
 *
 * Legend: N elements. All tensors f32 and contiguous; binary ops need equal shapes, except that
 * `add` also broadcasts a trailing-dimension bias ([N] + [C] with N % C == 0).
 *
 * Every launcher writes into `out` and can `accumulate` (out += result), which is how backward
 * kernels add into gradients without extra passes. Sizes that are multiples of 4 run one thread
 * per vec4 (on lavapipe every load is a per-lane gather, so four elements per load pay).
 *
 * On the CPU backend each launcher calls its implementation in `host/elementwise.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch1d } from "./_launch.ts";
import { hostEw, hostFill, hostSumToBias } from "./host/elementwise.ts";
import { Tensor } from "./tensor.ts";

/** The unary/binary elementwise functions, by name. */
export type EwOp =
  | "add"
  | "mul"
  | "scale"
  | "silu"
  | "sigmoid"
  | "swiglu"
  | "silu_bwd"
  | "sigmoid_bwd"
  | "swiglu_bwd_a"
  | "swiglu_bwd_b";

/** WGSL expression of each op over `a`, `b` (second input) and `s` (scalar). */
const EXPR: Record<EwOp, string> = {
  add: "a + b",
  mul: "a * b",
  scale: "a * s",
  silu: "a / (1.0 + exp(-a))",
  sigmoid: "1.0 / (1.0 + exp(-a))",
  // swiglu(a, b) = silu(a) * b (a = W1 u, b = W3 u)
  swiglu: "a / (1.0 + exp(-a)) * b",
  // d silu(a)/da = sig(a) * (1 + a * (1 - sig(a))), times the upstream gradient b
  silu_bwd: "sig(a) * (1.0 + a * (1.0 - sig(a))) * b",
  // sigmoid backward written in terms of the saved OUTPUT y = a: y (1 - y) * g
  sigmoid_bwd: "a * (1.0 - a) * b",
  // the two swiglu gradients need a third input c: see swiglu backward
  swiglu_bwd_a: "sig(a) * (1.0 + a * (1.0 - sig(a))) * c * b",
  swiglu_bwd_b: "a / (1.0 + exp(-a)) * b",
};

/** How many tensor inputs each op reads. */
const ARITY: Record<EwOp, 1 | 2 | 3> = {
  add: 2,
  mul: 2,
  scale: 1,
  silu: 1,
  sigmoid: 1,
  swiglu: 2,
  silu_bwd: 2,
  sigmoid_bwd: 2,
  swiglu_bwd_a: 3,
  swiglu_bwd_b: 2,
};

function ewSource(op: EwOp, accumulate: boolean, bcast: boolean, vec: boolean): string {
  const arity = ARITY[op];
  const inputs = ["a", "b", "c"].slice(0, arity);
  const decls = inputs.map((n, i) =>
    `@group(0) @binding(${i}) var<storage, read> in_${n}: array<V>;`
  ).join("\n");
  const loads = inputs.map((n) =>
    n === "b" && bcast ? `let b = in_b[i % p.bcast];` : `let ${n} = in_${n}[i];`
  ).join("\n    ");
  return /* wgsl */ `
alias V = ${vec ? "vec4<f32>" : "f32"};
${decls}
@group(0) @binding(${arity}) var<storage, read_write> out: array<V>;
struct P { n: u32, bcast: u32, s: f32, _pad: u32 }
@group(0) @binding(${arity + 1}) var<storage, read> p: P;
fn sig(x: V) -> V { return 1.0 / (1.0 + exp(-x)); }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  ${loads}
  let s = p.s;
  let r = ${EXPR[op]};
  ${accumulate ? "out[i] = out[i] + r;" : "out[i] = r;"}
}`;
}

/** Options shared by the elementwise launchers. */
export interface EwOptions {
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
  /** The scalar `s` (for "scale"). */
  scalar?: number;
}

/**
 * Encodes `out = op(inputs...)` (or `out += ...`) over all elements.
 * For "add", `inputs[1]` may be shorter than `out` when it divides it (trailing broadcast).
 *
 * @throws when the number of inputs or their sizes do not fit the op.
 * @example ewForward("silu", y, [x]);
 */
export function ewForward(op: EwOp, out: Tensor, inputs: Tensor[], opts: EwOptions = {}): void {
  const gpu = out.device;
  if (inputs.length !== ARITY[op]) {
    throw new Error(`${op}: expects ${ARITY[op]} inputs, got ${inputs.length}`);
  }
  const n = out.size;
  let bcast = n;
  inputs.forEach((t, k) => {
    if (t.size === n) return;
    if (op === "add" && k === 1 && t.size > 0 && n % t.size === 0) bcast = t.size;
    else throw new Error(`${op}: input ${k} has shape [${t.shape}], output [${out.shape}]`);
  });
  const acc = Boolean(opts.accumulate);
  const isB = bcast !== n;
  // vec4 units when every row of the broadcast (and so every tensor) is whole vec4s
  if (gpu.kind === "cpu") {
    hostEw(op, out, inputs, { accumulate: acc, scalar: opts.scalar ?? 1, bcast });
    return;
  }
  const vec = bcast % 4 === 0, w = vec ? 4 : 1;
  launch1d(
    gpu,
    `ew_${op}`,
    `${acc}|${isB}|${vec}`,
    () => ewSource(op, acc, isB, vec),
    [...inputs.map((t) => t.binding), out.binding],
    n / w,
    (p) => p.u32(n / w).u32(bcast / w).f32(opts.scalar ?? 1).u32(0),
  );
}

/** CPU twin of {@linkcode ewForward} (no accumulate). */
export function ewCpu(op: EwOp, inputs: Float32Array[], scalar = 1): Float32Array {
  const n = inputs[0].length;
  const out = new Float32Array(n);
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const [A, B, C] = inputs;
  for (let i = 0; i < n; i++) {
    const a = A[i];
    const b = B ? B[i % B.length] : 0;
    const c = C ? C[i] : 0;
    switch (op) {
      case "add":
        out[i] = a + b;
        break;
      case "mul":
        out[i] = a * b;
        break;
      case "scale":
        out[i] = a * scalar;
        break;
      case "silu":
        out[i] = a * sig(a);
        break;
      case "sigmoid":
        out[i] = sig(a);
        break;
      case "swiglu":
        out[i] = a * sig(a) * b;
        break;
      case "silu_bwd":
        out[i] = sig(a) * (1 + a * (1 - sig(a))) * b;
        break;
      case "sigmoid_bwd":
        out[i] = a * (1 - a) * b;
        break;
      case "swiglu_bwd_a":
        out[i] = sig(a) * (1 + a * (1 - sig(a))) * c * b;
        break;
      case "swiglu_bwd_b":
        out[i] = a * sig(a) * b;
        break;
    }
  }
  return out;
}

/** Sums a [N] gradient into a [C] broadcast bias gradient (N % C == 0): CPU twin. */
export function sumToBiasCpu(g: Float32Array, c: number): Float32Array {
  const out = new Float32Array(c);
  for (let i = 0; i < g.length; i++) out[i % c] += g[i];
  return out;
}

const BIAS_REDUCE_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct P { rows: u32, c: u32, accumulate: u32, _pad: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let j = (wid.y * nwg.x + wid.x) * 256u + li;
  if (j >= p.c) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r++) { s += g[r * p.c + j]; }
  if (p.accumulate == 1u) { out[j] = out[j] + s; } else { out[j] = s; }
}`;

/** Encodes the column sums of a [rows, c] gradient into `out` [c] (a broadcast add's backward). */
export function sumToBias(out: Tensor, g: Tensor, accumulate = false): void {
  const c = out.size, rows = g.size / c;
  if (out.device.kind === "cpu") return hostSumToBias(out, g, accumulate);
  launch1d(
    out.device,
    "bias_reduce",
    "",
    () => BIAS_REDUCE_SRC,
    [g.binding, out.binding],
    c,
    (p) => p.u32(rows).u32(c).u32(accumulate ? 1 : 0).u32(0),
  );
}

/** `a + b` with autograd (b may be a trailing-dimension bias). */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = Tensor.empty(a.device, a.shape);
  ewForward("add", out, [a, b]);
  if (needsGrad(a, b)) {
    record("add", [out], () => {
      const g = out.grad;
      if (!g) return;
      if (a.requiresGrad) accumulateInto(a, g);
      if (b.requiresGrad) {
        if (b.size === a.size) accumulateInto(b, g);
        else {
          const { grad, accumulate } = gradFor(b);
          sumToBias(grad, g, accumulate);
        }
      }
    });
  }
  return out;
}

/** `a * b` (elementwise) with autograd. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = Tensor.empty(a.device, a.shape);
  ewForward("mul", out, [a, b]);
  if (needsGrad(a, b)) {
    record("mul", [out], () => {
      const g = out.grad;
      if (!g) return;
      if (a.requiresGrad) {
        const { grad, accumulate } = gradFor(a);
        ewForward("mul", grad, [g, b], { accumulate });
      }
      if (b.requiresGrad) {
        const { grad, accumulate } = gradFor(b);
        ewForward("mul", grad, [g, a], { accumulate });
      }
    });
  }
  return out;
}

/** `a * s` for a constant `s`, with autograd. */
export function scale(a: Tensor, s: number): Tensor {
  const out = Tensor.empty(a.device, a.shape);
  ewForward("scale", out, [a], { scalar: s });
  if (needsGrad(a)) {
    record("scale", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(a);
      ewForward("scale", grad, [out.grad], { scalar: s, accumulate });
    });
  }
  return out;
}

/** SiLU `x * sigmoid(x)` with autograd. */
export function silu(x: Tensor): Tensor {
  const out = Tensor.empty(x.device, x.shape);
  ewForward("silu", out, [x]);
  if (needsGrad(x)) {
    record("silu", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      ewForward("silu_bwd", grad, [x, out.grad], { accumulate });
    });
  }
  return out;
}

/** Sigmoid with autograd (the backward uses the saved output). */
export function sigmoid(x: Tensor): Tensor {
  const out = Tensor.empty(x.device, x.shape);
  ewForward("sigmoid", out, [x]);
  if (needsGrad(x)) {
    record("sigmoid", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      ewForward("sigmoid_bwd", grad, [out, out.grad], { accumulate });
    });
  }
  return out;
}

/** SwiGLU's gate: `silu(a) * b` (a = W1 u, b = W3 u), with autograd. */
export function swiglu(a: Tensor, b: Tensor): Tensor {
  const out = Tensor.empty(a.device, a.shape);
  ewForward("swiglu", out, [a, b]);
  if (needsGrad(a, b)) {
    record("swiglu", [out], () => {
      const g = out.grad;
      if (!g) return;
      if (a.requiresGrad) {
        const { grad, accumulate } = gradFor(a);
        ewForward("swiglu_bwd_a", grad, [a, g, b], { accumulate });
      }
      if (b.requiresGrad) {
        const { grad, accumulate } = gradFor(b);
        ewForward("swiglu_bwd_b", grad, [a, g], { accumulate });
      }
    });
  }
  return out;
}

/** Adds gradient `g` into `t`'s gradient (copying on first write). */
export function accumulateInto(t: Tensor, g: Tensor): void {
  if (!t.grad) {
    t.grad = Tensor.empty(t.device, t.shape);
    t.device.copy(g.binding, t.grad.binding, t.bytes);
    return;
  }
  const { grad } = gradFor(t);
  ewForward("add", grad, [grad, g]);
}

/**
 * A differentiable reshape: the result shares `x`'s bytes; its gradient flows back unchanged.
 * @example const flat = reshape(x, [B * T, D]);
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const out = x.reshape(shape);
  if (needsGrad(x)) {
    record("reshape", [out], () => {
      if (!out.grad) return;
      accumulateInto(x, out.grad.reshape(x.shape));
    });
  }
  return out;
}

/** Encodes `out = value` for every element (f32). */
export function fill(out: Tensor, value: number): void {
  if (value === 0) {
    out.device.clear(out.binding);
    return;
  }
  if (out.device.kind === "cpu") return hostFill(out, value);
  launch1d(
    out.device,
    "fill",
    "",
    () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
struct P { n: u32, v: f32, _a: u32, _b: u32 }
@group(0) @binding(1) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i < p.n) { out[i] = p.v; }
}`,
    [out.binding],
    out.size,
    (p) => p.u32(out.size).f32(value).u32(0).u32(0),
  );
}
