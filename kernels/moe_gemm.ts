/**
 * Grouped expert GEMM for DeepSeekMoE: every routed expert's linear layer in ONE dispatch, with
 * work that follows the routed rows (N * K), not the number of experts.
 *
 * Legend: N tokens, K experts chosen per token, P = N * K routed rows, E routed experts,
 * Kin input features, Kout output features, S = `strideElems` (elements from one expert's weight
 * to the next), TM x TN the output tile of one workgroup, TK the reduction step.
 *
 * Inputs, produced by the router (see `kernels/moe_dispatch.ts` for the permutation):
 * - `x` f32 [P, Kin]: the routed rows grouped by expert (expert 0's rows first, then expert 1's ...)
 * - `offsets` i32 [E + 1]: exclusive prefix sum of per-expert row counts, `offsets[E] == P`;
 *   expert e owns rows `offsets[e] .. offsets[e+1]` (possibly none)
 * - the weights: W_e f32 [Kout, Kin] (row-major, nn.Linear layout) at element `e * S` of one
 *   buffer range starting at expert 0's weight. In the parameter arena the experts' tensors are
 *   interleaved (gate_proj, up_proj, down_proj of expert 0, then of expert 1 ...), each padded to
 *   256 bytes, so `S` is the padded size of one expert's three matrices and S >= Kout * Kin.
 *   All E experts must sit in one arena chunk (one binding).
 *
 * Forward: `y[r] = x[r] @ W_e^T` for each row r of expert e, y f32 [P, Kout].
 * Backward: `dx[r] = dy[r] @ W_e` (same grouped scheme) and `dW_e = dy_e^T @ x_e`, where the
 * rows of `dy_e`/`x_e` are expert e's rows, summed in row order.
 *
 * Scheduling: a tiny kernel turns `offsets` into a tile table on the GPU (tile -> expert and row
 * range, at most TM rows each, never spanning two experts; no atomics, so deterministic). The
 * row-grouped GEMMs launch the worst case, ceil(P / TM) + E row tiles times the column tiles,
 * and workgroups past the table's length exit at once: the grid and the work follow P, and
 * going from 8 to 32 experts adds at most E partially filled tiles. The weight-gradient GEMM runs
 * one workgroup per (Kout tile, Kin tile, expert), each looping over its expert's rows in order,
 * so every gradient element has exactly one writer and a fixed summation order.
 *
 * The GEMM tiles live in workgroup memory; each thread holds an RM x RN block of accumulators.
 * f32 only. Left out: f16/fp8 inputs, a bias, grids past 65535 experts.
 *
 * References: DeepSeek-V3 technical report, section 2.1.2 (DeepSeekMoE); grouped GEMM as in
 * MegaBlocks (Gale et al. 2022) without its block-sparse format.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import { type Binding, type Gpu, GpuError } from "./gpu.ts";
import { Tensor } from "./tensor.ts";

/** Host arrays the CPU twins accept: f32 to mirror the GPU, f64 for finite differences. */
type Floats = Float32Array | Float64Array;

/** Sizes of a grouped linear layer. */
export interface GroupedShape {
  /** E, routed experts. */
  E: number;
  /** Kin, input features (columns of `x`, columns of each W_e). */
  Kin: number;
  /** Kout, output features (rows of each W_e). */
  Kout: number;
  /** S, elements from W_e to W_{e+1}; at least Kout * Kin. */
  strideElems: number;
}

/**
 * Output tile rows and columns, reduction step, and the per-thread register block. 64 x 64 tiles
 * with 8 x 8 accumulators per thread (64 threads, 8 KiB of workgroup memory) is the classic SGEMM
 * shape for GPUs; on lavapipe it ran 2x faster than 32 x 32 / 4 x 4 (bench/moe.ts). Larger row
 * tiles would waste more of each expert's last, partial tile, which is what keeps the cost of
 * 32 experts close to that of 8.
 */
