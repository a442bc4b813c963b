/**
 * The CPU backend's causal attention (`attentionForward` / `attentionBackward` of
 * `kernels/attention.ts`): per (b, h), blocks of query rows against the keys they can see, the
 * score and output GEMMs in BLAS, the exps in a small WebAssembly SIMD loop.
 *
 * Legend: B batch, T time, H heads, DQK query/key head dim, DV value head dim, M query rows of a
 * block (at most {@linkcode BQ}), N its key columns `j0 .. i1 - 1`.
 *
 *     q, k [B, T, H, DQK]   v, out, dout [B, T, H, DV]   lse [B, H, T]   seg [B, T] i32
 *     S (P), dP (dS) [M, N] scratch in the WebAssembly memory, row major, reused by every call
 *
 * A head's rows are strided in q/k/v (`H * D` apart), which BLAS takes as the leading dimension:
 * no gather. Forward per block: `S = scale Q K^T`, mask, `E = exp(S - m)`, `l = rowsum(E)`,
 * `lse = m + log l`, `O = (E V) / l`. Backward per block (FlashAttention-2, Dao 2023, Alg. 2):
 * recompute `P = exp(S - lse)`, `dP = dO V^T`, `dS = scale P (dP - D)` with `D = rowsum(dO * O)`,
 * then `dV += P^T dO`, `dK += dS^T Q`, `dQ = dS K`. Causality: a block's keys end at its last row,
 * so key tiles past the diagonal are never computed; with segment ids a block's keys start at the
 * first position of its rows' earliest segment (packed conversations skip what they cannot see).
 * Masked entries are 0 in E, P and dS, so the GEMMs may span them.
 *
 * Why WebAssembly: with the GEMMs in BLAS, the exps (one per visible score, forward and
 * backward) dominated the scalar JavaScript version; four f32 lanes at a time cut them to about a
 * third (bench/README.md, cpu.sh). The exp is Cody-Waite: `n = round(x log2 e)`, `r = x - n ln 2` (ln 2 in
 * two parts), `e^r` by its degree-6 Taylor polynomial (|r| <= ln 2 / 2: error < 1.2e-7), times
 * 2^n built in the exponent bits; f32 throughout, within a few ulps of `exp`. Row sums run in f64.
 *
 * Deterministic: blocks run in a fixed order, the SIMD sums in fixed lanes, and the BLAS library
 * splits a GEMM over M and N, never over K, at a fixed thread count.
 *
 * @module
 */
import { ptrOf } from "../blas.ts";
import type { Cpu } from "../cpu.ts";
import type { Tensor } from "../tensor.ts";
import type { AttentionShape } from "../attention.ts";
import { fastExp } from "./_exp.ts";
import { f32, i32 } from "./_views.ts";

/**
 * Query rows per block: smaller blocks skip more of the causal upper triangle (a diagonal tile is
 * half waste), larger ones amortise the calls; 32 to 128 measured the same at nano and mini.
 */
const BQ = 64;

// ---------------------------------------------------------------------------------------------
// The SIMD exp loops, assembled here (WebAssembly binary format; SIMD opcodes after 0xfd).

/** `maxRows(p, end)`: the largest f32 at bytes p .. end (16 at a time; -inf when empty). */
type MaxRows = (p: number, end: number) => number;
/** `expRows(p, end, m)`: `x = exp(x - m)` for the f32 at bytes p .. end; returns their f64 sum. */
type ExpRows = (p: number, end: number, m: number) => number;
/** `dsRows(pp, pd, end, lse, D, scale)`: `P = exp(P - lse)`, `dS = scale P (dS - D)`, pp .. end. */
type DsRows = (pp: number, pd: number, end: number, lse: number, D: number, scale: number) => void;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    const b = n & 0x7f;
    n >>>= 7;
    out.push(n ? b | 0x80 : b);
  } while (n);
  return out;
}

