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
 * Row records in uniform windows. The rows a kernel loops over (keys: k, v; query rows:
 * q * scale, dO, (lse, D, seg)) are first packed by `attention_pack_keys` / `_rows` into a
 * scratch buffer, one record per (b, h, t), each record cut into `parts` planes of `c` vec4s.
 * A dispatch binds one window of every plane as a uniform buffer (at most 64 KB each; `Tw`
 * rows) and covers either several whole (b, h) slices or one slice's rows ws .. we - 1; longer
 * sequences take several dispatches that carry their partial results through memory (below).
 * Why: on lavapipe a uniform load at a per-lane offset is a branch-free gather, about half the
 * cost of a storage load, and these loads dominate the kernels' time.
 *
 * Forward (FlashAttention, Dao et al. 2022, Alg. 1 with the FA-2 loop order), `attention_fwd`:
 * one workgroup of L = 8 lanes per (b, h, block of 8 R queries); lane `l` owns rows
 * `q0 + l + 8 r` (r < R) and keeps their pre-scaled q, output accumulators, running max and sum
 * in registers. The keys of the window run C at a time up to the block's last row (causality:
 * later key tiles are never visited); per trip a lane computes its R x C scores, rescales its
 * accumulators once (online softmax), then adds P V. A later window resumes from the stored
 * (out, lse) as the state (m = lse, l = 1, acc = out). No T x T matrix touches global memory.
 *
 * Backward (FA-2, Alg. 2, split so that every gradient element has exactly one writer):
 * 1. `attention_pack_rows`: query-row records, with `D_i = rowsum(dO_i * O_i)` next to `lse_i`.
 * 2. `attention_dkdv`: one workgroup per (b, h, block of 8 R keys), each lane holding R keys'
 *    k, v, dK, dV in registers, looping over the window's query rows at or after the block; the
 *    window holding the block's first key stores dK, dV, later windows add to them.
 * 3. `attention_pack_keys`, then `attention_dq`: one workgroup per (b, h, block of 8 R queries),
 *    each lane holding R rows' q, dO, lse, D, dQ, looping over the window's keys up to the
 *    block's last row; the first window stores dQ, later ones add.
 * Probabilities are recomputed as `exp(s - lse)` with the same pre-scaled q as the forward.
 * The windowed kernels read their params from a storage buffer, not a uniform one: lavapipe
 * 22.3 recompiles a shader for each new uniform loop bound, and with several uniform bindings
 * that path crashed.
 *
 * Why this shape: a workgroup is one 8-wide SIMD group of lavapipe, where every load is emulated
 * lane by lane and FMAs are nearly free next to it. So each vec4 a lane loads (at an address all
 * lanes share) feeds the R rows (or keys) it holds in registers: R is the knob, the largest of
 * 8, 4, 2, 1 whose per-lane state fits `REG_BUDGET` vec4s (40 KB per SIMD group, inside the L1).
 * Every row/dim loop is written out (no private arrays, which lavapipe indexes with gathers),
 * and masking is a `select` on every trip rather than a separate diagonal path. Rows and keys
 * past T are read clamped to row T - 1 and masked or not stored, so any T works. What was
 * measured on the way, and what did not pay, is in bench/README.md ("attention.ts").
 *
 * Each output element is summed by one lane in a fixed order, so the same inputs give the same
 * bits (windows are visited in a fixed order too). Mesa's llvmpipe caps the iterations of all
 * loops nested in one outermost loop at 65535 (gallivm's loop limiter) and silently stops past
 * it; each kernel has a single loop of at most ceil(T / C) trips and no nested loops, so T up
 * to 65535 is safe.
 *
 * On the CPU backend the launchers run `host/attention.ts` instead: the same math per block of
 * query rows, with the block's scores (at most 64 x T) in host scratch and its GEMMs in BLAS.
 *
 * Left out: dropout, non-causal attention, f16 inputs, sliding windows, skipping key tiles that
 * segment ids mask entirely. The packed records cost a scratch copy of q, dO (and k, v) per
 * call, kept per device and reused (B * H * T * (G_QK + G_V + 1) vec4s each). Heads as wide as
 * V3's (192/128) get R = 2 (forward) and 1 (backward), so their loads are barely amortised; on
 * real GPUs a tensor-core path would be the next step.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch, launch1d, webgpu } from "./_launch.ts";
import { hostAttentionBackward, hostAttentionForward } from "./host/attention.ts";
import type { Gpu } from "./gpu.ts";
import type { Binding } from "./device.ts";
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