const TM = 64, TN = 64, TK = 16, RM = 8, RN = 8;
/** Threads along columns and rows of a tile; a workgroup has TX * TY threads. */
const TX = TN / RN, TY = TM / RM, WG = TX * TY;
// The tile loads give every thread whole vec4 slots; the register block is read as vec4s.
if ((TM * TK) % (4 * WG) || (TN * TK) % (4 * WG) || RM % 4 || RN % 4) {
  throw new Error("moe_gemm: tile sizes must give each thread whole vec4 loads");
}

/** Rows of one row tile of the grouped GEMM (the tile table is built for this size). */
export const GROUPED_ROW_TILE = TM;

/**
 * Number of row tiles a grid must cover for `rows` routed rows over `E` experts: each expert
 * adds at most one partial tile, so sum_e ceil(count_e / TM) <= ceil(rows / TM) + E.
 * @example maxRowTiles(64, 5) // 7
 */
export function maxRowTiles(rows: number, E: number): number {
  return Math.ceil(rows / TM) + E;
}

/** Elements a weight range must cover: expert E-1 starts at (E-1) * S and holds Kout * Kin. */
export function weightSpan(shape: GroupedShape): number {
  return (shape.E - 1) * shape.strideElems + shape.Kout * shape.Kin;
}

// ---------------------------------------------------------------------------------------------
// Tile table

