/**
 * Token dispatch for DeepSeekMoE: gather each token's row once per chosen expert into expert
 * order, and scatter the experts' outputs back, weighted by the gate; with backwards and CPU twins.
 *
 * Legend: N tokens, K experts chosen per token (slots), P = N * K routed rows, E routed experts,
 * D features per row.
 *
 * The routing result these kernels take (the router's output format):
 * - `perm` i32 [P]: the flat (token * K + slot) indices grouped by expert, expert 0's first in
 *   increasing token order, then expert 1's ... Routed row p holds token `perm[p] / K`.
 *   {@linkcode permFromChoicesCpu} is the reference.
 * - `offsets` i32 [E + 1]: exclusive prefix sum of per-expert counts (`offsets[E] == P`); used by
 *   the grouped GEMM (`kernels/moe_gemm.ts`), not here.
 * - `weights` f32 [N, K]: the gate weight of each (token, slot).
 * - `inv` i32 [P], from {@linkcode invertPermutation}: the routed row of (token, slot), i.e.
 *   `perm[inv[t * K + s]] == t * K + s`. Compute it once per layer and pass it to both ops.
 *
 * Determinism without atomics: every output element has exactly one writer, and sums over a
 * token's K rows run in slot order (the inverse permutation lets a token's thread find its rows).
 *
 * On the CPU backend each launcher calls its implementation in `host/moe_dispatch.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import { grid1d } from "./gpu.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import {
  hostInvertPermutation,
  hostRowsFromTokens,
  hostScatterWeightGrad,
  hostTokensFromRows,
} from "./host/moe_dispatch.ts";

import type { Floats } from "./_rows.ts";

/** Sizes of a dispatch: N tokens, K slots per token, D features. */
export interface DispatchShape {
  /** Tokens. */
  N: number;
  /** Routed slots per token. */
  K: number;
  /** Features. */
  D: number;
}

const FLAT = "(wid.y * nwg.x + wid.x) * 256u + li";
const HEADER = /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = ${FLAT};`;

const INVERT_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> perm: array<i32>;
@group(0) @binding(1) var<storage, read_write> inv: array<i32>;
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(2) var<storage, read> p: P;
${HEADER}
  if (i >= p.n) { return; }
  inv[perm[i]] = i32(i); // perm is a permutation: one writer per entry
}`;

/** WGSL bindings 2.. of the dispatch kernels: the gate weights (when weighted), out, params. */
function bindingsAfter(weighted: boolean): string {
  const w = weighted ? "@group(0) @binding(2) var<storage, read> w: array<f32>;\n" : "";
  const o = weighted ? 3 : 2;
  return `${w}@group(0) @binding(${o}) var<storage, read_write> out: array<f32>;
struct P { n: u32, D: u32, K: u32, _a: u32 }
@group(0) @binding(${o + 1}) var<storage, read> p: P;`;
}

/**
 * Routed rows from token rows, one thread per (p, d):
 * out[p, d] (+)= (w[perm[p]] *) src[perm[p] / K, d]. The gather's forward (unweighted) and the
 * weighted scatter's input gradient (weighted).
 */
function rowsFromTokensSource(weighted: boolean, accumulate: boolean): string {
  const v = weighted ? "w[j] * src[(j / p.K) * p.D + d]" : "src[(j / p.K) * p.D + d]";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> perm: array<i32>;
${bindingsAfter(weighted)}
${HEADER}
  if (i >= p.n) { return; }
  let r = i / p.D;
  let d = i % p.D;
  let j = u32(perm[r]);
  let v = ${v};
  ${accumulate ? "out[i] = out[i] + v;" : "out[i] = v;"}
}`;
}

/**
 * Token rows from routed rows, one thread per (t, d), summing the token's K rows in slot order:
 * out[t, d] (+)= sum_s (w[t, s] *) src[inv[t * K + s], d]. The weighted scatter's forward
 * (weighted) and the gather's gradient (unweighted).
 */
function tokensFromRowsSource(weighted: boolean, accumulate: boolean): string {
  const term = weighted ? "w[t * p.K + s] * src[r * p.D + d]" : "src[r * p.D + d]";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> inv: array<i32>;
${bindingsAfter(weighted)}
${HEADER}
  if (i >= p.n) { return; }
  let t = i / p.D;
  let d = i % p.D;
  var acc = 0.0;
  for (var s = 0u; s < p.K; s++) {
    let r = u32(inv[t * p.K + s]);
    acc += ${term};
  }
  ${accumulate ? "out[i] = out[i] + acc;" : "out[i] = acc;"}
}`;
}

