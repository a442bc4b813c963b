/**
 * DeepSeek-V3 MoE routing on the GPU: group-limited top-K selection on biased sigmoid scores,
 * the routing weights and their backward, a deterministic dispatch plan (loads, offsets and the
 * expert-sorted permutation, no atomics), the auxiliary-loss-free bias update and the
 * complementary sequence-wise balance loss with its backward; CPU twins of all.
 *
 * Legend: N tokens (= B * T), B sequences, T tokens per sequence, E routed experts, K experts per
 * token, G expert groups (E / G experts each, contiguous), KG groups kept per token.
 *
 *     s        [N, E]  f32   gate scores sigmoid(W_g u) (computed by other ops)
 *     bias     [E]     f32   balancing bias b: used for selection only, no gradient
 *     indices  [N, K]  i32   chosen experts, by descending s + b (ties: lower index first)
 *     weights  [N, K]  f32   route_scale * s[chosen] / sum_k s[chosen_k]
 *     counts   [E]     i32   tokens routed to each expert (the loads)
 *     offsets  [E + 1] i32   exclusive prefix sum of counts; offsets[E] = N * K
 *     perm     [N * K] i32   expert-sorted list of flat slots p = n * K + k (token order within
 *                            an expert): rows offsets[e] .. offsets[e + 1] go to expert e
 *     inv      [N * K] i32   inverse of perm: slot p's row in expert order (for the combine)
 *
 * Routing (V3 section 2.1.2; see docs/deepseek-v3.md "DeepSeekMoE"): per token, the group score
 * is the sum of the top-2 biased scores of the group (the top-1 when a group holds one expert);
 * the best KG groups are kept; the top K experts among them by s + b are chosen. Selection is
 * computed in f32 exactly as the CPU twin rounds it, so both pick the same experts.
 *
 * Dispatch plan complexity: one workgroup of 256 threads per expert; each thread scans a
 * contiguous 1/256 of the N * K slots, then a workgroup prefix sum places them. Work is
 * O(E * N * K) reads in all (every expert scans every slot), span O(N * K / 256). That is cheap
 * at this project's sizes (E <= 64, N * K <= ~10^5) and needs neither atomics nor a global sort.
 *
 * Left out: token dropping (V3 drops none), capacity factors, softmax gates (V2).
 *
 * On the CPU backend each launcher calls its implementation in `host/moe_route.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import { type Params } from "./gpu.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import {
  hostBalanceBackward,
  hostBalanceForward,
  hostBiasUpdate,
  hostDispatchPlan,
  hostMoeRoute,
  hostMoeRouteBackward,
} from "./host/moe_route.ts";

/** Routing hyperparameters (the model config's MoE fields). */
export interface RouteConfig {
  /** K, experts per token (`n_activated_experts`). */
  K: number;
  /** G, contiguous expert groups (`n_expert_groups`); 1 disables group limiting. */
  groups: number;
  /** Groups kept per token (`n_limited_groups`). */
  topkGroups: number;
  /** Multiplies the normalized weights (`route_scale`). */
  routeScale: number;
}

function checkRoute(E: number, cfg: RouteConfig): number {
  const { K, groups: G, topkGroups } = cfg;
  if (!(G >= 1) || E % G !== 0) {
    throw new DeviceError(`moeRoute: groups (${G}) must divide the expert count (${E})`);
  }
  if (!(topkGroups >= 1 && topkGroups <= G)) {
    throw new DeviceError(`moeRoute: topkGroups must be in [1, ${G}], got ${topkGroups}`);
  }
  const per = E / G;
  if (!(K >= 1 && K <= topkGroups * per)) {
    throw new DeviceError(
      `moeRoute: K must be in [1, ${topkGroups * per}] (the experts of the kept groups), got ${K}`,
    );
  }
  return per;
}

