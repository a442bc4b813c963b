/**
 * Grouped expert GEMM for DeepSeekMoE: every routed expert's linear layer in ONE dispatch, with
 * work that follows the routed rows (N * K), not the number of experts.
 *
 * Legend: N tokens, K experts chosen per token, P = N * K routed rows, E routed experts,
 * Kin input features, Kout output features, S = `strideElems` (elements from one expert's weight
 * to the next), TM x TN the register tile of one thread, L = 8 threads per workgroup.
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
 * The kernels are the register tile of `kernels/matmul.ts`, emitted by the same
 * `kernels/_gemm_tile.ts` (see matmul.ts's module doc for the lavapipe measurements):
 * 8-thread workgroups, a TM x TN block of accumulators per thread, operands read straight from
 * storage (the A rows at the same address in every lane), vec4 along each operand's contiguous
 * dim when the shape is aligned, no workgroup memory and no barriers: on lavapipe every
 * workgroup-memory and storage load is emulated lane by lane, so staging tiles there costs more
 * than it saves (bench/README.md, "moe.ts"). On discrete GPUs the register
 * blocking still gives 12 x 16 FMAs per 7 vec4 loads and the caches catch the reuse of a panel.
 * f32 only. Left out: f16/fp8 inputs, a bias, grids past 65535 experts.
 *
 * References: DeepSeek-V3 technical report, section 2.1.2 (DeepSeekMoE); grouped GEMM as in
 * MegaBlocks (Gale et al. 2022) without its block-sparse format.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch } from "./_launch.ts";
import type { Device } from "./backend.ts";
import { type Binding, DeviceError } from "./device.ts";
import { hostGroupedRows, hostGroupedTiles, hostGroupedWeight } from "./host/matmul.ts";
import { Tensor } from "./tensor.ts";
import { gemmTile, LANES as L, lines, storageArray } from "./_gemm_tile.ts";
import type { Floats } from "./_rows.ts";

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
 * The register tile (the recipe of `kernels/matmul.ts`): a workgroup is L = 8 threads, one SIMD
 * group of lavapipe, and each thread keeps TM x TN accumulators, reading its operands straight
 * from storage. All lanes of a workgroup share the same TM rows, so the A reads are the same
 * address in every lane; each lane reads its own TN columns of B. TM is also the row tile of the
 * tile table: 12 rows wastes at most 11 rows per expert on its last, partial tile, which keeps
 * 32 experts close to 8 at the same top-k. Aligned shapes (Kin, Kout and S multiples of 4, as
 * in every model preset) read and store vec4s with TN = 16; ragged shapes fall back to scalar
 * loads with TN = 4, which compile fast and are only hit by tests.
 */
const TM = 12;
/** Columns per thread of the vec4 and the scalar variants. */
const TN_VEC = 16, TN_SCALAR = 4;
/** Output rows (Kout) per thread of the weight-gradient kernel (8 and 16 measured slower). */
const TM_DW = 12;

