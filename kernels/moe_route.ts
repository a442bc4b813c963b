/**
 * DeepSeek-V3 MoE routing: group-limited top-K selection on biased sigmoid scores, the routing
 * weights and their backward; CPU twins of both. The dispatch plan, the bias update and the
 * balance loss that follow it live in `moe_plan.ts`, `moe_bias.ts` and `moe_balance.ts`.
 *
 * Legend: N tokens (= B * T), E routed experts, K experts per token, G expert groups (E / G
 * experts each, contiguous), KG groups kept per token.
 *
 *     s        [N, E]  f32   gate scores sigmoid(W_g u) (computed by other ops)
 *     bias     [E]     f32   balancing bias b: used for selection only, no gradient
 *     indices  [N, K]  i32   chosen experts, by descending s + b (ties: lower index first)
 *     weights  [N, K]  f32   route_scale * s[chosen] / sum_k s[chosen_k]
 *
 * Routing (V3 section 2.1.2; see docs/deepseek-v3.md "DeepSeekMoE"): per token, the group score
 * is the sum of the top-2 biased scores of the group (the top-1 when a group holds one expert);
 * the best KG groups are kept; the top K experts among them by s + b are chosen. Selection is
 * computed in f32 exactly as the CPU twin rounds it, so both pick the same experts.
 *
 * Left out: token dropping (V3 drops none), capacity factors, softmax gates (V2).
 *
 * On the CPU backend each launcher calls its implementation in `host/moe_route.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch1d } from "./_launch.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { hostMoeRoute, hostMoeRouteBackward } from "./host/moe_route.ts";

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
