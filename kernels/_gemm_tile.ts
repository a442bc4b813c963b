/**
 * The register-tile GEMM emitter shared by the dense GEMM (`kernels/matmul.ts`) and the grouped
 * expert GEMM (`kernels/moe_gemm.ts`): the k loop, the operand loads, the register accumulation
 * and the guarded stores of one thread's TM x TN output block, as WGSL lines. The kernels differ
 * only in how a tile finds its operands and its output (a batch offset and strides, or an expert
 * from the tile table), which they pass in as WGSL expressions; one tuning of the tile applies
 * to both.
 *
 * Legend: C[m, n] = sum_k A(m, k) B(k, n); TM x TN outputs per thread; LANES threads per
 * workgroup. Thread `lane` owns the rows m0 + i (i < TM) and the columns col(j) (j < TN):
 *
 *     col(j) = n0 + (j % 4) + 32 * (j / 4),   n0 = colTile * LANES * TN + lane * 4   (quad)
 *     col(j) = n0 + 8 * j,                    n0 = colTile * LANES * TN + lane       (otherwise)
 *
 * With `quad` each run of 4 columns is all inside the output or all outside (the column count
 * is a multiple of 4), so it is one vec4 store. The shape of the kernel, and why, is in
 * `kernels/matmul.ts`'s module doc (measured on lavapipe): operands are read straight from the
 * storage buffers into registers, (TM + TN) loads per k step for TM * TN FMAs, four k steps per
 * loop trip, vec4 loads along whichever dim an operand is contiguous in; no workgroup-memory
 * staging and no barriers (measured slower on lavapipe, where every such load is emulated).
 *
 * Each accumulator c<i>_<j> is summed by one thread in k order, four k per trip and then one at
 * a time for the tail, so the same inputs give the same bits.
 *
 * Names: the caller's WGSL declares `A`, `B`, `C` (array<vec4<f32>> where that operand is vec4,
 * see {@linkcode storageArray}), `lane`, `m0` and whatever its expressions use; the emitted lines
 * declare `n0`, `k`, `c<i>_<j>`, `ra<i>`, `rb<j>`, `a*`, `b*`.
 *
 * @module
 */

/** Threads per workgroup: one 8-wide SIMD group of a 256-bit CPU driver (lavapipe). */
export const LANES = 8;

/** How a tile reads A(m0 + i, k). */
export type TileA =
  /**
   * Rows contiguous along k: A(m0 + i, k) is at `rowBase(i) + k` (hoisted as `ra<i>`). With
   * `vec`, the row starts are multiples of 4 and each k step of 4 is one vec4.
   */
  | { along: "k"; vec: boolean; rowBase: (i: number) => string }
  /**
   * Contiguous along m: A(m0 + i, k) is at `row(k) + i`, `row(k)` the offset of A(m0, k) for a
   * WGSL u32 expression k. With `vec`, `row(k)` is a multiple of 4 and TM too.
   */
  | { along: "m"; vec: boolean; row: (k: string) => string };

/** How a tile reads B(k, col). */
export type TileB =
  /**
   * Columns contiguous along k (B stored transposed): B(k, c) is at `colBase(c) + k` (hoisted as
   * `rb<j>`). With `vec`, the column starts are multiples of 4.
   */
  | { along: "k"; vec: boolean; colBase: (col: string) => string }
  /**
   * Rows contiguous along n: B(k, c) is at `row(k) + c`. With `vec` (which needs `quad`), `row(k)`
   * and `n0` are multiples of 4.
   */
  | { along: "n"; vec: boolean; row: (k: string) => string };

/** One thread's TM x TN block, and where its operands and output are. */
export interface TileSpec {
  /** Output rows per thread. */
  TM: number;
  /** Output columns per thread (a multiple of 4 with `quad`). */
  TN: number;
  /** The column layout above; C is array<vec4<f32>> and stored a vec4 at a time. */
  quad: boolean;
  /** A's addressing. */
  a: TileA;
  /** B's addressing. */
  b: TileB;
  /** WGSL of the column-tile index (n0 = colTile * LANES * TN + lane * (quad ? 4 : 1)). */
  colTile: string;
  /** WGSL of the first k. */
  kBegin: string;
  /** WGSL of the end of k. */
  kEnd: string;
  /** Whether kEnd - kBegin may be other than a multiple of 4: emit the one-k-at-a-time tail. */
  tail: boolean;
  /**
   * The output: C(m0 + i, c) is at `base + (m0 + i) * cols + c`; rows from `rowEnd` on and
   * columns from `cols` on are not stored. `value(acc, old)` is the WGSL stored, given the
   * accumulator (a vec4 with `quad`) and the `C[...]` expression of the value there.
   */
  c: { base: string; cols: string; rowEnd: string; value: (acc: string, old: string) => string };
}

/** The WGSL lines of a tile, to be joined at the caller's indentation (see {@linkcode lines}). */
export interface TileCode {
  /** `let n0 = ...;`. */
  n0: string;
  /** The accumulators' declarations (zero). */
  decl: string[];
  /** The per-row / per-column base offsets of the operands contiguous in k (before the loop). */
  bases: string[];
  /** The k loop: four k per trip, then the tail when asked for; nested lines indented by 2. */
  loop: string[];
  /** The guarded stores. */
  stores: string[];
}

/** WGSL type of a storage operand read as vec4s or as scalars. */
export function storageArray(vec: boolean): string {
  return vec ? "array<vec4<f32>>" : "array<f32>";
}

/** `xs` joined one per line at `indent` (the first line takes the caller's own indentation). */
export function lines(xs: readonly string[], indent: string): string {
  return xs.join(`\n${indent}`);
}