const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const name = (s: string) => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const simd = (op: number) => [0xfd, ...uleb(op)];
const get = (i: number) => [0x20, i]; // local.get
const set = (i: number) => [0x21, i]; // local.set
const tee = (i: number) => [0x22, i]; // local.tee
/** v128.const of four equal f32 or i32 lanes. */
function splat4(x: number, int = false): number[] {
  const b = new Uint8Array(16);
  (int ? new Int32Array(b.buffer) : new Float32Array(b.buffer)).fill(x);
  return [...simd(0x0c), ...b];
}
const LOAD = [...simd(0x00), 0, 0], STORE = [...simd(0x0b), 0, 0]; // v128.load/store, align 1
const ADD = simd(0xe4), SUB = simd(0xe5), MUL = simd(0xe6), MAX = simd(0xe9); // f32x4
const LN2_HI = 0.693359375, LN2_LO = -2.12194440e-4; // ln 2 = HI + LO, HI exact in 9 bits

/** exp of the f32x4 on the stack (x <= ~0; below -87 it gives ~2^-126, not 0), left on it. */
// deno-fmt-ignore
function expCode(x: number, n: number): number[] {
  const code = [
    ...splat4(-87.3), ...MAX, ...tee(x), // x >= -87.3 keeps n >= -126
    ...splat4(Math.LOG2E), ...MUL, ...simd(0x6a), ...set(n), // n = nearest(x log2 e)
    ...get(x), ...get(n), ...splat4(LN2_HI), ...MUL, ...SUB,
    ...get(n), ...splat4(LN2_LO), ...MUL, ...SUB, ...set(x), // r = x - n ln 2
    ...splat4(1 / 720), // Horner: e^r = 1 + r + r^2 / 2 + ... + r^6 / 720
  ];
  for (const c of [1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]) {
    code.push(...get(x), ...MUL, ...splat4(c), ...ADD);
  }
  // times 2^n: (i32(n) + 127) << 23 read as f32 (trunc_sat, i32x4.add, i32.const 23, i32x4.shl)
  code.push(
    ...get(n), ...simd(0xf8), ...splat4(127, true), ...simd(0xae), 0x41, 23, ...simd(0xab), ...MUL,
  );
  return code;
}

/** A function body: locals (count, type) then code. */
function body(locals: [number, number][], code: number[]): number[] {
  const b = [...vec(locals.map(([k, t]) => [...uleb(k), t])), ...code, 0x0b];
  return [...uleb(b.length), ...b];
}

/** `block { loop { if (p >= end) break; ...step; p += 16 (and q += 16); continue } }` */
// deno-fmt-ignore
function loop(p: number, end: number, step: number[], q?: number): number[] {
  const bump = (i: number) => [...get(i), 0x41, 16, 0x6a, ...set(i)]; // i32.add
  return [
    0x02, 0x40, 0x03, 0x40, ...get(p), ...get(end), 0x4f, 0x0d, 1, // i32.ge_u, br_if 1
    ...step, ...bump(p), ...(q === undefined ? [] : bump(q)), 0x0c, 0, 0x0b, 0x0b, // br 0
  ];
}

const I32 = 0x7f, F32 = 0x7d, F64 = 0x7c, V128 = 0x7b;

// deno-fmt-ignore
function assemble(): Uint8Array {
  const promote = simd(0x5f), addF64 = simd(0xf0), splat = simd(0x13), lane = simd(0x21);
  const hiToLo = [...simd(0x0d), 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
  // maxRows: params 0 p, 1 end; local 2 m4
  const maxRows = body([[1, V128]], [
    ...splat4(-Infinity), ...set(2),
    ...loop(0, 1, [...get(2), ...get(0), ...LOAD, ...MAX, ...set(2)]),
    ...get(2), ...simd(0x1f), 0, ...get(2), ...simd(0x1f), 1, 0x97, // f32.max of the lanes
    ...get(2), ...simd(0x1f), 2, ...get(2), ...simd(0x1f), 3, 0x97, 0x97,
  ]);
  // expRows: params 0 p, 1 end, 2 m; locals 3 m4, 4 x, 5 n, 6 e, 7 sumLo, 8 sumHi (f64x2)
  const expRows = body([[6, V128]], [
    ...get(2), ...splat, ...set(3),
    ...loop(0, 1, [
      ...get(0), ...get(0), ...LOAD, ...get(3), ...SUB, ...expCode(4, 5), ...tee(6), ...STORE,
      ...get(7), ...get(6), ...promote, ...addF64, ...set(7),
      ...get(8), ...get(6), ...get(6), ...hiToLo, ...promote, ...addF64, ...set(8),
    ]),
    ...get(7), ...get(8), ...addF64, ...tee(7), ...lane, 0, ...get(7), ...lane, 1, 0xa0, // f64.add
  ]);
  // dsRows: params 0 pp, 1 pd, 2 end, 3 lse, 4 D, 5 scale; locals 6 lse4, 7 D4, 8 scale4, 9 x,
  // 10 n, 11 p
  const dsRows = body([[6, V128]], [
    ...get(3), ...splat, ...set(6), ...get(4), ...splat, ...set(7), ...get(5), ...splat, ...set(8),
    ...loop(0, 2, [
      ...get(0), ...get(0), ...LOAD, ...get(6), ...SUB, ...expCode(9, 10), ...tee(11), ...STORE,
      ...get(1), ...get(11), ...get(1), ...LOAD, ...get(7), ...SUB, ...MUL, ...get(8), ...MUL,
      ...STORE,
    ], 1),
  ]);
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // "\0asm", version 1
    ...section(1, vec([ // types
      [0x60, ...vec([[I32], [I32]]), ...vec([[F32]])],
      [0x60, ...vec([[I32], [I32], [F32]]), ...vec([[F64]])],
      [0x60, ...vec([[I32], [I32], [I32], [F32], [F32], [F32]]), ...vec([])],
    ])),
    ...section(2, vec([[...name("env"), ...name("mem"), 0x02, 0x00, 1]])), // memory import
    ...section(3, vec([[0], [1], [2]])), // each function's type
    ...section(7, vec([
      [...name("maxRows"), 0, 0], [...name("expRows"), 0, 1], [...name("dsRows"), 0, 2],
    ])),
    ...section(10, vec([maxRows, expRows, dsRows])),
  ]);
}