/**
 * How the rows a kernel loops over are laid out for uniform windows: each row's record (R*
 * vec4s) is cut into `parts` planes of `c` vec4s, each plane its own uniform binding, so one
 * window of `Tw` rows covers a whole record in `parts` bindings of at most 64 KB each.
 */
interface Records {
  /** vec4s per row record. */
  rec: number;
  /** vec4s of the record in each plane. */
  c: number;
  /** Planes (uniform bindings): ceil(rec / c). */
  parts: number;
  /** Rows of one (b, h) slice in a plane: T rounded up to 16 (256-byte window offsets). */
  Tp: number;
  /** Rows per window: a multiple of 16 whose `c` vec4s per row fit one uniform binding. */
  Tw: number;
  /** vec4s per plane: B * H * Tp rows and one window of padding, a multiple of 16. */
  PV: number;
}

/**
 * The plane layout of `rec`-vec4 records at shape `s`: the fewest vec4s per plane `c` whose
 * plane count leaves one uniform binding for the params.
 * @example records(gpu, { B: 2, T: 512, H: 8, dqk: 64, dv: 32 }, 24) // c 2, parts 12, Tw 2048
 */
function records(gpu: Gpu, s: AttentionShape, rec: number, bytes?: number): Records {
  const maxBytes = Math.min(bytes ?? Infinity, gpu.device.limits.maxUniformBufferBindingSize);
  const maxParts = gpu.device.limits.maxUniformBuffersPerShaderStage;
  let c = 1;
  while (Math.ceil(rec / c) > maxParts) c++;
  const Tw = Math.floor(maxBytes / (16 * c) / 16) * 16;
  if (Tw < 16) {
    throw new Error(
      `attention: a ${rec}-vec4 row record does not fit ${maxParts} uniform bindings of ` +
        `${maxBytes} bytes (16 rows at least); pass a larger uniformBytes`,
    );
  }
  const Tp = Math.ceil(s.T / 16) * 16;
  const PV = Math.ceil((s.B * s.H * Tp + Tw) * c / 16) * 16;
  return { rec, c, parts: Math.ceil(rec / c), Tp, Tw, PV };
}

/** One dispatch's window: slices s0 .. s0 + ns - 1 (slice = b * H + h), rows ws .. we - 1. */
interface Window {
  s0: number;
  ns: number;
  ws: number;
  we: number;
  /** First plane row of the window. */
  W0: number;
}

/** The windows covering all rows: whole slices per window when a slice fits, else row ranges. */
function windows(s: AttentionShape, r: Records): Window[] {
  const Z = s.B * s.H, out: Window[] = [];
  if (r.Tp <= r.Tw) {
    const per = Math.floor(r.Tw / r.Tp);
    for (let s0 = 0; s0 < Z; s0 += per) {
      out.push({ s0, ns: Math.min(per, Z - s0), ws: 0, we: s.T, W0: s0 * r.Tp });
    }
  } else {
    for (let sl = 0; sl < Z; sl++) {
      for (let ws = 0; ws < s.T; ws += r.Tw) {
        out.push({ s0: sl, ns: 1, ws, we: Math.min(s.T, ws + r.Tw), W0: sl * r.Tp + ws });
      }
    }
  }
  return out;
}

/** WGSL declarations of the planes `u0 ..` at bindings first .. first + parts - 1. */
function planeDecls(r: Records, first: number): string {
  return range(r.parts).map((p) =>
    `@group(0) @binding(${first + p}) var<uniform> u${p}: array<vec4<f32>, ${r.Tw * r.c}>;`
  ).join("\n");
}

/** WGSL of vec4 `x` of the record at window row `wr`. */
const urec = (r: Records, x: number, wr: string) =>
  `u${Math.floor(x / r.c)}[${wr} * ${r.c}u + ${x % r.c}u]`;

/** The windowed kernels' params (one struct; each kernel reads what it needs). */
const PARAM_FIELDS = ["T", "H", "Tp", "s0", "ws", "we", "blk0", "scale", "acc_a", "acc_b"];
const PARAMS = /* wgsl */ `struct P {
  T: u32, H: u32, Tp: u32, s0: u32, ws: u32, we: u32, blk0: u32, scale: f32, acc_a: u32, acc_b: u32
}`;

/**
 * A windowed kernel's WGSL with its params read once into registers: `p.x` becomes `p_x`.
 * The params are a storage struct like every kernel's (see kernels/gpu.ts): lavapipe 22.3
 * recompiles a shader whose loop bounds come from uniform loads for every new value ("inlinable
 * uniforms"), and that path also corrupted the heap with many uniform bindings.
 */
