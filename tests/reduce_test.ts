import {
  maxRows,
  meanRows,
  reduceBackward,
  reduceBackwardCpu,
  reduceCpu,
  reduceForward,
  type RowReduceOp,
  sumAll,
  sumAllBackward,
  sumAllBackwardCpu,
  sumAllCpu,
  sumAllForward,
  sumRows,
} from "../kernels/reduce.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";
import { deepStrictEqual as assertEquals } from "node:assert/strict";

const OPS: RowReduceOp[] = ["sum", "mean", "max"];
// Row plans (kernels/_rows.ts): one thread per row (ragged last workgroup at 130 x 64), 8 lanes
// per row, scalar and vec4 (257, 1000), 16 lanes (16900)
const SHAPES: [number, number][] = [
  [1, 1],
  [3, 7],
  [5, 33],
  [130, 64],
  [17, 257],
  [2, 1000],
  [2, 16900],
];

Deno.test("row reductions match the CPU twin for ragged shapes", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R * 100 + C, 2);
    const xt = Tensor.from(device, x, [R, C]);
    for (const op of OPS) {
      const out = Tensor.empty(device, [R]);
      const arg = Tensor.empty(device, [R], "i32");
      reduceForward(out, xt, { op, argmax: op === "max" ? arg : undefined });
      const want = reduceCpu(x, C, op);
      assertClose(await out.readF32(), want.out, { atol: 1e-5, label: `${op} ${R}x${C}` });
      if (op === "max") assertEquals([...await arg.read()], [...want.argmax]);
    }
  }
});

Deno.test("row reductions accumulate into out and still write the argmax", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of [[5, 33], [3, 1000]] as const) {
    const x = randn(R * C, R + 7 * C), prior = randn(R, C);
    const xt = Tensor.from(device, x, [R, C]);
    for (const op of OPS) {
      const out = Tensor.from(device, prior, [R]);
      const arg = Tensor.empty(device, [R], "i32");
      reduceForward(out, xt, { op, argmax: op === "max" ? arg : undefined, accumulate: true });
      const want = reduceCpu(x, C, op);
      const label = `${op} acc ${R}x${C}`;
      assertClose(await out.readF32(), want.out.map((v, i) => v + prior[i]), { label });
      if (op === "max") assertEquals([...await arg.read()], [...want.argmax]);
    }
  }
});

Deno.test("max ties go to the first index, forward and backward", GPU_TEST, async () => {
  const device = await testDevice();
  const C = 300;
  const x = new Float32Array(2 * C);
  x[5] = 2, x[77] = 2, x[299] = 2; // row 0: three maxima across different threads
  x.fill(-1, C);
  const out = Tensor.empty(device, [2]), arg = Tensor.empty(device, [2], "i32");
  reduceForward(out, Tensor.from(device, x, [2, C]), { op: "max", argmax: arg });
  assertEquals([...await arg.read()], [5, 0]);
  assertEquals([...reduceCpu(x, C, "max").argmax], [5, 0]);
  const dx = Tensor.empty(device, [2, C]);
  reduceBackward(dx, Tensor.from(device, [3, 4], [2]), { op: "max", argmax: arg });
  const got = await dx.readF32();
  assertEquals(got[5], 3);
  assertEquals(got[77], 0);
  assertEquals(got[C], 4);
  // one thread per row: ties inside one vec4 unit and across units
  const y = new Float32Array(128).fill(-3);
  y[7] = 1, y[6] = 1, y[70] = 1;
  const arg1 = Tensor.empty(device, [1], "i32");
  reduceForward(Tensor.empty(device, [1]), Tensor.from(device, y, [1, 128]), {
    op: "max",
    argmax: arg1,
  });
  assertEquals([...await arg1.read()], [6]);
});

Deno.test("row reduction CPU backwards match finite differences", () => {
  const R = 4, C = 9;
  const x = f64(randn(R * C, 7));
  const G = f64(randn(R, 8));
  for (const op of OPS) {
    const { argmax } = reduceCpu(x, C, op);
    const grad = reduceBackwardCpu(G, C, op, argmax);
    checkFiniteDiff((v) => reduceCpu(v, C, op).out, x, G, grad, { label: op });
  }
});