const memory = new WebAssembly.Memory({ initial: 1 });
const wasm = new WebAssembly.Instance(new WebAssembly.Module(assemble() as BufferSource), {
  env: { mem: memory },
}).exports as { maxRows: MaxRows; expRows: ExpRows; dsRows: DsRows };

/** The scratch: two [M, T] f32 planes in the WebAssembly memory (BLAS writes them by pointer). */
let S = new Float32Array(0), dS = new Float32Array(0);

/** Grows the scratch to two planes of `n` floats; returns the byte offset of the second. */
function scratch(n: number): number {
  const bytes = 2 * n * 4;
  if (memory.buffer.byteLength < bytes) {
    memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  }
  if (S.length < n || S.buffer !== memory.buffer) {
    const buf = memory.buffer as ArrayBuffer, half = Math.floor(buf.byteLength / 8);
    S = new Float32Array(buf, 0, half);
    dS = new Float32Array(buf, half * 4, half);
  }
  return dS.byteOffset;
}

/** The largest of S[c0 .. c1 - 1]. */
function maxRun(c0: number, c1: number): number {
  const mid = c0 + ((c1 - c0) & ~3);
  let m = wasm.maxRows(c0 * 4, mid * 4);
  for (let c = mid; c < c1; c++) if (S[c] > m) m = S[c];
  return m;
}

/** `S[c] = exp(S[c] - m)` for c in c0 .. c1 - 1; returns the sum (f64). */
function expRun(c0: number, c1: number, m: number): number {
  const mid = c0 + ((c1 - c0) & ~3);
  let l = wasm.expRows(c0 * 4, mid * 4, m);
  for (let c = mid; c < c1; c++) l += S[c] = fastExp(S[c] - m);
  return l;
}

/** `P = exp(S - lse)` in S, `dS = scale P (dP - D)` in dS, for c in c0 .. c1 - 1. */
function dsRun(c0: number, c1: number, lse: number, D: number, scale: number): void {
  const mid = c0 + ((c1 - c0) & ~3);
  wasm.dsRows(c0 * 4, dS.byteOffset + c0 * 4, mid * 4, lse, D, scale);
  for (let c = mid; c < c1; c++) {
    const p = fastExp(S[c] - lse);
    S[c] = p;
    dS[c] = scale * p * (dS[c] - D);
  }
}

// ---------------------------------------------------------------------------------------------

let firstBuf = new Int32Array(0);

/**
 * For each row of batch `b`, the first position with the row's segment id (0 without segments):
 * the earliest key the row can see. Ids need not be contiguous or sorted.
 */
