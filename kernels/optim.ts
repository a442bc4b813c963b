/**
 * The optimizer step on the GPU: global gradient norm (deterministic two-stage sum of squares
 * with a non-finite flag), the clip scale, and AdamW with decoupled weight decay; CPU twins of
 * each.
 *
 * Legend: N elements of one range, C chunks of {@linkcode NORM_CHUNK} elements, R ranges.
 *
 *     sumSquares:  grads (R ranges of f32)            -> sumsq [1] f32, nonfinite [1] f32 (0 | 1)
 *     clipScale:   sumsq [1]                          -> scale [1] f32, norm [1] f32
 *     adamw:       p, grad, m, v (one range [offset, offset + N) of each), scale [1] -> p, m, v
 *
 * A training step needs no readback: the clip scale stays on the GPU and AdamW multiplies every
 * gradient by it (`scale = min(1, maxNorm / (norm + 1e-6))`, the PyTorch `clip_grad_norm_`
 * rule). The learning rate and the step count come from the host, where the schedule lives.
 *
 * Determinism: stage 1 gives each 64-thread workgroup a fixed chunk of NORM_CHUNK elements (each
 * thread a fixed strided slice, one barrier, thread 0 adding the 64 partials in order); stage 2
 * is one workgroup summing the partials in a fixed order. The partition depends only on the
 * ranges, never on timing, and no atomics are used.
 *
 * Ranges that start 4-aligned in bindings of whole vec4s (the arena's, always) are read and
 * written as vec4: on lavapipe every load is a per-lane gather, so fewer, wider loads pay.
 *
 * Left out: per-parameter learning rates (call {@linkcode adamw} per range instead), fused
 * multi-tensor launches, f16 moments.
 *
 * On the CPU backend each launcher calls its implementation in `host/optim.ts` after its
 * checks.
 *
 * @module
 */
import { launch, launch1d } from "./_launch.ts";
import { DeviceError } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { hostAdamw, hostClipScale, hostSumSquares } from "./host/optim.ts";

/** Elements one stage-1 workgroup of the sum of squares reduces (256 threads x 16). */
export const NORM_CHUNK = 4096;

/** An element range of a gradient buffer: `t[offset, offset + count)`. */
export interface GradRange {
  /** The f32 buffer (an arena chunk, or one gradient tensor). */
  t: Tensor;
  /** First element (default 0); need not be aligned. */
  offset?: number;
  /** Elements (default: to the end of `t`). */
  count?: number;
}

function resolve(r: { t: { size: number }; offset?: number; count?: number }, what: string) {
  const offset = r.offset ?? 0;
  const count = r.count ?? r.t.size - offset;
  if (offset < 0 || count < 0 || offset + count > r.t.size) {
    throw new DeviceError(
      `${what}: range [${offset}, ${offset + count}) is outside a tensor of ${r.t.size} elements`,
    );
  }
  return { offset, count };
}

const NONFINITE_WGSL = /* wgsl */ `
// bit test: immune to fast-math folding of x != x, and catches +-inf too
fn nonfinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }
fn nonfinite4(x: vec4<f32>) -> vec4<bool> {
  return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u);
}`;

/** Threads per stage-1 workgroup of the sum of squares (each folds NORM_CHUNK / 64 elements). */
const SUMSQ_WG = 64;

/**
 * Whether a range of `t` can be read as vec4 units: its first element is 4-aligned and the
 * binding ends on a whole vec4, so the last partial unit of the range is inside the binding.
 */
function vec4Range(t: Tensor, offset: number): boolean {
  return offset % 4 === 0 && t.binding.size % 16 === 0;
}

