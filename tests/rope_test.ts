import { rope, ropeBackward, ropeCpu, ropeForward } from "../kernels/rope.ts";
import { ropeFrequencies, ropeTables } from "../kernels/rope_freqs.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import type { Device } from "../kernels/backend.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";
import { deepStrictEqual } from "node:assert/strict";

/** cos/sin [tmax, dr/2] from the project's frequency code (theta 10000, no YaRN). */
function tables(dr: number, tmax: number) {
  const freqs = ropeFrequencies({
    dim: dr,
    theta: 10000,
    maxSeqLen: tmax,
    originalSeqLen: tmax,
    factor: 1,
    betaFast: 32,
    betaSlow: 1,
  });
  return ropeTables(freqs, tmax);
}

function upload(device: Device, t: { cos: Float32Array; sin: Float32Array }, dr: number) {
  const shape = [t.cos.length / (dr / 2), dr / 2];
  return { cos: Tensor.from(device, t.cos, shape), sin: Tensor.from(device, t.sin, shape) };
}

// [B, T, H, S, dr, offset, pos0]
const CASES: [number, number, number, number, number, number, number][] = [
  [1, 1, 1, 2, 2, 0, 0],
  [2, 5, 3, 14, 6, 8, 0], // q [B, T, H, dn + dr], rope on the last dr
  [1, 7, 1, 8, 8, 0, 3], // shared k_pe, H = 1, decoding from position 3
  [3, 9, 4, 22, 10, 3, 11], // rope range in the middle of the row
];

Deno.test("rope matches the CPU twin for ragged shapes, offsets and pos0", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [B, T, H, S, dr, off, pos0] of CASES) {
    const tb = tables(dr, pos0 + T + 2);
    const { cos, sin } = upload(device, tb, dr);
    const x = randn(B * T * H * S, B + T + H + S);
    const out = Tensor.empty(device, [B, T, H, S]);
    const opts = { pos0, xOffset: off, outOffset: off, copyRest: true };
    ropeForward(out, Tensor.from(device, x, [B, T, H, S]), cos, sin, opts);
    const want = ropeCpu(x, tb.cos, tb.sin, { shape: { B, T, H, S }, dr, pos0, offset: off });
    assertClose(await out.readF32(), want, { label: `[${B},${T},${H},${S}] dr=${dr}` });
  }
});

Deno.test("rope rotates adjacent pairs as documented", () => {
  const out = ropeCpu(
    new Float32Array([1, 2]),
    new Float32Array([1, 0]),
    new Float32Array([0, 1]),
    {
      shape: { B: 1, T: 1, H: 1, S: 2 },
      dr: 2,
      pos0: 1,
    },
  );
  deepStrictEqual([...out], [-2, 1]);
});

Deno.test("rope works in place and into a sub-range of a wider row", GPU_TEST, async () => {
  const device = await testDevice();
  const [B, T, H, dn, dr, pos0] = [2, 3, 2, 5, 4, 2];
  const S = dn + dr;
  const tb = tables(dr, 8);
  const { cos, sin } = upload(device, tb, dr);
  const x = randn(B * T * H * S, 1);
  const want = ropeCpu(x, tb.cos, tb.sin, { shape: { B, T, H, S }, dr, pos0 });
  // in place on q: only the last dr columns change
  const q = Tensor.from(device, x, [B, T, H, S]);
  ropeForward(q, q, cos, sin, { pos0 });
  assertClose(await q.readF32(), want, { label: "in place" });
  // compact pe [B, T, H, dr] -> the last dr columns of a wider row; the rest is left alone
  const pe = new Float32Array(B * T * H * dr);
  for (let r = 0; r < B * T * H; r++) pe.set(x.subarray(r * S + dn, (r + 1) * S), r * dr);
  const wide = Tensor.from(device, new Float32Array(B * T * H * S).fill(7), [B, T, H, S]);
  ropeForward(wide, Tensor.from(device, pe, [B, T, H, dr]), cos, sin, { pos0 });
  const got = await wide.readF32();
  for (let r = 0; r < B * T * H; r++) {
    for (let j = 0; j < S; j++) {
      const w = j < dn ? 7 : want[r * S + j];
      assertClose([got[r * S + j]], [w], { label: `wide row ${r} col ${j}` });
    }
  }
  // two disjoint regions of one buffer (64 floats = 256 bytes apart)
  const n = B * T * H * S, pad = Math.ceil(n / 64) * 64;
  const big = Tensor.empty(device, [2 * pad]);
  big.view([n]).upload(x);
  const src = big.view([B, T, H, S], 0), dst = big.view([B, T, H, S], pad);
  ropeForward(dst, src, cos, sin, { pos0, copyRest: true });
  assertClose(await dst.readF32(), want, { label: "same buffer, disjoint" });
  assertClose(await src.readF32(), x, { label: "source untouched" });
});