function withParams(src: string, binding: number): string {
  const [head, body] = src.split("@compute");
  const lets = PARAM_FIELDS.map((f) => `let p_${f} = p.${f};`).join("\n  ");
  return `${head}@group(0) @binding(${binding}) var<storage, read> p: P;\n@compute` +
    body.replace(/\bp\.(\w+)/g, "p_$1").replace("{\n", `{\n  ${lets}\n`);
}

/**
 * The packing kernel: one thread per (b, h, t) writes that row's record into the planes of
 * `rec` (a storage view of the same buffer). Keys (`rows` false): k, v and, with `seg`, a vec4
 * holding the segment id's bits. Query rows (`rows` true): q * scale, dO, then (lse, D =
 * rowsum(dO * O), segment bits, 0).
 */
function packSource(dqk: number, dv: number, hasSeg: boolean, rows: boolean, r: Records): string {
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const put = (x: number, val: string) =>
    `rec[${Math.floor(x / r.c)}u * p.PV + fr * ${r.c}u + ${x % r.c}u] = ${val};`;
  const sg = hasSeg ? "bitcast<f32>(seg[b * p.T + i])" : "0.0";
  const body: string[] = [];
  const ins: string[] = rows ? ["q", "o", "dout", "lse"] : ["k", "v"];
  if (rows) {
    for (const g of range(gq)) body.push(put(g, `${load("q", kq, "row", g)} * p.scale`));
    body.push(`var dsum = vec4<f32>(0.0);`);
    for (const g of range(gv)) {
      body.push(`let o${g} = ${load("dout", kv, "row", g)};`, put(gq + g, `o${g}`));
      body.push(`dsum = fma(o${g}, ${load("o", kv, "row", g)}, dsum);`);
    }
    body.push(put(gq + gv, `vec4<f32>(lse[idx], ${sum4("dsum")}, ${sg}, 0.0)`));
  } else {
    for (const g of range(gq)) body.push(put(g, load("k", kq, "row", g)));
    for (const g of range(gv)) body.push(put(gq + g, load("v", kv, "row", g)));
    if (hasSeg) body.push(put(gq + gv, `vec4<f32>(${sg}, 0.0, 0.0, 0.0)`));
  }
  const type = (n: string) =>
    n === "lse" ? "array<f32>" : arrayType(n === "q" || n === "k" ? kq : kv);
  const decl = [...ins, ...(hasSeg ? ["seg"] : [])].map((n, i) =>
    `@group(0) @binding(${i}) var<storage, read> ${n}: ${n === "seg" ? "array<i32>" : type(n)};`
  );
  const nb = decl.length;
  return /* wgsl */ `
struct P { n: u32, T: u32, H: u32, Tp: u32, PV: u32, scale: f32 }
${decl.join("\n")}
@group(0) @binding(${nb}) var<storage, read_write> rec: array<vec4<f32>>;
@group(0) @binding(${nb + 1}) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 64u + li;   // over [B, H, T]
  if (idx >= p.n) { return; }
  let i = idx % p.T;
  let sl = idx / p.T;
  let b = sl / p.H;
  let h = sl % p.H;
  let row = (b * p.T + i) * p.H + h;
  let fr = sl * p.Tp + i;
  ${body.join("\n  ")}
}`;
}

/** WGSL of the slice, batch and head of a windowed kernel's workgroup. */
const SLICE = /* wgsl */ `let sl = p.s0 + wid.y;
  let b = sl / p.H;
  let h = sl % p.H;
  let wb = wid.y * p.Tp;   // plane row of this slice's row ws, minus ws
  let tl = p.T - 1u;`;

/**
 * The forward kernel over one window of keys: lane `lane` of workgroup (x, y) owns query rows
 * `(blk0 + x) * 8R + 8r + lane` of slice s0 + y. Per trip over keys j0 .. j0 + C - 1: scores
 * s_rc (masked to -3e38, below the running max's -1e30 floor, so exp gives exactly 0 and an
 * all-masked trip leaves m, l, acc unchanged), the running max, one rescale of l and acc, then
 * acc += p V. The first window starts from m = -1e30, l = 0, acc = 0; later ones resume from the
 * stored (out, lse) as m = lse, l = 1, acc = out (the same softmax state), and every window
 * stores out = acc / l and lse = m + log l.
 */