function routeSource(E: number, K: number, G: number): string {
  const per = E / G;
  return /* wgsl */ `
const E: u32 = ${E}u;
const K: u32 = ${K}u;
const G: u32 = ${G}u;
const PER: u32 = ${per}u;
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> indices: array<i32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
struct P { n: u32, topk_groups: u32, route_scale: f32, _a: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let n = (wid.y * nwg.x + wid.x) * 64u + li;
  if (n >= p.n) { return; }
  var sb: array<f32, E>;
  for (var e = 0u; e < E; e++) { sb[e] = s[n * E + e] + bias[e]; }
  var keep: array<bool, G>;
  if (G == 1u) {
    keep[0] = true;
  } else {
    var gs: array<f32, G>;
    for (var g = 0u; g < G; g++) {
      // top-2 of the group by value; strict > keeps the first of equal values
      var b1 = sb[g * PER];
      var b2 = 0.0;
      for (var e = 1u; e < PER; e++) {
        let x = sb[g * PER + e];
        if (x > b1) { b2 = b1; b1 = x; } else if (e == 1u || x > b2) { b2 = x; }
      }
      gs[g] = select(b1 + b2, b1, PER == 1u);
    }
    for (var r = 0u; r < p.topk_groups; r++) {
      var best = -1;
      for (var g = 0u; g < G; g++) {
        if (!keep[g] && (best < 0 || gs[g] > gs[u32(best)])) { best = i32(g); }
      }
      keep[u32(best)] = true;
    }
  }
  var taken: array<bool, E>;
  var chosen: array<u32, K>;
  var z = 0.0;
  for (var k = 0u; k < K; k++) {
    var best = -1;
    for (var e = 0u; e < E; e++) {
      if (keep[e / PER] && !taken[e] && (best < 0 || sb[e] > sb[u32(best)])) { best = i32(e); }
    }
    taken[u32(best)] = true;
    chosen[k] = u32(best);
    z += s[n * E + u32(best)];
  }
  for (var k = 0u; k < K; k++) {
    indices[n * K + k] = i32(chosen[k]);
    weights[n * K + k] = s[n * E + chosen[k]] / z * p.route_scale;
  }
}`;
}

/**
 * Encodes the routing of every token: `indices` [N, K] (i32) and `weights` [N, K] (f32).
 *
 * @param outs where to write indices and weights.
 * @param ins `s` [N, E] sigmoid scores and `bias` [E].
 * @throws when the sizes or the group settings disagree.
 * @example moeRouteForward({ indices, weights }, { s, bias }, { K: 2, groups: 2, topkGroups: 1, routeScale: 2.5 });
 */
export function moeRouteForward(
  outs: { indices: Tensor; weights: Tensor },
  ins: { s: Tensor; bias: Tensor },
  cfg: RouteConfig,
): void {
  const [N, E] = ins.s.shape;
  checkRoute(E, cfg);
  if (ins.s.shape.length !== 2 || ins.bias.size !== E) {
    throw new DeviceError(
      `moeRoute: s must be [N, E] and bias [E]; got [${ins.s.shape}], [${ins.bias.shape}]`,
    );
  }
  if (
    outs.indices.dtype !== "i32" || outs.indices.size !== N * cfg.K ||
    outs.weights.size !== N * cfg.K
  ) {
    throw new DeviceError(
      `moeRoute: indices must be i32 [${N}, ${cfg.K}] and weights f32 [${N}, ${cfg.K}]`,
    );
  }
  if (ins.s.device.kind === "cpu") return hostMoeRoute(outs, ins, { E, ...cfg });
  launch1d(
    ins.s.device,
    "moe_route",
    `${E}|${cfg.K}|${cfg.groups}`,
    () => routeSource(E, cfg.K, cfg.groups),
    [ins.s.binding, ins.bias.binding, outs.indices.binding, outs.weights.binding],
    N,
    (p) => p.u32(N).u32(cfg.topkGroups).f32(cfg.routeScale).u32(0),
    64,
  );
}

/**
 * CPU twin of {@linkcode moeRouteForward}. Selection mirrors the GPU's f32 arithmetic
 * (`fround(s + b)`, `fround(top1 + top2)`) so both choose the same experts; the weights are
 * computed in f64.
 *
 * @example
 * moeRouteCpu([0.9, 0.1, 0.8, 0.7], [0, 0, 0, 0], { K: 1, groups: 2, topkGroups: 1, routeScale: 1 })
 * // group 1 (0.8 + 0.7) beats group 0 (0.9 + 0.1): indices [2], weights [1]
 */
