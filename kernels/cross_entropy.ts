/**
 * Fused log-softmax + cross-entropy with an ignore mask and optional per-row weights, and the
 * per-token log-probabilities that SFT masking and DPO need; backwards and CPU twins.
 *
 * Legend: N rows (tokens), V classes (vocabulary). A target outside [0, V) (by convention -1)
 * marks a row as ignored: it contributes nothing and gets a zero gradient.
 *
 *     lse [N]      = log sum_c exp(logits[n, c])                     (saved for the backward)
 *     rowLoss [N]  = w[n] * (lse[n] - logits[n, t_n])  (0 when ignored; w = 1 without weights)
 *     count        = number of non-ignored rows
 *     loss [1]     = sum_n rowLoss[n] / divisor,  divisor = `denominator` if given, else
 *                    max(count, 1)
 *     dlogits      = (softmax(logits) - onehot(t)) * w[n] * dloss / divisor
 *
 *     logprobs [N] = logits[n, t_n] - lse[n]   (0 when ignored)
 *     dlogits      = dlogprobs[n] * (onehot(t) - softmax(logits))
 *
 * The backwards recompute softmax from the saved lse instead of keeping an [N, V] buffer (one
 * read of the logits, one write, one exp per element). The forward and the backwards follow
 * `_rows.ts`'s row plan (vec4 loads; for V = 6400, 32 threads per row): the forward folds max
 * and sum-exp online in one read of the row and combines the lanes in lane order; the mean and
 * the count use one workgroup over all rows in a fixed order. No atomics: same inputs, same bits.
 *
 * On the CPU backend each launcher calls its implementation in `host/cross_entropy.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import {
  assertF32,
  dropLastDim,
  type Floats,
  like,
  PLAN_WG,
  planGrid,
  planKey,
  type RowPlan,
  rowPlan,
  rowsOf,
  wgslRowHelpers,
  wgslRowPlan,
} from "./_rows.ts";
import { WGSL_ROW_STATS } from "./softmax.ts";
import { hostCeBackward, hostCeMean, hostCeRows } from "./host/cross_entropy.ts";
import { Tensor } from "./tensor.ts";

/** Which per-row value the row kernel writes. */
type Mode = "ce" | "logprob";