function sumsqStage1Source(vec: boolean): string {
  // Thread li folds units k * WG + li of its chunk (k < per), masking elements past the range.
  const load = vec
    ? `let i = 4u * (c * ${NORM_CHUNK / 4}u + k * ${SUMSQ_WG}u + li);
    let g = select(vec4<f32>(0.0), x[p.offset / 4u + i / 4u],
                   vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.count));`
    : `let i = c * ${NORM_CHUNK}u + k * ${SUMSQ_WG}u + li;
    var g = 0.0;
    if (i < p.count) { g = x[p.offset + i]; }`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<${vec ? "vec4<f32>" : "f32"}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct P { offset: u32, count: u32, base: u32, chunks: u32 }
@group(0) @binding(2) var<storage, read> p: P;
var<workgroup> ss: array<f32, ${SUMSQ_WG}>;
var<workgroup> bad: array<u32, ${SUMSQ_WG}>;
${NONFINITE_WGSL}
@compute @workgroup_size(${SUMSQ_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let c = wid.y * nwg.x + wid.x;   // chunk; uniform per workgroup, so the return is too
  if (c >= p.chunks) { return; }
  var s = ${vec ? "vec4<f32>(0.0)" : "0.0"};
  var f = false;
  for (var k = 0u; k < ${NORM_CHUNK / SUMSQ_WG / (vec ? 4 : 1)}u; k++) {
    ${load}
    s += g * g;
    f = f || ${vec ? "any(nonfinite4(g))" : "nonfinite(g)"};
  }
  ss[li] = ${vec ? "(s.x + s.y) + (s.z + s.w)" : "s"};
  bad[li] = select(0u, 1u, f);
  // One barrier, then thread 0 adds the partials in lane order (a tree would take six).
  workgroupBarrier();
  if (li == 0u) {
    var t = 0.0;
    var b = 0u;
    for (var k = 0u; k < ${SUMSQ_WG}u; k++) { t += ss[k]; b |= bad[k]; }
    partials[2u * (p.base + c)] = t;
    partials[2u * (p.base + c) + 1u] = f32(b);
  }
}`;
}

function sumsqStage2Source(withFlag: boolean): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> sumsq: array<f32>;
${withFlag ? "@group(0) @binding(2) var<storage, read_write> flag: array<f32>;" : ""}
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(${withFlag ? 3 : 2}) var<storage, read> p: P;
var<workgroup> ss: array<f32, 256>;
var<workgroup> bad: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  var f = 0.0;
  for (var i = li; i < p.n; i += 256u) {
    s += partials[2u * i];
    f = max(f, partials[2u * i + 1u]);
  }
  ss[li] = s;
  bad[li] = f;
  for (var w = 128u; w > 0u; w >>= 1u) {
    workgroupBarrier();
    if (li < w) {
      ss[li] += ss[li + w];
      bad[li] = max(bad[li], bad[li + w]);
    }
  }
  if (li == 0u) {
    sumsq[0] = ss[0];
    ${withFlag ? "flag[0] = bad[0];" : ""}
  }
}`;
}

/**
 * Encodes the sum of squares of every element of `ranges` into `out` [1] (f32), and optionally
 * a non-finite flag (1 when any element is NaN or +-inf, else 0) into `opts.nonfinite` [1].
 *
 * Two stages: one workgroup per {@linkcode NORM_CHUNK} elements of each range writes a partial
 * sum, then one workgroup adds the partials in a fixed order. A temporary partials buffer is
 * allocated and released. Empty lists give 0.
 *
 * @throws when a range lies outside its tensor.
 * @example sumSquares(sumsq, [{ t: gradChunk0 }, { t: gradChunk1, count: used1 }]);
 */
export function sumSquares(
  out: Tensor,
  ranges: readonly GradRange[],
  opts: { nonfinite?: Tensor | null } = {},
): void {
  const gpu = out.device;
  const rs = ranges.map((r) => ({ t: r.t, ...resolve(r, "sumSquares") }));
  if (gpu.kind === "cpu") return hostSumSquares(out, rs, opts.nonfinite ?? null);
  const chunks = rs.map((r) => Math.ceil(r.count / NORM_CHUNK));
  const total = chunks.reduce((a, b) => a + b, 0);
  const partials = Tensor.empty(gpu, [Math.max(1, total), 2]);
  let base = 0;
  rs.forEach((r, i) => {
    const c = chunks[i], b = base;
    base += c;
    if (c === 0) return;
    const vec = vec4Range(r.t, r.offset);
    launch1d(
      gpu,
      "sumsq_stage1",
      `${vec}`,
      () => sumsqStage1Source(vec),
      [r.t.binding, partials.binding],
      c * SUMSQ_WG,
      (p) => p.u32(r.offset).u32(r.count).u32(b).u32(c),
      SUMSQ_WG,
    );
  });
  const withFlag = Boolean(opts.nonfinite);
  launch(
    gpu,
    "sumsq_stage2",
    `${withFlag}`,
    () => sumsqStage2Source(withFlag),
    [partials, out, ...(opts.nonfinite ? [opts.nonfinite] : [])].map((t) => t.binding),
    [1, 1, 1],
    (p) => p.u32(total).u32(0).u32(0).u32(0),
  );
  // later work runs after this in queue order, so the pool may reuse the buffer at once
  partials.dispose();
}

const CLIP_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> sumsq: array<f32>;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
struct P { max_norm: f32, clip: u32, _a: u32, _b: u32 }
@group(0) @binding(3) var<storage, read> p: P;
@compute @workgroup_size(1)
fn main() {
  let n = sqrt(sumsq[0]);
  norm[0] = n;
  scale[0] = select(1.0, min(1.0, p.max_norm / (n + 1e-6)), p.clip == 1u);
}`;

/**
 * Encodes the clip scale `min(1, maxNorm / (sqrt(sumsq) + 1e-6))` into `out` [1] and the norm
 * `sqrt(sumsq)` into `opts.norm` [1] (for logging). A `maxNorm` that is not finite or not
 * positive means no clipping (scale 1). With non-finite gradients the scale is not meaningful:
 * check the flag from {@linkcode sumSquares}.
 *
 * @example clipScale(scale, sumsq, { maxNorm: 1.0, norm });
 */
export function clipScale(
  out: Tensor,
  sumsq: Tensor,
  opts: { maxNorm: number; norm?: Tensor | null },
): void {
  const clip = Number.isFinite(opts.maxNorm) && opts.maxNorm > 0;
  if (out.device.kind === "cpu") {
    return hostClipScale(out, sumsq, opts.norm ?? null, { maxNorm: opts.maxNorm, clip });
  }
  const norm = opts.norm ?? Tensor.empty(out.device, [1]);
  launch(
    out.device,
    "clip_scale",
    "",
    () => CLIP_SRC,
    [sumsq.binding, out.binding, norm.binding],
    [1, 1, 1],
    (p) => p.f32(clip ? opts.maxNorm : 0).u32(clip ? 1 : 0).u32(0).u32(0),
  );
  if (!opts.norm) norm.dispose();
}

/** The four 1-element results of {@linkcode gradClip}. */
export interface GradClipStats {
  /** Sum of squares of all gradients [1]. */
  sumsq: Tensor;
  /** Global L2 norm [1] (before clipping), for logging. */
  norm: Tensor;
  /** `min(1, maxNorm / (norm + 1e-6))` [1]: pass as AdamW's `gradScale`. */
  scale: Tensor;
  /** 1 when any gradient element is NaN or +-inf, else 0 [1]. */
  nonfinite: Tensor;
}

/**
 * Encodes the global gradient norm, the non-finite flag and the clip scale of `ranges`.
 * The results stay on the GPU; read `norm`/`nonfinite` back when logging.
 *
 * @example
 * const { scale, norm } = gradClip(gradRanges, { maxNorm: 1 });
 * for (const r of ranges) adamw(r.p, r.state, { lr, step, wd: r.wd, gradScale: scale, ...r });
 */
export function gradClip(ranges: readonly GradRange[], opts: { maxNorm: number }): GradClipStats {
  if (ranges.length === 0) throw new DeviceError("gradClip: no gradient ranges given");
  const gpu = ranges[0].t.device;
  const [sumsq, norm, scale, nonfinite] = [0, 1, 2, 3].map(() => Tensor.empty(gpu, [1]));
  sumSquares(sumsq, ranges, { nonfinite });
  clipScale(scale, sumsq, { maxNorm: opts.maxNorm, norm });
  return { sumsq, norm, scale, nonfinite };
}

/** CPU twin of {@linkcode sumSquares} in f64. */
export function sumSquaresCpu(
  ranges: readonly { t: ArrayLike<number>; offset?: number; count?: number }[],
): { sumsq: number; nonfinite: boolean } {
  let sumsq = 0, nonfinite = false;
  for (const r of ranges) {
    const { offset, count } = resolve({ ...r, t: { size: r.t.length } }, "sumSquaresCpu");
    for (let i = offset; i < offset + count; i++) {
      const g = r.t[i];
      sumsq += g * g;
      if (!Number.isFinite(g)) nonfinite = true;
    }
  }
  return { sumsq, nonfinite };
}

/**
 * CPU twin of {@linkcode clipScale}.
 * @example clipScaleCpu(16, 1) // { norm: 4, scale: 0.2499999... }
 */
export function clipScaleCpu(sumsq: number, maxNorm: number): { norm: number; scale: number } {
  const norm = Math.sqrt(sumsq);
  const clip = Number.isFinite(maxNorm) && maxNorm > 0;
  return { norm, scale: clip ? Math.min(1, maxNorm / (norm + 1e-6)) : 1 };
}

function adamwSource(withScale: boolean, vec: boolean): string {
  const T = vec ? "vec4<f32>" : "f32";
  // With vec4 units thread i updates elements 4i .. 4i + 3 of the range; a last partial unit
  // stores only its elements inside the range (the rest belong to the next range).
  const store = vec
    ? `if (4u * i + 4u <= p.count) {
    param[j] = pn;
    m[j] = mj;
    v[j] = vj;
  } else {
    for (var k = 0u; k < p.count - 4u * i; k++) {
      param[j][k] = pn[k];
      m[j][k] = mj[k];
      v[j][k] = vj[k];
    }
  }`
    : `param[j] = pn;
  m[j] = mj;
  v[j] = vj;`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> param: array<${T}>;
@group(0) @binding(1) var<storage, read> grad: array<${T}>;
@group(0) @binding(2) var<storage, read_write> m: array<${T}>;
@group(0) @binding(3) var<storage, read_write> v: array<${T}>;
${withScale ? "@group(0) @binding(4) var<storage, read> gscale: array<f32>;" : ""}
struct P {
  offset: u32, count: u32, lr: f32, wd: f32,
  beta1: f32, beta2: f32, eps: f32, bc1: f32,
  bc2: f32, _a: u32, _b: u32, _c: u32,
}
@group(0) @binding(${withScale ? 5 : 4}) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (${vec ? "4u * i" : "i"} >= p.count) { return; }
  let j = ${vec ? "p.offset / 4u" : "p.offset"} + i;
  let g = grad[j]${withScale ? " * gscale[0]" : ""};
  let mj = p.beta1 * m[j] + (1.0 - p.beta1) * g;
  let vj = p.beta2 * v[j] + (1.0 - p.beta2) * g * g;
  let mhat = mj / p.bc1;
  let vhat = vj / p.bc2;
  let w = param[j];
  // decoupled weight decay (Loshchilov & Hutter, AdamW): decay uses the pre-step weight
  let pn = w - p.lr * (mhat / (sqrt(vhat) + p.eps) + p.wd * w);
  ${store}
}`;
}

