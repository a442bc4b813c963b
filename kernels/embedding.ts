/**
 * Embedding lookup and its deterministic backward, with CPU twins.
 *
 * Legend: V vocabulary rows, D embedding dim, N tokens (the product of the ids' dims).
 *
 *     forward:  out [N, D] = table [V, D] gathered at ids i32 [N]
 *     backward: dTable [V, D] (+)= sum over tokens n with ids[n] = v of dout[n, :], in token order
 *
 * Ids outside [0, V) (e.g. -1 padding) give zero rows and receive no gradient.
 *
 * The backward uses no atomics. It builds, on the GPU, the list of tokens of every id in token
 * order (a counting sort), then one thread per (v, d) sums its tokens' gradients in that order:
 *   1. rank: one thread per token counts the earlier tokens with the same id (its rank) and
 *      whether a later one exists; the last occurrence writes the id's count. O(N^2) id
 *      comparisons read straight from storage, four ids per load when N % 4 == 0 (16.8M for
 *      N = 4096: cheap next to a GEMM; a workgroup-memory tile measured slower on lavapipe,
 *      where its barriers cost more than the loads they save).
 *   2. scan: one workgroup turns the counts [V] into start offsets [V + 1]. O(V).
 *   3. scatter: token n goes to slot start[id] + rank. O(N).
 *   4. sum: dTable[v, d] = sum of dout[list[k], d] for k in [start[v], start[v + 1]). O(V D + N D).
 *      Rows v follow `_rows.ts`'s row plan (vec4 units when D % 4 == 0), as does the forward.
 * Every row of dTable is written (zeros for unused ids), so it needs no zero fill first.
 *
 * On the CPU backend each launcher calls its implementation in `host/embedding.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import {
  assertF32,
  type Floats,
  like,
  PLAN_WG,
  planGrid,
  planKey,
  type RowPlan,
  rowPlan,
  wgslRowPlan,
} from "./_rows.ts";
import type { Params } from "./gpu.ts";
import { hostEmbedding, hostEmbeddingBackward } from "./host/embedding.ts";
import { Tensor } from "./tensor.ts";

function forwardSource(plan: RowPlan): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> table: array<V>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
struct P { n: u32, u: u32, v: u32, _pad: u32 }
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let t = plan_row(wid, nwg, li);
  if (t >= p.n) { return; }
  let id = ids[t];
  let ok = id >= 0 && u32(id) < p.v;
  let src = select(0u, u32(id), ok) * p.u;
  for (var j = plan_lane(li); j < p.u; j += TPR) {
    out[t * p.u + j] = select(V(0.0), table[src + j], ok);
  }
}`;
}

/**
 * Encodes `out[n, :] = table[ids[n], :]` (zeros where the id is outside [0, V)).
 *
 * @param out f32 [..., D] with N rows.
 * @param table f32 [V, D].
 * @param ids i32, N elements.
 * @throws when shapes or dtypes disagree.
 * @example embeddingForward(h, embedTokens, tokens); // [B, T, D] from [V, D] and [B, T]
 */
export function embeddingForward(out: Tensor, table: Tensor, ids: Tensor): void {
  assertF32(table, "embeddingForward");
  const [V, D] = checkShapes(table, ids, out, "embeddingForward");
  if (ids.size === 0) return;
  if (out.device.kind === "cpu") return hostEmbedding(out, table, ids, D);
  const plan = rowPlan(D);
  launch(
    table.device,
    "embedding",
    planKey(plan),
    () => forwardSource(plan),
    [table.binding, ids.binding, out.binding],
    planGrid(plan, ids.size),
    (p) => p.u32(ids.size).u32(plan.units).u32(V).u32(0),
  );
}

function checkShapes(table: Tensor, ids: Tensor, rows: Tensor, what: string): [number, number] {
  if (table.shape.length !== 2) {
    throw new Error(`${what}: table must be [V, D], got [${table.shape}]`);
  }
  if (ids.dtype !== "i32") throw new Error(`${what}: ids must be i32, got ${ids.dtype}`);
  const [V, D] = table.shape;
  if (rows.size !== ids.size * D) {
    throw new Error(`${what}: [${rows.shape}] is not [${ids.size}, ${D}] (ids [${ids.shape}])`);
  }
  return [V, D];
}

