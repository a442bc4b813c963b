/**
 * Row softmax over the last dim, numerically stable, with its backward and CPU twins.
 *
 * Legend: R rows (the product of all dims but the last), C columns (the last dim).
 *
 *     forward:  y [R, C] = exp(x - max_c x) / sum_c exp(x - max_c x)
 *     backward: dx [R, C] = y * (dy - sum_c dy * y)
 *
 * Rows are laid out by `_rows.ts`'s row plan (one thread per row up to 256 columns, vec4 loads
 * when C % 4 == 0). The forward folds each thread's strided slice online (running max and
 * rescaled sum, one read of the row), then merges the lanes' maxima and rescaled sums in lane
 * order: a fixed order, so identical bits run to run. A row that is all -inf (fully masked)
 * gives zeros instead of NaNs.
 *
 * On the CPU backend each launcher calls its implementation in `host/softmax.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import { hostSoftmax, hostSoftmaxBackward } from "./host/softmax.ts";
import {
  assertF32,
  type Floats,
  like,
  PLAN_WG,
  planGrid,
  planKey,
  type RowPlan,
  rowPlan,
  rowsOf,
  wgslRowPlan,
} from "./_rows.ts";
import { Tensor } from "./tensor.ts";

/**
 * WGSL for a {@linkcode rowPlan} kernel that binds the row input as `x: array<V>`:
 * `row_stats(li, base, n) -> vec2(max, sum of exp(x - max))` over the units `x[base .. base + n)`
 * of this thread's row (n = 0 for a thread past the last row). Each thread folds its strided
 * units online, four per trip (running max, rescaled sum: one read of the row), then the lanes
 * combine. Call it from uniform control flow. Shared with cross-entropy.
 */
export const WGSL_ROW_STATS = /* wgsl */ `
fn row_stats(li: u32, base: u32, n: u32) -> vec2<f32> {
  var m = NEG_MAX;
  var s = 0.0;
  var j = plan_lane(li);
  // Four units per trip (the lanes of a row still read neighbouring units), so the running sum
  // is rescaled once per four units: exp is what bounds this loop on a CPU adapter.
  for (; j + 3u * TPR < n; j += 4u * TPR) {
    let a = x[base + j];
    let b = x[base + j + TPR];
    let c = x[base + j + 2u * TPR];
    let d = x[base + j + 3u * TPR];
    let mn = max(m, max(max(hmax(a), hmax(b)), max(hmax(c), hmax(d))));
    // exp(NEG_MAX - mn) and exp(-inf - mn) underflow to 0: empty and masked prefixes vanish.
    let e = (hsum(exp(a - mn)) + hsum(exp(b - mn))) + (hsum(exp(c - mn)) + hsum(exp(d - mn)));
    s = s * exp(m - mn) + e;
    m = mn;
  }
  for (; j < n; j += TPR) {
    let v = x[base + j];
    let mn = max(m, hmax(v));
    s = s * exp(m - mn) + hsum(exp(v - mn));
    m = mn;
  }
  return lanes_lse(li, m, s);
}`;

function softmaxSource(plan: RowPlan): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read_write> y: array<V>;
struct P { rows: u32, u: u32, _a: u32, _b: u32 }
@group(0) @binding(2) var<storage, read> p: P;
${WGSL_ROW_STATS}
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  let st = row_stats(li, base, n);
  let inv = select(0.0, 1.0 / st.y, st.y > 0.0);
  for (var j = plan_lane(li); j < n; j += TPR) { y[base + j] = exp(x[base + j] - st.x) * inv; }
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
  if (y.device.kind === "cpu") return hostSoftmax(y, x, C);
  const plan = rowPlan(C);
  launch(
    x.device,
    "softmax",
    planKey(plan),
    () => softmaxSource(plan),
    [x.binding, y.binding],
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).u32(0).u32(0),
  );
}

function softmaxBackwardSource(plan: RowPlan, acc: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> dy: array<V>;
@group(0) @binding(1) var<storage, read> y: array<V>;
@group(0) @binding(2) var<storage, read_write> dx: array<V>;
struct P { rows: u32, u: u32, _a: u32, _b: u32 }
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  var s = V(0.0);
  for (var j = plan_lane(li); j < n; j += TPR) { s += dy[base + j] * y[base + j]; }
  let d = lanes_sum(li, hsum(s));
  for (var j = plan_lane(li); j < n; j += TPR) {
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
  const plan = rowPlan(C), acc = Boolean(opts.accumulate);
  if (dx.device.kind === "cpu") return hostSoftmaxBackward(dx, dy, y, { C, accumulate: acc });
  launch(
    dx.device,
    "softmax_bwd",
    `${planKey(plan)}|${acc}`,
    () => softmaxBackwardSource(plan, acc),
    [dy.binding, y.binding, dx.binding],
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).u32(0).u32(0),
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
  const y = Tensor.empty(x.device, x.shape);
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