function forwardSource(dqk: number, dv: number, hasSeg: boolean, r: Records): string {
  const { R, C } = tileFor("fwd", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r_ of range(R)) {
    init.push(`let i${r_} = q0 + ${r_ * L}u + lane;`);
    init.push(`let ir${r_} = (b * p.T + min(i${r_}, tl)) * p.H + h;`);
    for (const g of range(gq)) {
      // pre-scaling q saves a multiply per score; the backward recomputes scores the same way
      init.push(`let q${r_}_${g} = ${load("q", kq, `ir${r_}`, g)} * p.scale;`);
    }
    if (hasSeg) init.push(`let si${r_} = seg[b * p.T + min(i${r_}, tl)];`);
    // m starts at a finite floor, not -inf: exp(m - s) is then exactly 0 for the first score
    // a row that saw no key yet (segments) was stored as lse -3e38: it starts afresh too
    init.push(`let ls${r_} = lse[sl * p.T + min(i${r_}, tl)];`);
    init.push(`let fr${r_} = fresh || ls${r_} <= -3e38;`);
    init.push(`var m${r_} = select(ls${r_}, -1e30, fr${r_});`);
    init.push(`var l${r_} = select(1.0, 0.0, fr${r_});`);
    for (const g of range(gv)) {
      init.push(
        `var a${r_}_${g} = select(${load("out", kv, `ir${r_}`, g)}, vec4<f32>(0.0), fr${r_});`,
      );
    }
  }
  const trip: string[] = [];
  for (const c of range(C)) {
    // past the window's last key only when that is row T - 1: masked as j > i
    trip.push(`let wr${c} = wb + min(j0 + ${c}u, p.we - 1u) - p.ws;`);
    if (hasSeg) trip.push(`let sj${c} = bitcast<i32>(${urec(r, gq + gv, `wr${c}`)}.x);`);
  }
  for (const c of range(C)) {
    for (const g of range(gq)) trip.push(`let k${c}_${g} = ${urec(r, g, `wr${c}`)};`);
    for (const r_ of range(R)) {
      trip.push(...dot(`t${r_}_${c}`, (g) => `q${r_}_${g}`, (g) => `k${c}_${g}`, gq));
      const keep = [`j0 + ${c}u <= i${r_}`, ...(hasSeg ? [`sj${c} == si${r_}`] : [])].join(" && ");
      trip.push(`let s${r_}_${c} = select(-3e38, ${sum4(`t${r_}_${c}`)}, ${keep});`);
    }
  }
  for (const r_ of range(R)) {
    const mx = range(C).map((c) => `s${r_}_${c}`).reduce((x, y) => `max(${x}, ${y})`);
    trip.push(`let mn${r_} = max(m${r_}, ${mx});`, `let cr${r_} = exp(m${r_} - mn${r_});`);
    trip.push(`m${r_} = mn${r_};`);
    for (const c of range(C)) trip.push(`let p${r_}_${c} = exp(s${r_}_${c} - mn${r_});`);
    const ps = range(C).map((c) => `p${r_}_${c}`).join(" + ");
    trip.push(`l${r_} = fma(l${r_}, cr${r_}, ${ps});`);
    for (const g of range(gv)) trip.push(`a${r_}_${g} = a${r_}_${g} * cr${r_};`);
  }
  for (const c of range(C)) {
    for (const g of range(gv)) {
      trip.push(`let v${c}_${g} = ${urec(r, gq + g, `wr${c}`)};`);
      for (const r_ of range(R)) {
        trip.push(`a${r_}_${g} = fma(vec4<f32>(p${r_}_${c}), v${c}_${g}, a${r_}_${g});`);
      }
    }
  }
  const fin = range(R).map((r_) =>
    `if (i${r_} < p.T) {
    let inv${r_} = select(1.0 / l${r_}, 0.0, l${r_} == 0.0);
    ${store("out", kv, `ir${r_}`, (g) => `a${r_}_${g} * inv${r_}`, false)}
    lse[sl * p.T + i${r_}] = select(m${r_} + log(l${r_}), -3e38, l${r_} == 0.0);
  }`
  );
  return withParams(
    /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<storage, read> q: ${arrayType(kq)};
${hasSeg ? "@group(0) @binding(1) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${1 + o}) var<storage, read_write> out: ${arrayType(kv)};
@group(0) @binding(${2 + o}) var<storage, read_write> lse: array<f32>;
${planeDecls(r, 3 + o)}

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  ${SLICE}
  let q0 = (p.blk0 + wid.x) * ${L * R}u;
  let fresh = p.ws == 0u;
  ${init.join("\n  ")}
  // causal: keys past the block's last row are masked for all of its rows
  let kend = min(min(p.T, p.we), q0 + ${L * R}u);
  for (var j0 = p.ws; j0 < kend; j0 += ${C}u) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
}`,
    3 + o + r.parts,
  );
}

/**
 * The dK/dV kernel over one window of query rows: lane `lane` of workgroup (x, y) owns keys
 * `x * 8R + 8r + lane` of slice s0 + y. Per trip over one query row i0 (from the block's first
 * key on: earlier rows see none of its keys): p = exp(s - lse), dS = p (dO . v - D),
 * dV += p dO, dK += dS q (q pre-scaled, so this already carries the scale). The window holding
 * the block's first key stores, later windows add.
 */
function dkdvSource(dqk: number, dv: number, hasSeg: boolean, r: Records): string {
  const { R } = tileFor("dkdv", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r_ of range(R)) {
    init.push(`let j${r_} = k0 + ${r_ * L}u + lane;`);
    init.push(`let jr${r_} = (b * p.T + min(j${r_}, tl)) * p.H + h;`);
    for (const g of range(gq)) init.push(`let k${r_}_${g} = ${load("k", kq, `jr${r_}`, g)};`);
    for (const g of range(gv)) init.push(`let v${r_}_${g} = ${load("v", kv, `jr${r_}`, g)};`);
    if (hasSeg) init.push(`let sj${r_} = seg[b * p.T + min(j${r_}, tl)];`);
    for (const g of range(gq)) init.push(`var gk${r_}_${g} = vec4<f32>(0.0);`);
    for (const g of range(gv)) init.push(`var gv${r_}_${g} = vec4<f32>(0.0);`);
  }
  const trip = [`let wr = wb + i0 - p.ws;`, `let st = ${urec(r, gq + gv, "wr")};`];
  for (const g of range(gq)) trip.push(`let q_${g} = ${urec(r, g, "wr")};`);
  for (const g of range(gv)) trip.push(`let o_${g} = ${urec(r, gq + g, "wr")};`);
  if (hasSeg) trip.push(`let sg = bitcast<i32>(st.z);`);
  for (const r_ of range(R)) {
    trip.push(...dot(`t${r_}`, (g) => `k${r_}_${g}`, (g) => `q_${g}`, gq));
    trip.push(...dot(`u${r_}`, (g) => `v${r_}_${g}`, (g) => `o_${g}`, gv));
    const keep = [`i0 >= j${r_}`, ...(hasSeg ? [`sg == sj${r_}`] : [])].join(" && ");
    // select, not a multiply: exp of a masked score may overflow to inf
    trip.push(`let p${r_} = select(0.0, exp(${sum4(`t${r_}`)} - st.x), ${keep});`);
    trip.push(`let d${r_} = p${r_} * (${sum4(`u${r_}`)} - st.y);`);
    for (const g of range(gv)) {
      trip.push(`gv${r_}_${g} = fma(vec4<f32>(p${r_}), o_${g}, gv${r_}_${g});`);
    }
    for (const g of range(gq)) {
      trip.push(`gk${r_}_${g} = fma(vec4<f32>(d${r_}), q_${g}, gk${r_}_${g});`);
    }
  }
  const fin = range(R).map((r_) =>
    `if (j${r_} < p.T) {
    if (first && p.acc_a == 0u) { ${store("dk", kq, `jr${r_}`, (g) => `gk${r_}_${g}`, false)} }
    else { ${store("dk", kq, `jr${r_}`, (g) => `gk${r_}_${g}`, true)} }
    if (first && p.acc_b == 0u) { ${store("dv", kv, `jr${r_}`, (g) => `gv${r_}_${g}`, false)} }
    else { ${store("dv", kv, `jr${r_}`, (g) => `gv${r_}_${g}`, true)} }
  }`
  );
  return withParams(
    /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<storage, read> k: ${arrayType(kq)};
@group(0) @binding(1) var<storage, read> v: ${arrayType(kv)};
${hasSeg ? "@group(0) @binding(2) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${2 + o}) var<storage, read_write> dk: ${arrayType(kq)};
@group(0) @binding(${3 + o}) var<storage, read_write> dv: ${arrayType(kv)};
${planeDecls(r, 4 + o)}

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  ${SLICE}
  let k0 = wid.x * ${L * R}u;
  let first = k0 >= p.ws;
  ${init.join("\n  ")}
  for (var i0 = max(k0, p.ws); i0 < p.we; i0++) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
}`,
    4 + o + r.parts,
  );
}