/** Threads per workgroup of the rank pass. */
const RANK_WG = 64;

function rankSource(vec: boolean): string {
  // Every thread reads all N ids straight from storage (no workgroup tile, so no barriers);
  // as vec4s when N % 4 == 0.
  const scan = vec
    ? /* wgsl */ `
  let ids4 = vec4<i32>(id);
  let me = vec4<u32>(n);
  for (var q = 0u; q < p.n / 4u; q++) {
    let m = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u);
    let same = ids_v[q] == ids4;
    r += dot(select(vec4<u32>(0u), vec4<u32>(1u), same & (m < me)), vec4<u32>(1u));
    later = later || any(same & (m > me));
  }`
    : /* wgsl */ `
  for (var m = 0u; m < p.n; m++) {
    if (ids[m] == id) {
      if (m < n) { r++; } else if (m > n) { later = true; }
    }
  }`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> rank: array<u32>;
@group(0) @binding(2) var<storage, read_write> count: array<u32>;
${vec ? "@group(0) @binding(3) var<storage, read> ids_v: array<vec4<i32>>;" : ""}
struct P { n: u32, v: u32, _a: u32, _b: u32 }
@group(0) @binding(${vec ? 4 : 3}) var<storage, read> p: P;
@compute @workgroup_size(${RANK_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let n = (wid.y * nwg.x + wid.x) * ${RANK_WG}u + li;
  if (n >= p.n) { return; }
  let id = ids[n];
  if (id < 0 || u32(id) >= p.v) { return; }
  var r = 0u;
  var later = false;
  ${scan}
  rank[n] = r;
  // the last occurrence of an id is its only writer: no atomics, no race
  if (!later) { count[u32(id)] = r + 1u; }
}`;
}

/** Threads of the one-workgroup scan. */
const SCAN_WG = 256;

const SCAN_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> cs: array<u32>;
struct P { v: u32, chunk: u32, _a: u32, _b: u32 }
@group(0) @binding(1) var<storage, read> p: P;
var<workgroup> sums: array<u32, ${SCAN_WG}>;
@compute @workgroup_size(${SCAN_WG})
fn main(@builtin(local_invocation_index) li: u32) {
  // counts [V] -> exclusive starts [V + 1], in place; thread li owns a contiguous chunk.
  let a = min(li * p.chunk, p.v);
  let b = min(a + p.chunk, p.v);
  var s = 0u;
  for (var i = a; i < b; i++) { s += cs[i]; }
  sums[li] = s;
  workgroupBarrier();
  if (li == 0u) {
    var run = 0u;
    for (var k = 0u; k < ${SCAN_WG}u; k++) { let c = sums[k]; sums[k] = run; run += c; }
    cs[p.v] = run;
  }
  workgroupBarrier();
  var run = sums[li];
  for (var i = a; i < b; i++) { let c = cs[i]; cs[i] = run; run += c; }
}`;

const SCATTER_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> rank: array<u32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
@group(0) @binding(3) var<storage, read_write> list: array<u32>;
struct P { n: u32, v: u32, _a: u32, _b: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let n = (wid.y * nwg.x + wid.x) * 256u + li;
  if (n >= p.n) { return; }
  let id = ids[n];
  if (id < 0 || u32(id) >= p.v) { return; }
  list[starts[u32(id)] + rank[n]] = n;
}`;

function sumSource(plan: RowPlan, acc: boolean): string {
  return /* wgsl */ `
${wgslRowPlan(plan)}
@group(0) @binding(0) var<storage, read> dout: array<V>;
@group(0) @binding(1) var<storage, read> starts: array<u32>;
@group(0) @binding(2) var<storage, read> list: array<u32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<V>;
struct P { v: u32, u: u32, _a: u32, _b: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(${PLAN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let v = plan_row(wid, nwg, li);
  if (v >= p.v) { return; }
  let k0 = starts[v];
  let k1 = starts[v + 1u];
  for (var j = plan_lane(li); j < p.u; j += TPR) {
    var s = V(0.0);
    for (var k = k0; k < k1; k++) { s += dout[list[k] * p.u + j]; }
    ${acc ? "dtable[v * p.u + j] = dtable[v * p.u + j] + s;" : "dtable[v * p.u + j] = s;"}
  }
}`;
}

/**
 * Encodes the embedding gradient `dTable[v, :] (+)= sum_{n: ids[n] = v} dout[n, :]`, summed in
 * token order (deterministic; see the module doc for the passes and their cost).
 *
 * @param dTable f32 [V, D]; every row is written.
 * @param dout f32 [..., D] with N rows.
 * @param ids i32 [N], as in the forward.
 * @param opts `accumulate` to add into dTable.
 * @throws when shapes or dtypes disagree.
 * @example embeddingBackward(embed.grad, dh, tokens, { accumulate: true });
 */
export function embeddingBackward(
  dTable: Tensor,
  dout: Tensor,
  ids: Tensor,
  opts: { accumulate?: boolean } = {},
): void {
  const [V, D] = checkShapes(dTable, ids, dout, "embeddingBackward");
  const gpu = dTable.device, N = ids.size, acc = Boolean(opts.accumulate);
  if (gpu.kind === "cpu") {
    return hostEmbeddingBackward(dTable, dout, ids, { V, D, accumulate: acc });
  }
  const rank = Tensor.empty(gpu, [Math.max(1, N)], "u32");
  const starts = Tensor.zeros(gpu, [V + 1], "u32"); // counts, then starts
  const list = Tensor.empty(gpu, [Math.max(1, N)], "u32");
  const np = (p: Params) => p.u32(N).u32(V).u32(0).u32(0);
  const vec = N % 4 === 0;
  launch1d(
    gpu,
    "embedding_rank",
    `${vec}`,
    () => rankSource(vec),
    [ids.binding, rank.binding, starts.binding, ...(vec ? [ids.binding] : [])],
    N,
    np,
    RANK_WG,
  );
  launch(
    gpu,
    "embedding_scan",
    "",
    () => SCAN_SRC,
    [starts.binding],
    [1, 1, 1],
    (p) => p.u32(V).u32(Math.ceil(V / SCAN_WG)).u32(0).u32(0),
  );
  launch1d(
    gpu,
    "embedding_scatter",
    "",
    () => SCATTER_SRC,
    [ids.binding, rank.binding, starts.binding, list.binding],
    N,
    np,
  );
  const plan = rowPlan(D);
  launch(
    gpu,
    "embedding_bwd",
    `${planKey(plan)}|${acc}`,
    () => sumSource(plan, acc),
    [dout.binding, starts.binding, list.binding, dTable.binding],
    planGrid(plan, V),
    (p) => p.u32(V).u32(plan.units).u32(0).u32(0),
  );
  // Later users of these pooled buffers are encoded after the reads above.
  for (const t of [rank, starts, list]) t.dispose();
}

/** CPU twin of {@linkcode embeddingForward}: out [N, D] from table [V, D] and ids [N]. */
export function embeddingCpu<A extends Floats>(table: A, ids: ArrayLike<number>, D: number): A {
  const V = table.length / D;
  const out = like(table, ids.length * D);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (id < 0 || id >= V) continue;
    for (let j = 0; j < D; j++) out[n * D + j] = table[id * D + j];
  }
  return out;
}

/** CPU twin of {@linkcode embeddingBackward}: dTable [V, D] from dout [N, D] and ids [N]. */
export function embeddingBackwardCpu<A extends Floats>(
  dout: A,
  ids: ArrayLike<number>,
  shape: { V: number; D: number },
): A {
  const { V, D } = shape;
  const dt = like(dout, V * D);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (id < 0 || id >= V) continue;
    for (let j = 0; j < D; j++) dt[id * D + j] += dout[n * D + j];
  }
  return dt;
}

/**
 * Embedding lookup with autograd for the table.
 *
 * @param table f32 [V, D].
 * @param ids i32, any shape.
 * @returns f32 [...ids.shape, D].
 * @example const h = embedding(embedTokens, tokens); // [B, T] -> [B, T, D]
 */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  const out = Tensor.empty(table.device, [...ids.shape, table.shape[1]]);
  embeddingForward(out, table, ids);
  if (needsGrad(table)) {
    record("embedding", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(table);
      embeddingBackward(grad, out.grad, ids, { accumulate });
    });
  }
  return out;
}