const TILE_TABLE_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> offsets: array<i32>;
@group(0) @binding(1) var<storage, read_write> tiles: array<vec4<u32>>;
struct P { E: u32, tm: u32, _a: u32, _b: u32 }
@group(0) @binding(2) var<uniform> p: P;
fn tiles_of(e: u32) -> u32 {
  let n = u32(offsets[e + 1u] - offsets[e]);
  return (n + p.tm - 1u) / p.tm;
}
// One workgroup. Thread e finds its first tile by summing the earlier experts' tile counts
// (O(E^2 / 256) reads, nothing next to a GEMM) and writes its own tiles; no thread waits on
// another, and each entry has one writer.
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
  for (var e = li; e < p.E; e += 256u) {
    var t = 0u;
    for (var f = 0u; f < e; f++) { t += tiles_of(f); }
    let hi = u32(offsets[e + 1u]);
    for (var r = u32(offsets[e]); r < hi; r += p.tm) {
      tiles[1u + t] = vec4<u32>(e, r, min(r + p.tm, hi), 0u);
      t++;
    }
  }
  if (li == 0u) {
    var total = 0u;
    for (var f = 0u; f < p.E; f++) { total += tiles_of(f); }
    tiles[0] = vec4<u32>(total, 0u, 0u, 0u);
  }
}`;

/**
 * Encodes the tile table of the row-grouped GEMMs: u32 [1 + maxRowTiles(P, E), 4] where entry 0
 * is (number of tiles, 0, 0, 0) and entry 1 + t is (expert, first row, end row, 0) of tile t.
 * Build it once per routing and pass it to every grouped GEMM of the layer.
 *
 * @param offsets i32 [E + 1], the router's exclusive prefix sum of per-expert counts.
 * @param rows P, the number of routed rows (`offsets[E]`).
 * @example const tiles = groupedTiles(offsets, 4096); // shared by gate, up and down
 */
export function groupedTiles(offsets: Tensor, rows: number): Tensor {
  const E = offsets.size - 1;
  if (offsets.dtype !== "i32" || E < 1) {
    throw new GpuError(
      `groupedTiles: offsets must be i32 [E + 1], got ${offsets.dtype} ` +
        `[${offsets.shape}]`,
    );
  }
  const tiles = Tensor.empty(offsets.gpu, [1 + maxRowTiles(rows, E), 4], "u32");
  launch(
    offsets.gpu,
    "moe_tile_table",
    "",
    () => TILE_TABLE_SRC,
    [offsets.binding, tiles.binding],
    [1, 1, 1],
    (p) => p.u32(E).u32(TM).u32(0).u32(0),
  );
  return tiles;
}

/** CPU twin of {@linkcode groupedTiles}: [count, then (expert, lo, hi) per tile]. */
export function groupedTilesCpu(offsets: Int32Array): number[][] {
  const out: number[][] = [];
  for (let e = 0; e + 1 < offsets.length; e++) {
    for (let r = offsets[e]; r < offsets[e + 1]; r += TM) {
      out.push([e, r, Math.min(r + TM, offsets[e + 1])]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The GEMM kernels

/**
 * Which product a kernel computes, as C[m, n] = sum_k A(m, k) B(k, n):
 * - fwd: m = routed row, n = out feature, k = in feature; A = x [P, Kin], B(k, n) = W_e[n, k]
 * - dx:  m = routed row, n = in feature, k = out feature; A = dy [P, Kout], B(k, n) = W_e[k, n]
 * - dw:  m = out feature, n = in feature, k = expert e's rows; A(m, k) = dy[k, m], B = x
 */
type Mode = "fwd" | "dx" | "dw";

/** WGSL of one grouped GEMM variant. */
function gemmSource(mode: Mode, accumulate: boolean): string {
  const rowsMode = mode !== "dw";
  // Tile loads: each thread fills whole vec4 slots of the k-major tiles As [TK][TM / 4] and
  // Bs [TK][TN / 4]; consecutive threads walk the operand's contiguous dim, so a group of
  // threads reads one contiguous run of global memory per component. Out-of-range elements
  // (ragged edges, a partial tile, the next expert's rows) become zeros through select(): the
  // read itself still happens, which WebGPU's robust buffer access keeps inside the binding,
  // and it is branch-free (a branch per component cost ~10% on lavapipe).
  const tileLoads = (
    tile: "As" | "Bs",
    width: number, // TM or TN
    contiguousK: boolean, // the operand is contiguous along k (else along m/n)
    valid: (c: string) => string, // is row/col `c` of the tile inside the operand?
    index: (c: string) => string, // global index of (tile row/col c, kk)
  ) => {
    const out: string[] = [];
    const slots = width / 4;
    for (let s = 0; s < (slots * TK) / WG; s++) {
      const v = `li + ${s * WG}u`;
      const [kk, c4] = contiguousK
        ? [`(${v}) % ${TK}u`, `(${v}) / ${TK}u`]
        : [`(${v}) / ${slots}u`, `(${v}) % ${slots}u`];
      const comps = [0, 1, 2, 3].map((c) => {
        const cc = `c4 * 4u + ${c}u`;
        return `select(0.0, SRC[${index(cc)}], ${valid(cc)} && inK)`;
      });
      out.push(`{
      let kk = ${kk};
      let c4 = ${c4};
      let inK = k0 + kk < kEnd;
      ${tile}[kk * ${slots}u + c4] = vec4<f32>(
        ${comps.join(",\n        ").replaceAll("SRC", tile === "As" ? "A" : "B")});
    }`);
    }
    return out;
  };
  // A: dw reads dy[k, m] (contiguous along m); fwd/dx read the routed rows (contiguous along k).
  const aLoads = mode === "dw"
    ? tileLoads("As", TM, false, (c) => `${c} < mCount`, (c) => `(k0 + kk) * p.Kout + m0 + ${c}`)
    : tileLoads("As", TM, true, (c) => `${c} < mCount`, (c) => `(m0 + ${c}) * KRED + k0 + kk`);
  // B: fwd reads W_e[n, k] (contiguous along k); dx reads W_e[k, n], dw reads x[k, n].
  const bLoads = mode === "fwd"
    ? tileLoads(
      "Bs",
      TN,
      true,
      (c) => `n0 + ${c} < NCOLS`,
      (c) => `bBase + (n0 + ${c}) * p.Kin + k0 + kk`,
    )
    : tileLoads(
      "Bs",
      TN,
      false,
      (c) => `n0 + ${c} < NCOLS`,
      (c) => `bBase + (k0 + kk) * p.Kin + n0 + ${c}`,
    );
  const decl: string[] = [], fma: string[] = [], store: string[] = [];
  for (let i = 0; i < RM; i++) {
    for (let j = 0; j < RN; j++) decl.push(`var c${i}_${j} = 0.0;`);
  }
  for (let i4 = 0; i4 < RM / 4; i4++) {
    fma.push(`let a4_${i4} = As[kk * ${TM / 4}u + ty * ${RM / 4}u + ${i4}u];`);
  }
  for (let i = 0; i < RM; i++) fma.push(`let a${i} = a4_${i >> 2}[${i & 3}];`);
  for (let j4 = 0; j4 < RN / 4; j4++) {
    fma.push(`let b4_${j4} = Bs[kk * ${TN / 4}u + tx + ${j4 * TX}u];`);
  }
  for (let j = 0; j < RN; j++) fma.push(`let b${j} = b4_${j >> 2}[${j & 3}];`);
  for (let i = 0; i < RM; i++) {
    for (let j = 0; j < RN; j++) fma.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
  }
  for (let i = 0; i < RM; i++) {
    for (let j = 0; j < RN; j++) {
      const col = `n0 + (tx + ${(j >> 2) * TX}u) * 4u + ${j & 3}u`;
      const idx = `cBase + (m0 + ty * ${RM}u + ${i}u) * NCOLS + ${col}`;
      const v = accumulate ? `C[${idx}] + c${i}_${j}` : `c${i}_${j}`;
      store.push(
        `if (ty * ${RM}u + ${i}u < mCount && ${col} < NCOLS) { C[${idx}] = ${v}; }`,
      );
    }
  }
  // Prologues: where this workgroup's tile sits. Both read only read-only storage at uniform
  // indices, so the barrier loop below stays in uniform control flow.
  const prologue = rowsMode
    ? /* wgsl */ `
  let t = wid.z * nwg.y + wid.y;
  if (t >= sched[0].x) { return; } // idle tile of the worst-case grid
  let tile = sched[1u + t];
  let e = tile.x;
  let m0 = tile.y;
  let mCount = tile.z - tile.y;
  let n0 = wid.x * ${TN}u;
  let bBase = e * p.stride;
  let cBase = 0u;
  let kEnd = KRED;`
    : /* wgsl */ `
  let e = wid.z;
  let m0 = wid.y * ${TM}u;
  let mCount = min(${TM}u, p.Kout - m0);
  let n0 = wid.x * ${TN}u;
  let bBase = 0u;
  let cBase = e * p.stride;
  let kBegin = u32(sched[e]);
  let kEnd = u32(sched[e + 1u]);`;
  // The reduction length of a row tile (the dw kernel's comes from the offsets instead) and the
  // output's row length.
  const dims = {
    fwd: "let KRED = p.Kin;\n  let NCOLS = p.Kout;",
    dx: "let KRED = p.Kout;\n  let NCOLS = p.Kin;",
    dw: "let NCOLS = p.Kin;",
  }[mode];
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read> sched: array<${rowsMode ? "vec4<u32>" : "i32"}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
struct P { Kin: u32, Kout: u32, stride: u32, _a: u32 }
@group(0) @binding(4) var<uniform> p: P;
var<workgroup> As: array<vec4<f32>, ${(TK * TM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(TK * TN) / 4}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  ${dims}
  ${prologue}
  let tx = li % ${TX}u;
  let ty = li / ${TX}u;
  ${decl.join("\n  ")}
  for (var k0 = ${rowsMode ? "0u" : "kBegin"}; k0 < kEnd; k0 += ${TK}u) {
    ${aLoads.join("\n    ")}
    ${bLoads.join("\n    ")}
    workgroupBarrier();
    // threads whose rows all lie past a partial tile's end skip the math
    if (ty * ${RM}u < mCount) {
      for (var kk = 0u; kk < ${TK}u; kk++) {
        ${fma.join("\n        ")}
      }
    }
    workgroupBarrier();
  }
  ${store.join("\n  ")}
}`;
}

