/**
 * Causal scaled-dot-product attention for MLA, flash-attention style: forward and a
 * deterministic backward (no atomics), their CPU twins, and the autograd op
 * {@linkcode attention}.
 *
 * Legend: B batch, T time, H heads, DQK query/key head dim (MLA: dn + dr), DV value head dim
 * (may differ from DQK), L = 8 threads (lanes) per workgroup, R rows per lane, C keys (or query
 * rows) per loop trip, G* = ceil(D* / 4) vec4 groups of a head row.
 *
 *     q   [B, T, H, DQK]  f32      k [B, T, H, DQK] f32      v [B, T, H, DV] f32
 *     seg [B, T]          i32      optional segment ids (packed SFT conversations)
 *     out [B, T, H, DV]   f32
 *     lse [B, H, T]       f32      per-row logsumexp of the scaled, masked scores (saved)
 *
 * Position i attends to j when `j <= i` and, with `seg`, `seg[j] == seg[i]`. Every row attends
 * at least to itself, so no row is empty and `lse` is always finite.
 *
 * Forward (FlashAttention, Dao et al. 2022, Alg. 1 with the FA-2 loop order): one workgroup of
 * L = 8 lanes per (b, h, block of 8 R queries); lane `l` owns rows `q0 + l + 8 r` (r < R) and
 * keeps their pre-scaled q, output accumulators, running max and sum in registers. The keys run
 * C at a time up to the block's last row (causality: later key tiles are never visited); per
 * trip a lane computes its R x C scores, rescales its accumulators once (online softmax), then
 * adds P V. No T x T matrix touches global memory.
 *
 * Backward (FA-2, Alg. 2, split so that every gradient element has exactly one writer):
 * 1. `attention_delta`: `D_i = rowsum(dO_i * O_i)`, interleaved with `lse_i` into one
 *    [B, H, T, 2] buffer (one vec2 load per row; saves a storage binding: portable devices
 *    allow only 8).
 * 2. `attention_dkdv`: one workgroup per (b, h, block of 8 R keys), each lane holding R keys'
 *    k, v, dK, dV in registers, looping over the query rows at or after the block, C per trip.
 * 3. `attention_dq`: one workgroup per (b, h, block of 8 R queries), each lane holding R rows'
 *    q, dO, lse, D, dQ, looping over the keys up to the block's last row.
 * Probabilities are recomputed as `exp(s - lse)` with the same pre-scaled q as the forward.
 *
 * Why this shape (measured on Mesa's lavapipe 22.3, 2 cores, with `bench/attention.ts` and
 * throwaway variants; the recipe of `kernels/matmul.ts`): a workgroup is one 8-wide SIMD group of
 * the CPU driver, and every storage load is emulated lane by lane (about 30-40 ns per vec4 per
 * SIMD group), whether or not the lanes read the same address; FMAs are nearly free next to it.
 * Replacing 22 of the dK/dV kernel's 24 vec4 loads per trip with constants made it ~4x faster.
 * So the kernels read k/v (or q/dO) rows straight from storage as vec4s at addresses shared by
 * all lanes, and make each load feed the R rows (or keys) a lane holds in registers: R is the
 * knob (the forward at mini's dims runs 2.5-5x faster at R = 8 than at R = 2; C, the keys per
 * trip, changes nothing for the loads per score and measured flat or worse above 2). What did
 * not pay: staging q/dO tiles in workgroup memory (the dK/dV kernel got 1.4-1.8x slower: those
 * loads are emulated too, plus barriers), reading through rgba32float textures (same cost per
 * vec4), R = 8 in the dK/dV kernel (no faster: its 48 KB of live state per SIMD group
 * overflows the 32 KB L1). LLVM's compile time grows steeply with the live state: at mini's dims
 * the forward (R = 8, 24 vec4s per row) compiles in about 2 s, dK/dV (R = 4) in about 5 s and dQ
 * in about 3 s at R = 4 but 14 s at R = 8, which is kept because it runs 10-30% faster (more
 * under load); Mesa caches compiled shaders on disk, so this is paid once per machine. So R is
 * the largest of 8, 4, 2, 1 whose per-lane state fits `REG_BUDGET` vec4s (40 KB per SIMD
 * group). The old kernels (one row per thread, 32-thread workgroups, scalar reads of
 * workgroup-memory tiles) were 7-15x slower.
 * Every row/dim loop is written out (no private arrays, which lavapipe indexes with gathers),
 * and masking is a `select` on every trip rather than a separate diagonal path: it costs one
 * compare per score and halves the code LLVM compiles. Rows and keys past T are read clamped to
 * row T - 1 and masked or not stored, so any T works.
 *
 * Each output element is summed by one lane in a fixed order, so the same inputs give the same
 * bits. Mesa's llvmpipe caps the iterations of all loops nested in one outermost loop at 65535
 * (gallivm's loop limiter) and silently stops past it; each kernel has a single loop of at most
 * ceil(T / C) trips and no nested loops, so T up to 65535 is safe.
 *
 * Left out: dropout, non-causal attention, f16 inputs, sliding windows, skipping key tiles that
 * segment ids mask entirely. Heads as wide as V3's (192/128) get R = 2 (forward) and 1
 * (backward), so their loads are barely amortised; on real GPUs a tensor-core path would be the
 * next step.
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

/** Threads per workgroup: one 8-wide SIMD group of a 256-bit CPU driver (lavapipe). */
const L = 8;
/**
 * Per-lane register state (in vec4s) that picks R: 320 vec4s x 8 lanes = 40 KB per SIMD group;
 * the dK/dV kernel's R = 8 (384) measured no faster, the dQ kernel's (320) 10-30% faster.
 */