export function moeRouteCpu(
  s: ArrayLike<number>,
  bias: ArrayLike<number>,
  cfg: RouteConfig,
): { indices: Int32Array; weights: Float64Array } {
  const E = bias.length, N = s.length / E, { K, groups: G } = cfg;
  const per = checkRoute(E, cfg);
  const indices = new Int32Array(N * K), weights = new Float64Array(N * K);
  const f = Math.fround;
  // index of the largest value among allowed ones; ties go to the lower index
  const argmax = (vals: ArrayLike<number>, ok: (i: number) => boolean) => {
    let best = -1;
    for (let i = 0; i < vals.length; i++) if (ok(i) && (best < 0 || vals[i] > vals[best])) best = i;
    return best;
  };
  for (let n = 0; n < N; n++) {
    const sb = Float64Array.from({ length: E }, (_, e) => f(s[n * E + e] + bias[e]));
    const keep = new Array<boolean>(G).fill(G === 1);
    if (G > 1) {
      const gs = Float64Array.from({ length: G }, (_, g) => {
        const grp = [...sb.subarray(g * per, (g + 1) * per)].sort((a, b) => b - a);
        return per === 1 ? grp[0] : f(grp[0] + grp[1]);
      });
      for (let r = 0; r < cfg.topkGroups; r++) keep[argmax(gs, (g) => !keep[g])] = true;
    }
    const taken = new Array<boolean>(E).fill(false);
    let z = 0;
    for (let k = 0; k < K; k++) {
      const e = argmax(sb, (i) => keep[Math.floor(i / per)] && !taken[i]);
      taken[e] = true;
      indices[n * K + k] = e;
      z += s[n * E + e];
    }
    for (let k = 0; k < K; k++) {
      weights[n * K + k] = s[n * E + indices[n * K + k]] / z * cfg.routeScale;
    }
  }
  return { indices, weights };
}

