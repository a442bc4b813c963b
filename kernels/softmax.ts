/**
 * Row softmax over the last dim, numerically stable, with its backward and CPU twins.
 *
 * Legend: R rows (the product of all dims but the last), C columns (the last dim).
 *
 *     forward:  y [R, C] = exp(x - max_c x) / sum_c exp(x - max_c x)
 *     backward: dx [R, C] = y * (dy - sum_c dy * y)
 *
 * One workgroup per row. The forward folds each thread's strided slice online (running max and
 * rescaled sum, one read of the row), merges the thread maxima, rescales each partial sum to the
 * row max and tree-sums them: a fixed order, so identical bits run to run. A row that is all
 * -inf (fully masked) gives zeros instead of NaNs.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import {
  assertF32,
  type Floats,
  like,
  rowGrid,
  rowsOf,
  rowWorkgroup,
  wgslRowHelpers,
} from "./_rows.ts";
import { Tensor } from "./tensor.ts";

/**
 * WGSL: `row_stats(li, base, c) -> vec2(max, sum of exp(x - max))` over `x[base .. base + c)`,
 * for kernels that bind the row input as `x` (shared with cross-entropy).
 */
export const WGSL_ROW_STATS = /* wgsl */ `
fn row_stats(li: u32, base: u32, c: u32) -> vec2<f32> {
  var m = NEG_MAX;
  var s = 0.0;
  for (var j = li; j < c; j += WG) {
    let v = x[base + j];
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else {
      s += exp(v - m);
    }
  }
  let rm = wg_max(li, m);
  // exp(NEG_MAX - rm) underflows to 0 for threads that saw no element (or only -inf).
  let rs = wg_sum(li, s * exp(m - rm));
  return vec2<f32>(rm, rs);
}`;

function softmaxSource(wg: number): string {
  return /* wgsl */ `
${wgslRowHelpers(wg)}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct P { rows: u32, c: u32, _a: u32, _b: u32 }
@group(0) @binding(2) var<uniform> p: P;
${WGSL_ROW_STATS}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.c;
  let st = row_stats(li, base, p.c);
  let inv = select(0.0, 1.0 / st.y, st.y > 0.0);
  for (var j = li; j < p.c; j += WG) { y[base + j] = exp(x[base + j] - st.x) * inv; }
}`;
}

/**
 * Encodes `y = softmax(x)` over the last dim.
 *
 * @param y f32, x's shape (must not alias x).
 * @param x f32 [..., C].
 * @throws when the sizes differ.
 * @example softmaxForward(probs, scores); // [B, H, T, T]
 */
export function softmaxForward(y: Tensor, x: Tensor): void {
  assertF32(x, "softmaxForward");
  if (y.size !== x.size) throw new Error(`softmaxForward: y [${y.shape}] vs x [${x.shape}]`);
  const { rows, C } = rowsOf(x);
  if (rows === 0) return;
  const wg = rowWorkgroup(C);
  launch(
    x.gpu,
    "softmax",
    `${wg}`,
    () => softmaxSource(wg),
    [x.binding, y.binding],
    rowGrid(rows),
    (p) => p.u32(rows).u32(C).u32(0).u32(0),
  );
}

function softmaxBackwardSource(wg: number, acc: boolean): string {
  return /* wgsl */ `
${wgslRowHelpers(wg)}
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
struct P { rows: u32, c: u32, _a: u32, _b: u32 }
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.c;
  var s = 0.0;
  for (var j = li; j < p.c; j += WG) { s += dy[base + j] * y[base + j]; }
  let d = wg_sum(li, s);
  for (var j = li; j < p.c; j += WG) {
    let g = y[base + j] * (dy[base + j] - d);
    ${acc ? "dx[base + j] = dx[base + j] + g;" : "dx[base + j] = g;"}
  }
}`;
}

/**
 * Encodes `dx = y * (dy - sum_c(dy * y))` (or adds it into `dx`).
 *
 * @param dx f32 [..., C].
 * @param dy f32, the upstream gradient, dx's shape.
 * @param y f32, the forward's output, dx's shape.
 * @throws when the sizes differ.
 * @example softmaxBackward(dScores, dProbs, probs, { accumulate: true });
 */
export function softmaxBackward(
  dx: Tensor,
  dy: Tensor,
  y: Tensor,
  opts: { accumulate?: boolean } = {},
): void {
  if (dy.size !== dx.size || y.size !== dx.size) {
    throw new Error(`softmaxBackward: dx [${dx.shape}], dy [${dy.shape}], y [${y.shape}]`);
  }
  const { rows, C } = rowsOf(dx);
  if (rows === 0) return;
  const wg = rowWorkgroup(C), acc = Boolean(opts.accumulate);
  launch(
    dx.gpu,
    "softmax_bwd",
    `${wg}|${acc}`,
    () => softmaxBackwardSource(wg, acc),
    [dy.binding, y.binding, dx.binding],
    rowGrid(rows),
    (p) => p.u32(rows).u32(C).u32(0).u32(0),
  );
}

/** CPU twin of {@linkcode softmaxForward}: y [R, C] from x [R, C]. */
export function softmaxCpu<A extends Floats>(x: A, C: number): A {
  const y = like(x, x.length);
  for (let b = 0; b < x.length; b += C) {
    let m = -Infinity, s = 0;
    for (let j = 0; j < C; j++) m = Math.max(m, x[b + j]);
    if (m === -Infinity) continue; // a fully masked row: zeros
    for (let j = 0; j < C; j++) s += Math.exp(x[b + j] - m);
    for (let j = 0; j < C; j++) y[b + j] = Math.exp(x[b + j] - m) / s;
  }
  return y;
}

/** CPU twin of {@linkcode softmaxBackward}: dx [R, C] from dy and y [R, C]. */
export function softmaxBackwardCpu<A extends Floats>(dy: A, y: Floats, C: number): A {
  const dx = like(dy, dy.length);
  for (let b = 0; b < dy.length; b += C) {
    let d = 0;
    for (let j = 0; j < C; j++) d += dy[b + j] * y[b + j];
    for (let j = 0; j < C; j++) dx[b + j] = y[b + j] * (dy[b + j] - d);
  }
  return dx;
}

/**
 * Softmax over the last dim, with autograd (the backward uses the saved output).
 * @example const p = softmax(scores); // [B, H, T, T]
 */
export function softmax(x: Tensor): Tensor {
  const y = Tensor.empty(x.gpu, x.shape);
  softmaxForward(y, x);
  if (needsGrad(x)) {
    record("softmax", [y], () => {
      if (!y.grad) return;
      const { grad, accumulate } = gradFor(x);
      softmaxBackward(grad, y.grad, y, { accumulate });
    });
  }
  return y;
}