const REG_BUDGET = 320;

/** The register tile of one kernel: R rows (or keys) per lane, C keys (or rows) per trip. */
interface Tile {
  R: number;
  C: number;
}

type Kernel = "fwd" | "dkdv" | "dq";

/**
 * The register tile of `kernel` at head dims dqk, dv: R the largest of 8, 4, 2, 1 whose per-lane
 * state fits {@linkcode REG_BUDGET}; the forward takes C = 2 keys per trip (its online-softmax
 * rescale is paid once per trip; C = 4 measured no faster and compiles 40% longer), the backward
 * kernels C = 1 (faster than C = 2 on lavapipe, and less code to compile).
 * @example tileFor("fwd", 64, 32) // { R: 8, C: 2 }: 8 * (16 + 8) vec4s of q and accumulators
 */
function tileFor(kernel: Kernel, dqk: number, dv: number): Tile {
  const gq = Math.ceil(dqk / 4), gv = Math.ceil(dv / 4);
  // vec4s held per row (fwd: q, out acc; dkdv: k, v, dk, dv; dq: q, dO, dq)
  const per = kernel === "fwd" ? gq + gv : kernel === "dkdv" ? 2 * (gq + gv) : 2 * gq + gv;
  let R = 8;
  while (R > 1 && R * per > REG_BUDGET) R /= 2;
  return { R, C: kernel === "fwd" ? 2 : 1 };
}

/** How one head row of a tensor is addressed: as vec4s when its dim allows, else as floats. */
interface RowKind {
  /** The head dim. */
  d: number;
  /** d % 4 == 0: the binding is array<vec4<f32>>, so every row start is vec4-aligned. */
  vec: boolean;
}

const rowKind = (d: number): RowKind => ({ d, vec: d % 4 === 0 });
const arrayType = (k: RowKind) => k.vec ? "array<vec4<f32>>" : "array<f32>";
const groups = (k: RowKind) => Math.ceil(k.d / 4);

/**
 * WGSL of dims 4g .. 4g+3 of row `row` (the flat (b, t, h) index) of `arr` as a vec4; dims past
 * d read as 0, so dot products and accumulators over the padded vec4s stay exact.
 */
function load(arr: string, k: RowKind, row: string, g: number): string {
  if (k.vec) return `${arr}[${row} * ${k.d / 4}u + ${g}u]`;
  const c = [0, 1, 2, 3].map((x) =>
    4 * g + x < k.d ? `${arr}[${row} * ${k.d}u + ${4 * g + x}u]` : "0.0"
  );
  return `vec4<f32>(${c.join(", ")})`;
}