function firstOfSegments(seg: Int32Array | null, b: number, T: number): Int32Array {
  if (firstBuf.length < T) firstBuf = new Int32Array(T);
  const first = firstBuf;
  if (!seg) return first.fill(0, 0, T);
  const seen = new Map<number, number>();
  for (let t = 0; t < T; t++) {
    const id = seg[b * T + t];
    let f = seen.get(id);
    if (f === undefined) seen.set(id, f = t);
    first[t] = f;
  }
  return first;
}

/** The earliest key any row of block i0 .. i1 - 1 sees. */
function blockStart(first: Int32Array, i0: number, i1: number): number {
  let j0 = i0;
  for (let i = i0; i < i1; i++) if (first[i] < j0) j0 = first[i];
  return j0;
}

/**
 * The end of the run of columns from `c` to `last` whose keys share `id` (`eq`) or not: keys of
 * column c are at `seg[sb + c]`.
 */
function runEnd(seg: Int32Array, sb: number, c: number, last: number, id: number, eq: boolean) {
  while (c <= last && (seg[sb + c] === id) === eq) c++;
  return c;
}

/**
 * Host {@linkcode attentionForward}: out [B, T, H, DV] and lse [B, H, T].
 * @param s the sizes, already checked by the launcher.
 */
export function hostAttentionForward(
  outs: { out: Tensor; lse: Tensor },
  ins: { q: Tensor; k: Tensor; v: Tensor; seg?: Tensor | null },
  s: AttentionShape,
  scale: number,
): void {
  const { B, T, H, dqk, dv } = s;
  const blas = (outs.out.device as Cpu).blas;
  const q = f32(ins.q), k = f32(ins.k), v = f32(ins.v);
  const out = f32(outs.out), lse = f32(outs.lse);
  const seg = ins.seg ? i32(ins.seg) : null;
  const sq = H * dqk, sv = H * dv;
  scratch(Math.min(BQ, T) * T);
  const pS = ptrOf(S), inv = new Float64Array(BQ);
  for (let b = 0; b < B; b++) {
    const first = firstOfSegments(seg, b, T);
    for (let h = 0; h < H; h++) {
      for (let i0 = 0; i0 < T; i0 += BQ) {
        const i1 = Math.min(T, i0 + BQ), M = i1 - i0;
        const j0 = blockStart(first, i0, i1), N = i1 - j0;
        const qBlk = ((b * T + i0) * H + h) * dqk, kBlk = ((b * T + j0) * H + h) * dqk;
        // S [M, N] = scale Q[i0:i1] K[j0:i1]^T
        blas.sgemm(false, true, M, N, dqk, scale, ptrOf(q, qBlk), sq, ptrOf(k, kBlk), sq, 0, pS, N);
        for (let r = 0; r < M; r++) {
          // row i sees columns row .. last (key j0 + c - row), those with its segment id
          const i = i0 + r, row = r * N, last = row + i - j0;
          const id = seg ? seg[b * T + i] : 0, sb = b * T + j0 - row;
          let m = -Infinity, l = 0;
          if (!seg) {
            m = maxRun(row, last + 1);
            l = expRun(row, last + 1, m);
          } else {
            for (let c = row; c <= last; c++) if (seg[sb + c] === id && S[c] > m) m = S[c];
            for (let c = row; c <= last;) {
              const c1 = runEnd(seg, sb, c, last, id, false);
              S.fill(0, c, c1);
              const c2 = runEnd(seg, sb, c1, last, id, true);
              l += expRun(c1, c2, m);
              c = c2;
            }
          }
          S.fill(0, last + 1, row + N);
          inv[r] = 1 / l;
          lse[(b * H + h) * T + i] = m + Math.log(l);
        }
        // out[i0:i1] = (E V[j0:i1]) / l
        const oBlk = ((b * T + i0) * H + h) * dv;
        blas.sgemm(
          false,
          false,
          M,
          dv,
          N,
          1,
          pS,
          N,
          ptrOf(v, ((b * T + j0) * H + h) * dv),
          sv,
          0,
          ptrOf(out, oBlk),
          sv,
        );
        for (let r = 0; r < M; r++) {
          const o0 = oBlk + r * sv, ir = inv[r];
          for (let d = o0; d < o0 + dv; d++) out[d] *= ir;
        }
      }
    }
  }
}

/**
 * Host {@linkcode attentionBackward}: dq, dk, dv (each optional; `accumulate` adds into it).
 * @param s the sizes, already checked by the launcher.
 */