/** Rows of one row tile of the grouped GEMM (the tile table is built for this size). */
export const GROUPED_ROW_TILE: number = TM;

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
@group(0) @binding(2) var<storage, read> p: P;
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
    throw new DeviceError(
      `groupedTiles: offsets must be i32 [E + 1], got ${offsets.dtype} ` +
        `[${offsets.shape}]`,
    );
  }
  const tiles = Tensor.empty(offsets.device, [1 + maxRowTiles(rows, E), 4], "u32");
  if (offsets.device.kind === "cpu") {
    hostGroupedTiles(tiles, offsets, TM);
    return tiles;
  }
  launch(
    offsets.device,
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

/** One compiled variant of the grouped GEMM. */
interface GemmSpec {
  mode: Mode;
  /** Kin, Kout and S are multiples of 4: vec4 reads and stores, TN = 16. */
  vec: boolean;
  /** Add into C. */
  accumulate: boolean;
}

/**
 * WGSL of one grouped GEMM variant. Thread `lane` of a workgroup owns the tile's rows m0 + i
 * (i < TM) and the columns col(j) (j < TN):
 *   col(j) = n0 + lane * 4 + (j % 4) + 32 * (j / 4)   (vec),   n0 + lane + 8 * j   (scalar),
 * with n0 = column tile * L * TN. Each accumulator is summed in k order, four k per loop trip
 * (then one at a time for a tail), so the same inputs give the same bits. Rows and columns past
 * the tile's end read stray values (in bounds, or robust-access values) that are never stored.
 */
function gemmSource(s: GemmSpec): string {
  const { mode, vec } = s;
  const rowsMode = mode !== "dw";
  const tm = rowsMode ? TM : TM_DW;
  const TN = vec ? TN_VEC : TN_SCALAR;
  const t = gemmTile({
    TM: tm,
    TN,
    quad: vec,
    // Row-grouped: A = the routed rows [P, KRED], contiguous along k; every lane reads the same
    // addresses. Rows past the tile's end are clamped to its last row (in bounds, never stored).
    // dw: A = dy [P, Kout] read as dy[k, m], contiguous along m.
    a: rowsMode
      ? { along: "k", vec, rowBase: (i) => `min(m0 + ${i}u, mLast) * KRED` }
      : { along: "m", vec, row: (k) => `${k} * p.Kout + m0` },
    // fwd: B(k, n) = W_e[n, k], contiguous along k; columns past Kout are clamped to the last
    // one. dx: B(k, n) = W_e[k, n]; dw: B(k, n) = x[k, n]; both rows of Kin, contiguous along n.
    b: mode === "fwd"
      ? { along: "k", vec, colBase: (c) => `bBase + min(${c}, NCOLS - 1u) * p.Kin` }
      : { along: "n", vec, row: (k) => `bBase + ${k} * p.Kin` },
    colTile: "wid.y",
    kBegin: "kBegin",
    kEnd: "kEnd",
    // Row-grouped kernels with vec have KRED % 4 == 0 and need no tail loop.
    tail: !(rowsMode && vec),
    // With vec a run of 4 columns is all inside or all outside the output (NCOLS % 4 == 0).
    c: {
      base: "cBase",
      cols: "NCOLS",
      rowEnd: "mEnd",
      value: (acc, old) => s.accumulate ? `${old} + ${acc}` : acc,
    },
  });
  const prologue = rowsMode
    ? /* wgsl */ `
  let t = wid.z * nwg.x + wid.x;
  if (t >= sched[0].x) { return; } // idle tile of the worst-case grid
  let tile = sched[1u + t];
  let m0 = tile.y;
  let mEnd = tile.z;
  let mLast = tile.z - 1u;
  let bBase = tile.x * p.stride;
  let cBase = 0u;
  let kBegin = 0u;
  let kEnd = KRED;`
    : /* wgsl */ `
  let e = wid.z;
  let m0 = wid.x * ${tm}u;
  let mEnd = p.Kout;
  let bBase = 0u;
  let cBase = e * p.stride;
  let kBegin = u32(sched[e]);
  let kEnd = u32(sched[e + 1u]);`;
  const dims = {
    fwd: "let KRED = p.Kin;\n  let NCOLS = p.Kout;",
    dx: "let KRED = p.Kout;\n  let NCOLS = p.Kin;",
    dw: "let NCOLS = p.Kin;",
  }[mode];
  const arr = storageArray(vec);
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: ${arr};
@group(0) @binding(1) var<storage, read> B: ${arr};
@group(0) @binding(2) var<storage, read> sched: array<${rowsMode ? "vec4<u32>" : "i32"}>;
@group(0) @binding(3) var<storage, read_write> C: ${arr};
struct P { Kin: u32, Kout: u32, stride: u32, _a: u32 }
@group(0) @binding(4) var<storage, read> p: P;
@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  ${dims}
  ${prologue}
  ${t.n0}
  ${lines(t.bases, "  ")}
  ${lines(t.decl, "  ")}
  ${lines(t.loop, "  ")}
  ${lines(t.stores, "  ")}
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
    throw new DeviceError(
      `${what}: strideElems ${shape.strideElems} is smaller than one expert's ` +
        `Kout * Kin = ${shape.Kout * shape.Kin}; the experts' weights would overlap`,
    );
  }
  const size = weightSpan(shape) * 4;
  if (w.dtype !== "f32" || w.offset + size > w.buffer.size) {
    throw new DeviceError(
      `${what}: the ${shape.E} experts' weights (${size} bytes from byte ${w.offset}) do not fit ` +
        `in the ${w.dtype} buffer of ${w.buffer.size} bytes; pass expert 0's f32 weight of an ` +
        `arena whose experts all lie in one chunk`,
    );
  }
  if (size > w.device.maxBinding) {
    throw new DeviceError(
      `${what}: the expert weights span ${size} bytes, more than one binding ` +
        `allows (${w.device.maxBinding}); use fewer or smaller experts per layer`,
    );
  }
  return { buffer: w.buffer, offset: w.offset, size };
}

/** Whether a shape takes the vec4 variant: every row start and expert offset a multiple of 4. */
function isVec(shape: GroupedShape): boolean {
  return shape.Kin % 4 === 0 && shape.Kout % 4 === 0 && shape.strideElems % 4 === 0;
}