/** Options of the grouped GEMM launchers. */
export interface GroupedGemmOptions {
  /** The tile table from {@linkcode groupedTiles} (row-grouped kernels only). */
  tiles?: Tensor;
  /** offsets i32 [E + 1] (the weight-gradient kernel only). */
  offsets?: Tensor;
  /** Add into the output instead of overwriting it. */
  accumulate?: boolean;
}

/** The binding of an expert weight range that starts at `w` and covers all E experts. */
function spanBinding(w: Tensor, shape: GroupedShape, what: string): Binding {
  if (shape.strideElems < shape.Kout * shape.Kin) {
    throw new GpuError(
      `${what}: strideElems ${shape.strideElems} is smaller than one expert's ` +
        `Kout * Kin = ${shape.Kout * shape.Kin}; the experts' weights would overlap`,
    );
  }
  const size = weightSpan(shape) * 4;
  if (w.dtype !== "f32" || w.offset + size > w.buffer.size) {
    throw new GpuError(
      `${what}: the ${shape.E} experts' weights (${size} bytes from byte ${w.offset}) do not fit ` +
        `in the ${w.dtype} buffer of ${w.buffer.size} bytes; pass expert 0's f32 weight of an ` +
        `arena whose experts all lie in one chunk`,
    );
  }
  if (size > w.gpu.maxBinding) {
    throw new GpuError(
      `${what}: the expert weights span ${size} bytes, more than one binding ` +
        `allows (${w.gpu.maxBinding}); use fewer or smaller experts per layer`,
    );
  }
  return { buffer: w.buffer, offset: w.offset, size };
}

