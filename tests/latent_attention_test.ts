import assert from "node:assert/strict";
import { attentionCpu } from "../kernels/attention.ts";
import {
  latentAttentionCpu,
  latentAttentionForward,
  latentCacheWrite,
  latentCacheWriteCpu,
  type LatentShape,
} from "../kernels/latent_attention.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";

/** (slot, position) pairs: a prefill chunk in slot 0, decode tokens of other slots. */
function whereOf(S: number, L: number, n: number, seed: number): Int32Array {
  const w = new Int32Array(2 * n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const slot = i < n / 2 ? 0 : x % S;
    const pos = i < n / 2 ? L - 1 - Math.floor(n / 2) + i : (x >>> 8) % L;
    w[2 * i] = slot;
    w[2 * i + 1] = Math.max(0, pos);
  }
  return w;
}

const SHAPES: (LatentShape & { cq: number })[] = [
  { H: 2, N: 1, rkv: 16, dr: 4, S: 1, L: 5, cq: 12 }, // tiny: one decode token
  { H: 3, N: 7, rkv: 33, dr: 6, S: 3, L: 70, cq: 6 }, // ragged rkv, two position tiles
  { H: 1, N: 5, rkv: 512, dr: 64, S: 2, L: 300, cq: 192 }, // V3 widths: 2 columns per thread
  { H: 4, N: 20, rkv: 128, dr: 32, S: 4, L: 129, cq: 64 }, // mini widths, tile + 1
];

Deno.test("latentAttentionForward() matches the CPU twin for ragged shapes", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [k, s] of SHAPES.entries()) {
    const W = s.rkv + s.dr;
    const qt = randn(s.H * s.N * s.rkv, 10 + k), q = randn(s.H * s.N * s.cq, 20 + k);
    const cache = randn(s.S * s.L * W, 30 + k);
    const where = whereOf(s.S, s.L, s.N, 40 + k);
    const z = Tensor.empty(device, [s.H, s.N, s.rkv]);
    const inputs = {
      qt: Tensor.from(device, qt, [s.H, s.N, s.rkv]),
      q: Tensor.from(device, q, [s.H, s.N, s.cq]),
      cache: Tensor.from(device, cache, [s.S, s.L, W]),
      where: Tensor.from(device, where, [s.N, 2], "i32"),
    };
    const scale = 1 / Math.sqrt(W);
    latentAttentionForward(z, inputs, { scale });
    const got = await z.readF32();
    const want = latentAttentionCpu({ qt, q, cache, where }, { shape: s, cq: s.cq, scale });
    assertClose(got, want, { atol: 2e-5, rtol: 1e-4, label: `shape ${JSON.stringify(s)}` });
    // Same inputs, same bits.
    const z2 = Tensor.empty(device, [s.H, s.N, s.rkv]);
    latentAttentionForward(z2, inputs, { scale });
    assertSameBits(got, await z2.readF32(), `rerun ${k}`);
  }
});

Deno.test(
  "latentAttentionForward() gives zeros for a token outside the cache",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const H = 2, N = 2, rkv = 8, dr = 2, S = 1, L = 4;
    const where = new Int32Array([0, 4, 1, 0]); // position L and slot S are both out of range
    const z = Tensor.from(device, new Float32Array(H * N * rkv).fill(7), [H, N, rkv]);
    latentAttentionForward(z, {
      qt: Tensor.from(device, randn(H * N * rkv, 1), [H, N, rkv]),
      q: Tensor.from(device, randn(H * N * dr, 2), [H, N, dr]),
      cache: Tensor.from(device, randn(S * L * (rkv + dr), 3), [S, L, rkv + dr]),
      where: Tensor.from(device, where, [N, 2], "i32"),
    }, { scale: 1 });
    assert.deepEqual([...await z.readF32()], new Array(H * N * rkv).fill(0));
  },
);

Deno.test(
  "latentCacheWrite() matches the CPU twin, with and without a k_pe source",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const S = 3, L = 9, rkv = 13, dr = 6, N = 5, ck = rkv + dr + 3;
    const W = rkv + dr;
    const where = new Int32Array([0, 0, 2, 8, 1, 3, 2, 0, 5, 1]); // the last row is dropped (slot 5)
    const c = randn(N * rkv, 1), kPe = randn(N * ck, 2), cache = randn(S * L * W, 3);
    const t = Tensor.from(device, cache, [S, L, W]);
    const whereT = Tensor.from(device, where, [N, 2], "i32");
    latentCacheWrite(t, {
      c: Tensor.from(device, c, [N, rkv]),
      kPe: Tensor.from(device, kPe, [N, ck]),
      where: whereT,
    });
    const want = latentCacheWriteCpu(cache, { c, kPe, where }, { S, L, W, ck });
    assertSameBits(await t.readF32(), want, "with kPe");

    const rows = randn(N * W, 4);
    const t2 = Tensor.from(device, cache, [S, L, W]);
    latentCacheWrite(t2, { c: Tensor.from(device, rows, [N, W]), where: whereT });
    assertSameBits(
      await t2.readF32(),
      latentCacheWriteCpu(cache, { c: rows, where }, { S, L, W }),
      "rows only",
    );
    assert.throws(
      () => latentCacheWrite(t2, { c: Tensor.from(device, c, [N, rkv]), where: whereT }),
      /do not fill/,
    );
  },
);

