/**
 * Absorbed multi-head latent attention over a latent KV cache (DeepSeek-V2 section 2.1.2 / V3
 * section 2.1.1, "absorbed" decoding), for incremental decoding: the cache write and the
 * attention step, with CPU twins. Inference only: no backward, no autograd.
 *
 * Legend: H heads, N new tokens of this step (across every sequence), S cache slots (sequences),
 * L slot length (max_seq_len), rkv latent rank, dr decoupled RoPE dims, W = rkv + dr cache row,
 * Cq / Ck row lengths of tensors whose LAST dr columns hold the rotated rope part.
 *
 *     cache  [S, L, W]     f32  per slot and position: [c (normed latent, rkv) ; k_pe (rotated, dr)]
 *     where  [N, 2]        i32  per new token: (slot, position); the token's own row is written
 *                               first, and it attends to positions 0..position of its slot
 *     qt     [H, N, rkv]   f32  q~_h = W_UK_h^T q_nope_h, the query absorbed into latent space
 *     q      [H, N, Cq]    f32  its last dr columns are the rotated q_pe_h
 *     z      [H, N, rkv]   f32  z_h = sum_j p_hj c_j (W_UV_h z_h is the head's output, outside)
 *
 *     score_j = (q~_h . c_j + q_pe_h . k_pe_j) * scale,  p_h = softmax over j <= position
 *
 * Causality per token, not per sequence, is what lets one call serve prefill chunks (several
 * new tokens of a slot, each seeing the ones before it) and single-token decoding of many slots
 * with different lengths alike. Positions past a token's own are never read, so a slot rolled
 * back (speculative decoding) needs no clearing.
 *
 * Kernel shape: one workgroup per (head, token) row. The (pre-scaled) query row sits in
 * workgroup memory; positions are walked in tiles of WG, one thread per position computing the
 * score, then an online softmax (FlashAttention's running max and sum) rescales the per-thread
 * accumulators, each thread owning latent columns li, li + WG, ... and summing over the tile's
 * positions in order. Fixed orders everywhere, no atomics: identical bits on a rerun.
 *
 * On the CPU backend the launchers run `host/latent_attention.ts` (per token, every head at once
 * through BLAS).
 *
 * Left out: f16 caches, split-K over very long contexts (one workgroup walks all positions),
 * paged caches.
 *
 * @module
 */
import { launch, launch1d } from "./_launch.ts";
import { hostLatentAttentionForward, hostLatentCacheWrite } from "./host/latent_attention.ts";
import { type Floats, like, rowGrid, rowWorkgroup, wgslRowHelpers } from "./_rows.ts";
import type { Tensor } from "./tensor.ts";

/** Sizes of one latent-attention step. */
export interface LatentShape {
  /** Heads. */
  H: number;
  /** New tokens (rows of `where`). */
  N: number;
  /** Latent rank. */
  rkv: number;
  /** Rope dims (the last dr of a cache row). */
  dr: number;
  /** Cache slots. */
  S: number;
  /** Positions per slot. */
  L: number;
}

function assertF32(t: Tensor, what: string): void {
  if (t.dtype !== "f32") throw new Error(`${what}: expected an f32 tensor, got ${t.dtype}`);
}

function checkWhere(where: Tensor, what: string): number {
  if (where.dtype !== "i32" || where.shape.length !== 2 || where.shape[1] !== 2) {
    throw new Error(
      `${what}: where must be i32 [N, 2] (slot, position), got ${where.dtype} ` +
        `[${where.shape}]`,
    );
  }
  return where.shape[0];
}

function cacheDims(cache: Tensor, what: string): [number, number, number] {
  assertF32(cache, what);
  if (cache.shape.length !== 3) {
    throw new Error(`${what}: cache must be [S, L, W], got [${cache.shape}]`);
  }
  return cache.shape as [number, number, number];
}

// ---------------------------------------------------------------------------------------------
// Cache write

