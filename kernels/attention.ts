/**
 * Causal scaled-dot-product attention for MLA, flash-attention style: forward and a
 * deterministic backward (no atomics), their CPU twins, and the autograd op
 * {@linkcode attention}.
 *
 * Legend: B batch, T time, H heads, DQK query/key head dim (MLA: dn + dr), DV value head dim
 * (may differ from DQK), BQ query rows per workgroup, BK key rows per workgroup-memory tile.
 *
 *     q   [B, T, H, DQK]  f32      k [B, T, H, DQK] f32      v [B, T, H, DV] f32
 *     seg [B, T]          i32      optional segment ids (packed SFT conversations)
 *     out [B, T, H, DV]   f32
 *     lse [B, H, T]       f32      per-row logsumexp of the scaled, masked scores (saved)
 *
 * Position i attends to j when `j <= i` and, with `seg`, `seg[j] == seg[i]`. Every row attends
 * at least to itself, so no row is empty and `lse` is always finite.
 *
 * Forward (FlashAttention, Dao et al. 2022, Alg. 1 with the FA-2 loop order): one workgroup per
 * (b, h, block of BQ queries), one thread per query row holding its (pre-scaled) q row and its
 * output accumulator in registers; K/V tiles of BK rows are staged in workgroup memory and an
 * online softmax rescales the accumulator once per tile. No T x T matrix touches global memory.
 *
 * Backward (FA-2, Alg. 2, split so that every gradient element has exactly one writer):
 * 1. `attention_delta`: `D_i = rowsum(dO_i * O_i)`, interleaved with `lse_i` into one
 *    [B, H, T, 2] buffer (saves a storage binding: portable devices allow only 8).
 * 2. `attention_dkdv`: one workgroup per (b, h, block of keys), one thread per key, looping over
 *    the query tiles at or after the block; accumulates dK_j and dV_j in registers.
 * 3. `attention_dq`: one workgroup per (b, h, block of queries), looping over key tiles.
 * Probabilities are recomputed as `exp(s - lse)` with the same (pre-scaled q) dot products as the
 * forward, so they agree bit for bit with the ones the forward normalised.
 *
 * Left out: dropout, non-causal attention, f16 inputs, sliding windows. The per-thread register
 * arrays (DQK + DV floats in the forward, 2 (DQK + DV) in dK/dV) suit this project's small heads;
 * heads as wide as V3's (192/128) work but spill registers on real GPUs.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d } from "./_launch.ts";
import type { Params } from "./gpu.ts";
import { Tensor } from "./tensor.ts";

/** Attention sizes; `q`/`k` are [B, T, H, dqk] and `v`/`out` are [B, T, H, dv]. */
export interface AttentionShape {
  /** Batch. */
  B: number;
  /** Time (sequence length). */
  T: number;
  /** Heads. */
  H: number;
  /** Query/key head dim (MLA: qk_nope_head_dim + qk_rope_head_dim). */
  dqk: number;
  /** Value head dim. */
  dv: number;
}

/** Query rows per workgroup (one thread each). */
const BQ = 32;
/** Workgroup memory a kernel may use: WebGPU's guaranteed minimum, so tiles match everywhere. */
const SHARED_BYTES = 16384;
/** Largest key tile; bounds the per-thread score array of the forward. */
const MAX_TILE = 32;

/** Rows per K/V (or Q/dO) tile that fit the shared budget beside `extra` floats per row. */
function tileRows(dqk: number, dv: number, extra: number): number {
  const rows = Math.floor(SHARED_BYTES / 4 / (dqk + dv + extra));
  return Math.max(1, Math.min(MAX_TILE, rows));
}

/**
 * `n` copies of a statement with `d` = 0..n-1, written out. The per-row loops over head dims run
 * inside the tile loops; Mesa's llvmpipe caps the iterations of all loops nested in one outermost
 * loop at 65535 (gallivm's loop limiter) and silently stops past it, which broke the backward at
 * T * dqk of about 31K. Written-out rows leave only the tile and row loops, so the cap is reached
 * near T = 65535 / (1 + (dqk + dv) / BQ) instead.
 */
function unroll(n: number, stmt: (d: string) => string): string {
  let out = "";
  for (let d = 0; d < n; d++) out += stmt(`${d}u`) + " ";
  return out;
}

