import {
  rmsnorm,
  rmsnormBackward,
  rmsnormBackwardCpu,
  rmsnormCpu,
  rmsnormForward,
} from "../kernels/rmsnorm.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";

// Row plans (kernels/_rows.ts): one thread per row, several workgroups with a ragged last one
// (130 x 48), scalar and vec4 rows, 8 lanes per row (700, 4099) and 16 (16900).
const SHAPES: [number, number][] = [
  [1, 1],
  [3, 7],
  [33, 64],
  [130, 48],
  [70, 129],
  [5, 700],
  [3, 4099],
  [2, 16900],
];

Deno.test("rmsnorm matches the CPU twin for ragged shapes", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R * 7 + C, 2), w = randn(C, C, 1);
    const y = Tensor.empty(device, [R, C]), rrms = Tensor.empty(device, [R]);
    rmsnormForward(y, rrms, Tensor.from(device, x, [R, C]), Tensor.from(device, w, [C]));
    const want = rmsnormCpu(x, w);
    assertClose(await y.readF32(), want.y, { label: `y ${R}x${C}` });
    assertClose(await rrms.readF32(), want.rrms, { label: `rrms ${R}x${C}` });
  }
});

Deno.test("rmsnorm CPU backward matches finite differences in x and w", () => {
  const R = 3, C = 6, eps = 1e-3;
  const x = f64(randn(R * C, 1)), w = f64(randn(C, 2)), G = f64(randn(R * C, 3));
  const { rrms } = rmsnormCpu(x, w, { eps });
  const { dx, dw } = rmsnormBackwardCpu(G, x, w, rrms);
  checkFiniteDiff((v) => rmsnormCpu(v, w, { eps }).y, x, G, dx, { label: "dx" });
  checkFiniteDiff((v) => rmsnormCpu(x, v, { eps }).y, w, G, dw, { label: "dw" });
});

Deno.test("rmsnorm GPU backward matches the CPU and accumulates", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R + C), w = randn(C, 2 * C), dy = randn(R * C, R * C);
    const { rrms } = rmsnormCpu(x, w);
    const want = rmsnormBackwardCpu(dy, x, w, rrms);
    const [xt, wt, dyt, rt] = [
      Tensor.from(device, x, [R, C]),
      Tensor.from(device, w, [C]),
      Tensor.from(device, dy, [R, C]),
      Tensor.from(device, rrms, [R]),
    ];
    const dx = Tensor.empty(device, [R, C]), dw = Tensor.empty(device, [C]);
    rmsnormBackward(dx, dw, dyt, xt, wt, rt);
    const tol = { atol: 1e-5, rtol: 1e-4 };
    assertClose(await dx.readF32(), want.dx, { ...tol, label: `dx ${R}x${C}` });
    assertClose(await dw.readF32(), want.dw, { ...tol, atol: 1e-5 * R, label: `dw ${R}x${C}` });
    const px = randn(R * C, 11), pw = randn(C, 12);
    const dxa = Tensor.from(device, px, [R, C]), dwa = Tensor.from(device, pw, [C]);
    rmsnormBackward(dxa, dwa, dyt, xt, wt, rt, { accumulateX: true, accumulateW: true });
    assertClose(await dxa.readF32(), want.dx.map((v, i) => v + px[i]), { ...tol, label: "dx acc" });
    assertClose(await dwa.readF32(), want.dw.map((v, i) => v + pw[i]), {
      ...tol,
      atol: 1e-5 * R,
      label: "dw acc",
    });
  }
});

Deno.test("rmsnorm forward and backward run twice give identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const R = 200, C = 96;
  const x = Tensor.from(device, randn(R * C, 1), [R, C]), w = Tensor.from(device, randn(C, 2), [C]);
  const dy = Tensor.from(device, randn(R * C, 3), [R, C]);
  const run = async () => {
    const y = Tensor.empty(device, [R, C]), r = Tensor.empty(device, [R]);
    rmsnormForward(y, r, x, w);
    const dx = Tensor.empty(device, [R, C]), dw = Tensor.empty(device, [C]);
    rmsnormBackward(dx, dw, dy, x, w, r);
    return [await y.readF32(), await dx.readF32(), await dw.readF32()];
  };
  const a = await run(), b = await run();
  a.forEach((v, i) => assertSameBits(v, b[i], `output ${i}`));
});

Deno.test("rmsnorm op records a backward that accumulates under the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const R = 5, C = 24;
  const xh = randn(R * C, 1), wh = randn(C, 2), g = randn(R * C, 3);
  const x = Tensor.from(device, xh, [R, C]), w = Tensor.from(device, wh, [C]);
  x.requiresGrad = true;
  w.requiresGrad = true;
  const tape = new Tape().start();
  const y = add(rmsnorm(x, w), rmsnorm(x, w));
  tape.backward(y, Tensor.from(device, g, [R, C]));
  const want = rmsnormBackwardCpu(g, xh, wh, rmsnormCpu(xh, wh).rrms);
  assertClose(await x.grad!.readF32(), want.dx.map((v) => 2 * v), { label: "dx" });
  assertClose(await w.grad!.readF32(), want.dw.map((v) => 2 * v), { atol: 1e-4, label: "dw" });
});