/** Grid of a row-grouped launch: column tiles x row tiles, row tiles folded into z past 65535. */
function rowGrid(rows: number, E: number, cols: number): [number, number, number] {
  const tiles = maxRowTiles(rows, E);
  const z = Math.ceil(tiles / 65535);
  return [Math.ceil(cols / TN), Math.ceil(tiles / z), z];
}

function checkRows(what: string, t: Tensor, rows: number, cols: number): void {
  if (t.dtype !== "f32" || t.size !== rows * cols) {
    throw new GpuError(`${what}: expected f32 [${rows}, ${cols}], got ${t.dtype} [${t.shape}]`);
  }
}

function rowKernel(
  mode: "fwd" | "dx",
  out: Tensor,
  a: Tensor,
  w: Tensor,
  shape: GroupedShape,
  opts: GroupedGemmOptions,
): void {
  const rows = a.shape[0];
  const [aCols, outCols] = mode === "fwd" ? [shape.Kin, shape.Kout] : [shape.Kout, shape.Kin];
  checkRows(`grouped ${mode} input`, a, rows, aCols);
  checkRows(`grouped ${mode} output`, out, rows, outCols);
  if (!opts.tiles) throw new GpuError(`grouped ${mode}: pass the tile table (groupedTiles)`);
  if (rows === 0) return;
  const acc = Boolean(opts.accumulate);
  launch(
    out.gpu,
    `moe_gemm_${mode}`,
    `${acc}`,
    () => gemmSource(mode, acc),
    [a.binding, spanBinding(w, shape, `grouped ${mode}`), opts.tiles.binding, out.binding],
    rowGrid(rows, shape.E, outCols),
    (p) => p.u32(shape.Kin).u32(shape.Kout).u32(shape.strideElems).u32(0),
  );
}

/**
 * Encodes `y[r] = x[r] @ W_e^T` for every routed row r of expert e (one dispatch for all E).
 *
 * @param y f32 [P, Kout], overwritten (or added into with `accumulate`).
 * @param x f32 [P, Kin], rows grouped by expert.
 * @param w expert 0's weight [Kout, Kin]; expert e's starts `e * strideElems` elements later.
 * @param opts `tiles` from {@linkcode groupedTiles} is required.
 * @throws {GpuError} on shapes that do not match, or a weight range outside `w`'s buffer.
 * @example groupedGemmForward(y, x, arena.param("...experts.0.up_proj.weight"), shape, { tiles });
 */
export function groupedGemmForward(
  y: Tensor,
  x: Tensor,
  w: Tensor,
  shape: GroupedShape,
  opts: GroupedGemmOptions,
): void {
  rowKernel("fwd", y, x, w, shape, opts);
}

/**
 * Encodes `dx[r] = dy[r] @ W_e` for every routed row r of expert e (one dispatch for all E).
 *
 * @param dx f32 [P, Kin], overwritten or (with `accumulate`) added into.
 * @param dy f32 [P, Kout].
 * @param w expert 0's weight, as for {@linkcode groupedGemmForward}.
 * @param opts `tiles` is required.
 */