/** AdamW's moment decays and denominator floor. */
export interface AdamWMomentHyper {
  /** First-moment decay. */
  beta1: number;
  /** Second-moment decay. */
  beta2: number;
  /** Denominator floor. */
  eps: number;
}

/**
 * The moment decays and floor where a call leaves them out: DeepSeek-V3's (section 4.2). The
 * one source of these defaults; `train/`'s `ADAMW_DEFAULTS` builds on it.
 */
export const ADAMW_MOMENT_DEFAULTS: Readonly<AdamWMomentHyper> = Object.freeze({
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
});

/** The AdamW hyperparameters of one call. */
export interface AdamWHyper {
  /** Learning rate of this step (from the host-side schedule). */
  lr: number;
  /** 1-based step count, for the bias corrections `1 - beta^step`. */
  step: number;
  /** Decoupled weight decay (0 for norms, biases and embeddings where masked). Default 0. */
  wd?: number;
  /** First-moment decay. Default {@linkcode ADAMW_MOMENT_DEFAULTS} (0.9). */
  beta1?: number;
  /** Second-moment decay. Default {@linkcode ADAMW_MOMENT_DEFAULTS} (0.95). */
  beta2?: number;
  /** Denominator floor. Default {@linkcode ADAMW_MOMENT_DEFAULTS} (1e-8). */
  eps?: number;
  /** First element of the range (same in all four buffers). Default 0. */
  offset?: number;
  /** Elements in the range. Default: to the end of `param`. */
  count?: number;
}