Deno.test("row reduction GPU backwards match the CPU and accumulate", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [R, C] of SHAPES) {
    const x = randn(R * C, R + C);
    const g = randn(R, R * C + 1);
    const prior = randn(R * C, 3);
    const xt = Tensor.from(device, x, [R, C]);
    for (const op of OPS) {
      const out = Tensor.empty(device, [R]);
      const arg = Tensor.empty(device, [R], "i32");
      reduceForward(out, xt, { op, argmax: arg.size && op === "max" ? arg : undefined });
      const want = reduceBackwardCpu(g, C, op, reduceCpu(x, C, op).argmax);
      const dx = Tensor.empty(device, [R, C]);
      const gt = Tensor.from(device, g, [R]);
      reduceBackward(dx, gt, { op, argmax: arg });
      assertClose(await dx.readF32(), want, { label: `${op} ${R}x${C}` });
      const dxa = Tensor.from(device, prior, [R, C]);
      reduceBackward(dxa, gt, { op, argmax: arg, accumulate: true });
      assertClose(await dxa.readF32(), want.map((v, i) => v + prior[i]), { label: `${op} acc` });
    }
  }
});

Deno.test("sumAll matches the CPU twin, squares, scales and accumulates", GPU_TEST, async () => {
  const device = await testDevice();
  for (const n of [1, 255, 1025, 5000, 300_001]) {
    const x = randn(n, n);
    const xt = Tensor.from(device, x, [n]);
    const out = Tensor.empty(device, [1]);
    sumAllForward(out, xt);
    const tol = { atol: 1e-5 * Math.sqrt(n), rtol: 1e-5 };
    assertClose(await out.readF32(), [sumAllCpu(x)], { ...tol, label: `sum n=${n}` });
    sumAllForward(out, xt, { square: true, scale: 0.5, accumulate: true });
    const want = sumAllCpu(x) + sumAllCpu(x, { square: true, scale: 0.5 });
    assertClose(await out.readF32(), [want], { ...tol, label: `sq acc n=${n}` });
  }
});

Deno.test("sumAll backward matches the CPU and finite differences", GPU_TEST, async () => {
  const device = await testDevice();
  const n = 777;
  const x = randn(n, 4);
  for (const square of [false, true]) {
    const opts = { square, scale: 0.3 };
    const x64 = f64(x.subarray(0, 12));
    checkFiniteDiff((v) => [sumAllCpu(v, opts)], x64, [1.7], sumAllBackwardCpu(x64, 1.7, opts));
    const dx = Tensor.empty(device, [n]);
    sumAllBackward(dx, Tensor.from(device, [1.7], [1]), {
      ...opts,
      x: Tensor.from(device, x, [n]),
    });
    assertClose(await dx.readF32(), sumAllBackwardCpu(x, 1.7, opts), { label: `square=${square}` });
  }
});

Deno.test("reductions run twice give identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const x = Tensor.from(device, randn(127 * 973, 5), [127, 973]);
  const a = Tensor.empty(device, [127]), b = Tensor.empty(device, [127]);
  reduceForward(a, x, { op: "mean" });
  reduceForward(b, x, { op: "mean" });
  assertSameBits(await a.readF32(), await b.readF32(), "mean");
  const s1 = Tensor.empty(device, [1]), s2 = Tensor.empty(device, [1]);
  sumAllForward(s1, x, { square: true });
  sumAllForward(s2, x, { square: true });
  assertSameBits(await s1.readF32(), await s2.readF32(), "sumAll");
});

Deno.test("reduction ops record backwards that accumulate under the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const R = 6, C = 11;
  const xh = randn(R * C, 12);
  const x = Tensor.from(device, xh, [2, 3, C]);
  x.requiresGrad = true;
  const tape = new Tape().start();
  // y = sum(x) + max(x) + mean(x) per row: three writers into x.grad.
  const y = add(add(sumRows(x), maxRows(x)), meanRows(x));
  assertEquals(y.shape, [2, 3]);
  const s = sumAll(y, { scale: 2 });
  tape.backward(s);
  const { argmax } = reduceCpu(xh, C, "max");
  const want = new Float32Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) want[r * C + c] = 2 * (1 + (c === argmax[r] ? 1 : 0) + 1 / C);
  }
  assertClose(await x.grad!.readF32(), want);
});

Deno.test("row kernels fold more than 65535 rows into a 2-D grid", GPU_TEST, async () => {
  const device = await testDevice();
  const R = 70_001, C = 3;
  const x = randn(R * C, 13);
  const out = Tensor.empty(device, [R]);
  reduceForward(out, Tensor.from(device, x, [R, C]), { op: "sum" });
  assertClose(await out.readF32(), reduceCpu(x, C, "sum").out, { atol: 1e-5 });
});