/**
 * The dQ kernel over one window of keys: lane `lane` of workgroup (x, y) owns query rows
 * `(blk0 + x) * 8R + 8r + lane` of slice s0 + y (their q, dO, lse and D = dO . O in registers).
 * Per trip over one key j0 (up to the block's last row): p = exp(s - lse), dS = p (dO . v - D),
 * dQ += dS k; dQ is scaled when stored. The first window stores, later windows add.
 */
function dqSource(dqk: number, dv: number, hasSeg: boolean, r: Records): string {
  const { R } = tileFor("dq", dqk, dv);
  const kq = rowKind(dqk), kv = rowKind(dv), gq = groups(kq), gv = groups(kv);
  const o = hasSeg ? 1 : 0;
  const init: string[] = [];
  for (const r_ of range(R)) {
    init.push(`let i${r_} = q0 + ${r_ * L}u + lane;`);
    init.push(`let ir${r_} = (b * p.T + min(i${r_}, tl)) * p.H + h;`);
    init.push(`let ls${r_} = lse[sl * p.T + min(i${r_}, tl)];`);
    for (const g of range(gq)) {
      init.push(`let q${r_}_${g} = ${load("q", kq, `ir${r_}`, g)} * p.scale;`);
    }
    for (const g of range(gv)) {
      init.push(`let o${r_}_${g} = ${load("dout", kv, `ir${r_}`, g)};`);
    }
    init.push(...dot(`dd${r_}`, (g) => `o${r_}_${g}`, (g) => load("o", kv, `ir${r_}`, g), gv));
    init.push(`let D${r_} = ${sum4(`dd${r_}`)};`);
    if (hasSeg) init.push(`let si${r_} = seg[b * p.T + min(i${r_}, tl)];`);
    for (const g of range(gq)) init.push(`var gq${r_}_${g} = vec4<f32>(0.0);`);
  }
  const trip = [`let wr = wb + j0 - p.ws;`];
  if (hasSeg) trip.push(`let sg = bitcast<i32>(${urec(r, gq + gv, "wr")}.x);`);
  for (const g of range(gq)) trip.push(`let k_${g} = ${urec(r, g, "wr")};`);
  for (const g of range(gv)) trip.push(`let v_${g} = ${urec(r, gq + g, "wr")};`);
  for (const r_ of range(R)) {
    trip.push(...dot(`t${r_}`, (g) => `q${r_}_${g}`, (g) => `k_${g}`, gq));
    trip.push(...dot(`u${r_}`, (g) => `o${r_}_${g}`, (g) => `v_${g}`, gv));
    const keep = [`j0 <= i${r_}`, ...(hasSeg ? [`sg == si${r_}`] : [])].join(" && ");
    trip.push(`let p${r_} = select(0.0, exp(${sum4(`t${r_}`)} - ls${r_}), ${keep});`);
    trip.push(`let d${r_} = p${r_} * (${sum4(`u${r_}`)} - D${r_});`);
    for (const g of range(gq)) {
      trip.push(`gq${r_}_${g} = fma(vec4<f32>(d${r_}), k_${g}, gq${r_}_${g});`);
    }
  }
  const fin = range(R).map((r_) =>
    `if (i${r_} < p.T) {
    if (first && p.acc_a == 0u) { ${
      store("dq", kq, `ir${r_}`, (g) => `gq${r_}_${g} * p.scale`, false)
    } }
    else { ${store("dq", kq, `ir${r_}`, (g) => `gq${r_}_${g} * p.scale`, true)} }
  }`
  );
  return withParams(
    /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<storage, read> q: ${arrayType(kq)};
@group(0) @binding(1) var<storage, read> o: ${arrayType(kv)};
@group(0) @binding(2) var<storage, read> dout: ${arrayType(kv)};
@group(0) @binding(3) var<storage, read> lse: array<f32>;
${hasSeg ? "@group(0) @binding(4) var<storage, read> seg: array<i32>;" : ""}
@group(0) @binding(${4 + o}) var<storage, read_write> dq: ${arrayType(kq)};
${planeDecls(r, 5 + o)}

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  ${SLICE}
  let q0 = (p.blk0 + wid.x) * ${L * R}u;
  let first = p.ws == 0u;
  ${init.join("\n  ")}
  // causal: keys past the block's last row are masked for all of its rows
  let kend = min(min(p.T, p.we), q0 + ${L * R}u);
  for (var j0 = p.ws; j0 < kend; j0++) {
    ${trip.join("\n    ")}
  }
  ${fin.join("\n  ")}
}`,
    5 + o + r.parts,
  );
}

/** vec4s of a key record (k, v, segment bits) and of a query-row record (q, dO, stats). */
const keyRec = (s: AttentionShape, hasSeg: boolean) =>
  Math.ceil(s.dqk / 4) + Math.ceil(s.dv / 4) + (hasSeg ? 1 : 0);
const rowRec = (s: AttentionShape) => Math.ceil(s.dqk / 4) + Math.ceil(s.dv / 4) + 1;

const recordBuffers = new WeakMap<Gpu, GPUBuffer[]>();

/**
 * A storage + uniform scratch buffer of at least `bytes` for slot `slot` (0 keys, 1 rows), kept
 * per device and reused by every call: the queue runs encoded work in order, so a later call's
 * packing never overtakes an earlier call's reads.
 */
function recordBuffer(gpu: Gpu, slot: number, bytes: number): GPUBuffer {
  let list = recordBuffers.get(gpu);
  if (!list) recordBuffers.set(gpu, list = []);
  if (!list[slot] || list[slot].size < bytes) {
    list[slot] = gpu.device.createBuffer({
      label: `attention records ${slot}`,
      size: Math.ceil(bytes / 256) * 256,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM,
    });
  }
  return list[slot];
}

/**
 * Encodes the packing of key (`rows` false) or query-row records of `ins` into a scratch buffer
 * and returns it with its layout.
 */
function pack(
  s: AttentionShape,
  ins: Tensor[],
  o: { rows: boolean; hasSeg: boolean; scale: number; uniformBytes?: number },
): { buf: GPUBuffer; r: Records } {
  const gpu = webgpu(ins[0].device, "attention");
  const r = records(gpu, s, o.rows ? rowRec(s) : keyRec(s, o.hasSeg), o.uniformBytes);
  const buf = recordBuffer(gpu, o.rows ? 1 : 0, r.parts * r.PV * 16);
  const n = s.B * s.H * s.T;
  launch1d(
    gpu,
    o.rows ? "attention_pack_rows" : "attention_pack_keys",
    `${s.dqk}|${s.dv}|${o.hasSeg}|${r.c}`,
    () => packSource(s.dqk, s.dv, o.hasSeg, o.rows, r),
    [...ins.map((t) => t.binding), { buffer: buf, offset: 0, size: r.parts * r.PV * 16 }],
    n,
    (p) => p.u32(n).u32(s.T).u32(s.H).u32(r.Tp).u32(r.PV).f32(o.scale),
    64,
  );
  return { buf, r };
}

/** The plane bindings of window `w`. */
function planeBindings(buf: GPUBuffer, r: Records, w: Window): Binding[] {
  return range(r.parts).map((p) => ({
    buffer: buf,
    offset: (p * r.PV + w.W0 * r.c) * 16,
    size: r.Tw * r.c * 16,
  }));
}

/** One windowed kernel launch of {@linkcode launchWindows}. */
interface WindowedLaunch {
  name: string;
  /** Pipeline key of the shape (the record layout is added). */
  key: string;
  source: () => string;
  /** The tensors bound before the record planes. */
  tensors: Tensor[];
  /** The first row block a window's workgroups start at. */
  blk0: (w: Window) => number;
  /** Row blocks (workgroups along x) a window runs. */
  blocks: (w: Window) => number;
  scale: number;
  /** Add into the first / second output instead of storing (the first window only). */
  acc_a: boolean;
  acc_b: boolean;
}

/**
 * Dispatches `o`'s kernel once per window of `buf`'s records, each with that window's params
 * (the fields of {@linkcode PARAMS}, in order).
 */
function launchWindows(s: AttentionShape, buf: GPUBuffer, r: Records, o: WindowedLaunch): void {
  const gpu = o.tensors[0].device;
  for (const w of windows(s, r)) {
    launch(
      gpu,
      o.name,
      `${o.key}|${r.c}|${r.Tw}`,
      o.source,
      [...o.tensors.map((t) => t.binding), ...planeBindings(buf, r, w)],
      [o.blocks(w), w.ns, 1],
      (p) =>
        p.u32(s.T).u32(s.H).u32(r.Tp).u32(w.s0).u32(w.ws).u32(w.we).u32(o.blk0(w)).f32(o.scale)
          .u32(o.acc_a ? 1 : 0).u32(o.acc_b ? 1 : 0),
    );
  }
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
 * @param opts.scale the softmax scale (MLA: `1/sqrt(dn + dr)`, times `m^2` under YaRN);
 *   `uniformBytes` the bytes per uniform window (WebGPU only; default: the device limit; tests
 *   make it small).
 * @throws when the shapes disagree or the grid passes 65535 workgroups per dimension.
 * @example attentionForward({ out, lse }, { q, k, v }, { scale: 1 / Math.sqrt(48) });
 */
export function attentionForward(
  outs: { out: Tensor; lse: Tensor },
  ins: AttentionInputs,
  opts: { scale: number; uniformBytes?: number },
): void {
  const { q, k, v, seg } = ins;
  const s = attentionShape(q, k, v, seg);
  if (outs.out.device.kind === "cpu") return hostAttentionForward(outs, ins, s, opts.scale);
  launchOverKeys(s, ins, "fwd", {
    name: "attention_fwd",
    source: (r) => forwardSource(s.dqk, s.dv, Boolean(seg), r),
    tensors: [q, ...(seg ? [seg] : []), outs.out, outs.lse],
    scale: opts.scale,
    accumulate: false,
    uniformBytes: opts.uniformBytes,
  });
}

/**
 * The query-side launches (forward, dQ): packs the key records (k, v, segment bits) and runs
 * `kernel` once per window over the query blocks of L * R rows from the window's first key on
 * (earlier rows cannot see those keys); `accumulate` adds into the first output.
 */
function launchOverKeys(
  s: AttentionShape,
  ins: AttentionInputs,
  kernel: "fwd" | "dq",
  o: {
    name: string;
    source: (r: Records) => string;
    tensors: Tensor[];
    scale: number;
    accumulate: boolean;
    uniformBytes?: number;
  },
): void {
  const hasSeg = Boolean(ins.seg);
  const { buf, r } = pack(s, [ins.k, ins.v, ...(ins.seg ? [ins.seg] : [])], {
    rows: false,
    hasSeg,
    scale: 0,
    uniformBytes: o.uniformBytes,
  });
  const { R } = tileFor(kernel, s.dqk, s.dv);
  const blk0 = (w: Window) => Math.floor(w.ws / (L * R));
  launchWindows(s, buf, r, {
    name: o.name,
    key: `${s.dqk}|${s.dv}|${hasSeg}`,
    source: () => o.source(r),
    tensors: o.tensors,
    blk0,
    blocks: (w) => Math.ceil(s.T / (L * R)) - blk0(w),
    scale: o.scale,
    acc_a: o.accumulate,
    acc_b: false,
  });
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
  /**
   * Bytes per uniform window (default: the device's largest uniform binding). Tests pass a
   * small one so that a short sequence already spans several windows.
   */
  uniformBytes?: number;
}

/**
 * Encodes the attention backward: dq, dk, dv from dout, with one writer per element (no
 * atomics), so the result is bitwise reproducible.
 *
 * Kernels: `attention_pack_rows` (query-row records with D = rowsum(dO * O)), `attention_dkdv`
 * (per key block and window), `attention_pack_keys`, `attention_dq` (per query block and
 * window). The records go to per-device scratch buffers reused by every call.
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
  if (q.device.kind === "cpu") return hostAttentionBackward(grads, saved, s, opts);
  const hasSeg = Boolean(seg);
  const key = `${s.dqk}|${s.dv}|${hasSeg}`;
  const acc = opts.accumulate ?? {};
  const segs = seg ? [seg] : [];
  const scratch: Tensor[] = [];
  if (grads.dk || grads.dv) {
    const dk = grads.dk ?? scratchOf(k, scratch), dv = grads.dv ?? scratchOf(v, scratch);
    const { buf, r } = pack(s, [q, out, dout, lse, ...segs], {
      rows: true,
      hasSeg,
      scale: opts.scale,
      uniformBytes: opts.uniformBytes,
    });
    const { R } = tileFor("dkdv", s.dqk, s.dv);
    launchWindows(s, buf, r, {
      name: "attention_dkdv",
      key,
      source: () => dkdvSource(s.dqk, s.dv, hasSeg, r),
      tensors: [k, v, ...segs, dk, dv],
      blk0: () => 0,
      blocks: (w) => Math.ceil(w.we / (L * R)),
      scale: opts.scale,
      acc_a: Boolean(grads.dk && acc.dk),
      acc_b: Boolean(grads.dv && acc.dv),
    });
  }
  if (grads.dq) {
    launchOverKeys(s, saved, "dq", {
      name: "attention_dq",
      source: (r) => dqSource(s.dqk, s.dv, hasSeg, r),
      tensors: [q, out, dout, lse, ...segs, grads.dq],
      scale: opts.scale,
      accumulate: Boolean(acc.dq),
      uniformBytes: opts.uniformBytes,
    });
  }
  // encoded work keeps running in order: the pool may hand these buffers out again safely
  for (const t of scratch) t.dispose();
}

function scratchOf(like: Tensor, list: Tensor[]): Tensor {
  const t = Tensor.empty(like.device, like.shape);
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
  const out = Tensor.empty(q.device, [s.B, s.T, s.H, s.dv]);
  const lse = Tensor.empty(q.device, [s.B, s.H, s.T]);
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