function rowSource(mode: Mode, plan: RowPlan, weighted: boolean): string {
  const value = mode === "ce" ? `(lse - zt)${weighted ? " * wts[row]" : ""}` : "zt - lse";
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse_out: array<f32>;
${weighted ? "@group(0) @binding(4) var<storage, read> wts: array<f32>;" : ""}
struct P { rows: u32, u: u32, c: u32, _b: u32 }
@group(0) @binding(${weighted ? 5 : 4}) var<storage, read> p: P;
${WGSL_ROW_STATS}
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  let n = select(0u, p.u, row < p.rows);
  let base = row * p.u;
  let st = row_stats(li, base, n);
  if (n > 0u && plan_lane(li) == 0u) {
    let lse = st.x + log(st.y);
    let t = targets[row];
    var v = 0.0;
    if (t >= 0 && u32(t) < p.c) {
      let zt = ${plan.vec ? "x[base + u32(t) / 4u][u32(t) % 4u]" : "x[base + u32(t)]"};
      v = ${value};
    }
    out[row] = v;
    lse_out[row] = lse;
  }
}`;
}

function rowLaunch(
  mode: Mode,
  out: Tensor,
  lse: Tensor,
  logits: Tensor,
  targets: Tensor,
  weights?: Tensor,
): void {
  assertF32(logits, mode === "ce" ? "crossEntropyForward" : "tokenLogprobsForward");
  const { rows, C } = rowsOf(logits);
  checkRows(rows, targets, [out, lse, weights], mode);
  if (rows === 0) return;
  if (logits.device.kind === "cpu") return hostCeRows(mode, out, lse, logits, targets, weights, C);
  const plan = rowPlan(C), weighted = Boolean(weights);
  const bindings = [logits.binding, targets.binding, out.binding, lse.binding];
  if (weights) bindings.push(weights.binding);
  launch(
    logits.device,
    `ce_rows_${mode}`,
    `${planKey(plan)}|${weighted}`,
    () => rowSource(mode, plan, weighted),
    bindings,
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).u32(C).u32(0),
  );
}

function checkRows(rows: number, targets: Tensor, perRow: (Tensor | undefined)[], what: string) {
  if (targets.dtype !== "i32") {
    throw new Error(`${what}: targets must be i32, got ${targets.dtype}`);
  }
  for (const t of [targets, ...perRow]) {
    if (t && t.size !== rows) {
      throw new Error(`${what}: a per-row tensor has shape [${t.shape}], logits have ${rows} rows`);
    }
  }
}

const MEAN_WG = 256;

const MEAN_SRC = /* wgsl */ `
${wgslRowHelpers(MEAN_WG)}
@group(0) @binding(0) var<storage, read> row_loss: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
struct P { n: u32, v: u32, denom: f32, _a: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(${MEAN_WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  var c = 0.0;
  for (var i = li; i < p.n; i += WG) {
    s += row_loss[i];
    let t = targets[i];
    if (t >= 0 && u32(t) < p.v) { c += 1.0; }
  }
  let total = wg_sum(li, s);
  let count = wg_sum(li, c);
  if (li == 0u) {
    let d = select(max(count, 1.0), p.denom, p.denom > 0.0);
    loss[0] = total / d;
    stats[0] = count;
    stats[1] = d;
  }
}`;

/** What {@linkcode crossEntropyForward} writes; the backward reads `lse` and `stats` back. */
export interface CrossEntropyBuffers {
  /** f32 [N]: weighted per-row loss, 0 for ignored rows. */
  rowLoss: Tensor;
  /** f32 [N]: per-row log-sum-exp of the logits. */
  lse: Tensor;
  /** f32 [1]: the mean loss. */
  loss: Tensor;
  /** f32 [2]: [count of non-ignored rows, divisor used]. */
  stats: Tensor;
}

/** Options of {@linkcode crossEntropyForward} and {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /** f32 [N] per-row weights (no gradient flows into them). */
  weights?: Tensor;
  /**
   * Divide the summed loss by this instead of the count of non-ignored rows, e.g. the token
   * count of the whole batch when gradients accumulate over micro-batches. Must be > 0.
   */
  denominator?: number;
}

/**
 * Encodes the fused cross-entropy forward: per-row losses, the saved lse, and the mean.
 *
 * @param out the buffers to write (shapes in {@linkcode CrossEntropyBuffers}).
 * @param logits f32 [..., V] with N rows.
 * @param targets i32 [N]; outside [0, V) means ignored.
 * @throws when shapes or dtypes disagree.
 * @example crossEntropyForward({ rowLoss, lse, loss, stats }, logits, targets);
 */
export function crossEntropyForward(
  out: CrossEntropyBuffers,
  logits: Tensor,
  targets: Tensor,
  opts: CrossEntropyOptions = {},
): void {
  if (opts.denominator !== undefined && !(opts.denominator > 0)) {
    throw new Error(`crossEntropyForward: denominator must be > 0, got ${opts.denominator}`);
  }
  if (out.loss.size < 1 || out.stats.size < 2) {
    throw new Error("crossEntropyForward: loss must hold 1 value and stats 2");
  }
  rowLaunch("ce", out.rowLoss, out.lse, logits, targets, opts.weights);
  const { rows, C } = rowsOf(logits);
  if (logits.device.kind === "cpu") {
    hostCeMean(out.loss, out.stats, out.rowLoss, targets, {
      C,
      denominator: opts.denominator ?? 0,
    });
    return;
  }
  launch(
    logits.device,
    "ce_mean",
    "",
    () => MEAN_SRC,
    [out.rowLoss.binding, targets.binding, out.loss.binding, out.stats.binding],
    [1, 1, 1],
    (p) => p.u32(rows).u32(C).f32(opts.denominator ?? 0).u32(0),
  );
}

/**
 * Encodes `logprobs[n] = logits[n, t_n] - lse[n]` (0 for ignored rows) and saves lse.
 *
 * @param out `logprobs` f32 [N] and `lse` f32 [N].
 * @param logits f32 [..., V] with N rows.
 * @param targets i32 [N].
 * @example tokenLogprobsForward({ logprobs, lse }, logits, targets);
 */
export function tokenLogprobsForward(
  out: { logprobs: Tensor; lse: Tensor },
  logits: Tensor,
  targets: Tensor,
): void {
  rowLaunch("logprob", out.logprobs, out.lse, logits, targets);
}

function backwardSource(mode: Mode, plan: RowPlan, weighted: boolean, acc: boolean): string {
  const ce = mode === "ce";
  let b = 4;
  const decl = (name: string, type: string) =>
    `@group(0) @binding(${b++}) var<storage, read> ${name}: array<${type}>;`;
  const extra = [ce ? decl("stats", "f32") : "", weighted ? decl("wts", "f32") : ""].join("\n");
  const dxBinding = b++;
  const coef = ce ? `g[0] / stats[1]${weighted ? " * wts[row]" : ""}` : "-g[row]";
  // The target's unit and, with vec4 units, its component.
  const [tu, tc] = plan.vec ? ["u32(t) / 4u", "u32(t) % 4u"] : ["u32(t)", ""];
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
${extra}
@group(0) @binding(${dxBinding}) var<storage, read_write> dx: array<V>;
struct P { rows: u32, u: u32, c: u32, _b: u32 }
@group(0) @binding(${b}) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = plan_row(wid, nwg, li);
  if (row >= p.rows) { return; }
  let base = row * p.u;
  let t = targets[row];
  if (t < 0 || u32(t) >= p.c) {
    ${acc ? "" : "for (var j = plan_lane(li); j < p.u; j += TPR) { dx[base + j] = V(0.0); }"}
    return;
  }
  let k = ${coef};
  let l = lse[row];
  for (var j = plan_lane(li); j < p.u; j += TPR) {
    var d = k * exp(x[base + j] - l);
    if (j == ${tu}) { d${tc ? `[${tc}]` : ""} -= k; }
    ${acc ? "dx[base + j] = dx[base + j] + d;" : "dx[base + j] = d;"}
  }
}`;
}

/** What the cross-entropy backward reads from the forward. */
export interface CrossEntropySaved {
  /** f32 [..., V], the forward's logits. */
  logits: Tensor;
  /** i32 [N]. */
  targets: Tensor;
  /** f32 [N], saved by the forward. */
  lse: Tensor;
  /** f32 [2], saved by the forward (the divisor is read on the GPU: no readback). */
  stats: Tensor;
  /** f32 [N], when the forward had weights. */
  weights?: Tensor;
}

/**
 * Encodes `dlogits (+)= (softmax - onehot) * w * dloss / divisor`, zero rows where ignored.
 *
 * @param dlogits f32, logits' shape; every element is written.
 * @param dloss f32 [1], the loss gradient.
 * @param saved tensors from the forward.
 * @example crossEntropyBackward(dlogits, loss.grad, { logits, targets, lse, stats });
 */
export function crossEntropyBackward(
  dlogits: Tensor,
  dloss: Tensor,
  saved: CrossEntropySaved,
  opts: { accumulate?: boolean } = {},
): void {
  backwardLaunch("ce", dlogits, dloss, saved, opts.accumulate);
}

/**
 * Encodes `dlogits (+)= dlogprobs[n] * (onehot - softmax)`, zero rows where ignored.
 *
 * @param dlogits f32, logits' shape; every element is written.
 * @param dlogprobs f32 [N].
 * @param saved the forward's logits, targets and lse.
 * @example tokenLogprobsBackward(dlogits, lp.grad, { logits, targets, lse });
 */
export function tokenLogprobsBackward(
  dlogits: Tensor,
  dlogprobs: Tensor,
  saved: { logits: Tensor; targets: Tensor; lse: Tensor },
  opts: { accumulate?: boolean } = {},
): void {
  backwardLaunch("logprob", dlogits, dlogprobs, saved, opts.accumulate);
}

function backwardLaunch(
  mode: Mode,
  dx: Tensor,
  g: Tensor,
  saved: Omit<CrossEntropySaved, "stats"> & { stats?: Tensor },
  accumulate?: boolean,
): void {
  const { logits, targets, lse, stats, weights } = saved;
  const { rows, C } = rowsOf(logits);
  if (dx.size !== logits.size) {
    throw new Error(`${mode} backward: dlogits [${dx.shape}] vs logits [${logits.shape}]`);
  }
  checkRows(rows, targets, [lse, mode === "logprob" ? g : undefined, weights], `${mode} backward`);
  const acc = Boolean(accumulate), weighted = mode === "ce" && Boolean(weights);
  const bindings = [logits.binding, targets.binding, lse.binding, g.binding];
  if (mode === "ce") {
    if (!stats) throw new Error("crossEntropyBackward: needs the forward's stats");
    bindings.push(stats.binding);
  }
  if (weighted) bindings.push(weights!.binding);
  bindings.push(dx.binding);
  if (rows === 0) return;
  if (dx.device.kind === "cpu") {
    hostCeBackward(mode, dx, g, { ...saved, weights: weighted ? weights : undefined }, {
      C,
      accumulate: acc,
    });
    return;
  }
  const plan = rowPlan(C);
  launch(
    dx.device,
    `ce_bwd_${mode}`,
    `${planKey(plan)}|${weighted}|${acc}`,
    () => backwardSource(mode, plan, weighted, acc),
    bindings,
    planGrid(plan, rows),
    (p) => p.u32(rows).u32(plan.units).u32(C).u32(0),
  );
}

function lseCpu(x: Floats, r: number, V: number): number {
  let m = -Infinity, s = 0;
  for (let c = 0; c < V; c++) m = Math.max(m, x[r * V + c]);
  for (let c = 0; c < V; c++) s += Math.exp(x[r * V + c] - m);
  return m + Math.log(s);
}

const valid = (t: number, V: number) => t >= 0 && t < V;

/**
 * CPU twin of {@linkcode crossEntropyForward}.
 * @returns rowLoss and lse [N] (the array type of `logits`), the mean loss and the count.
 * @example
 * crossEntropyCpu(new Float64Array([0, 0, 5, 5]), [1, -1], 2).loss // ln 2
 */
export function crossEntropyCpu<A extends Floats>(
  logits: A,
  targets: ArrayLike<number>,
  V: number,
  opts: { weights?: Floats; denominator?: number } = {},
): { rowLoss: A; lse: A; loss: number; count: number } {
  const N = targets.length;
  const rowLoss = like(logits, N), lse = like(logits, N);
  let count = 0, sum = 0;
  for (let r = 0; r < N; r++) {
    lse[r] = lseCpu(logits, r, V);
    const t = targets[r];
    if (!valid(t, V)) continue;
    count++;
    rowLoss[r] = (lse[r] - logits[r * V + t]) * (opts.weights ? opts.weights[r] : 1);
    sum += rowLoss[r];
  }
  return { rowLoss, lse, loss: sum / (opts.denominator ?? Math.max(count, 1)), count };
}

/** CPU twin of {@linkcode crossEntropyBackward}: dlogits [N, V] for a loss gradient `dloss`. */
export function crossEntropyBackwardCpu<A extends Floats>(
  logits: A,
  targets: ArrayLike<number>,
  V: number,
  opts: { weights?: Floats; denominator?: number; dloss?: number } = {},
): A {
  const N = targets.length;
  let count = 0;
  for (let r = 0; r < N; r++) if (valid(targets[r], V)) count++;
  const div = opts.denominator ?? Math.max(count, 1);
  const dx = like(logits, N * V);
  for (let r = 0; r < N; r++) {
    const t = targets[r];
    if (!valid(t, V)) continue;
    const k = (opts.dloss ?? 1) * (opts.weights ? opts.weights[r] : 1) / div;
    const l = lseCpu(logits, r, V);
    for (let c = 0; c < V; c++) {
      dx[r * V + c] = k * (Math.exp(logits[r * V + c] - l) - (c === t ? 1 : 0));
    }
  }
  return dx;
}

/** CPU twin of {@linkcode tokenLogprobsForward}: logprobs [N] (0 where ignored). */
export function tokenLogprobsCpu<A extends Floats>(
  logits: A,
  targets: ArrayLike<number>,
  V: number,
): A {
  const out = like(logits, targets.length);
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r];
    if (valid(t, V)) out[r] = logits[r * V + t] - lseCpu(logits, r, V);
  }
  return out;
}