/** Threads of the gate-gradient dot product (one workgroup per (token, slot)). */
const DOT_WG = 64;

/** dweights[t, s] (+)= dot(dy[t], ys[inv[t * K + s]]), a fixed-shape tree per (t, s). */
function weightGradSource(accumulate: boolean): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> ys: array<f32>;
@group(0) @binding(2) var<storage, read> inv: array<i32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;
struct P { n: u32, D: u32, K: u32, _a: u32 }
@group(0) @binding(4) var<storage, read> p: P;
var<workgroup> part: array<f32, ${DOT_WG}>;
@compute @workgroup_size(${DOT_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let j = wid.y * nwg.x + wid.x; // (token, slot), uniform across the workgroup
  if (j >= p.n) { return; }
  let t = j / p.K;
  let r = u32(inv[j]);
  var acc = 0.0;
  for (var d = li; d < p.D; d += ${DOT_WG}u) { acc += dy[t * p.D + d] * ys[r * p.D + d]; }
  part[li] = acc;
  workgroupBarrier();
  for (var h = ${DOT_WG / 2}u; h > 0u; h = h >> 1u) {
    if (li < h) { part[li] = part[li] + part[li + h]; }
    workgroupBarrier();
  }
  if (li == 0u) { ${accumulate ? "dw[j] = dw[j] + part[0];" : "dw[j] = part[0];"} }
}`;
}

function checkPerm(what: string, perm: Tensor, P: number): void {
  if (perm.dtype !== "i32" || perm.size !== P) {
    throw new DeviceError(`${what}: perm must be i32 [${P}], got ${perm.dtype} [${perm.shape}]`);
  }
}

/** Sizes of `x` [N, D] dispatched with `perm` [N * K]. */
function shapeOf(what: string, x: Tensor, perm: Tensor): DispatchShape {
  if (x.shape.length !== 2 || x.dtype !== "f32") {
    throw new DeviceError(`${what}: expected f32 [N, D], got ${x.dtype} [${x.shape}]`);
  }
  const [N, D] = x.shape;
  const K = N > 0 ? perm.size / N : 0;
  if (!Number.isInteger(K) || K < 1) {
    throw new DeviceError(`${what}: perm has ${perm.size} entries, not a multiple of N = ${N}`);
  }
  checkPerm(what, perm, N * K);
  return { N, K, D };
}

/**
 * Encodes `inv[perm[p]] = p` into `inv` i32 [P].
 * @example invertPermutationInto(inv, perm); // perm [2, 0, 1] -> inv [1, 2, 0]
 */
export function invertPermutationInto(inv: Tensor, perm: Tensor): void {
  checkPerm("invertPermutation", inv, perm.size);
  checkPerm("invertPermutation", perm, perm.size);
  if (perm.device.kind === "cpu") return hostInvertPermutation(inv, perm);
  launch1d(
    perm.device,
    "moe_invert_perm",
    "",
    () => INVERT_SRC,
    [perm.binding, inv.binding],
    perm.size,
    (p) => p.u32(perm.size).u32(0).u32(0).u32(0),
  );
}

/**
 * The inverse permutation i32 [P] of `perm` i32 [P]: the routed row of each (token, slot).
 * @example invertPermutation(perm); // perm [2, 0, 1] -> [1, 2, 0]
 */
export function invertPermutation(perm: Tensor): Tensor {
  const inv = Tensor.empty(perm.device, [perm.size], "i32");
  invertPermutationInto(inv, perm);
  return inv;
}

/** Options of the dispatch launchers. */
export interface DispatchOptions {
  /** Add into the output instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * Encodes `xs[p] = x[perm[p] / K]`: each token's row copied once per chosen expert, in expert
 * order.
 * @param xs f32 [P, D]. @param x f32 [N, D]. @param perm i32 [P].
 */
export function gatherRowsForward(
  xs: Tensor,
  x: Tensor,
  perm: Tensor,
  opts: DispatchOptions = {},
): void {
  const { N, K, D } = shapeOf("gatherRows", x, perm);
  rowsFromTokens(xs, x, perm, null, { N, K, D }, Boolean(opts.accumulate));
}

/**
 * Encodes `dx[t] = sum_s dxs[inv[t * K + s]]` (slot order): the gather's backward.
 * @param dx f32 [N, D]. @param dxs f32 [P, D]. @param inv i32 [P].
 */
export function gatherRowsBackward(
  dx: Tensor,
  dxs: Tensor,
  inv: Tensor,
  opts: DispatchOptions = {},
): void {
  const { N, K, D } = shapeOf("gatherRows backward", dx, inv);
  tokensFromRows(dx, dxs, inv, null, { N, K, D }, Boolean(opts.accumulate));
}

/**
 * Encodes `y[t] = sum_s weights[t, s] * ys[inv[t * K + s]]` (slot order): the experts' outputs
 * combined per token with the gate weights.
 * @param y f32 [N, D]. @param ys f32 [P, D]. @param inv i32 [P]. @param weights f32 [N, K].
 */
export function scatterWeightedForward(
  y: Tensor,
  ys: Tensor,
  inv: Tensor,
  weights: Tensor,
  opts: DispatchOptions = {},
): void {
  const shape = shapeOf("scatterWeighted", y, inv);
  checkWeights(weights, shape);
  tokensFromRows(y, ys, inv, weights, shape, Boolean(opts.accumulate));
}

/**
 * Encodes the weighted scatter's backward: `dys[p] = weights[perm[p]] * dy[perm[p] / K]` and
 * `dweights[t, s] = dot(dy[t], ys[inv[t * K + s]])`. Either output may be null to skip it.
 *
 * @param dys f32 [P, D] or null. @param dweights f32 [N, K] or null.
 * @param route perm and inv i32 [P], weights f32 [N, K], and ys f32 [P, D] (the forward input).
 */
export function scatterWeightedBackward(
  dys: Tensor | null,
  dweights: Tensor | null,
  dy: Tensor,
  route: { ys: Tensor; perm: Tensor; inv: Tensor; weights: Tensor },
  opts: { accumulateRows?: boolean; accumulateWeights?: boolean } = {},
): void {
  const shape = shapeOf("scatterWeighted backward", dy, route.perm);
  checkWeights(route.weights, shape);
  checkRowsTensor("scatterWeighted backward: ys", route.ys, shape);
  if (dys) {
    rowsFromTokens(dys, dy, route.perm, route.weights, shape, Boolean(opts.accumulateRows));
  }
  if (dweights) {
    checkWeights(dweights, shape);
    const { N, K, D } = shape;
    if (N * K === 0) return;
    const acc = Boolean(opts.accumulateWeights);
    if (dy.device.kind === "cpu") {
      return hostScatterWeightGrad(dweights, dy, route.ys, route.inv, {
        ...shape,
        accumulate: acc,
      });
    }
    launch(
      dy.device,
      "moe_scatter_dweights",
      `${acc}`,
      () => weightGradSource(acc),
      [dy.binding, route.ys.binding, route.inv.binding, dweights.binding],
      grid1d(N * K, 1),
      (p) => p.u32(N * K).u32(D).u32(K).u32(0),
    );
  }
}

function checkWeights(w: Tensor, { N, K }: DispatchShape): void {
  if (w.dtype !== "f32" || w.size !== N * K) {
    throw new DeviceError(
      `scatterWeighted: weights must be f32 [${N}, ${K}], got ${w.dtype} ` +
        `[${w.shape}]`,
    );
  }
}

function checkRowsTensor(what: string, t: Tensor, { N, K, D }: DispatchShape): void {
  if (t.dtype !== "f32" || t.size !== N * K * D) {
    throw new DeviceError(`${what}: expected f32 [${N * K}, ${D}], got ${t.dtype} [${t.shape}]`);
  }
}

function rowsFromTokens(
  out: Tensor,
  src: Tensor,
  perm: Tensor,
  w: Tensor | null,
  shape: DispatchShape,
  acc: boolean,
): void {
  checkRowsTensor("routed rows", out, shape);
  const n = shape.N * shape.K * shape.D;
  const weighted = w !== null;
  if (out.device.kind === "cpu") {
    return hostRowsFromTokens(out, src, perm, w, { ...shape, accumulate: acc });
  }
  launch1d(
    out.device,
    "moe_rows_from_tokens",
    `${weighted}|${acc}`,
    () => rowsFromTokensSource(weighted, acc),
    w
      ? [src.binding, perm.binding, w.binding, out.binding]
      : [src.binding, perm.binding, out.binding],
    n,
    (p) => p.u32(n).u32(shape.D).u32(shape.K).u32(0),
  );
}

function tokensFromRows(
  out: Tensor,
  src: Tensor,
  inv: Tensor,
  w: Tensor | null,
  shape: DispatchShape,
  acc: boolean,
): void {
  checkRowsTensor("routed rows", src, shape);
  const n = shape.N * shape.D;
  const weighted = w !== null;
  if (out.device.kind === "cpu") {
    return hostTokensFromRows(out, src, inv, w, { ...shape, accumulate: acc });
  }
  launch1d(
    out.device,
    "moe_tokens_from_rows",
    `${weighted}|${acc}`,
    () => tokensFromRowsSource(weighted, acc),
    w
      ? [src.binding, inv.binding, w.binding, out.binding]
      : [src.binding, inv.binding, out.binding],
    n,
    (p) => p.u32(n).u32(shape.D).u32(shape.K).u32(0),
  );
}

// ---------------------------------------------------------------------------------------------
// Autograd ops

/**
 * Gathers each token's row once per chosen expert, in expert order: `xs[p] = x[perm[p] / K]`,
 * with autograd (the backward sums a token's K row gradients in slot order).
 *
 * @param x f32 [N, D]. @param perm i32 [N * K] (K is inferred).
 * @param opts.inv the inverse permutation, if already computed (else made when needed).
 * @returns xs f32 [N * K, D].
 * @example const xs = gatherRows(x, perm, { inv }); // then groupedLinear(xs, w, ...)
 */
export function gatherRows(x: Tensor, perm: Tensor, opts: { inv?: Tensor } = {}): Tensor {
  const { N, K, D } = shapeOf("gatherRows", x, perm);
  const xs = Tensor.empty(x.device, [N * K, D]);
  gatherRowsForward(xs, x, perm);
  if (needsGrad(x)) {
    const inv = opts.inv ?? invertPermutation(perm);
    record("gatherRows", [xs], () => {
      if (!xs.grad) return;
      const { grad, accumulate } = gradFor(x);
      gatherRowsBackward(grad, xs.grad, inv, { accumulate });
    });
  }
  return xs;
}

/**
 * Combines the experts' output rows per token with the gate weights:
 * `y[t] = sum_s weights[t, s] * ys[inv[t * K + s]]`, with autograd for `ys` and `weights`.
 *
 * @param ys f32 [N * K, D], rows in expert order. @param perm i32 [N * K].
 * @param opts.weights f32 [N, K]; opts.inv the inverse permutation if already computed.
 * @returns y f32 [N, D].
 * @example const y = scatterWeighted(ys, perm, { weights, inv });
 */
export function scatterWeighted(
  ys: Tensor,
  perm: Tensor,
  opts: { weights: Tensor; inv?: Tensor },
): Tensor {
  const { weights } = opts;
  if (weights.shape.length !== 2) {
    throw new DeviceError(`scatterWeighted: weights must be [N, K], got [${weights.shape}]`);
  }
  const N = weights.shape[0];
  const D = ys.shape[ys.shape.length - 1];
  const inv = opts.inv ?? invertPermutation(perm);
  const y = Tensor.empty(ys.device, [N, D]);
  scatterWeightedForward(y, ys, inv, weights);
  if (needsGrad(ys, weights)) {
    record("scatterWeighted", [y], () => {
      if (!y.grad) return;
      const dysSlot = ys.requiresGrad ? gradFor(ys) : null;
      const dwSlot = weights.requiresGrad ? gradFor(weights) : null;
      scatterWeightedBackward(dysSlot?.grad ?? null, dwSlot?.grad ?? null, y.grad, {
        ys,
        perm,
        inv,
        weights,
      }, {
        accumulateRows: dysSlot?.accumulate,
        accumulateWeights: dwSlot?.accumulate,
      });
    });
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// CPU twins

/**
 * The reference routing format: from each token's chosen experts `choices` [N, K] (flat), the
 * permutation grouping (token, slot) entries by expert (token order within an expert) and the
 * per-expert offsets [E + 1].
 * @example permFromChoicesCpu(Int32Array.from([1, 0, 1, 2]), 3)
 * // -> { perm: [1, 0, 2, 3], offsets: [0, 1, 3, 4] }
 */
export function permFromChoicesCpu(
  choices: Int32Array,
  E: number,
): { perm: Int32Array; offsets: Int32Array } {
  const offsets = new Int32Array(E + 1);
  for (const e of choices) offsets[e + 1]++;
  for (let e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  const next = offsets.slice(0, E);
  const perm = new Int32Array(choices.length);
  // walking (token, slot) in order keeps each expert's entries in increasing token order
  for (let j = 0; j < choices.length; j++) perm[next[choices[j]]++] = j;
  return { perm, offsets };
}

/** CPU twin of {@linkcode invertPermutation}. @example invertPermutationCpu([2, 0, 1]) // [1, 2, 0] */
export function invertPermutationCpu(perm: ArrayLike<number>): Int32Array {
  const inv = new Int32Array(perm.length);
  for (let p = 0; p < perm.length; p++) inv[perm[p]] = p;
  return inv;
}

/** CPU twin of the gather: xs [P, D] from x [N, D]. */
export function gatherRowsCpu<A extends Floats>(x: A, perm: Int32Array, shape: DispatchShape): A {
  const { K, D } = shape;
  const xs = new (x.constructor as new (n: number) => A)(perm.length * D);
  for (let p = 0; p < perm.length; p++) {
    const t = Math.floor(perm[p] / K);
    for (let d = 0; d < D; d++) xs[p * D + d] = x[t * D + d];
  }
  return xs;
}

/** CPU twin of the gather's backward: dx [N, D], each token's K rows summed in slot order. */
export function gatherRowsBackwardCpu<A extends Floats>(
  dxs: A,
  perm: Int32Array,
  shape: DispatchShape,
): A {
  const { N, K, D } = shape;
  const inv = invertPermutationCpu(perm);
  const dx = new (dxs.constructor as new (n: number) => A)(N * D);
  for (let t = 0; t < N; t++) {
    for (let s = 0; s < K; s++) {
      const r = inv[t * K + s];
      for (let d = 0; d < D; d++) dx[t * D + d] += dxs[r * D + d];
    }
  }
  return dx;
}

/** CPU twin of the weighted scatter: y [N, D] from ys [P, D] and weights [N, K]. */
export function scatterWeightedCpu<A extends Floats>(
  ys: A,
  perm: Int32Array,
  weights: A,
  shape: DispatchShape,
): A {
  const { N, K, D } = shape;
  const inv = invertPermutationCpu(perm);
  const y = new (ys.constructor as new (n: number) => A)(N * D);
  for (let t = 0; t < N; t++) {
    for (let s = 0; s < K; s++) {
      const r = inv[t * K + s], g = weights[t * K + s];
      for (let d = 0; d < D; d++) y[t * D + d] += g * ys[r * D + d];
    }
  }
  return y;
}

/** CPU twin of the weighted scatter's backward: dys [P, D] and dweights [N, K]. */
export function scatterWeightedBackwardCpu<A extends Floats>(
  dy: A,
  ys: A,
  perm: Int32Array,
  weights: A,
  shape: DispatchShape,
): { dys: A; dweights: A } {
  const { N, K, D } = shape;
  const make = dy.constructor as new (n: number) => A;
  const dys = new make(N * K * D), dweights = new make(N * K);
  for (let p = 0; p < perm.length; p++) {
    const j = perm[p], t = Math.floor(j / K);
    let dot = 0;
    for (let d = 0; d < D; d++) {
      dys[p * D + d] = weights[j] * dy[t * D + d];
      dot += dy[t * D + d] * ys[p * D + d];
    }
    dweights[j] = dot;
  }
  return { dys, dweights };
}