function writeSource(hasK: boolean): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> c: array<f32>;
${hasK ? "@group(0) @binding(1) var<storage, read> kpe: array<f32>;" : ""}
@group(0) @binding(${hasK ? 2 : 1}) var<storage, read> where_: array<i32>;
@group(0) @binding(${hasK ? 3 : 2}) var<storage, read_write> cache: array<f32>;
struct P { n: u32, w: u32, rc: u32, ck: u32, S: u32, L: u32, _a: u32, _b: u32 }
@group(0) @binding(${hasK ? 4 : 3}) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n * p.w) { return; }
  let t = i / p.w;
  let d = i - t * p.w;
  let slot = where_[2u * t];
  let pos = where_[2u * t + 1u];
  // out-of-range targets are dropped (the host validates; this only keeps memory safe)
  if (slot < 0 || pos < 0 || u32(slot) >= p.S || u32(pos) >= p.L) { return; }
  let dst = (u32(slot) * p.L + u32(pos)) * p.w + d;
  ${
    hasK
      ? `if (d < p.rc) { cache[dst] = c[t * p.rc + d]; }
  else { cache[dst] = kpe[t * p.ck + p.ck - (p.w - d)]; }`
      : "cache[dst] = c[t * p.rc + d];"
  }
}`;
}

/** Inputs of {@linkcode latentCacheWrite}. */
export interface LatentCacheWriteInputs {
  /** f32 [N, rkv]: the normalized latents (or any rows as wide as the cache, without kPe). */
  c: Tensor;
  /**
   * f32 [N, Ck], Ck >= dr: the rotated shared key in the LAST dr columns of each row (so the
   * whole `kv_a_proj_with_mqa` output `[c_kv ; k_pe]` can be passed). Omit when `c` fills the row.
   */
  kPe?: Tensor;
  /** i32 [N, 2]: the (slot, position) each row goes to. */
  where: Tensor;
}

/**
 * Encodes `cache[slot_n, pos_n, :] = [c_n ; last dr columns of kPe_n]` for every new token n.
 *
 * @param cache f32 [S, L, W] with W = rkv + dr (W = rkv when `kPe` is omitted).
 * @param inputs the rows and their destinations.
 * @throws when shapes or dtypes disagree. Destinations outside [0, S) x [0, L) are skipped on the
 *   GPU; callers validate them.
 * @example latentCacheWrite(cache, { c, kPe: kva, where }); // c [N, rkv], kva [N, rkv + dr]
 */
export function latentCacheWrite(cache: Tensor, inputs: LatentCacheWriteInputs): void {
  const [S, L, W] = cacheDims(cache, "latentCacheWrite");
  const { c, kPe, where } = inputs;
  assertF32(c, "latentCacheWrite");
  const N = checkWhere(where, "latentCacheWrite");
  const rc = c.shape[c.shape.length - 1];
  const ck = kPe ? kPe.shape[kPe.shape.length - 1] : 0;
  const dr = W - rc;
  if (c.size !== N * rc || (kPe ? kPe.size !== N * ck || ck < dr || dr <= 0 : dr !== 0)) {
    throw new Error(
      `latentCacheWrite: c [${c.shape}]${kPe ? `, kPe [${kPe.shape}]` : ""} do not fill ${N} ` +
        `rows of width ${W} (want c [N, rkv]${kPe ? " and kPe [N, >= W - rkv]" : " with rkv = W"})`,
    );
  }
  if (kPe) assertF32(kPe, "latentCacheWrite");
  if (cache.device.kind === "cpu") {
    return hostLatentCacheWrite(cache, inputs, { N, S, L, W, rc, ck });
  }
  const bindings = kPe
    ? [c.binding, kPe.binding, where.binding, cache.binding]
    : [c.binding, where.binding, cache.binding];
  launch1d(
    cache.device,
    "latent_cache_write",
    `${Boolean(kPe)}`,
    () => writeSource(Boolean(kPe)),
    bindings,
    N * W,
    (p) => p.u32(N).u32(W).u32(rc).u32(ck).u32(S).u32(L).u32(0).u32(0),
  );
}

/**
 * CPU twin of {@linkcode latentCacheWrite}: returns an updated copy of `cache`.
 * @example latentCacheWriteCpu(cache, { c, kPe, where }, { S, L, W, ck: rkv + dr })
 */
export function latentCacheWriteCpu<A extends Floats>(
  cache: A,
  inputs: { c: Floats; kPe?: Floats; where: ArrayLike<number> },
  shape: { S: number; L: number; W: number; ck?: number },
): A {
  const { S, L, W } = shape, ck = shape.ck ?? 0;
  const N = inputs.where.length / 2, rc = inputs.c.length / N;
  const out = like(cache, cache.length);
  out.set(cache);
  for (let n = 0; n < N; n++) {
    const slot = inputs.where[2 * n], pos = inputs.where[2 * n + 1];
    if (slot < 0 || pos < 0 || slot >= S || pos >= L) continue;
    const dst = (slot * L + pos) * W;
    for (let d = 0; d < W; d++) {
      out[dst + d] = d < rc ? inputs.c[n * rc + d] : inputs.kPe![n * ck + ck - (W - d)];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Attention

function attentionSource(rkv: number, dr: number, wg: number): string {
  const rpt = Math.ceil(rkv / wg);
  return /* wgsl */ `