/** Columns of one workgroup's output tile. */
function colsPerTile(vec: boolean): number {
  return L * (vec ? TN_VEC : TN_SCALAR);
}

/**
 * Grid of a row-grouped launch: row tiles along x (folded into z past 65535), which the driver
 * runs first, so neighbouring workgroups share one expert's weight panel; column tiles along y.
 */
function rowGrid(rows: number, E: number, cols: number, vec: boolean): [number, number, number] {
  const tiles = maxRowTiles(rows, E);
  const z = Math.ceil(tiles / 65535);
  return [Math.ceil(tiles / z), Math.ceil(cols / colsPerTile(vec)), z];
}

function checkRows(what: string, t: Tensor, rows: number, cols: number): void {
  if (t.dtype !== "f32" || t.size !== rows * cols) {
    throw new DeviceError(`${what}: expected f32 [${rows}, ${cols}], got ${t.dtype} [${t.shape}]`);
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
  if (!opts.tiles) throw new DeviceError(`grouped ${mode}: pass the tile table (groupedTiles)`);
  if (rows === 0) return;
  const accumulate = Boolean(opts.accumulate), vec = isVec(shape);
  if (out.device.kind === "cpu") {
    spanBinding(w, shape, `grouped ${mode}`);
    hostGroupedRows(mode, out, a, w, shape, opts.tiles, accumulate);
    return;
  }
  launch(
    out.device,
    `moe_gemm_${mode}`,
    `${accumulate}|${vec}`,
    () => gemmSource({ mode, vec, accumulate }),
    [a.binding, spanBinding(w, shape, `grouped ${mode}`), opts.tiles.binding, out.binding],
    rowGrid(rows, shape.E, outCols, vec),
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
 * @throws {DeviceError} on shapes that do not match, or a weight range outside `w`'s buffer.
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
  if (!opts.offsets) throw new DeviceError("grouped dw: pass the offsets");
  const accumulate = Boolean(opts.accumulate), vec = isVec(shape);
  // Cannot bind an empty range; with no rows every expert is empty, so there is nothing to add.
  if (rows === 0 && accumulate) return;
  if (dw.device.kind === "cpu") {
    spanBinding(dw, shape, "grouped dw");
    hostGroupedWeight(dw, dy, x, shape, opts.offsets, accumulate);
    return;
  }
  launch(
    dw.device,
    "moe_gemm_dw",
    `${accumulate}|${vec}`,
    () => gemmSource({ mode: "dw", vec, accumulate }),
    [dy.binding, x.binding, opts.offsets.binding, spanBinding(dw, shape, "grouped dw")],
    // Kout tiles along x: neighbouring workgroups share the expert's panel of x.
    [Math.ceil(shape.Kout / TM_DW), Math.ceil(shape.Kin / colsPerTile(vec)), shape.E],
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
 * @throws {DeviceError} on shape mismatches or a weight range that leaves its buffer.
 * @example
 * const w1 = arena.param("model.layers.1.mlp.experts.0.gate_proj.weight");
 * const h = groupedLinear(xs, w1, { E, strideElems, offsets });
 */
export function groupedLinear(xs: Tensor, w: Tensor, opts: GroupedLinearOptions): Tensor {
  if (w.shape.length !== 2) {
    throw new DeviceError(`groupedLinear: weight must be expert 0's [Kout, Kin], got [${w.shape}]`);
  }
  const [Kout, Kin] = w.shape;
  if (opts.outFeatures !== undefined && opts.outFeatures !== Kout) {
    throw new DeviceError(
      `groupedLinear: outFeatures ${opts.outFeatures} but the weight is ` +
        `[${w.shape}]`,
    );
  }
  if (opts.offsets.size !== opts.E + 1) {
    throw new DeviceError(
      `groupedLinear: offsets must be [E + 1] = [${opts.E + 1}], got ` +
        `[${opts.offsets.shape}]`,
    );
  }
  const shape: GroupedShape = { E: opts.E, Kin, Kout, strideElems: opts.strideElems };
  const rows = xs.shape[0];
  const tiles = opts.tiles ?? groupedTiles(opts.offsets, rows);
  const y = Tensor.empty(xs.device, [rows, Kout]);
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
        w.grad ??= zeroedSpan(w.device, w.shape, weightSpan(shape));
        groupedGemmBackwardWeight(w.grad, dy, xs, shape, { offsets: opts.offsets, accumulate });
      }
    });
  }
  return y;
}

/** A zeroed buffer range of `span` elements, returned as a view of its first `shape`. */
function zeroedSpan(gpu: Device, shape: readonly number[], span: number): Tensor {
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
