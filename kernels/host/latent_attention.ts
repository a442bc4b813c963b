/**
 * The CPU backend's absorbed latent attention (`latentCacheWrite` / `latentAttentionForward` of
 * `kernels/latent_attention.ts`).
 *
 * Legend: H heads, N new tokens, S slots, L positions per slot, rkv latent rank, dr rope dims,
 * W = rkv + dr, Cq / Ck row lengths whose last dr columns hold the rope part, n = pos + 1 the
 * positions a token sees.
 *
 *     cache [S, L, W]   where [N, 2] i32 (slot, position)   qt, z [H, N, rkv]   q [H, N, Cq]
 *     sc [H, n]         scratch scores / probabilities of one token, reused by every call
 *
 * Per token, all heads at once through BLAS (every head reads the same cache rows):
 * `sc = scale (qt_n C[:n, :rkv]^T + q_pe_n C[:n, rkv:]^T)` (two GEMMs, the second adding),
 * softmax per row, `z_n = P C[:n, :rkv]`. Head rows of qt, q and z are N rows apart, which BLAS
 * takes as the leading dimension. Fixed order, no threads of our own: same bits on a rerun.
 *
 * @module
 */
import { ptrOf } from "../blas.ts";
import type { Cpu } from "../cpu.ts";
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";
import type { LatentShape } from "../latent_attention.ts";

let scBuf = new Float32Array(0);

/**
 * Host {@linkcode latentCacheWrite}: `cache[slot, pos] = [c_n ; last dr columns of kPe_n]`,
 * skipping destinations outside the cache.
 */
export function hostLatentCacheWrite(
  cache: Tensor,
  ins: { c: Tensor; kPe?: Tensor; where: Tensor },
  s: { N: number; S: number; L: number; W: number; rc: number; ck: number },
): void {
  const { N, S, L, W, rc, ck } = s;
  const dst = f32(cache), c = f32(ins.c), kpe = ins.kPe ? f32(ins.kPe) : null;
  const where = i32(ins.where);
  for (let n = 0; n < N; n++) {
    const slot = where[2 * n], pos = where[2 * n + 1];
    if (slot < 0 || pos < 0 || slot >= S || pos >= L) continue;
    const base = (slot * L + pos) * W;
    dst.set(c.subarray(n * rc, n * rc + rc), base);
    if (kpe) dst.set(kpe.subarray(n * ck + ck - (W - rc), n * ck + ck), base + rc);
  }
}

/** Host {@linkcode latentAttentionForward}: z [H, N, rkv] (0 for a token outside the cache). */
export function hostLatentAttentionForward(
  zt: Tensor,
  ins: { qt: Tensor; q: Tensor; cache: Tensor; where: Tensor },
  s: LatentShape,
  scale: number,
): void {
  const { H, N, rkv, dr, S, L } = s, W = rkv + dr, cq = ins.q.shape[2];
  const blas = (zt.device as Cpu).blas;
  const qt = f32(ins.qt), q = f32(ins.q), cache = f32(ins.cache), z = f32(zt);
  const where = i32(ins.where);
  let maxLen = 0;
  for (let n = 0; n < N; n++) {
    const slot = where[2 * n], pos = where[2 * n + 1];
    if (slot >= 0 && pos >= 0 && slot < S && pos < L) maxLen = Math.max(maxLen, pos + 1);
  }
  if (scBuf.length < H * maxLen) scBuf = new Float32Array(new ArrayBuffer(H * maxLen * 4));
  const sc = scBuf, pSc = ptrOf(sc);
  for (let n = 0; n < N; n++) {
    const slot = where[2 * n], pos = where[2 * n + 1];
    if (slot < 0 || pos < 0 || slot >= S || pos >= L) {
      for (let h = 0; h < H; h++) z.fill(0, (h * N + n) * rkv, (h * N + n + 1) * rkv);
      continue;
    }
    const len = pos + 1, c0 = slot * L * W;
    // sc [H, len] = scale (qt_n C^T + q_pe_n K_pe^T)
    blas.sgemm(
      false,
      true,
      H,
      len,
      rkv,
      scale,
      ptrOf(qt, n * rkv),
      N * rkv,
      ptrOf(cache, c0),
      W,
      0,
      pSc,
      len,
    );
    if (dr > 0) {
      blas.sgemm(
        false,
        true,
        H,
        len,
        dr,
        scale,
        ptrOf(q, n * cq + cq - dr),
        N * cq,
        ptrOf(cache, c0 + rkv),
        W,
        1,
        pSc,
        len,
      );
    }
    for (let h = 0; h < H; h++) {
      const r0 = h * len, r1 = r0 + len;
      let m = -Infinity;
      for (let j = r0; j < r1; j++) if (sc[j] > m) m = sc[j];
      let l = 0;
      for (let j = r0; j < r1; j++) {
        const e = Math.exp(sc[j] - m);
        sc[j] = e;
        l += e;
      }
      const inv = 1 / l;
      for (let j = r0; j < r1; j++) sc[j] *= inv;
    }
    // z_n [H, rkv] = P C[:, :rkv]
    blas.sgemm(
      false,
      false,
      H,
      rkv,
      len,
      1,
      pSc,
      len,
      ptrOf(cache, c0),
      W,
      0,
      ptrOf(z, n * rkv),
      N * rkv,
    );
  }
}