${wgslRowHelpers(wg)}
const RKV: u32 = ${rkv}u;
const DR: u32 = ${dr}u;
const W: u32 = ${rkv + dr}u;
const RPT: u32 = ${rpt}u;
@group(0) @binding(0) var<storage, read> qt: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> cache: array<f32>;
@group(0) @binding(3) var<storage, read> where_: array<i32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;
struct P { N: u32, H: u32, S: u32, L: u32, cq: u32, scale: f32, _a: u32, _b: u32 }
@group(0) @binding(5) var<storage, read> p: P;
var<workgroup> qs: array<f32, W>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> len_sh: u32;

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg); // h * N + n
  if (row >= p.H * p.N) { return; }
  let h = row / p.N;
  let n = row - h * p.N;
  let slot = where_[2u * n];
  let pos = where_[2u * n + 1u];
  // the scaled query [q~ ; q_pe]: one multiply per element instead of one per score
  for (var d = li; d < RKV; d += WG) { qs[d] = qt[row * RKV + d] * p.scale; }
  for (var d = li; d < DR; d += WG) { qs[RKV + d] = q[row * p.cq + p.cq - DR + d] * p.scale; }
  if (li == 0u) {
    var len = 0u;
    if (slot >= 0 && pos >= 0 && u32(slot) < p.S && u32(pos) < p.L) { len = u32(pos) + 1u; }
    len_sh = len;
  }
  // also the barrier that publishes qs
  let len = workgroupUniformLoad(&len_sh);
  let base = u32(max(slot, 0)) * p.L * W;
  var m = -1e30; // finite floor: exp(m - s) is exactly 0 at the first tile
  var l = 0.0;
  var acc: array<f32, RPT>;
  for (var j0 = 0u; j0 < len; j0 += WG) {
    let j = j0 + li;
    var s = NEG_MAX;
    if (j < len) {
      let kb = base + j * W;
      var dot = 0.0;
      for (var d = 0u; d < W; d++) { dot = fma(qs[d], cache[kb + d], dot); }
      s = dot;
    }
    let mn = max(m, wg_max(li, s));
    let e = select(0.0, exp(s - mn), j < len);
    ps[li] = e;
    let alpha = exp(m - mn);
    l = l * alpha + wg_sum(li, e); // wg_sum's barriers also publish ps
    let cnt = min(WG, len - j0);
    for (var r = 0u; r < RPT; r++) {
      let d = li + r * WG;
      if (d < RKV) {
        var a = acc[r] * alpha;
        for (var jj = 0u; jj < cnt; jj++) { a = fma(ps[jj], cache[base + (j0 + jj) * W + d], a); }
        acc[r] = a;
      }
    }
    m = mn;
    workgroupBarrier(); // ps is rewritten by the next tile
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var r = 0u; r < RPT; r++) {
    let d = li + r * WG;
    if (d < RKV) { z[row * RKV + d] = acc[r] * inv; }
  }
}`;
}

/** Inputs of {@linkcode latentAttentionForward}. */
export interface LatentAttentionInputs {
  /** f32 [H, N, rkv]: the absorbed queries q~. */
  qt: Tensor;
  /** f32 [H, N, Cq], Cq >= dr: the rotated q_pe in the last dr columns of each row. */
  q: Tensor;
  /** f32 [S, L, rkv + dr]: the latent cache, the new tokens' rows already written. */
  cache: Tensor;
  /** i32 [N, 2]: each new token's (slot, position). */
  where: Tensor;
}

/** The sizes of a latent-attention call read off its operands (throws naming the mismatch). */
export function latentShape(inputs: LatentAttentionInputs): LatentShape {
  const { qt, q, cache, where } = inputs;
  const [S, L, W] = cacheDims(cache, "latentAttention");
  const N = checkWhere(where, "latentAttention");
  assertF32(qt, "latentAttention");
  assertF32(q, "latentAttention");
  if (qt.shape.length !== 3 || qt.shape[1] !== N) {
    throw new Error(`latentAttention: qt must be [H, N = ${N}, rkv], got [${qt.shape}]`);
  }
  const [H, , rkv] = qt.shape, dr = W - rkv;
  if (dr < 0 || q.shape.length !== 3 || q.shape[0] !== H || q.shape[1] !== N || q.shape[2] < dr) {
    throw new Error(
      `latentAttention: want q [H = ${H}, N = ${N}, >= ${dr}] and cache rows ${W} >= rkv ` +
        `${rkv}; got q [${q.shape}], cache [${cache.shape}]`,
    );
  }
  return { H, N, rkv, dr, S, L };
}

/**
 * Encodes the absorbed attention step: `z[h, n] = sum_j softmax_j(scale (q~ . c_j + q_pe . k_pe_j))
 * c_j` over positions j <= where[n].position of slot where[n].slot.
 *
 * @param z f32 [H, N, rkv], written.
 * @param inputs queries, cache and destinations (see the module legend).
 * @param opts.scale the softmax scale (with YaRN's mscale when active).
 * @throws when shapes or dtypes disagree. A token whose (slot, position) lies outside the cache
 *   gets z = 0.
 * @example latentAttentionForward(z, { qt, q: qh, cache, where }, { scale: model.scale });
 */
export function latentAttentionForward(
  z: Tensor,
  inputs: LatentAttentionInputs,
  opts: { scale: number },
): void {
  const s = latentShape(inputs);
  if (z.shape.join() !== [s.H, s.N, s.rkv].join()) {
    throw new Error(`latentAttention: z is [${z.shape}], want [${s.H}, ${s.N}, ${s.rkv}]`);
  }
  assertF32(z, "latentAttention");
  if (s.N === 0) return;
  if (z.device.kind === "cpu") return hostLatentAttentionForward(z, inputs, s, opts.scale);
  const wg = rowWorkgroup(s.rkv);
  const { qt, q, cache, where } = inputs;
  launch(
    z.device,
    "latent_attention",
    `${s.rkv}|${s.dr}|${wg}`,
    () => attentionSource(s.rkv, s.dr, wg),
    [qt.binding, q.binding, cache.binding, where.binding, z.binding],
    rowGrid(s.H * s.N),
    (p) =>
      p.u32(s.N).u32(s.H).u32(s.S).u32(s.L)
        .u32(q.shape[2]).f32(opts.scale).u32(0).u32(0),
  );
}

/** Host inputs of {@linkcode latentAttentionCpu}, laid out as {@linkcode LatentAttentionInputs}. */
export interface LatentAttentionHost {
  /** [H, N, rkv] */
  qt: ArrayLike<number>;
  /** [H, N, cq], the last dr columns used. */
  q: ArrayLike<number>;
  /** [S, L, rkv + dr] */
  cache: ArrayLike<number>;
  /** [N, 2] (slot, position). */
  where: ArrayLike<number>;
}

/**
 * CPU twin of {@linkcode latentAttentionForward} in f64 (naive softmax).
 *
 * @returns z [H, N, rkv].
 * @example latentAttentionCpu(host, { shape: { H, N, rkv, dr, S, L }, cq: dn + dr, scale })
 */
export function latentAttentionCpu(
  x: LatentAttentionHost,
  opts: { shape: LatentShape; cq: number; scale: number },
): Float64Array {
  const { H, N, rkv, dr, S, L } = opts.shape, W = rkv + dr, cq = opts.cq;
  const z = new Float64Array(H * N * rkv);
  for (let h = 0; h < H; h++) {
    for (let n = 0; n < N; n++) {
      const slot = x.where[2 * n], pos = x.where[2 * n + 1];
      if (slot < 0 || pos < 0 || slot >= S || pos >= L) continue;
      const row = h * N + n, len = pos + 1;
      const sc = new Float64Array(len);
      let m = -Infinity;
      for (let j = 0; j < len; j++) {
        const kb = (slot * L + j) * W;
        let s = 0;
        for (let d = 0; d < rkv; d++) s += x.qt[row * rkv + d] * x.cache[kb + d];
        for (let d = 0; d < dr; d++) s += x.q[row * cq + cq - dr + d] * x.cache[kb + rkv + d];
        sc[j] = s * opts.scale;
        m = Math.max(m, sc[j]);
      }
      let l = 0;
      for (let j = 0; j < len; j++) l += sc[j] = Math.exp(sc[j] - m);
      for (let j = 0; j < len; j++) {
        const kb = (slot * L + j) * W, pj = sc[j] / l;
        for (let d = 0; d < rkv; d++) z[row * rkv + d] += pj * x.cache[kb + d];
      }
    }
  }
  return z;
}
