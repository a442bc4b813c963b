/**
 * CPU-backend implementations of the MoE routing ops (`../moe_route.ts`): group-limited top-K
 * selection and weights, the weights' backward, the dispatch plan, the bias update, and the
 * sequence-wise balance loss with its backward.
 *
 * Legend: N tokens, B sequences, T tokens per sequence, E experts, K experts per token, G groups.
 *
 *     route:    s [N, E], bias [E]      -> indices [N, K] i32, weights [N, K]
 *     route bw: ds [N, E] (+)= rs / Z (dw_k - sum_k dw_k s_k / Z) at chosen experts
 *     plan:     indices [N * K]         -> counts [E], offsets [E + 1], perm, inv [N * K]
 *     bias:     bias [E] += gamma * sign(mean(loads) - loads)
 *     balance:  f [B, E], stats [N, 2], loss [1]; backward ds [N, E]
 *
 * Selection rounds exactly as the kernel does (`fround(s + b)`, `fround(top1 + top2)`, strict `>`
 * so ties go to the lower index), so both backends choose the same experts; weights and losses
 * are computed in f64 and stored in f32. The plan is a counting sort in slot order: the same
 * permutation as the kernel's, bit for bit.
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

/**
 * The dispatch plan of `indices` for E experts: a stable counting sort of the slots by expert.
 * Entries outside [0, E) are not counted nor placed, as in the kernel.
 */
export function hostDispatchPlan(
  plan: { counts: Tensor; offsets: Tensor; perm: Tensor; inv: Tensor },
  indices: Tensor,
  E: number,
): void {
  const idx = i32(indices), counts = i32(plan.counts), offsets = i32(plan.offsets);
  const perm = i32(plan.perm), inv = i32(plan.inv), nk = idx.length;
  counts.fill(0);
  for (let x = 0; x < nk; x++) {
    const e = idx[x];
    if (e >= 0 && e < E) counts[e]++;
  }
  let off = 0;
  for (let e = 0; e < E; e++) {
    offsets[e] = off;
    off += counts[e];
  }
  offsets[E] = off;
  // the next free row of each expert: offsets[e] + placed so far, kept in a scratch copy
  const next = nextScratch(E);
  next.set(offsets.subarray(0, E));
  for (let x = 0; x < nk; x++) {
    const e = idx[x];
    if (!(e >= 0 && e < E)) continue;
    const pos = next[e]++;
    perm[pos] = x;
    inv[x] = pos;
  }
}

let nextRows = new Int32Array(0);
function nextScratch(E: number): Int32Array {
  if (nextRows.length < E) nextRows = new Int32Array(E);
  return nextRows;
}

/**
 * `bias[i] += gamma * sign(mean(loads) - loads[i])` in place, the sign in exact integer arithmetic
 * on the u32 sum and the add in f32: bit for bit the kernel's result.
 */
export function hostBiasUpdate(bias: Tensor, loads: Tensor, gamma: number): void {
  const b = f32(bias), l = i32(loads), E = b.length, g = Math.fround(gamma);
  let sum = 0;
  for (let e = 0; e < E; e++) sum = (sum + (l[e] >>> 0)) >>> 0;
  const q = Math.floor(sum / E), r = sum - q * E;
  for (let i = 0; i < E; i++) {
    const li = l[i] >>> 0;
    const sgn = li < q || (li === q && r > 0) ? 1 : li > q ? -1 : 0;
    b[i] = b[i] + g * sgn;
  }
}

/**
 * The balance loss forward: `f` [B, E] (`E / (K T) * count`, rounded as the kernel does),
 * `stats` [N, 2] (`S_t`, `c_t`) and `loss = alpha / N * sum_t c_t`.
 */
export function hostBalanceForward(
  outs: { loss: Tensor; f: Tensor; stats: Tensor },
  ins: { s: Tensor; indices: Tensor },
  opts: { B: number; T: number; E: number; K: number; alpha: number },
): void {
  const { B, T, E, K } = opts, N = B * T, fr = Math.fround;
  const idx = i32(ins.indices), s = f32(ins.s), fv = f32(outs.f), st = f32(outs.stats);
  const unit = fr(fr(E) / fr(K * T));
  fv.fill(0, 0, B * E);
  // counts first (exact integers in f32 up to 2^24), then scaled like the kernel's f32 product
  for (let b = 0; b < B; b++) {
    for (let j = b * T * K; j < (b + 1) * T * K; j++) {
      const e = idx[j];
      if (e >= 0 && e < E) fv[b * E + e] += 1;
    }
    for (let e = 0; e < E; e++) fv[b * E + e] = unit * fv[b * E + e];
  }
  let total = 0;
  for (let n = 0; n < N; n++) {
    const row = n * E, fb = ((n / T) | 0) * E;
    let z = 0, fs = 0;
    for (let e = 0; e < E; e++) {
      const x = s[row + e];
      z += x;
      fs += fv[fb + e] * x;
    }
    st[2 * n] = z;
    st[2 * n + 1] = fs / z;
    total += st[2 * n + 1];
  }
  f32(outs.loss)[0] = fr(opts.alpha / N) * total;
}

/** `ds (+)= dloss * alpha / N * (f_e - c_t) / S_t` over [N, E]. */
export function hostBalanceBackward(
  ds: Tensor,
  ins: { f: Tensor; stats: Tensor; dloss: Tensor },
  opts: { N: number; T: number; E: number; alpha: number; accumulate: boolean },
): void {
  const { N, T, E } = opts;
  const out = f32(ds), fv = f32(ins.f), st = f32(ins.stats);
  const coef = f32(ins.dloss)[0] * Math.fround(opts.alpha / N);
  for (let n = 0; n < N; n++) {
    const row = n * E, fb = ((n / T) | 0) * E, c = st[2 * n + 1], k = coef / st[2 * n];
    if (opts.accumulate) {
      for (let e = 0; e < E; e++) out[row + e] += k * (fv[fb + e] - c);
    } else {
      for (let e = 0; e < E; e++) out[row + e] = k * (fv[fb + e] - c);
    }
  }
}