Deno.test("rope CPU backward matches finite differences", () => {
  const [B, T, H, S, dr, off, pos0] = [2, 3, 2, 7, 4, 1, 2];
  const tb = tables(dr, 6);
  const shape = { B, T, H, S };
  const x = f64(randn(B * T * H * S, 3)), G = f64(randn(B * T * H * S, 4));
  const grad = ropeCpu(G, tb.cos, tb.sin, { shape, dr, pos0, offset: off, inverse: true });
  checkFiniteDiff((v) => ropeCpu(v, tb.cos, tb.sin, { shape, dr, pos0, offset: off }), x, G, grad);
});

Deno.test(
  "rope GPU backward matches the CPU, accumulates, and inverts the forward",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [B, T, H, S, dr, off, pos0] of CASES) {
      const tb = tables(dr, pos0 + T);
      const { cos, sin } = upload(device, tb, dr);
      const shape = [B, T, H, S], n = B * T * H * S;
      const g = randn(n, n), prior = randn(n, n + 1);
      const want = ropeCpu(g, tb.cos, tb.sin, {
        shape: { B, T, H, S },
        dr,
        pos0,
        offset: off,
        inverse: true,
      });
      const opts = { pos0, xOffset: off, outOffset: off, copyRest: true };
      const gt = Tensor.from(device, g, shape);
      const dx = Tensor.empty(device, shape);
      ropeBackward(dx, gt, cos, sin, opts);
      assertClose(await dx.readF32(), want, { label: `[${shape}]` });
      const dxa = Tensor.from(device, prior, shape);
      ropeBackward(dxa, gt, cos, sin, { ...opts, accumulate: true });
      assertClose(await dxa.readF32(), want.map((v, i) => v + prior[i]), { label: "acc" });
      const back = Tensor.empty(device, shape);
      ropeForward(back, dx, cos, sin, opts);
      assertClose(await back.readF32(), g, { label: "forward(backward(g)) = g" });
    }
  },
);

Deno.test("rope run twice gives identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const tb = tables(16, 40);
  const { cos, sin } = upload(device, tb, 16);
  const x = Tensor.from(device, randn(2 * 40 * 4 * 48, 5), [2, 40, 4, 48]);
  const a = Tensor.empty(device, x.shape), b = Tensor.empty(device, x.shape);
  ropeForward(a, x, cos, sin, { copyRest: true });
  ropeForward(b, x, cos, sin, { copyRest: true });
  assertSameBits(await a.readF32(), await b.readF32());
});

Deno.test("rope op records a backward that accumulates under the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const [B, T, H, dn, dr, pos0] = [1, 4, 3, 6, 4, 1];
  const S = dn + dr, n = B * T * H * S;
  const tb = tables(dr, pos0 + T);
  const t = upload(device, tb, dr);
  const xh = randn(n, 1), g = randn(n, 2);
  const x = Tensor.from(device, xh, [B, T, H, S]);
  x.requiresGrad = true;
  const tape = new Tape().start();
  const y = add(rope(x, t, { pos0, offset: dn }), rope(x, t, { pos0, offset: dn }));
  assertClose(
    await y.readF32(),
    ropeCpu(xh, tb.cos, tb.sin, { shape: { B, T, H, S }, dr, pos0 }).map((v) => 2 * v),
  );
  tape.backward(y, Tensor.from(device, g, [B, T, H, S]));
  const one = ropeCpu(g, tb.cos, tb.sin, { shape: { B, T, H, S }, dr, pos0, inverse: true });
  assertClose(await x.grad!.readF32(), one.map((v) => 2 * v));
});