Deno.test(
  "absorbed latent attention equals MLA attention over expanded keys and values",
  GPU_TEST,
  async () => {
    // One sequence of T tokens, every token a query: the full-sequence causal attention with
    // k_h = [W_UK_h c ; k_pe], v_h = W_UV_h c must equal W_UV_h z_h of the absorbed form.
    const device = await testDevice();
    const T = 11, H = 3, dn = 5, dv = 4, dr = 4, rkv = 7, W = rkv + dr;
    const c = randn(T * rkv, 1), kpe = randn(T * dr, 2);
    const qNope = randn(T * H * dn, 3), qPe = randn(T * H * dr, 4);
    const wkvb = randn(H * (dn + dv) * rkv, 5, 0.5); // [H, dn + dv, rkv]
    const scale = 0.37;
    const wuk = (h: number, i: number, r: number) => wkvb[(h * (dn + dv) + i) * rkv + r];
    const wuv = (h: number, i: number, r: number) => wkvb[(h * (dn + dv) + dn + i) * rkv + r];
    // expanded q, k, v [1, T, H, *]
    const q = new Float64Array(T * H * (dn + dr)), k = new Float64Array(q.length);
    const v = new Float64Array(T * H * dv);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const qb = (t * H + h) * (dn + dr);
        for (let i = 0; i < dn; i++) {
          q[qb + i] = qNope[(t * H + h) * dn + i];
          for (let r = 0; r < rkv; r++) k[qb + i] += wuk(h, i, r) * c[t * rkv + r];
        }
        for (let i = 0; i < dr; i++) {
          q[qb + dn + i] = qPe[(t * H + h) * dr + i];
          k[qb + dn + i] = kpe[t * dr + i];
        }
        for (let i = 0; i < dv; i++) {
          for (let r = 0; r < rkv; r++) v[(t * H + h) * dv + i] += wuv(h, i, r) * c[t * rkv + r];
        }
      }
    }
    const want = attentionCpu({ q, k, v }, { shape: { B: 1, T, H, dqk: dn + dr, dv }, scale }).out;

    // absorbed: qt [H, T, rkv], q_pe [H, T, dr], cache [1, T, W]
    const qt = new Float32Array(H * T * rkv), qpeH = new Float32Array(H * T * dr);
    const cache = new Float32Array(T * W), where = new Int32Array(2 * T);
    for (let t = 0; t < T; t++) {
      where[2 * t + 1] = t;
      cache.set(c.subarray(t * rkv, (t + 1) * rkv), t * W);
      cache.set(kpe.subarray(t * dr, (t + 1) * dr), t * W + rkv);
      for (let h = 0; h < H; h++) {
        for (let r = 0; r < rkv; r++) {
          let s = 0;
          for (let i = 0; i < dn; i++) s += wuk(h, i, r) * qNope[(t * H + h) * dn + i];
          qt[(h * T + t) * rkv + r] = s;
        }
        qpeH.set(qPe.subarray((t * H + h) * dr, (t * H + h + 1) * dr), (h * T + t) * dr);
      }
    }
    const z = Tensor.empty(device, [H, T, rkv]);
    latentAttentionForward(z, {
      qt: Tensor.from(device, qt, [H, T, rkv]),
      q: Tensor.from(device, qpeH, [H, T, dr]),
      cache: Tensor.from(device, cache, [1, T, W]),
      where: Tensor.from(device, where, [T, 2], "i32"),
    }, { scale });
    const zh = await z.readF32();
    const got = new Float64Array(T * H * dv);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < dv; i++) {
          let s = 0;
          for (let r = 0; r < rkv; r++) s += wuv(h, i, r) * zh[(h * T + t) * rkv + r];
          got[(t * H + h) * dv + i] = s;
        }
      }
    }
    assertClose(got, want, { atol: 1e-5, rtol: 1e-4, label: "W_UV z vs expanded attention" });
  },
);