export function groupedGemmBackwardInput(
  dx: Tensor,
  dy: Tensor,
  w: Tensor,
  shape: GroupedShape,
  opts: GroupedGemmOptions,
): void {
  rowKernel("dx", dx, dy, w, shape, opts);
}

/**
 * Encodes `dW_e = dy_e^T @ x_e` for every expert, each summed over its rows in row order.
 * With `accumulate` an expert that received no rows keeps its gradient untouched; without it,
 * its gradient is set to zero. Padding between experts is never written.
 *
 * @param dw expert 0's gradient [Kout, Kin] inside a range laid out like the weights.
 * @param dy f32 [P, Kout].
 * @param x f32 [P, Kin].
 * @param opts `offsets` is required.
 */
export function groupedGemmBackwardWeight(
  dw: Tensor,
  dy: Tensor,
  x: Tensor,
  shape: GroupedShape,
  opts: GroupedGemmOptions,
): void {
  const rows = x.shape[0];
  checkRows("grouped dw input", x, rows, shape.Kin);
  checkRows("grouped dw output gradient", dy, rows, shape.Kout);
  if (!opts.offsets) throw new GpuError("grouped dw: pass the offsets");
  const acc = Boolean(opts.accumulate);
  // Cannot bind an empty range; with no rows every expert is empty, so there is nothing to add.
  if (rows === 0 && acc) return;
  launch(
    dw.gpu,
    "moe_gemm_dw",
    `${acc}`,
    () => gemmSource("dw", acc),
    [dy.binding, x.binding, opts.offsets.binding, spanBinding(dw, shape, "grouped dw")],
    [Math.ceil(shape.Kin / TN), Math.ceil(shape.Kout / TM), shape.E],
    (p) => p.u32(shape.Kin).u32(shape.Kout).u32(shape.strideElems).u32(0),
  );
}

// ---------------------------------------------------------------------------------------------
// Autograd op

/** Options of {@linkcode groupedLinear}. */
export interface GroupedLinearOptions {
  /** E, routed experts. */
  E: number;
  /** S, elements from expert e's weight to expert e+1's (the arena's padded interleave). */
  strideElems: number;
  /** offsets i32 [E + 1], the router's exclusive prefix sum of per-expert row counts. */
  offsets: Tensor;
  /** Kout; defaults to the weight's first dim and must equal it when given. */
  outFeatures?: number;
  /** A tile table from {@linkcode groupedTiles} to share among the layer's GEMMs. */
  tiles?: Tensor;
}

/**
 * The routed experts' linear layer: `y[r] = xs[r] @ W_e^T` for the rows r of each expert e,
 * with autograd.
 *
 * The weights: pass expert 0's weight tensor [Kout, Kin]; expert e's lies `e * strideElems`
 * elements after it in the same buffer. Its gradient must be laid out the same way: with a
 * {@linkcode ParamArena}, `arena.param(".../experts.0.up_proj.weight")` is right (its `.grad` is
 * the gradient arena's slice at the same offset, and backward adds into it). A weight without a
 * `.grad` gets a fresh zeroed range covering all experts, reachable as `w.grad` (a view of
 * expert 0's gradient with the same stride), which is what tests use.
 *
 * @param xs f32 [P, Kin], rows grouped by expert (see `gatherRows`).
 * @returns f32 [P, Kout].
 * @throws {GpuError} on shape mismatches or a weight range that leaves its buffer.
 * @example
 * const w1 = arena.param("model.layers.1.mlp.experts.0.gate_proj.weight");
 * const h = groupedLinear(xs, w1, { E, strideElems, offsets });
 */