const WEIGHTS_BWD_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> ds: array<f32>;
struct P { n: u32, E: u32, K: u32, route_scale: f32, accumulate: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let x = (wid.y * nwg.x + wid.x) * 256u + li;   // over [N, E]
  if (x >= p.n * p.E) { return; }
  let n = x / p.E;
  let e = i32(x % p.E);
  var slot = -1;
  var z = 0.0;
  var dot = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let j = indices[n * p.K + k];
    let sj = s[n * p.E + u32(j)];
    z += sj;
    dot += dw[n * p.K + k] * sj;
    if (j == e) { slot = i32(k); }
  }
  // w_k = rs s_k / Z  =>  dL/ds_j = rs / Z * (dw_j - sum_k dw_k s_k / Z) at chosen j, else 0
  var g = 0.0;
  if (slot >= 0) { g = p.route_scale / z * (dw[n * p.K + u32(slot)] - dot / z); }
  if (p.accumulate == 1u) {
    if (slot >= 0) { ds[x] += g; }
  } else {
    ds[x] = g;
  }
}`;

/**
 * Encodes the backward of the routing weights: `ds` [N, E] from `dweights` [N, K], through the
 * normalization and route_scale; zero at experts a token did not choose (left untouched when
 * accumulating). The selection itself has no gradient.
 *
 * @example moeRouteBackward(ds, { s, indices, dweights }, { routeScale: 2.5 });
 */
export function moeRouteBackward(
  ds: Tensor,
  ins: { s: Tensor; indices: Tensor; dweights: Tensor },
  opts: { routeScale: number; accumulate?: boolean },
): void {
  const [N, E] = ins.s.shape;
  const K = ins.indices.size / N;
  if (ds.device.kind === "cpu") {
    return hostMoeRouteBackward(ds, ins, {
      N,
      E,
      K,
      routeScale: opts.routeScale,
      accumulate: Boolean(opts.accumulate),
    });
  }
  launch1d(
    ds.device,
    "moe_route_bwd",
    "",
    () => WEIGHTS_BWD_SRC,
    [ins.s.binding, ins.indices.binding, ins.dweights.binding, ds.binding],
    N * E,
    (p) =>
      p.u32(N).u32(E).u32(K).f32(opts.routeScale).u32(opts.accumulate ? 1 : 0).u32(0).u32(0)
        .u32(0),
  );
}

/** CPU twin of {@linkcode moeRouteBackward} in f64: ds [N, E]. */
export function moeRouteBackwardCpu(
  ins: { s: ArrayLike<number>; indices: ArrayLike<number>; dweights: ArrayLike<number> },
  opts: { E: number; routeScale: number },
): Float64Array {
  const E = opts.E, N = ins.s.length / E, K = ins.indices.length / N;
  const ds = new Float64Array(N * E);
  for (let n = 0; n < N; n++) {
    let z = 0, dot = 0;
    for (let k = 0; k < K; k++) {
      const sj = ins.s[n * E + ins.indices[n * K + k]];
      z += sj;
      dot += ins.dweights[n * K + k] * sj;
    }
    for (let k = 0; k < K; k++) {
      ds[n * E + ins.indices[n * K + k]] = opts.routeScale / z *
        (ins.dweights[n * K + k] - dot / z);
    }
  }
  return ds;
}

/**
 * Routes every token, with autograd through the weights into `s`.
 *
 * @param s gate scores [N, E] (sigmoid outputs; may require a gradient).
 * @param bias balancing bias [E] (no gradient).
 * @returns indices i32 [N, K] and weights f32 [N, K].
 * @example const { indices, weights } = moeRoute(s, bias, { K: 2, groups: 1, topkGroups: 1, routeScale: 1 });
 */
export function moeRoute(
  s: Tensor,
  bias: Tensor,
  cfg: RouteConfig,
): { indices: Tensor; weights: Tensor } {
  const N = s.shape[0];
  const indices = Tensor.empty(s.device, [N, cfg.K], "i32");
  const weights = Tensor.empty(s.device, [N, cfg.K]);
  moeRouteForward({ indices, weights }, { s, bias }, cfg);
  if (needsGrad(s)) {
    record("moe_route", [weights], () => {
      if (!weights.grad) return;
      const { grad, accumulate } = gradFor(s);
      moeRouteBackward(grad, { s, indices, dweights: weights.grad }, {
        routeScale: cfg.routeScale,
        accumulate,
      });
    });
  }
  return { indices, weights };
}

// ---------------------------------------------------------------------------------------------
// Dispatch plan

/** Threads per expert workgroup of the dispatch plan. */
const PLAN_WG = 256;

const PLAN_COMMON = /* wgsl */ `
@group(0) @binding(0) var<storage, read> indices: array<i32>;
struct P { nk: u32, E: u32, _a: u32, _b: u32 }
var<workgroup> part: array<u32, ${PLAN_WG}>;
// thread li scans slots [lo, hi): contiguous chunks keep the slots in order
fn chunk_bounds(li: u32) -> vec2<u32> {
  let c = (p.nk + ${PLAN_WG - 1}u) / ${PLAN_WG}u;
  return vec2<u32>(min(p.nk, li * c), min(p.nk, li * c + c));
}
fn count_chunk(e: i32, r: vec2<u32>) -> u32 {
  var c = 0u;
  for (var x = r.x; x < r.y; x++) { if (indices[x] == e) { c++; } }
  return c;
}`;

const COUNT_SRC = /* wgsl */ `
${PLAN_COMMON}
@group(0) @binding(1) var<storage, read_write> counts: array<i32>;
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let e = wid.x;
  part[li] = count_chunk(i32(e), chunk_bounds(li));
  for (var w = ${PLAN_WG / 2}u; w > 0u; w >>= 1u) {
    workgroupBarrier();
    if (li < w) { part[li] += part[li + w]; }
  }
  if (li == 0u) { counts[e] = i32(part[0]); }
}`;

const FILL_SRC = /* wgsl */ `
${PLAN_COMMON}
@group(0) @binding(1) var<storage, read> counts: array<i32>;
@group(0) @binding(2) var<storage, read_write> offsets: array<i32>;
@group(0) @binding(3) var<storage, read_write> perm: array<i32>;
@group(0) @binding(4) var<storage, read_write> inv: array<i32>;
@group(0) @binding(5) var<storage, read> p: P;
var<workgroup> wg_base: i32;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let e = wid.x;
  let r = chunk_bounds(li);
  part[li] = count_chunk(i32(e), r);
  workgroupBarrier();
  if (li == 0u) {
    // E and 256 are small: serial prefix sums are cheaper than a parallel scan's barriers
    var off = 0;
    for (var j = 0u; j < e; j++) { off += counts[j]; }
    offsets[e] = off;
    if (e + 1u == p.E) { offsets[p.E] = off + counts[e]; }
    wg_base = off;
    var run = 0u;
    for (var t = 0u; t < ${PLAN_WG}u; t++) { let c = part[t]; part[t] = run; run += c; }
  }
  workgroupBarrier();
  var pos = wg_base + i32(part[li]);
  for (var x = r.x; x < r.y; x++) {
    if (indices[x] == i32(e)) {
      perm[pos] = i32(x);
      inv[x] = pos;
      pos++;
    }
  }
}`;

/** The dispatch plan's tensors (see the module legend). */
export interface DispatchPlan {
  /** Loads: tokens routed to each expert, i32 [E]. */
  counts: Tensor;
  /** Exclusive prefix sum of counts, plus the total at [E]: i32 [E + 1]. */
  offsets: Tensor;
  /** Flat slots `n * K + k` in expert order, token order within an expert: i32 [N * K]. */
  perm: Tensor;
  /** Inverse permutation: the expert-order row of slot `n * K + k`, i32 [N * K]. */
  inv: Tensor;
}

/**
 * Encodes the dispatch plan of `indices` [N, K] into `plan` (two kernels, no atomics: counts,
 * then offsets + permutation). Bitwise reproducible.
 *
 * @throws when E passes 65535 (one workgroup per expert) or the sizes disagree.
 * @example dispatchPlanForward(plan, indices, { E: 16 });
 */
export function dispatchPlanForward(
  plan: DispatchPlan,
  indices: Tensor,
  opts: { E: number },
): void {
  const E = opts.E, nk = indices.size;
  if (E > 65535) throw new DeviceError(`dispatchPlan: ${E} experts pass 65535 workgroups`);
  if (
    plan.counts.size !== E || plan.offsets.size !== E + 1 || plan.perm.size !== nk ||
    plan.inv.size !== nk
  ) {
    throw new DeviceError(
      `dispatchPlan: counts must be [${E}], offsets [${E + 1}], perm and inv [${nk}]`,
    );
  }
  const gpu = indices.device;
  if (gpu.kind === "cpu") return hostDispatchPlan(plan, indices, E);
  const params = (p: Params) => p.u32(nk).u32(E).u32(0).u32(0);
  launch(
    gpu,
    "moe_count",
    "",
    () => COUNT_SRC,
    [indices.binding, plan.counts.binding],
    [E, 1, 1],
    params,
  );
  launch(
    gpu,
    "moe_plan",
    "",
    () => FILL_SRC,
    [indices, plan.counts, plan.offsets, plan.perm, plan.inv].map((t) => t.binding),
    [E, 1, 1],
    params,
  );
}

/**
 * Allocates and encodes the dispatch plan of `indices` [N, K] for `E` experts.
 * @example const { counts, offsets, perm, inv } = dispatchPlan(indices, { E: 16 });
 */
export function dispatchPlan(indices: Tensor, opts: { E: number }): DispatchPlan {
  const gpu = indices.device, nk = indices.size;
  const plan = {
    counts: Tensor.empty(gpu, [opts.E], "i32"),
    offsets: Tensor.empty(gpu, [opts.E + 1], "i32"),
    perm: Tensor.empty(gpu, [nk], "i32"),
    inv: Tensor.empty(gpu, [nk], "i32"),
  };
  dispatchPlanForward(plan, indices, opts);
  return plan;
}

/**
 * CPU twin of {@linkcode dispatchPlanForward}.
 * @example dispatchPlanCpu([1, 0, 1, 2], { E: 3 }) // counts [1, 2, 1], offsets [0, 1, 3, 4], perm [1, 0, 2, 3]
 */
export function dispatchPlanCpu(
  indices: ArrayLike<number>,
  opts: { E: number },
): { counts: Int32Array; offsets: Int32Array; perm: Int32Array; inv: Int32Array } {
  const E = opts.E, nk = indices.length;
  const counts = new Int32Array(E), offsets = new Int32Array(E + 1);
  for (let x = 0; x < nk; x++) counts[indices[x]]++;
  for (let e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
  const perm = new Int32Array(nk), inv = new Int32Array(nk), next = offsets.slice(0, E);
  for (let x = 0; x < nk; x++) {
    const pos = next[indices[x]]++;
    perm[pos] = x;
    inv[x] = pos;
  }
  return { counts, offsets, perm, inv };
}

// ---------------------------------------------------------------------------------------------
// Auxiliary-loss-free bias update

const BIAS_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> loads: array<i32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
struct P { E: u32, gamma: f32, _a: u32, _b: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 64u + li;
  if (i >= p.E) { return; }
  var sum = 0u;
  for (var e = 0u; e < p.E; e++) { sum += u32(loads[e]); }
  // sign(mean - load) exactly, without forming E * load (which could overflow):
  // with sum = q E + r, load < q -> +1, load > q -> -1, load == q -> sign(r)
  let q = sum / p.E;
  let r = sum % p.E;
  let l = u32(loads[i]);
  var sgn = 0.0;
  if (l < q || (l == q && r > 0u)) { sgn = 1.0; } else if (l > q) { sgn = -1.0; }
  bias[i] = bias[i] + p.gamma * sgn;
}`;