/** CPU twin of {@linkcode tokenLogprobsBackward}: dlogits [N, V] from dlogprobs [N]. */
export function tokenLogprobsBackwardCpu<A extends Floats>(
  logits: A,
  targets: ArrayLike<number>,
  V: number,
  dlogprobs: Floats,
): A {
  const dx = like(logits, targets.length * V);
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r];
    if (!valid(t, V)) continue;
    const l = lseCpu(logits, r, V);
    for (let c = 0; c < V; c++) {
      dx[r * V + c] = dlogprobs[r] * ((c === t ? 1 : 0) - Math.exp(logits[r * V + c] - l));
    }
  }
  return dx;
}

/**
 * Cross-entropy of `logits` against `targets` with autograd into the logits (through `loss`
 * only; `rowLoss` and `count` are for logging).
 *
 * @param logits f32 [..., V].
 * @param targets i32 with N = logits' rows elements; -1 (or any id outside [0, V)) is ignored.
 * @returns `loss` f32 [1] (the mean over non-ignored rows, or over `denominator`), `rowLoss`
 *   f32 [...] (logits' shape without V), `count` f32 [1] (non-ignored rows).
 * @example
 * const { loss } = crossEntropy(logits, targets); // logits [B, T, V], targets [B, T]
 * tape.backward(loss);
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  opts: CrossEntropyOptions = {},
): { loss: Tensor; rowLoss: Tensor; count: Tensor } {
  const gpu = logits.device;
  const shape = dropLastDim(logits.shape);
  const bufs: CrossEntropyBuffers = {
    rowLoss: Tensor.empty(gpu, shape),
    lse: Tensor.empty(gpu, shape),
    loss: Tensor.empty(gpu, [1]),
    stats: Tensor.empty(gpu, [2]),
  };
  crossEntropyForward(bufs, logits, targets, opts);
  const { loss, lse, stats } = bufs;
  if (needsGrad(logits)) {
    record("cross_entropy", [loss], () => {
      if (!loss.grad) return;
      const { grad, accumulate } = gradFor(logits);
      crossEntropyBackward(grad, loss.grad, {
        logits,
        targets,
        lse,
        stats,
        weights: opts.weights,
      }, { accumulate });
    });
  }
  return { loss, rowLoss: bufs.rowLoss, count: stats.view([1]) };
}

/**
 * Per-row log-probability of the target, `log softmax(logits)[n, t_n]` (0 where ignored), with
 * autograd into the logits (DPO's sequence log-likelihoods, masked SFT statistics).
 *
 * @param logits f32 [..., V].
 * @param targets i32, N elements.
 * @returns f32 [...] (logits' shape without V).
 * @example const lp = tokenLogprobs(logits, targets); // [B, T]
 */
export function tokenLogprobs(logits: Tensor, targets: Tensor): Tensor {
  const gpu = logits.device;
  const shape = dropLastDim(logits.shape);
  const logprobs = Tensor.empty(gpu, shape), lse = Tensor.empty(gpu, shape);
  tokenLogprobsForward({ logprobs, lse }, logits, targets);
  if (needsGrad(logits)) {
    record("token_logprobs", [logprobs], () => {
      if (!logprobs.grad) return;
      const { grad, accumulate } = gradFor(logits);
      tokenLogprobsBackward(grad, logprobs.grad, { logits, targets, lse }, { accumulate });
    });
  }
  return logprobs;
}