/** Statements storing (or, with `add`, adding) the vec4s `val(g)` into row `row` of `arr`. */
function store(arr: string, k: RowKind, row: string, val: (g: number) => string, add: boolean) {
  const out: string[] = [];
  for (let g = 0; g < groups(k); g++) {
    if (k.vec) {
      const idx = `${row} * ${k.d / 4}u + ${g}u`;
      out.push(`${arr}[${idx}] = ${val(g)}${add ? ` + ${arr}[${idx}]` : ""};`);
    } else {
      for (let x = 0; x < 4 && 4 * g + x < k.d; x++) {
        const idx = `${row} * ${k.d}u + ${4 * g + x}u`;
        out.push(`${arr}[${idx}] = (${val(g)})[${x}]${add ? ` + ${arr}[${idx}]` : ""};`);
      }
    }
  }
  return out.join(" ");
}

/**
 * Statements of the dot product of two head rows held as vec4s `a(g)`, `b(g)` (g < n): four
 * partial sums in `name` (a vec4, so four independent FMA chains), reduced by {@linkcode sum4}.
 */
function dot(name: string, a: (g: number) => string, b: (g: number) => string, n: number) {
  const out = [`var ${name} = ${a(0)} * ${b(0)};`];
  for (let g = 1; g < n; g++) out.push(`${name} = fma(${a(g)}, ${b(g)}, ${name});`);
  return out;
}

const sum4 = (t: string) => `(${t}.x + ${t}.y + ${t}.z + ${t}.w)`;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** WGSL shared by the three tiled kernels: the params struct. */
const PARAMS = /* wgsl */
  `struct P { T: u32, H: u32, scale: f32, acc_a: u32, acc_b: u32, _p0: u32, _p1: u32, _p2: u32 }`;

/**
 * The forward kernel: lane `lane` of workgroup (x, h, b) owns query rows `x * 8R + 8r + lane`.
 * Per trip over keys j0 .. j0 + C - 1: scores s_rc (masked to -3e38, below the running max's
 * -1e30 floor, so exp gives exactly 0 and an all-masked trip leaves m, l, acc unchanged), the
 * running max, one rescale of l and acc, then acc += p V.
 */
