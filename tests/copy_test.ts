import {
  concatBroadcastHeads,
  concatBroadcastHeadsBackward,
  concatBroadcastHeadsBackwardCpu,
  concatBroadcastHeadsCpu,
  concatBroadcastHeadsForward,
  concatLastDim,
  copyColumns,
  copyColumnsCpu,
  sliceLastDim,
  transpose12,
  transpose12Cpu,
  transpose12Forward,
} from "../kernels/copy.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";
import { deepStrictEqual } from "node:assert/strict";

Deno.test("copyColumns matches the CPU twin: offsets, accumulate, zeroRest", GPU_TEST, async () => {
  const device = await testDevice();
  // [rows, cx, co, xOffset, outOffset, len]
  const cases: [number, number, number, number, number, number][] = [
    [1, 1, 1, 0, 0, 1],
    [7, 13, 5, 8, 0, 5], // slice
    [300, 3, 11, 0, 4, 3], // into the middle of a wider row
    [33, 9, 9, 2, 6, 3],
    // vec4 units (all offsets and lengths 4-aligned), several workgroups of one-thread rows
    [130, 96, 32, 64, 0, 32],
    [70, 8, 20, 0, 12, 8],
    // rows past 256 columns: 8 threads per row, vec4 and scalar
    [5, 1200, 400, 400, 0, 400],
    [3, 300, 301, 1, 0, 299],
  ];
  for (const [R, cx, co, xo, oo, len] of cases) {
    const x = randn(R * cx, R + cx), prior = randn(R * co, co);
    const xt = Tensor.from(device, x, [R, cx]);
    for (const mode of [{}, { accumulate: true }, { zeroRest: true }]) {
      const out = Tensor.from(device, prior, [R, co]);
      const opts = { xOffset: xo, outOffset: oo, len, ...mode };
      copyColumns(out, xt, opts);
      const want = copyColumnsCpu(prior, x, { cx, co, ...opts });
      assertClose(await out.readF32(), want, {
        atol: 0,
        rtol: 1e-7,
        label: `${R},${cx},${co} ${Object.keys(mode)}`,
      });
    }
  }
});

Deno.test("slice and concat CPU backwards match finite differences", () => {
  const [R, C] = [3, 7];
  const x = f64(randn(R * C, 1)), G = f64(randn(R * 3, 2));
  const slice = (v: Float64Array) =>
    copyColumnsCpu(new Float64Array(R * 3), v, { cx: C, co: 3, xOffset: 2, len: 3 });
  const dx = copyColumnsCpu(new Float64Array(R * C), G, {
    cx: 3,
    co: C,
    outOffset: 2,
    zeroRest: true,
  });
  checkFiniteDiff(slice, x, G, dx, { label: "slice" });
  const shape = { B: 2, T: 2, H: 3, da: 2, ds: 3 };
  const a = f64(randn(2 * 2 * 3 * 2, 3)), sh = f64(randn(2 * 2 * 3, 4));
  const Gk = f64(randn(2 * 2 * 3 * 5, 5));
  const g = concatBroadcastHeadsBackwardCpu(Gk, shape);
  checkFiniteDiff((v) => concatBroadcastHeadsCpu(v, sh, shape), a, Gk, g.da, { label: "da" });
  checkFiniteDiff((v) => concatBroadcastHeadsCpu(a, v, shape), sh, Gk, g.dshared, {
    label: "dshared",
  });
  const xt = f64(randn(2 * 3 * 4 * 5, 6)), Gt = f64(randn(2 * 3 * 4 * 5, 7));
  const gt = transpose12Cpu(Gt, [2, 4, 3, 5]);
  checkFiniteDiff((v) => transpose12Cpu(v, [2, 3, 4, 5]), xt, Gt, gt, { label: "transpose12" });
});

Deno.test("concatBroadcastHeads and its backward match the CPU twin", GPU_TEST, async () => {
  const device = await testDevice();
  // scalar and vec4 units, several workgroups of rows (4 x 20 x 4), rows past 256 units
  const shapes: [number, number, number, number, number][] = [
    [1, 1, 1, 1, 1],
    [2, 5, 3, 7, 4],
    [1, 9, 16, 12, 8],
    [4, 20, 4, 16, 16],
    [1, 2, 2, 4, 300],
  ];
  for (const [B, T, H, da, ds] of shapes) {
    const shape = { B, T, H, da, ds };
    const a = randn(B * T * H * da, 1), sh = randn(B * T * ds, 2);
    const at = Tensor.from(device, a, [B, T, H, da]), st = Tensor.from(device, sh, [B, T, 1, ds]);
    const out = Tensor.empty(device, [B, T, H, da + ds]);
    concatBroadcastHeadsForward(out, at, st);
    assertClose(await out.readF32(), concatBroadcastHeadsCpu(a, sh, shape), { atol: 0 });
    const po = randn(out.size, 6), outa = Tensor.from(device, po, out.shape);
    concatBroadcastHeadsForward(outa, at, st, { accumulate: true });
    const wantAcc = concatBroadcastHeadsCpu(a, sh, shape).map((v, i) => v + po[i]);
    assertClose(await outa.readF32(), wantAcc, { label: "out acc" });
    const g = randn(out.size, 3);
    const want = concatBroadcastHeadsBackwardCpu(g, shape);
    const gt = Tensor.from(device, g, out.shape);
    const ga = Tensor.empty(device, at.shape), gs = Tensor.empty(device, st.shape);
    concatBroadcastHeadsBackward(ga, gs, gt);
    assertClose(await ga.readF32(), want.da, { atol: 0, label: "da" });
    assertClose(await gs.readF32(), want.dshared, { atol: 1e-6, label: "dshared" });
    const pa = randn(ga.size, 4), ps = randn(gs.size, 5);
    const gaa = Tensor.from(device, pa, at.shape), gsa = Tensor.from(device, ps, st.shape);
    concatBroadcastHeadsBackward(gaa, gsa, gt, { accumulateA: true, accumulateShared: true });
    assertClose(await gaa.readF32(), want.da.map((v, i) => v + pa[i]), { label: "da acc" });
    assertClose(await gsa.readF32(), want.dshared.map((v, i) => v + ps[i]), { label: "ds acc" });
  }
});