/** Options of {@linkcode adamw}. */
export interface AdamWOptions extends AdamWHyper {
  /** A 1-element f32 tensor the gradient is multiplied by first (the clip scale). */
  gradScale?: Tensor | null;
}

/** Gradient and moment buffers, laid out like the parameter buffer. */
export interface AdamWState {
  /** Gradient (read only). */
  grad: Tensor;
  /** First moment (updated). */
  m: Tensor;
  /** Second moment (updated). */
  v: Tensor;
}

function hyper(o: AdamWHyper, size: number) {
  const beta1 = o.beta1 ?? ADAMW_MOMENT_DEFAULTS.beta1;
  const beta2 = o.beta2 ?? ADAMW_MOMENT_DEFAULTS.beta2;
  if (!(o.step >= 1) || !Number.isInteger(o.step)) {
    throw new DeviceError(`adamw: step must be an integer >= 1 (got ${o.step})`);
  }
  return {
    ...resolve({ t: { size }, offset: o.offset, count: o.count }, "adamw"),
    lr: o.lr,
    wd: o.wd ?? 0,
    beta1,
    beta2,
    eps: o.eps ?? ADAMW_MOMENT_DEFAULTS.eps,
    // in f64 on the host: beta2^step underflows nothing and loses no digits here
    bc1: 1 - beta1 ** o.step,
    bc2: 1 - beta2 ** o.step,
  };
}