export function groupedLinear(xs: Tensor, w: Tensor, opts: GroupedLinearOptions): Tensor {
  if (w.shape.length !== 2) {
    throw new GpuError(`groupedLinear: weight must be expert 0's [Kout, Kin], got [${w.shape}]`);
  }
  const [Kout, Kin] = w.shape;
  if (opts.outFeatures !== undefined && opts.outFeatures !== Kout) {
    throw new GpuError(
      `groupedLinear: outFeatures ${opts.outFeatures} but the weight is ` +
        `[${w.shape}]`,
    );
  }
  if (opts.offsets.size !== opts.E + 1) {
    throw new GpuError(
      `groupedLinear: offsets must be [E + 1] = [${opts.E + 1}], got ` +
        `[${opts.offsets.shape}]`,
    );
  }
  const shape: GroupedShape = { E: opts.E, Kin, Kout, strideElems: opts.strideElems };
  const rows = xs.shape[0];
  const tiles = opts.tiles ?? groupedTiles(opts.offsets, rows);
  const y = Tensor.empty(xs.gpu, [rows, Kout]);
  groupedGemmForward(y, xs, w, shape, { tiles });
  if (needsGrad(xs, w)) {
    record("groupedLinear", [y], () => {
      const dy = y.grad;
      if (!dy) return;
      if (xs.requiresGrad) {
        const { grad, accumulate } = gradFor(xs);
        groupedGemmBackwardInput(grad, dy, w, shape, { tiles, accumulate });
      }
      if (w.requiresGrad) {
        const accumulate = Boolean(w.grad);
        w.grad ??= zeroedSpan(w.gpu, w.shape, weightSpan(shape));
        groupedGemmBackwardWeight(w.grad, dy, xs, shape, { offsets: opts.offsets, accumulate });
      }
    });
  }
  return y;
}

/** A zeroed buffer range of `span` elements, returned as a view of its first `shape`. */
function zeroedSpan(gpu: Gpu, shape: readonly number[], span: number): Tensor {
  return Tensor.zeros(gpu, [span]).view(shape, 0);
}

// ---------------------------------------------------------------------------------------------
// CPU twins

/**
 * CPU twin of {@linkcode groupedGemmForward}: y [P, Kout] from x [P, Kin], the weight range `w`
 * (length >= weightSpan(shape)) and `offsets` [E + 1].
 * @example groupedLinearCpu(x, w, offsets, { E: 2, Kin: 3, Kout: 4, strideElems: 16 })
 */
export function groupedLinearCpu<A extends Floats>(
  x: A,
  w: A,
  offsets: Int32Array,
  shape: GroupedShape,
): A {
  const { E, Kin, Kout, strideElems: S } = shape;
  const rows = x.length / Kin;
  const y = new (x.constructor as new (n: number) => A)(rows * Kout);
  for (let e = 0; e < E; e++) {
    for (let r = offsets[e]; r < offsets[e + 1]; r++) {
      for (let o = 0; o < Kout; o++) {
        let s = 0;
        for (let i = 0; i < Kin; i++) s += x[r * Kin + i] * w[e * S + o * Kin + i];
        y[r * Kout + o] = s;
      }
    }
  }
  return y;
}

/**
 * CPU twin of the grouped backward: dx [P, Kin] and dw (same layout as the weight range, zero
 * where no expert writes) from dy [P, Kout].
 */
export function groupedLinearBackwardCpu<A extends Floats>(
  dy: A,
  x: A,
  w: A,
  offsets: Int32Array,
  shape: GroupedShape,
): { dx: A; dw: A } {
  const { E, Kin, Kout, strideElems: S } = shape;
  const rows = x.length / Kin;
  const make = x.constructor as new (n: number) => A;
  const dx = new make(rows * Kin);
  const dw = new make(w.length);
  for (let e = 0; e < E; e++) {
    for (let r = offsets[e]; r < offsets[e + 1]; r++) {
      for (let i = 0; i < Kin; i++) {
        let s = 0;
        for (let o = 0; o < Kout; o++) s += dy[r * Kout + o] * w[e * S + o * Kin + i];
        dx[r * Kin + i] = s;
      }
      for (let o = 0; o < Kout; o++) {
        for (let i = 0; i < Kin; i++) dw[e * S + o * Kin + i] += dy[r * Kout + o] * x[r * Kin + i];
      }
    }
  }
  return { dx, dw };
}