/**
 * WGSL that loads key/value tile `j0` (and its segment ids) into workgroup memory: shared by the
 * forward and the dq kernel, which both walk key tiles.
 */
function loadKeyTile(hasSeg: boolean): string {
  const segs = hasSeg
    ? "for (var x = li; x < TILE; x += BQ) { if (j0 + x < p.T) { segs[x] = seg[b * p.T + j0 + x]; } }"
    : "";
  return /* wgsl */ `for (var x = li; x < TILE * DQK; x += BQ) {
      let j = j0 + x / DQK;
      if (j < p.T) { ks[x] = k[row(b, j, h) * DQK + x % DQK]; }
    }
    for (var x = li; x < TILE * DV; x += BQ) {
      let j = j0 + x / DV;
      if (j < p.T) { vs[x] = v[row(b, j, h) * DV + x % DV]; }
    }
    ${segs}`;
}

/** WGSL shared by the three tiled kernels: sizes, the index of an element of q/k/v. */
function header(dqk: number, dv: number, tile: number): string {
  return /* wgsl */ `
const DQK: u32 = ${dqk}u;
const DV: u32 = ${dv}u;
const BQ: u32 = ${BQ}u;
const TILE: u32 = ${tile}u;
struct P { T: u32, H: u32, scale: f32, acc_a: u32, acc_b: u32, _p0: u32, _p1: u32, _p2: u32 }
// row (b, t, h) of a [B, T, H, *] tensor
fn row(b: u32, t: u32, h: u32) -> u32 { return (b * p.T + t) * p.H + h; }`;
}

function forwardSource(dqk: number, dv: number, hasSeg: boolean): string {
  const bk = tileRows(dqk, dv, 1);
  const s = hasSeg ? 1 : 0;
  return /* wgsl */ `
${header(dqk, dv, bk)}
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
${hasSeg ? "@group(0) @binding(3) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${3 + s}) var<storage, read_write> out: array<f32>;
@group(0) @binding(${4 + s}) var<storage, read_write> lse: array<f32>;
@group(0) @binding(${5 + s}) var<uniform> p: P;
var<workgroup> ks: array<f32, ${bk * dqk}>;
var<workgroup> vs: array<f32, ${bk * dv}>;
var<workgroup> segs: array<i32, ${bk}>;

@compute @workgroup_size(${BQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let h = wid.y;
  let q0 = wid.x * BQ;
  let i = q0 + li;
  let valid = i < p.T;
  var qr: array<f32, DQK>;
  var acc: array<f32, DV>;
  var segi = 0;
  if (valid) {
    let base = row(b, i, h) * DQK;
    // pre-scaling q saves a multiply per score; the backward recomputes scores the same way
    for (var d = 0u; d < DQK; d++) { qr[d] = q[base + d] * p.scale; }
    ${hasSeg ? "segi = seg[b * p.T + i];" : ""}
  }
  // m starts at a finite floor, not -inf: exp(m - s) is then exactly 0 for the first score
  var m = -1e30;
  var l = 0.0;
  var sc: array<f32, TILE>;
  let kend = min(p.T, q0 + BQ);
  for (var j0 = 0u; j0 < kend; j0 += TILE) {
    workgroupBarrier();
    ${loadKeyTile(hasSeg)}
    workgroupBarrier();
    if (valid && i >= j0) {
      // causal: keys j0 .. min(i, j0 + TILE - 1); j <= i < T keeps every row in range
      let jn = min(TILE, i + 1u - j0);
      var mnew = m;
      for (var r = 0u; r < jn; r++) {
        ${hasSeg ? "if (segs[r] != segi) { continue; }" : ""}
        var dot = 0.0;
        ${unroll(dqk, (d) => `dot += qr[${d}] * ks[r * DQK + ${d}];`)}
        sc[r] = dot;
        mnew = max(mnew, dot);
      }
      let corr = exp(m - mnew);
      l *= corr;
      ${unroll(dv, (d) => `acc[${d}] *= corr;`)}
      for (var r = 0u; r < jn; r++) {
        ${hasSeg ? "if (segs[r] != segi) { continue; }" : ""}
        let pr = exp(sc[r] - mnew);
        l += pr;
        ${unroll(dv, (d) => `acc[${d}] += pr * vs[r * DV + ${d}];`)}
      }
      m = mnew;
    }
  }
  if (valid) {
    let base = row(b, i, h) * DV;
    let inv = 1.0 / l;
    for (var d = 0u; d < DV; d++) { out[base + d] = acc[d] * inv; }
    lse[(b * p.H + h) * p.T + i] = m + log(l);
  }
}`;
}

