/**
 * CPU-backend implementations of the MoE routing ops (`../moe_route.ts`): group-limited top-K
 * selection and weights, and the weights' backward.
 *
 * Legend: N tokens, E experts, K experts per token, G groups.
 *
 *     route:    s [N, E], bias [E]      -> indices [N, K] i32, weights [N, K]
 *     route bw: ds [N, E] (+)= rs / Z (dw_k - sum_k dw_k s_k / Z) at chosen experts
 *
 * Selection rounds exactly as the kernel does (`fround(s + b)`, `fround(top1 + top2)`, strict `>`
 * so ties go to the lower index), so both backends choose the same experts; weights are computed
 * in f64 and stored in f32.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/** Per-token scratch of the routing (grown on demand, never shared across calls in flight). */
let sb = new Float64Array(0);
let gs = new Float64Array(0);
let keep = new Uint8Array(0);
let taken = new Uint8Array(0);

/** Routes every token: `indices` and `weights` [N, K] (see the module legend). */
export function hostMoeRoute(
  outs: { indices: Tensor; weights: Tensor },
  ins: { s: Tensor; bias: Tensor },
  cfg: { E: number; K: number; groups: number; topkGroups: number; routeScale: number },
): void {
  const { E, K, groups: G, topkGroups } = cfg, per = E / G, f = Math.fround;
  const rs = f(cfg.routeScale);
  if (sb.length < E) {
    sb = new Float64Array(E);
    taken = new Uint8Array(E);
  }
  if (gs.length < G) {
    gs = new Float64Array(G);
    keep = new Uint8Array(G);
  }
  const s = f32(ins.s), bias = f32(ins.bias), idx = i32(outs.indices), w = f32(outs.weights);
  const N = idx.length / K;
  for (let n = 0; n < N; n++) {
    const row = n * E;
    for (let e = 0; e < E; e++) sb[e] = f(s[row + e] + bias[e]);
    if (G === 1) {
      keep[0] = 1;
    } else {
      for (let g = 0; g < G; g++) {
        // top-2 of the group by value; strict > keeps the first of equal values
        const g0 = g * per;
        let b1 = sb[g0], b2 = 0;
        for (let e = 1; e < per; e++) {
          const x = sb[g0 + e];
          if (x > b1) {
            b2 = b1;
            b1 = x;
          } else if (e === 1 || x > b2) b2 = x;
        }
        gs[g] = per === 1 ? b1 : f(b1 + b2);
        keep[g] = 0;
      }
      for (let r = 0; r < topkGroups; r++) {
        let best = -1;
        for (let g = 0; g < G; g++) {
          if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
        }
        keep[best] = 1;
      }
    }
    taken.fill(0, 0, E);
    let z = 0;
    for (let k = 0; k < K; k++) {
      let best = -1;
      for (let e = 0; e < E; e++) {
        if (keep[(e / per) | 0] && !taken[e] && (best < 0 || sb[e] > sb[best])) best = e;
      }
      taken[best] = 1;
      idx[n * K + k] = best;
      z += s[row + best];
    }
    for (let k = 0; k < K; k++) w[n * K + k] = s[row + idx[n * K + k]] / z * rs;
  }
}

/**
 * `ds` [N, E] from `dweights` [N, K]: `rs / Z (dw_k - dot / Z)` at each token's chosen experts,
 * 0 elsewhere (left alone when accumulating).
 */
export function hostMoeRouteBackward(
  ds: Tensor,
  ins: { s: Tensor; indices: Tensor; dweights: Tensor },
  opts: { N: number; E: number; K: number; routeScale: number; accumulate: boolean },
): void {
  const { N, E, K } = opts, rs = Math.fround(opts.routeScale);
  const s = f32(ins.s), idx = i32(ins.indices), dw = f32(ins.dweights), out = f32(ds);
  for (let n = 0; n < N; n++) {
    const row = n * E, nk = n * K;
    let z = 0, dot = 0;
    for (let k = 0; k < K; k++) {
      const sj = s[row + idx[nk + k]];
      z += sj;
      dot += dw[nk + k] * sj;
    }
    if (!opts.accumulate) out.fill(0, row, row + E);
    for (let k = 0; k < K; k++) {
      const e = idx[nk + k];
      // an expert listed twice takes its last slot's gradient once, as the kernel does
      let later = false;
      for (let k2 = k + 1; k2 < K; k2++) if (idx[nk + k2] === e) later = true;
      if (later) continue;
      const g = rs / z * (dw[nk + k] - dot / z);
      out[row + e] = opts.accumulate ? out[row + e] + g : g;
    }
  }
}