/**
 * Encodes the auxiliary-loss-free bias update (V3 section 2.1.2), in place:
 * `b_i += gamma * sign(mean(load) - load_i)`. The sign is exact (integer arithmetic).
 *
 * @param bias [E] f32, updated.
 * @param loads [E] i32 tokens per expert over the whole batch (e.g. `dispatchPlan(...).counts`,
 *   or their sum over micro-batches).
 * @example biasUpdate(bias, plan.counts, { gamma: 0.001 });
 */
export function biasUpdate(bias: Tensor, loads: Tensor, opts: { gamma: number }): void {
  const E = bias.size;
  if (loads.size !== E || loads.dtype !== "i32") {
    throw new DeviceError(
      `biasUpdate: loads must be i32 [${E}], got ${loads.dtype} [${loads.shape}]`,
    );
  }
  if (bias.device.kind === "cpu") return hostBiasUpdate(bias, loads, opts.gamma);
  launch1d(
    bias.device,
    "moe_bias_update",
    "",
    () => BIAS_SRC,
    [loads.binding, bias.binding],
    E,
    (p) => p.u32(E).f32(opts.gamma).u32(0).u32(0),
    64,
  );
}

/**
 * CPU twin of {@linkcode biasUpdate}, in place, bit-exact with the GPU (f32 gamma, f32 add).
 * @example biasUpdateCpu(new Float32Array(3), [5, 1, 3], { gamma: 0.001 }) // [-0.001, 0.001, 0]
 */