/**
 * The WGSL of one register tile (see the module doc).
 * @example
 * const t = gemmTile({ TM: 12, TN: 16, quad: true, a, b, colTile: "wid.y", kBegin: "0u",
 *   kEnd: "p.K", tail: false, c: { base: "0u", cols: "p.N", rowEnd: "p.M", value: (v) => v } });
 */
export function gemmTile(s: TileSpec): TileCode {
  const { TM, TN, quad, a, b } = s;
  const col = (j: number) =>
    quad ? `n0 + ${(j & 3) + 4 * LANES * (j >> 2)}u` : `n0 + ${LANES * j}u`;
  // One element of an operand, for the k tail (one k at a time).
  const elem = (arr: string, vec: boolean, idx: string) =>
    vec ? `${arr}[(${idx}) >> 2u][(${idx}) & 3u]` : `${arr}[${idx}]`;
  const four = [0, 1, 2, 3];
  const kk4 = (kk: number) => `(k + ${kk}u)`;
  // One main-loop trip covers k .. k+3: aX[i][kk], bX[j][kk] are WGSL expressions of the values.
  const loads: string[] = [], bases: string[] = [];
  const aX: string[][] = [], bX: string[][] = [];
  // The k tail: A(m0 + i, k), B(k, col(j)).
  const tailA: string[] = [], tailB: string[] = [];
  if (a.along === "k") {
    for (let i = 0; i < TM; i++) {
      bases.push(`let ra${i} = ${a.rowBase(i)};`);
      const idx = `ra${i} + k`;
      loads.push(
        a.vec
          ? `let a${i} = A[(${idx}) >> 2u];`
          : `let a${i} = vec4<f32>(${four.map((q) => `A[${idx} + ${q}u]`).join(", ")});`,
      );
      aX.push(four.map((kk) => `a${i}[${kk}]`));
      tailA.push(elem("A", a.vec, idx));
    }
  } else {
    for (let kk = 0; kk < 4; kk++) {
      const row = a.row(kk4(kk));
      if (a.vec) {
        for (let g = 0; g < TM / 4; g++) {
          loads.push(`let a${kk}_${g} = A[((${row}) >> 2u) + ${g}u];`);
        }
      } else {
        for (let i = 0; i < TM; i++) loads.push(`let a${kk}_${i} = A[${row} + ${i}u];`);
      }
    }
    for (let i = 0; i < TM; i++) {
      aX.push(four.map((kk) => a.vec ? `a${kk}_${i >> 2}[${i & 3}]` : `a${kk}_${i}`));
      tailA.push(elem("A", a.vec, `${a.row("k")} + ${i}u`));
    }
  }
  if (b.along === "k") {
    for (let j = 0; j < TN; j++) {
      bases.push(`let rb${j} = ${b.colBase(col(j))};`);
      const idx = `rb${j} + k`;
      loads.push(
        b.vec
          ? `let b${j} = B[(${idx}) >> 2u];`
          : `let b${j} = vec4<f32>(${four.map((q) => `B[${idx} + ${q}u]`).join(", ")});`,
      );
      bX.push(four.map((kk) => `b${j}[${kk}]`));
      tailB.push(elem("B", b.vec, idx));
    }
  } else {
    for (let kk = 0; kk < 4; kk++) {
      const row = b.row(kk4(kk));
      if (b.vec) {
        for (let g = 0; g < TN / 4; g++) {
          loads.push(`let b${kk}_${g} = B[((${row} + n0) >> 2u) + ${LANES * g}u];`);
        }
      } else {
        for (let j = 0; j < TN; j++) loads.push(`let b${kk}_${j} = B[${row} + ${col(j)}];`);
      }
    }
    for (let j = 0; j < TN; j++) {
      bX.push(four.map((kk) => b.vec ? `b${kk}_${j >> 2}[${j & 3}]` : `b${kk}_${j}`));
      tailB.push(elem("B", b.vec, `${b.row("k")} + ${col(j)}`));
    }
  }
  const decl: string[] = [], fmas: string[] = [], tail: string[] = [];
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) decl.push(`var c${i}_${j} = 0.0;`);
  for (let kk = 0; kk < 4; kk++) {
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TN; j++) {
        fmas.push(`c${i}_${j} = fma(${aX[i][kk]}, ${bX[j][kk]}, c${i}_${j});`);
      }
    }
  }
  tailA.forEach((v, i) => tail.push(`let a${i} = ${v};`));
  tailB.forEach((v, j) => tail.push(`let b${j} = ${v};`));
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) tail.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
  }
  const nest = (xs: string[]) => xs.map((x) => `  ${x}`);
  const loop = [
    `var k = ${s.kBegin};`,
    `for (; k + 4u <= ${s.kEnd}; k += 4u) {`,
    ...nest(loads),
    ...nest(fmas),
    "}",
    ...(s.tail ? [`for (; k < ${s.kEnd}; k++) {`, ...nest(tail), "}"] : [""]),
  ];
  const stores: string[] = [];
  const { base, cols, rowEnd, value } = s.c;
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j += quad ? 4 : 1) {
      let idx = `${base} + (m0 + ${i}u) * ${cols} + ${col(j)}`;
      let acc = `c${i}_${j}`;
      if (quad) {
        idx = `(${idx}) >> 2u`;
        acc = `vec4<f32>(${four.map((q) => `c${i}_${j + q}`).join(", ")})`;
      }
      stores.push(
        `if (m0 + ${i}u < ${rowEnd} && ${col(j)} < ${cols}) { C[${idx}] = ${
          value(acc, `C[${idx}]`)
        }; }`,
      );
    }
  }
  const n0 = `let n0 = ${s.colTile} * ${LANES * TN}u + lane * ${quad ? 4 : 1}u;`;
  return { n0, decl, bases, loop, stores };
}