const DELTA_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> o: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
struct P { n: u32, T: u32, H: u32, DV: u32 }
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 256u + li;   // over [B, H, T]
  if (idx >= p.n) { return; }
  let i = idx % p.T;
  let h = (idx / p.T) % p.H;
  let b = idx / (p.T * p.H);
  let base = ((b * p.T + i) * p.H + h) * p.DV;
  var s = 0.0;
  for (var d = 0u; d < p.DV; d++) { s += dout[base + d] * o[base + d]; }
  stats[2u * idx] = lse[idx];
  stats[2u * idx + 1u] = s;
}`;

function dkdvSource(dqk: number, dv: number, hasSeg: boolean): string {
  // per query row of a tile: q, dO, lse, D and the segment id
  const bq = tileRows(dqk, dv, 3);
  const s = hasSeg ? 1 : 0;
  return /* wgsl */ `
${header(dqk, dv, bq)}
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
${hasSeg ? "@group(0) @binding(5) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${5 + s}) var<storage, read_write> dk: array<f32>;
@group(0) @binding(${6 + s}) var<storage, read_write> dv: array<f32>;
@group(0) @binding(${7 + s}) var<uniform> p: P;
var<workgroup> qs: array<f32, ${bq * dqk}>;
var<workgroup> dos: array<f32, ${bq * dv}>;
var<workgroup> st: array<f32, ${2 * bq}>;
var<workgroup> segs: array<i32, ${bq}>;

@compute @workgroup_size(${BQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let h = wid.y;
  let k0 = wid.x * BQ;
  let j = k0 + li;
  let valid = j < p.T;
  var kr: array<f32, DQK>;
  var vr: array<f32, DV>;
  var gk: array<f32, DQK>;
  var gv: array<f32, DV>;
  var segj = 0;
  if (valid) {
    for (var d = 0u; d < DQK; d++) { kr[d] = k[row(b, j, h) * DQK + d]; }
    for (var d = 0u; d < DV; d++) { vr[d] = v[row(b, j, h) * DV + d]; }
    ${hasSeg ? "segj = seg[b * p.T + j];" : ""}
  }
  let sbase = (b * p.H + h) * p.T;
  // causal: only queries i >= k0 see any key of this block
  for (var i0 = k0; i0 < p.T; i0 += TILE) {
    workgroupBarrier();
    for (var x = li; x < TILE * DQK; x += BQ) {
      let i = i0 + x / DQK;
      if (i < p.T) { qs[x] = q[row(b, i, h) * DQK + x % DQK] * p.scale; }
    }
    for (var x = li; x < TILE * DV; x += BQ) {
      let i = i0 + x / DV;
      if (i < p.T) { dos[x] = dout[row(b, i, h) * DV + x % DV]; }
    }
    for (var x = li; x < 2u * TILE; x += BQ) {
      if (i0 + x / 2u < p.T) { st[x] = stats[2u * (sbase + i0) + x]; }
    }
    ${
    hasSeg
      ? "for (var x = li; x < TILE; x += BQ) { if (i0 + x < p.T) { segs[x] = seg[b * p.T + i0 + x]; } }"
      : ""
  }
    workgroupBarrier();
    if (valid) {
      let rn = min(TILE, p.T - i0);
      // rows before j (i < j) are masked; start at the first i >= j
      let r0 = select(0u, j - i0, j > i0);
      for (var r = r0; r < rn; r++) {
        ${hasSeg ? "if (segs[r] != segj) { continue; }" : ""}
        var sdot = 0.0;
        ${unroll(dqk, (d) => `sdot += qs[r * DQK + ${d}] * kr[${d}];`)}
        let pr = exp(sdot - st[2u * r]);
        var dp = 0.0;
        ${
    unroll(dv, (d) => `gv[${d}] += pr * dos[r * DV + ${d}]; dp += dos[r * DV + ${d}] * vr[${d}];`)
  }
        // dS = P (dP - D); qs is pre-scaled, so this already is scale * dS * q
        let ds = pr * (dp - st[2u * r + 1u]);
        ${unroll(dqk, (d) => `gk[${d}] += ds * qs[r * DQK + ${d}];`)}
      }
    }
  }
  if (valid) {
    let bk = row(b, j, h) * DQK;
    let bv = row(b, j, h) * DV;
    if (p.acc_a == 1u) {
      for (var d = 0u; d < DQK; d++) { dk[bk + d] += gk[d]; }
    } else {
      for (var d = 0u; d < DQK; d++) { dk[bk + d] = gk[d]; }
    }
    if (p.acc_b == 1u) {
      for (var d = 0u; d < DV; d++) { dv[bv + d] += gv[d]; }
    } else {
      for (var d = 0u; d < DV; d++) { dv[bv + d] = gv[d]; }
    }
  }
}`;
}

function dqSource(dqk: number, dv: number, hasSeg: boolean): string {
  const bk = tileRows(dqk, dv, 1);
  const s = hasSeg ? 1 : 0;
  return /* wgsl */ `
${header(dqk, dv, bk)}
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
${hasSeg ? "@group(0) @binding(5) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${5 + s}) var<storage, read_write> dq: array<f32>;
@group(0) @binding(${6 + s}) var<uniform> p: P;
var<workgroup> ks: array<f32, ${bk * dqk}>;
var<workgroup> vs: array<f32, ${bk * dv}>;
var<workgroup> segs: array<i32, ${bk}>;

@compute @workgroup_size(${BQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let h = wid.y;
  let q0 = wid.x * BQ;
  let i = q0 + li;
  let valid = i < p.T;
  var qr: array<f32, DQK>;
  var gr: array<f32, DV>;
  var gq: array<f32, DQK>;
  var segi = 0;
  var lse_i = 0.0;
  var d_i = 0.0;
  if (valid) {
    for (var d = 0u; d < DQK; d++) { qr[d] = q[row(b, i, h) * DQK + d] * p.scale; }
    for (var d = 0u; d < DV; d++) { gr[d] = dout[row(b, i, h) * DV + d]; }
    let si = 2u * ((b * p.H + h) * p.T + i);
    lse_i = stats[si];
    d_i = stats[si + 1u];
    ${hasSeg ? "segi = seg[b * p.T + i];" : ""}
  }
  let kend = min(p.T, q0 + BQ);
  for (var j0 = 0u; j0 < kend; j0 += TILE) {
    workgroupBarrier();
    ${loadKeyTile(hasSeg)}
    workgroupBarrier();
    if (valid && i >= j0) {
      let jn = min(TILE, i + 1u - j0);
      for (var r = 0u; r < jn; r++) {
        ${hasSeg ? "if (segs[r] != segi) { continue; }" : ""}
        var sdot = 0.0;
        ${unroll(dqk, (d) => `sdot += qr[${d}] * ks[r * DQK + ${d}];`)}
        let pr = exp(sdot - lse_i);
        var dp = 0.0;
        ${unroll(dv, (d) => `dp += gr[${d}] * vs[r * DV + ${d}];`)}
        let ds = pr * (dp - d_i);
        ${unroll(dqk, (d) => `gq[${d}] += ds * ks[r * DQK + ${d}];`)}
      }
    }
  }
  if (valid) {
    let base = row(b, i, h) * DQK;
    if (p.acc_a == 1u) {
      for (var d = 0u; d < DQK; d++) { dq[base + d] += gq[d] * p.scale; }
    } else {
      for (var d = 0u; d < DQK; d++) { dq[base + d] = gq[d] * p.scale; }
    }
  }
}`;
}

/** Reads and checks the sizes of q [B, T, H, dqk], k (same) and v [B, T, H, dv]. */
export function attentionShape(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  seg?: Tensor | null,
): AttentionShape {
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) {
    throw new Error(
      `attention: q, k, v must be [B, T, H, d]; got [${q.shape}], [${k.shape}], [${v.shape}]`,
    );
  }
  const [B, T, H, dqk] = q.shape;
  const dv = v.shape[3];
  const same = (t: Tensor, d: number) =>
    t.shape[0] === B && t.shape[1] === T && t.shape[2] === H && t.shape[3] === d;
  if (!same(k, dqk) || !same(v, dv)) {
    throw new Error(
      `attention: k must be [${B}, ${T}, ${H}, ${dqk}] and v [${B}, ${T}, ${H}, dv]; ` +
        `got k [${k.shape}], v [${v.shape}]`,
    );
  }
  if ([q, k, v].some((t) => t.dtype !== "f32")) throw new Error("attention: q, k, v must be f32");
  if (seg && (seg.dtype !== "i32" || seg.size !== B * T)) {
    throw new Error(`attention: seg must be i32 [${B}, ${T}]; got ${seg.dtype} [${seg.shape}]`);
  }
  if (Math.ceil(T / BQ) > 65535 || H > 65535 || B > 65535) {
    throw new Error(`attention: grid [${Math.ceil(T / BQ)}, ${H}, ${B}] passes 65535 workgroups`);
  }
  return { B, T, H, dqk, dv };
}

function grid(s: AttentionShape): [number, number, number] {
  return [Math.ceil(s.T / BQ), s.H, s.B];
}

/** Inputs of the attention forward. */
export interface AttentionInputs {
  /** Queries [B, T, H, dqk]. */
  q: Tensor;
  /** Keys [B, T, H, dqk]. */
  k: Tensor;
  /** Values [B, T, H, dv]. */
  v: Tensor;
  /** Optional segment ids i32 [B, T]: j is visible from i only when seg[j] == seg[i]. */
  seg?: Tensor | null;
}

/**
 * Encodes the attention forward: `out` [B, T, H, dv] and the row logsumexp `lse` [B, H, T] that
 * the backward needs.
 *
 * @param outs where to write `out` and `lse`.
 * @param ins q, k, v (and optional seg).
 * @param opts.scale the softmax scale (MLA: `1/sqrt(dn + dr)`, times `m^2` under YaRN).
 * @throws when the shapes disagree or the grid passes 65535 workgroups per dimension.
 * @example attentionForward({ out, lse }, { q, k, v }, { scale: 1 / Math.sqrt(48) });
 */
export function attentionForward(
  outs: { out: Tensor; lse: Tensor },
  ins: AttentionInputs,
  opts: { scale: number },
): void {
  const { q, k, v, seg } = ins;
  const s = attentionShape(q, k, v, seg);
  const hasSeg = Boolean(seg);
  launch(
    q.gpu,
    "attention_fwd",
    `${s.dqk}|${s.dv}|${hasSeg}`,
    () => forwardSource(s.dqk, s.dv, hasSeg),
    [q, k, v, ...(seg ? [seg] : []), outs.out, outs.lse].map((t) => t.binding),
    grid(s),
    (p) => p.u32(s.T).u32(s.H).f32(opts.scale).u32(0).u32(0).u32(0).u32(0).u32(0),
  );
}

/** What the attention backward reads: the forward's inputs and outputs and `dout`. */
export interface AttentionSaved extends AttentionInputs {
  /** The forward's output [B, T, H, dv]. */
  out: Tensor;
  /** The forward's row logsumexp [B, H, T]. */
  lse: Tensor;
  /** Upstream gradient [B, T, H, dv]. */
  dout: Tensor;
}

/** Gradient targets of the attention backward; a null one is not computed. */
export interface AttentionGrads {
  /** [B, T, H, dqk] */
  dq: Tensor | null;
  /** [B, T, H, dqk] */
  dk: Tensor | null;
  /** [B, T, H, dv] */
  dv: Tensor | null;
}

/** Options of {@linkcode attentionBackward}. */
export interface AttentionBackwardOptions {
  /** The forward's softmax scale. */
  scale: number;
  /** Add into each gradient instead of overwriting it. */
  accumulate?: { dq?: boolean; dk?: boolean; dv?: boolean };
}

/**
 * Encodes the attention backward: dq, dk, dv from dout, with one writer per element (no
 * atomics), so the result is bitwise reproducible.
 *
 * Kernels: `attention_delta` (D = rowsum(dO * O)), `attention_dkdv` (per key block),
 * `attention_dq` (per query block). A temporary [B, H, T, 2] buffer is allocated and released.
 *
 * @throws when the shapes disagree.
 * @example
 * attentionBackward({ dq, dk, dv }, { q, k, v, out, lse, dout }, { scale });
 */
export function attentionBackward(
  grads: AttentionGrads,
  saved: AttentionSaved,
  opts: AttentionBackwardOptions,
): void {
  const { q, k, v, seg, out, lse, dout } = saved;
  const s = attentionShape(q, k, v, seg);
  const gpu = q.gpu;
  const hasSeg = Boolean(seg);
  const key = `${s.dqk}|${s.dv}|${hasSeg}`;
  const acc = opts.accumulate ?? {};
  const n = s.B * s.H * s.T;
  const stats = Tensor.empty(gpu, [s.B, s.H, s.T, 2]);
  launch1d(
    gpu,
    "attention_delta",
    "",
    () => DELTA_SRC,
    [out.binding, dout.binding, lse.binding, stats.binding],
    n,
    (p) => p.u32(n).u32(s.T).u32(s.H).u32(s.dv),
  );
  const ins = [q, k, v, dout, stats, ...(seg ? [seg] : [])].map((t) => t.binding);
  const params = (a: boolean, b: boolean) => (p: Params) =>
    p.u32(s.T).u32(s.H).f32(opts.scale).u32(a ? 1 : 0).u32(b ? 1 : 0).u32(0).u32(0).u32(0);
  const scratch: Tensor[] = [];
  if (grads.dk || grads.dv) {
    const dk = grads.dk ?? scratchOf(k, scratch), dv = grads.dv ?? scratchOf(v, scratch);
    launch(
      gpu,
      "attention_dkdv",
      key,
      () => dkdvSource(s.dqk, s.dv, hasSeg),
      [...ins, dk.binding, dv.binding],
      grid(s),
      params(Boolean(grads.dk && acc.dk), Boolean(grads.dv && acc.dv)),
    );
  }
  if (grads.dq) {
    launch(
      gpu,
      "attention_dq",
      key,
      () => dqSource(s.dqk, s.dv, hasSeg),
      [...ins, grads.dq.binding],
      grid(s),
      params(Boolean(acc.dq), false),
    );
  }
  // encoded work keeps running in order: the pool may hand these buffers out again safely
  stats.dispose();
  for (const t of scratch) t.dispose();
}

function scratchOf(like: Tensor, list: Tensor[]): Tensor {
  const t = Tensor.empty(like.gpu, like.shape);
  list.push(t);
  return t;
}

/**
 * Causal attention with autograd: `softmax(scale * q k^T + mask) v` per (batch, head).
 *
 * @param q queries [B, T, H, dqk] (MLA: `[q_nope ; q_pe]` per head).
 * @param k keys [B, T, H, dqk].
 * @param v values [B, T, H, dv].
 * @param opts.scale the softmax scale; `seg` optional i32 [B, T] segment ids keeping packed
 *   conversations apart.
 * @returns out [B, T, H, dv].
 * @throws when the shapes disagree.
 * @example const o = attention(q, k, v, { scale: 1 / Math.sqrt(dn + dr), seg });
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: { scale: number; seg?: Tensor | null },
): Tensor {
  const seg = opts.seg ?? null;
  const s = attentionShape(q, k, v, seg);
  const out = Tensor.empty(q.gpu, [s.B, s.T, s.H, s.dv]);
  const lse = Tensor.empty(q.gpu, [s.B, s.H, s.T]);
  attentionForward({ out, lse }, { q, k, v, seg }, { scale: opts.scale });
  if (needsGrad(q, k, v)) {
    record("attention", [out], () => {
      const dout = out.grad;
      if (!dout) return;
      const pick = (t: Tensor) => (t.requiresGrad ? gradFor(t) : null);
      const gq = pick(q), gk = pick(k), gv = pick(v);
      attentionBackward(
        { dq: gq?.grad ?? null, dk: gk?.grad ?? null, dv: gv?.grad ?? null },
        { q, k, v, seg, out, lse, dout },
        {
          scale: opts.scale,
          accumulate: { dq: gq?.accumulate, dk: gk?.accumulate, dv: gv?.accumulate },
        },
      );
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU twins: the naive T x T formulation in f64.

/** Host inputs of the CPU twins (any numeric arrays; computed in f64). */
export interface AttentionHost {
  /** [B, T, H, dqk] */
  q: ArrayLike<number>;
  /** [B, T, H, dqk] */
  k: ArrayLike<number>;
  /** [B, T, H, dv] */
  v: ArrayLike<number>;
  /** Optional segment ids [B, T]. */
  seg?: ArrayLike<number> | null;
}

/** Options of the CPU twins. */
export interface AttentionCpuOptions {
  /** The sizes. */
  shape: AttentionShape;
  /** The softmax scale. */
  scale: number;
}

/** Softmax probabilities P [T, T] (row i over j) of one (b, h), masked entries 0; and lse [T]. */
function probs(
  x: AttentionHost,
  o: AttentionCpuOptions,
  b: number,
  h: number,
): { P: Float64Array; lse: Float64Array } {
  const { T, H, dqk } = o.shape;
  const P = new Float64Array(T * T), lse = new Float64Array(T);
  const seg = x.seg;
  for (let i = 0; i < T; i++) {
    let m = -Infinity;
    const qi = ((b * T + i) * H + h) * dqk;
    for (let j = 0; j <= i; j++) {
      if (seg && seg[b * T + j] !== seg[b * T + i]) continue;
      const kj = ((b * T + j) * H + h) * dqk;
      let s = 0;
      for (let d = 0; d < dqk; d++) s += x.q[qi + d] * x.k[kj + d];
      P[i * T + j] = s * o.scale;
      m = Math.max(m, s * o.scale);
    }
    let l = 0;
    for (let j = 0; j <= i; j++) {
      if (seg && seg[b * T + j] !== seg[b * T + i]) continue;
      P[i * T + j] = Math.exp(P[i * T + j] - m);
      l += P[i * T + j];
    }
    for (let j = 0; j <= i; j++) P[i * T + j] /= l;
    lse[i] = m + Math.log(l);
  }
  return { P, lse };
}

/**
 * CPU twin of {@linkcode attentionForward} in f64.
 * @returns out [B, T, H, dv] and lse [B, H, T].
 * @example attentionCpu({ q, k, v }, { shape: { B: 1, T: 2, H: 1, dqk: 1, dv: 1 }, scale: 1 })
 */
export function attentionCpu(
  x: AttentionHost,
  o: AttentionCpuOptions,
): { out: Float64Array; lse: Float64Array } {
  const { B, T, H, dv } = o.shape;
  const out = new Float64Array(B * T * H * dv), lse = new Float64Array(B * H * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { P, lse: l } = probs(x, o, b, h);
      lse.set(l, (b * H + h) * T);
      for (let i = 0; i < T; i++) {
        const oi = ((b * T + i) * H + h) * dv;
        for (let j = 0; j <= i; j++) {
          const pij = P[i * T + j];
          if (pij === 0) continue;
          const vj = ((b * T + j) * H + h) * dv;
          for (let d = 0; d < dv; d++) out[oi + d] += pij * x.v[vj + d];
        }
      }
    }
  }
  return { out, lse };
}

/**
 * CPU twin of {@linkcode attentionBackward} in f64:
 * `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(dP * P))`, `dQ = scale dS K`,
 * `dK = scale dS^T Q`.
 * @returns dq, dk [B, T, H, dqk] and dv [B, T, H, dv].
 */
export function attentionBackwardCpu(
  x: AttentionHost & { dout: ArrayLike<number> },
  o: AttentionCpuOptions,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, H, dqk, dv } = o.shape;
  const dq = new Float64Array(B * T * H * dqk), dk = new Float64Array(dq.length);
  const dV = new Float64Array(B * T * H * dv);
  const dS = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { P } = probs(x, o, b, h);
      for (let i = 0; i < T; i++) {
        const gi = ((b * T + i) * H + h) * dv;
        let D = 0;
        for (let j = 0; j <= i; j++) {
          const pij = P[i * T + j];
          const vj = ((b * T + j) * H + h) * dv;
          let dp = 0;
          for (let d = 0; d < dv; d++) {
            dp += x.dout[gi + d] * x.v[vj + d];
            dV[vj + d] += pij * x.dout[gi + d];
          }
          dS[j] = dp;
          D += pij * dp;
        }
        const qi = ((b * T + i) * H + h) * dqk;
        for (let j = 0; j <= i; j++) {
          const ds = P[i * T + j] * (dS[j] - D) * o.scale;
          if (ds === 0) continue;
          const kj = ((b * T + j) * H + h) * dqk;
          for (let d = 0; d < dqk; d++) {
            dq[qi + d] += ds * x.k[kj + d];
            dk[kj + d] += ds * x.q[qi + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv: dV };
}