/**
 * Encodes one AdamW step over `param[offset, offset + count)` and the same range of the
 * gradient and moment buffers:
 *
 *     g = grad * gradScale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *     p -= lr * ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
 *
 * Weight-decay masks are per call: call it per tensor or per contiguous range with `wd: 0` or
 * `wd`.
 *
 * @throws when the range is outside the buffers or `step` is not an integer >= 1.
 * @example adamw(paramChunk, { grad, m, v }, { lr: 3e-4, step: 1, wd: 0.1, gradScale: scale });
 */
export function adamw(param: Tensor, state: AdamWState, opts: AdamWOptions): void {
  const h = hyper(opts, param.size);
  for (const t of [state.grad, state.m, state.v]) {
    if (t.size < h.offset + h.count) {
      throw new DeviceError(`adamw: state buffer of ${t.size} elements is shorter than the range`);
    }
  }
  if (param.device.kind === "cpu") return hostAdamw(param, state, opts.gradScale ?? null, h);
  const withScale = Boolean(opts.gradScale);
  const vec = [param, state.grad, state.m, state.v].every((t) => vec4Range(t, h.offset));
  launch1d(
    param.device,
    "adamw",
    `${withScale}|${vec}`,
    () => adamwSource(withScale, vec),
    [param, state.grad, state.m, state.v, ...(opts.gradScale ? [opts.gradScale] : [])]
      .map((t) => t.binding),
    vec ? Math.ceil(h.count / 4) : h.count,
    (p) =>
      p.u32(h.offset).u32(h.count).f32(h.lr).f32(h.wd)
        .f32(h.beta1).f32(h.beta2).f32(h.eps).f32(h.bc1)
        .f32(h.bc2).u32(0).u32(0).u32(0),
  );
}

/**
 * CPU twin of {@linkcode adamw}: updates `param`, `state.m` and `state.v` in place, computing
 * each element in f64 and storing it in the arrays' own precision (use Float32Array to mirror
 * the GPU, Float64Array for exact math).
 */
export function adamwCpu(
  param: Float32Array | Float64Array,
  state: {
    grad: ArrayLike<number>;
    m: Float32Array | Float64Array;
    v: Float32Array | Float64Array;
  },
  opts: AdamWHyper & { gradScale?: number },
): void {
  const h = hyper(opts, param.length);
  const s = opts.gradScale ?? 1;
  for (let j = h.offset; j < h.offset + h.count; j++) {
    const g = state.grad[j] * s;
    state.m[j] = h.beta1 * state.m[j] + (1 - h.beta1) * g;
    state.v[j] = h.beta2 * state.v[j] + (1 - h.beta2) * g * g;
    const mhat = state.m[j] / h.bc1, vhat = state.v[j] / h.bc2;
    const w = param[j];
    param[j] = w - h.lr * (mhat / (Math.sqrt(vhat) + h.eps) + h.wd * w);
  }
}