export function biasUpdateCpu(
  bias: Float32Array,
  loads: ArrayLike<number>,
  opts: { gamma: number },
): Float32Array {
  const E = bias.length;
  let sum = 0;
  for (let e = 0; e < E; e++) sum += loads[e];
  const g = Math.fround(opts.gamma);
  for (let i = 0; i < E; i++) bias[i] = Math.fround(bias[i] + g * Math.sign(sum - E * loads[i]));
  return bias;
}

// ---------------------------------------------------------------------------------------------
// Complementary sequence-wise balance loss (V3 eq. 17-20)

const BAL_F_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> indices: array<i32>;
@group(0) @binding(1) var<storage, read_write> f: array<f32>;
struct P { B: u32, T: u32, E: u32, K: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let x = (wid.y * nwg.x + wid.x) * 64u + li;   // over [B, E]
  if (x >= p.B * p.E) { return; }
  let b = x / p.E;
  let e = i32(x % p.E);
  var c = 0u;
  for (var j = b * p.T * p.K; j < (b + 1u) * p.T * p.K; j++) { if (indices[j] == e) { c++; } }
  f[x] = f32(p.E) / f32(p.K * p.T) * f32(c);
}`;

const BAL_TOKEN_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
struct P { N: u32, T: u32, E: u32, _a: u32 }
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let n = (wid.y * nwg.x + wid.x) * 64u + li;
  if (n >= p.N) { return; }
  let b = n / p.T;
  var z = 0.0;
  var fs = 0.0;
  for (var e = 0u; e < p.E; e++) {
    let x = s[n * p.E + e];
    z += x;
    fs += f[b * p.E + e] * x;
  }
  stats[2u * n] = z;            // S_t = sum_j s_{j,t}
  stats[2u * n + 1u] = fs / z;  // c_t = sum_i f_i s'_{i,t}
}`;

