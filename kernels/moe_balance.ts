/**
 * The complementary sequence-wise balance loss of DeepSeek-V3 (eq. 17-20) with its backward and
 * autograd into the gate scores; CPU twins of both.
 *
 * Legend: N tokens (= B * T), B sequences, T tokens per sequence, E routed experts, K experts per
 * token.
 *
 *     s        [N, E]  f32   unbiased gate scores
 *     indices  [N, K]  i32   chosen experts (`moe_route.ts`)
 *     f        [B, E]  f32   E / (K T) * count_t(i in TopK(t)) per sequence: a constant
 *     stats    [N, 2]  f32   per token S_t = sum_j s_{j,t} and c_t = sum_i f_i s_{i,t} / S_t
 *     loss     [1]     f32   the mean over the B sequences of alpha * sum_i f_i P_i
 *
 * On the CPU backend each launcher calls its implementation in `host/moe_balance.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { hostBalanceBackward, hostBalanceForward } from "./host/moe_balance.ts";

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