export function hostAttentionBackward(
  grads: { dq: Tensor | null; dk: Tensor | null; dv: Tensor | null },
  saved: {
    q: Tensor;
    k: Tensor;
    v: Tensor;
    seg?: Tensor | null;
    out: Tensor;
    lse: Tensor;
    dout: Tensor;
  },
  s: AttentionShape,
  o: { scale: number; accumulate?: { dq?: boolean; dk?: boolean; dv?: boolean } },
): void {
  const { B, T, H, dqk, dv } = s;
  if (!grads.dq && !grads.dk && !grads.dv) return;
  const blas = (saved.q.device as Cpu).blas;
  const q = f32(saved.q), k = f32(saved.k), v = f32(saved.v);
  const out = f32(saved.out), lse = f32(saved.lse), dout = f32(saved.dout);
  const seg = saved.seg ? i32(saved.seg) : null;
  const dQ = grads.dq ? f32(grads.dq) : null;
  const dK = grads.dk ? f32(grads.dk) : null;
  const dV = grads.dv ? f32(grads.dv) : null;
  const acc = o.accumulate ?? {};
  // dK and dV sum over query blocks: start from 0 unless accumulating
  if (dK && !acc.dk) dK.fill(0);
  if (dV && !acc.dv) dV.fill(0);
  const betaQ = acc.dq ? 1 : 0, scale = o.scale;
  const sq = H * dqk, sv = H * dv;
  scratch(Math.min(BQ, T) * T);
  const pP = ptrOf(S), pD = ptrOf(dS);
  for (let b = 0; b < B; b++) {
    const first = firstOfSegments(seg, b, T);
    for (let h = 0; h < H; h++) {
      for (let i0 = 0; i0 < T; i0 += BQ) {
        const i1 = Math.min(T, i0 + BQ), M = i1 - i0;
        const j0 = blockStart(first, i0, i1), N = i1 - j0;
        const qBlk = ((b * T + i0) * H + h) * dqk, kBlk = ((b * T + j0) * H + h) * dqk;
        const oBlk = ((b * T + i0) * H + h) * dv, vBlk = ((b * T + j0) * H + h) * dv;
        // S [M, N] = scale Q K^T (as in the forward); dP [M, N] = dO V^T
        blas.sgemm(false, true, M, N, dqk, scale, ptrOf(q, qBlk), sq, ptrOf(k, kBlk), sq, 0, pP, N);
        blas.sgemm(false, true, M, N, dv, 1, ptrOf(dout, oBlk), sv, ptrOf(v, vBlk), sv, 0, pD, N);
        for (let r = 0; r < M; r++) {
          const i = i0 + r, row = r * N, last = row + i - j0;
          const g = oBlk + r * sv;
          let D = 0;
          for (let d = 0; d < dv; d++) D += dout[g + d] * out[g + d];
          const l = lse[(b * H + h) * T + i];
          if (!seg) dsRun(row, last + 1, l, D, scale);
          else {
            const id = seg[b * T + i], sb = b * T + j0 - row;
            for (let c = row; c <= last;) {
              const c1 = runEnd(seg, sb, c, last, id, false);
              S.fill(0, c, c1);
              dS.fill(0, c, c1);
              const c2 = runEnd(seg, sb, c1, last, id, true);
              dsRun(c1, c2, l, D, scale);
              c = c2;
            }
          }
          S.fill(0, last + 1, row + N);
          dS.fill(0, last + 1, row + N);
        }
        // dV[j0:i1] += P^T dO[i0:i1]; dK[j0:i1] += dS^T Q[i0:i1]; dQ[i0:i1] = dS K[j0:i1]
        if (dV) {
          blas.sgemm(
            true,
            false,
            N,
            dv,
            M,
            1,
            pP,
            N,
            ptrOf(dout, oBlk),
            sv,
            1,
            ptrOf(dV, vBlk),
            sv,
          );
        }
        if (dK) {
          blas.sgemm(true, false, N, dqk, M, 1, pD, N, ptrOf(q, qBlk), sq, 1, ptrOf(dK, kBlk), sq);
        }
        if (dQ) {
          blas.sgemm(
            false,
            false,
            M,
            dqk,
            N,
            1,
            pD,
            N,
            ptrOf(k, kBlk),
            sq,
            betaQ,
            ptrOf(dQ, qBlk),
            sq,
          );
        }
      }
    }
  }
}