const BAL_SUM_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
struct P { N: u32, coef: f32, _a: u32, _b: u32 }
@group(0) @binding(2) var<storage, read> p: P;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var n = li; n < p.N; n += 256u) { acc += stats[2u * n + 1u]; }
  part[li] = acc;
  for (var w = 128u; w > 0u; w >>= 1u) {
    workgroupBarrier();
    if (li < w) { part[li] += part[li + w]; }
  }
  if (li == 0u) { loss[0] = p.coef * part[0]; }
}`;

const BAL_BWD_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> f: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> dloss: array<f32>;
@group(0) @binding(3) var<storage, read_write> ds: array<f32>;
struct P { N: u32, T: u32, E: u32, coef: f32, accumulate: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let x = (wid.y * nwg.x + wid.x) * 256u + li;   // over [N, E]
  if (x >= p.N * p.E) { return; }
  let n = x / p.E;
  let e = x % p.E;
  // L = coef sum_t sum_i f_i s_{i,t} / S_t  =>  dL/ds_{j,t} = coef (f_j - c_t) / S_t
  let g = dloss[0] * p.coef * (f[(n / p.T) * p.E + e] - stats[2u * n + 1u]) / stats[2u * n];
  if (p.accumulate == 1u) { ds[x] += g; } else { ds[x] = g; }
}`;

/** What the balance-loss backward reads from its forward. */
export interface BalanceCache {
  /** f [B, E]: `E / (K T) * count_t(i in TopK(t))` per sequence. */
  f: Tensor;
  /** [N, 2]: per token `S_t = sum_j s_{j,t}` and `c_t = sum_i f_i s_{i,t} / S_t`. */
  stats: Tensor;
}

/** Options of the balance-loss launchers. */
export interface BalanceOptions {
  /** B, sequences in the batch (N = B * T). */
  B: number;
  /** alpha, the loss weight (V3: 1e-4). */
  alpha: number;
}

function balanceSizes(s: Tensor, indices: Tensor, B: number) {
  const [N, E] = s.shape;
  if (s.shape.length !== 2 || N % B !== 0) {
    throw new DeviceError(`balanceLoss: s must be [B * T, E] with B = ${B}; got [${s.shape}]`);
  }
  if (indices.dtype !== "i32" || indices.size % N !== 0) {
    throw new DeviceError(`balanceLoss: indices must be i32 [${N}, K]; got [${indices.shape}]`);
  }
  return { N, E, T: N / B, K: indices.size / N };
}

/**
 * Encodes the complementary sequence-wise balance loss into `loss` [1] and the `cache` its
 * backward reads. The loss is the MEAN over the B sequences of the per-sequence loss
 * `alpha * sum_i f_i P_i`, with `f_i = E / (K T) * count_t(i in TopK(t))` (a constant: no
 * gradient) and `P_i = mean_t s_{i,t} / sum_j s_{j,t}`; i.e.
 * `L = alpha / (B T) * sum_t sum_i f_{b(t), i} s'_{i,t}`.
 *
 * @param outs `loss` [1] and `cache` (f [B, E], stats [N, 2]).
 * @param ins `s` [N, E] unbiased scores and `indices` i32 [N, K] (the chosen experts).
 * @example balanceLossForward({ loss, cache }, { s, indices }, { B: 4, alpha: 1e-4 });
 */
export function balanceLossForward(
  outs: { loss: Tensor; cache: BalanceCache },
  ins: { s: Tensor; indices: Tensor },
  opts: BalanceOptions,
): void {
  const { N, E, T, K } = balanceSizes(ins.s, ins.indices, opts.B);
  const gpu = ins.s.device, { f, stats } = outs.cache;
  if (gpu.kind === "cpu") {
    return hostBalanceForward({ loss: outs.loss, f, stats }, ins, { ...opts, T, E, K });
  }
  launch1d(
    gpu,
    "moe_balance_f",
    "",
    () => BAL_F_SRC,
    [ins.indices.binding, f.binding],
    opts.B * E,
    (p) => p.u32(opts.B).u32(T).u32(E).u32(K),
    64,
  );
  launch1d(
    gpu,
    "moe_balance_token",
    "",
    () => BAL_TOKEN_SRC,
    [ins.s.binding, f.binding, stats.binding],
    N,
    (p) => p.u32(N).u32(T).u32(E).u32(0),
    64,
  );
  launch(
    gpu,
    "moe_balance_sum",
    "",
    () => BAL_SUM_SRC,
    [stats.binding, outs.loss.binding],
    [1, 1, 1],
    (p) => p.u32(N).f32(opts.alpha / N).u32(0).u32(0),
  );
}

/**
 * Encodes the balance loss's backward into `ds` [N, E]:
 * `ds_{j,t} = dloss * alpha / (B T) * (f_j - c_t) / S_t`, with `dloss` a [1] GPU tensor.
 *
 * @example balanceLossBackward(ds, { cache, dloss }, { B, alpha, accumulate: true });
 */
