/**
 * The MoE dispatch plan: from the routed experts `indices` [N, K], the per-expert loads, their
 * offsets and the expert-sorted permutation of the N * K slots with its inverse, deterministic
 * and without atomics; and its CPU twin.
 *
 * Legend: N tokens, K experts per token, E routed experts.
 *
 *     indices  [N, K]  i32   chosen experts (`moe_route.ts`)
 *     counts   [E]     i32   tokens routed to each expert (the loads)
 *     offsets  [E + 1] i32   exclusive prefix sum of counts; offsets[E] = N * K
 *     perm     [N * K] i32   expert-sorted list of flat slots p = n * K + k (token order within
 *                            an expert): rows offsets[e] .. offsets[e + 1] go to expert e
 *     inv      [N * K] i32   inverse of perm: slot p's row in expert order (for the combine)
 *
 * Complexity: one workgroup of 256 threads per expert; each thread scans a contiguous 1/256 of
 * the N * K slots, then a workgroup prefix sum places them. Work is O(E * N * K) reads in all
 * (every expert scans every slot), span O(N * K / 256). That is cheap at this project's sizes
 * (E <= 64, N * K <= ~10^5) and needs neither atomics nor a global sort.
 *
 * On the CPU backend the launcher calls `host/moe_plan.ts` after its checks.
 *
 * @module
 */
import { launch } from "./_launch.ts";
import { type Params } from "./gpu.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { hostDispatchPlan } from "./host/moe_plan.ts";

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
