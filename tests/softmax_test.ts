import {
  softmax,
  softmaxBackward,
  softmaxBackwardCpu,
  softmaxCpu,
  softmaxForward,
} from "../kernels/softmax.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";

// Row plans (kernels/_rows.ts): one thread per row (ragged last workgroup at 130 x 64), 8 lanes
// per row, scalar and vec4, and 16 lanes (16901).
const SHAPES: [number, number][] = [
  [1, 1],
  [3, 7],
  [5, 33],
  [130, 64],
  [9, 257],
  [2, 6400],
  [2, 16901],
];

Deno.test("softmax matches the CPU twin for ragged shapes", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R * 31 + C, 3);
    x[0] += 60; // a large logit: the max subtraction must keep exp finite
    const y = Tensor.empty(device, [R, C]);
    softmaxForward(y, Tensor.from(device, x, [R, C]));
    assertClose(await y.readF32(), softmaxCpu(x, C), {
      atol: 1e-6,
      rtol: 1e-4,
      label: `${R}x${C}`,
    });
  }
});

Deno.test(
  "softmax of a fully masked row is zeros, partly masked rows ignore -inf",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const C = 40;
    const x = randn(3 * C, 2);
    x.fill(-Infinity, 0, C);
    x.fill(-Infinity, C + 3, 2 * C);
    const y = Tensor.empty(device, [3, C]);
    softmaxForward(y, Tensor.from(device, x, [3, C]));
    assertClose(await y.readF32(), softmaxCpu(x, C), { atol: 1e-6 });
  },
);

Deno.test("softmax CPU backward matches finite differences", () => {
  for (const [R, C] of [[2, 5], [3, 1], [1, 13]]) {
    const x = f64(randn(R * C, C, 2));
    const G = f64(randn(R * C, C + 1));
    const grad = softmaxBackwardCpu(G, softmaxCpu(x, C), C);
    checkFiniteDiff((v) => softmaxCpu(v, C), x, G, grad, { label: `${R}x${C}` });
  }
});

Deno.test("softmax GPU backward matches the CPU and accumulates", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R + C, 2), dy = randn(R * C, R * C), prior = randn(R * C, 5);
    const y = softmaxCpu(x, C);
    const yt = Tensor.from(device, y, [R, C]), dyt = Tensor.from(device, dy, [R, C]);
    const want = softmaxBackwardCpu(dy, y, C);
    const dx = Tensor.empty(device, [R, C]);
    softmaxBackward(dx, dyt, yt);
    assertClose(await dx.readF32(), want, { atol: 1e-6, label: `${R}x${C}` });
    const dxa = Tensor.from(device, prior, [R, C]);
    softmaxBackward(dxa, dyt, yt, { accumulate: true });
    assertClose(await dxa.readF32(), want.map((v, i) => v + prior[i]), { atol: 1e-6 });
  }
});

Deno.test("softmax run twice gives identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const x = Tensor.from(device, randn(37 * 1001, 3, 4), [37, 1001]);
  const a = Tensor.empty(device, [37, 1001]), b = Tensor.empty(device, [37, 1001]);
  softmaxForward(a, x);
  softmaxForward(b, x);
  assertSameBits(await a.readF32(), await b.readF32());
});

Deno.test("softmax op records a backward that accumulates under the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const R = 4, C = 19;
  const xh = randn(R * C, 8), g = randn(R * C, 9);
  const x = Tensor.from(device, xh, [R, C]);
  x.requiresGrad = true;
  const tape = new Tape().start();
  const y = add(softmax(x), softmax(x));
  tape.backward(y, Tensor.from(device, g, [R, C]));
  const one = softmaxBackwardCpu(g, softmaxCpu(xh, C), C);
  assertClose(await x.grad!.readF32(), one.map((v) => 2 * v), { atol: 1e-6 });
});