Deno.test("transpose12 matches the CPU twin and accumulates", GPU_TEST, async () => {
  const device = await testDevice();
  for (const shape of [[1, 1, 1, 1], [2, 5, 3, 7], [3, 17, 4, 33]]) {
    const x = randn(shape.reduce((a, b) => a * b), 9);
    const [A, B, C, D] = shape;
    const out = Tensor.empty(device, [A, C, B, D]);
    const xt = Tensor.from(device, x, shape);
    transpose12Forward(out, xt);
    const want = transpose12Cpu(x, shape);
    assertClose(await out.readF32(), want, { atol: 0 });
    transpose12Forward(out, xt, { accumulate: true });
    assertClose(await out.readF32(), want.map((v) => 2 * v), { label: "acc" });
  }
});

Deno.test("copy kernels run twice give identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const [B, T, H, da, ds] = [2, 30, 8, 16, 8];
  const g = Tensor.from(device, randn(B * T * H * (da + ds), 1), [B, T, H, da + ds]);
  const a = Tensor.empty(device, [B, T, 1, ds]), b = Tensor.empty(device, [B, T, 1, ds]);
  concatBroadcastHeadsBackward(null, a, g);
  concatBroadcastHeadsBackward(null, b, g);
  assertSameBits(await a.readF32(), await b.readF32());
});

Deno.test(
  "slice, concat, broadcast and transpose ops accumulate under the tape",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [B, T, H, dn, dr] = [2, 3, 4, 5, 3];
    // q [B, T, H, dn + dr] split and re-joined; k built from k_nope and a shared k_pe
    const qh = randn(B * T * H * (dn + dr), 1),
      kn = randn(B * T * H * dn, 2),
      kp = randn(B * T * dr, 3);
    const q = Tensor.from(device, qh, [B, T, H, dn + dr]);
    const kNope = Tensor.from(device, kn, [B, T, H, dn]),
      kPe = Tensor.from(device, kp, [B, T, 1, dr]);
    for (const t of [q, kNope, kPe]) t.requiresGrad = true;
    const tape = new Tape().start();
    const qNope = sliceLastDim(q, 0, dn), qPe = sliceLastDim(q, dn, dr);
    const q2 = concatLastDim([qNope, qPe]); // == q
    const k = concatBroadcastHeads(kNope, kPe);
    const y = transpose12(add(add(q2, k), q)); // [B, H, T, dn + dr]
    deepStrictEqual(y.shape, [B, H, T, dn + dr]);
    const g = randn(y.size, 4);
    tape.backward(y, Tensor.from(device, g, y.shape));
    const gBthd = transpose12Cpu(g, [B, H, T, dn + dr]); // back to [B, T, H, dn + dr]
    assertClose(await q.grad!.readF32(), gBthd.map((v) => 2 * v), { label: "dq" });
    const wk = concatBroadcastHeadsBackwardCpu(gBthd, { B, T, H, da: dn, ds: dr });
    assertClose(await kNope.grad!.readF32(), wk.da, { label: "dk_nope" });
    assertClose(await kPe.grad!.readF32(), wk.dshared, { label: "dk_pe" });
    assertClose(
      await y.readF32(),
      transpose12Cpu(
        qh.map((v, i) => 2 * v + concatBroadcastHeadsCpu(kn, kp, { B, T, H, da: dn, ds: dr })[i]),
        [B, T, H, dn + dr],
      ),
      { label: "y" },
    );
  },
);

Deno.test(
  "a slice's backward zero-fills the unsliced columns when it writes first",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [R, C] = [4, 9];
    const x = Tensor.from(device, randn(R * C, 1), [R, C]);
    x.requiresGrad = true;
    const tape = new Tape().start();
    const y = concatLastDim([sliceLastDim(x, 2, 3), sliceLastDim(x, 0, 2)]); // columns 5.. unused
    const g = randn(R * 5, 2);
    tape.backward(y, Tensor.from(device, g, [R, 5]));
    const want = new Float32Array(R * C);
    for (let r = 0; r < R; r++) {
      for (let j = 0; j < 3; j++) want[r * C + 2 + j] = g[r * 5 + j];
      for (let j = 0; j < 2; j++) want[r * C + j] = g[r * 5 + 3 + j];
    }
    assertClose(await x.grad!.readF32(), want, { atol: 0 });
  },
);