function forwardSource(dqk: number, dv: number, hasSeg: boolean): string {
  const { R, C } = tileFor("fwd", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r of range(R)) {
    init.push(`let i${r} = q0 + ${r * L}u + lane;`);
    init.push(`let ir${r} = (b * p.T + min(i${r}, tl)) * p.H + h;`);
    for (const g of range(gq)) {
      // pre-scaling q saves a multiply per score; the backward recomputes scores the same way
      init.push(`let q${r}_${g} = ${load("q", kq, `ir${r}`, g)} * p.scale;`);
    }
    if (hasSeg) init.push(`let si${r} = seg[b * p.T + min(i${r}, tl)];`);
    // m starts at a finite floor, not -inf: exp(m - s) is then exactly 0 for the first score
    init.push(`var m${r} = -1e30;`, `var l${r} = 0.0;`);
    for (const g of range(gv)) init.push(`var a${r}_${g} = vec4<f32>(0.0);`);
  }
  const trip: string[] = [];
  for (const c of range(C)) {
    trip.push(`let jr${c} = (b * p.T + min(j0 + ${c}u, tl)) * p.H + h;`);
    if (hasSeg) trip.push(`let sj${c} = seg[b * p.T + min(j0 + ${c}u, tl)];`);
  }
  for (const c of range(C)) {
    for (const g of range(gq)) trip.push(`let k${c}_${g} = ${load("k", kq, `jr${c}`, g)};`);
    for (const r of range(R)) {
      trip.push(...dot(`t${r}_${c}`, (g) => `q${r}_${g}`, (g) => `k${c}_${g}`, gq));
      const keep = [`j0 + ${c}u <= i${r}`, ...(hasSeg ? [`sj${c} == si${r}`] : [])].join(" && ");
      trip.push(`let s${r}_${c} = select(-3e38, ${sum4(`t${r}_${c}`)}, ${keep});`);
    }
  }
  for (const r of range(R)) {
    const mx = range(C).map((c) => `s${r}_${c}`).reduce((x, y) => `max(${x}, ${y})`);
    trip.push(`let mn${r} = max(m${r}, ${mx});`, `let cr${r} = exp(m${r} - mn${r});`);
    trip.push(`m${r} = mn${r};`);
    for (const c of range(C)) trip.push(`let p${r}_${c} = exp(s${r}_${c} - mn${r});`);
    const ps = range(C).map((c) => `p${r}_${c}`).join(" + ");
    trip.push(`l${r} = fma(l${r}, cr${r}, ${ps});`);
    for (const g of range(gv)) trip.push(`a${r}_${g} = a${r}_${g} * cr${r};`);
  }
  for (const c of range(C)) {
    for (const g of range(gv)) {
      trip.push(`let v${c}_${g} = ${load("v", kv, `jr${c}`, g)};`);
      for (const r of range(R)) {
        trip.push(`a${r}_${g} = fma(vec4<f32>(p${r}_${c}), v${c}_${g}, a${r}_${g});`);
      }
    }
  }
  const fin = range(R).map((r) =>
    `if (i${r} < p.T) {
    let inv${r} = 1.0 / l${r};
    ${store("out", kv, `ir${r}`, (g) => `a${r}_${g} * inv${r}`, false)}
    lse[(b * p.H + h) * p.T + i${r}] = m${r} + log(l${r});
  }`
  );
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<storage, read> q: ${arrayType(kq)};
@group(0) @binding(1) var<storage, read> k: ${arrayType(kq)};
@group(0) @binding(2) var<storage, read> v: ${arrayType(kv)};
${hasSeg ? "@group(0) @binding(3) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${3 + o}) var<storage, read_write> out: ${arrayType(kv)};
@group(0) @binding(${4 + o}) var<storage, read_write> lse: array<f32>;
@group(0) @binding(${5 + o}) var<uniform> p: P;

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let b = wid.z;
  let h = wid.y;
  let q0 = wid.x * ${L * R}u;
  let tl = p.T - 1u;
  ${init.join("\n  ")}
  // causal: keys past the block's last row are masked for all of its rows
  let kend = min(p.T, q0 + ${L * R}u);
  for (var j0 = 0u; j0 < kend; j0 += ${C}u) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
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

/** Bindings shared by the two backward kernels (q, k, v, dout, stats, then seg). */
function backwardBindings(kq: RowKind, kv: RowKind, hasSeg: boolean): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> q: ${arrayType(kq)};
@group(0) @binding(1) var<storage, read> k: ${arrayType(kq)};
@group(0) @binding(2) var<storage, read> v: ${arrayType(kv)};
@group(0) @binding(3) var<storage, read> dout: ${arrayType(kv)};
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>; // (lse, D) per row
${hasSeg ? "@group(0) @binding(5) var<storage, read> seg: array<i32>;" : ""}`;
}

/**
 * The dK/dV kernel: lane `lane` of workgroup (x, h, b) owns keys `x * 8R + 8r + lane`. Per trip
 * over query rows i0 .. i0 + C - 1 (from the block's first key on: earlier rows see none of its
 * keys): p = exp(s - lse), dS = p (dO . v - D), dV += p dO, dK += dS q (q pre-scaled, so this
 * already carries the scale).
 */
function dkdvSource(dqk: number, dv: number, hasSeg: boolean): string {
  const { R, C } = tileFor("dkdv", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r of range(R)) {
    init.push(`let j${r} = k0 + ${r * L}u + lane;`);
    init.push(`let jr${r} = (b * p.T + min(j${r}, tl)) * p.H + h;`);
    for (const g of range(gq)) init.push(`let k${r}_${g} = ${load("k", kq, `jr${r}`, g)};`);
    for (const g of range(gv)) init.push(`let v${r}_${g} = ${load("v", kv, `jr${r}`, g)};`);
    if (hasSeg) init.push(`let sj${r} = seg[b * p.T + min(j${r}, tl)];`);
    for (const g of range(gq)) init.push(`var gk${r}_${g} = vec4<f32>(0.0);`);
    for (const g of range(gv)) init.push(`var gv${r}_${g} = vec4<f32>(0.0);`);
  }
  const trip: string[] = [];
  for (const c of range(C)) {
    trip.push(`let ic${c} = min(i0 + ${c}u, tl);`, `let ir${c} = (b * p.T + ic${c}) * p.H + h;`);
    trip.push(`let st${c} = stats[sb + ic${c}];`);
    if (hasSeg) trip.push(`let sg${c} = seg[b * p.T + ic${c}];`);
    for (const g of range(gq)) {
      trip.push(`let q${c}_${g} = ${load("q", kq, `ir${c}`, g)} * p.scale;`);
    }
    for (const g of range(gv)) trip.push(`let o${c}_${g} = ${load("dout", kv, `ir${c}`, g)};`);
  }
  for (const c of range(C)) {
    for (const r of range(R)) {
      trip.push(...dot(`t${r}_${c}`, (g) => `k${r}_${g}`, (g) => `q${c}_${g}`, gq));
      trip.push(...dot(`u${r}_${c}`, (g) => `v${r}_${g}`, (g) => `o${c}_${g}`, gv));
      const keep = [`i0 + ${c}u >= j${r}`, `i0 + ${c}u < p.T`];
      if (hasSeg) keep.push(`sg${c} == sj${r}`);
      // select, not a multiply: exp of a masked score may overflow to inf
      const e = `exp(${sum4(`t${r}_${c}`)} - st${c}.x)`;
      trip.push(`let p${r}_${c} = select(0.0, ${e}, ${keep.join(" && ")});`);
      trip.push(`let d${r}_${c} = p${r}_${c} * (${sum4(`u${r}_${c}`)} - st${c}.y);`);
      for (const g of range(gv)) {
        trip.push(`gv${r}_${g} = fma(vec4<f32>(p${r}_${c}), o${c}_${g}, gv${r}_${g});`);
      }
      for (const g of range(gq)) {
        trip.push(`gk${r}_${g} = fma(vec4<f32>(d${r}_${c}), q${c}_${g}, gk${r}_${g});`);
      }
    }
  }
  const fin = range(R).map((r) =>
    `if (j${r} < p.T) {
    if (p.acc_a == 1u) { ${store("dk", kq, `jr${r}`, (g) => `gk${r}_${g}`, true)} }
    else { ${store("dk", kq, `jr${r}`, (g) => `gk${r}_${g}`, false)} }
    if (p.acc_b == 1u) { ${store("dv", kv, `jr${r}`, (g) => `gv${r}_${g}`, true)} }
    else { ${store("dv", kv, `jr${r}`, (g) => `gv${r}_${g}`, false)} }
  }`
  );
  return /* wgsl */ `
${PARAMS}
${backwardBindings(kq, kv, hasSeg)}
@group(0) @binding(${5 + o}) var<storage, read_write> dk: ${arrayType(kq)};
@group(0) @binding(${6 + o}) var<storage, read_write> dv: ${arrayType(kv)};
@group(0) @binding(${7 + o}) var<uniform> p: P;

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let b = wid.z;
  let h = wid.y;
  let k0 = wid.x * ${L * R}u;
  let tl = p.T - 1u;
  let sb = (b * p.H + h) * p.T;
  ${init.join("\n  ")}
  for (var i0 = k0; i0 < p.T; i0 += ${C}u) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
}`;
}

/**
 * The dQ kernel: lane `lane` of workgroup (x, h, b) owns query rows `x * 8R + 8r + lane`. Per
 * trip over keys j0 .. j0 + C - 1 (up to the block's last row): p = exp(s - lse),
 * dS = p (dO . v - D), dQ += dS k; dQ is scaled once when stored.
 */
function dqSource(dqk: number, dv: number, hasSeg: boolean): string {
  const { R, C } = tileFor("dq", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r of range(R)) {
    init.push(`let i${r} = q0 + ${r * L}u + lane;`);
    init.push(`let ir${r} = (b * p.T + min(i${r}, tl)) * p.H + h;`);
    init.push(`let st${r} = stats[sb + min(i${r}, tl)];`);
    for (const g of range(gq)) {
      init.push(`let q${r}_${g} = ${load("q", kq, `ir${r}`, g)} * p.scale;`);
    }
    for (const g of range(gv)) init.push(`let o${r}_${g} = ${load("dout", kv, `ir${r}`, g)};`);
    if (hasSeg) init.push(`let si${r} = seg[b * p.T + min(i${r}, tl)];`);
    for (const g of range(gq)) init.push(`var gq${r}_${g} = vec4<f32>(0.0);`);
  }
  const trip: string[] = [];
  for (const c of range(C)) {
    trip.push(`let jr${c} = (b * p.T + min(j0 + ${c}u, tl)) * p.H + h;`);
    if (hasSeg) trip.push(`let sg${c} = seg[b * p.T + min(j0 + ${c}u, tl)];`);
    for (const g of range(gq)) trip.push(`let k${c}_${g} = ${load("k", kq, `jr${c}`, g)};`);
    for (const g of range(gv)) trip.push(`let v${c}_${g} = ${load("v", kv, `jr${c}`, g)};`);
  }
  for (const c of range(C)) {
    for (const r of range(R)) {
      trip.push(...dot(`t${r}_${c}`, (g) => `q${r}_${g}`, (g) => `k${c}_${g}`, gq));
      trip.push(...dot(`u${r}_${c}`, (g) => `o${r}_${g}`, (g) => `v${c}_${g}`, gv));
      const keep = [`j0 + ${c}u <= i${r}`, ...(hasSeg ? [`sg${c} == si${r}`] : [])].join(" && ");
      const e = `exp(${sum4(`t${r}_${c}`)} - st${r}.x)`;
      trip.push(`let p${r}_${c} = select(0.0, ${e}, ${keep});`);
      trip.push(`let d${r}_${c} = p${r}_${c} * (${sum4(`u${r}_${c}`)} - st${r}.y);`);
      for (const g of range(gq)) {
        trip.push(`gq${r}_${g} = fma(vec4<f32>(d${r}_${c}), k${c}_${g}, gq${r}_${g});`);
      }
    }
  }
  const fin = range(R).map((r) =>
    `if (i${r} < p.T) {
    if (p.acc_a == 1u) { ${store("dq", kq, `ir${r}`, (g) => `gq${r}_${g} * p.scale`, true)} }
    else { ${store("dq", kq, `ir${r}`, (g) => `gq${r}_${g} * p.scale`, false)} }
  }`
  );
  return /* wgsl */ `
${PARAMS}
${backwardBindings(kq, kv, hasSeg)}
@group(0) @binding(${5 + o}) var<storage, read_write> dq: ${arrayType(kq)};
@group(0) @binding(${6 + o}) var<uniform> p: P;

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let b = wid.z;
  let h = wid.y;
  let q0 = wid.x * ${L * R}u;
  let tl = p.T - 1u;
  let sb = (b * p.H + h) * p.T;
  ${init.join("\n  ")}
  // causal: keys past the block's last row are masked for all of its rows
  let kend = min(p.T, q0 + ${L * R}u);
  for (var j0 = 0u; j0 < kend; j0 += ${C}u) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
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
  if (Math.ceil(T / L) > 65535 || H > 65535 || B > 65535) {
    throw new Error(`attention: grid [${Math.ceil(T / L)}, ${H}, ${B}] passes 65535 workgroups`);
  }
  return { B, T, H, dqk, dv };
}

/** Workgroups of `kernel`: one per (block of 8 R rows or keys, head, batch). */
function grid(s: AttentionShape, kernel: Kernel): [number, number, number] {
  return [Math.ceil(s.T / (L * tileFor(kernel, s.dqk, s.dv).R)), s.H, s.B];
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
    grid(s, "fwd"),
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
      grid(s, "dkdv"),
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
      grid(s, "dq"),
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