export function balanceLossBackward(
  ds: Tensor,
  ins: { cache: BalanceCache; dloss: Tensor },
  opts: BalanceOptions & { accumulate?: boolean },
): void {
  const [N, E] = ds.shape;
  const T = N / opts.B;
  if (ds.device.kind === "cpu") {
    return hostBalanceBackward(ds, { ...ins.cache, dloss: ins.dloss }, {
      N,
      T,
      E,
      alpha: opts.alpha,
      accumulate: Boolean(opts.accumulate),
    });
  }
  launch1d(
    ds.device,
    "moe_balance_bwd",
    "",
    () => BAL_BWD_SRC,
    [ins.cache.f.binding, ins.cache.stats.binding, ins.dloss.binding, ds.binding],
    N * E,
    (p) =>
      p.u32(N).u32(T).u32(E).f32(opts.alpha / N).u32(opts.accumulate ? 1 : 0).u32(0).u32(0)
        .u32(0),
  );
}

/**
 * The sequence-wise balance loss with autograd into `s` (see {@linkcode balanceLossForward}:
 * averaged over the B sequences).
 *
 * @param s gate scores [B * T, E].
 * @param indices chosen experts i32 [B * T, K].
 * @returns the loss [1].
 * @example const lBal = balanceLoss(s, indices, { B, alpha: 1e-4 });
 */
export function balanceLoss(s: Tensor, indices: Tensor, opts: BalanceOptions): Tensor {
  const { N, E } = balanceSizes(s, indices, opts.B);
  const loss = Tensor.empty(s.device, [1]);
  const cache = { f: Tensor.empty(s.device, [opts.B, E]), stats: Tensor.empty(s.device, [N, 2]) };
  balanceLossForward({ loss, cache }, { s, indices }, opts);
  if (needsGrad(s)) {
    record("moe_balance_loss", [loss], () => {
      if (!loss.grad) return;
      const { grad, accumulate } = gradFor(s);
      balanceLossBackward(grad, { cache, dloss: loss.grad }, { ...opts, accumulate });
    });
  }
  return loss;
}

/**
 * CPU twin of {@linkcode balanceLossForward} in f64 (mean over the B sequences).
 * @example
 * // B = 1, T = 1, E = 2, K = 1, expert 0 chosen, s = [0.6, 0.2]: f = [2, 0], P = [0.75, 0.25]
 * balanceLossCpu([0.6, 0.2], [0], { B: 1, E: 2, alpha: 1 }) // 1.5
 */
export function balanceLossCpu(
  s: ArrayLike<number>,
  indices: ArrayLike<number>,
  opts: BalanceOptions & { E: number },
): number {
  const { f, N, E } = balanceF(s, indices, opts);
  let loss = 0;
  for (let n = 0; n < N; n++) {
    const b = Math.floor(n / (N / opts.B));
    let z = 0, fs = 0;
    for (let e = 0; e < E; e++) {
      z += s[n * E + e];
      fs += f[b * E + e] * s[n * E + e];
    }
    loss += fs / z;
  }
  return opts.alpha / N * loss;
}

/** CPU twin of {@linkcode balanceLossBackward} in f64 (for `dloss` = 1 unless given). */
export function balanceLossBackwardCpu(
  s: ArrayLike<number>,
  indices: ArrayLike<number>,
  opts: BalanceOptions & { E: number; dloss?: number },
): Float64Array {
  const { f, N, E } = balanceF(s, indices, opts);
  const ds = new Float64Array(N * E);
  const coef = (opts.dloss ?? 1) * opts.alpha / N;
  for (let n = 0; n < N; n++) {
    const b = Math.floor(n / (N / opts.B));
    let z = 0, fs = 0;
    for (let e = 0; e < E; e++) {
      z += s[n * E + e];
      fs += f[b * E + e] * s[n * E + e];
    }
    for (let e = 0; e < E; e++) ds[n * E + e] = coef * (f[b * E + e] - fs / z) / z;
  }
  return ds;
}

function balanceF(
  s: ArrayLike<number>,
  indices: ArrayLike<number>,
  opts: { B: number; E: number },
) {
  const E = opts.E, N = s.length / E, T = N / opts.B, K = indices.length / N;
  const f = new Float64Array(opts.B * E);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) f[Math.floor(n / T) * E + indices[n * K + k]] += E / (K * T);
  }
  return { f, N, E };
}
