import {
  ewCpu,
  ewForward,
  type EwOp,
  fill,
  sumToBias,
  sumToBiasCpu,
} from "../kernels/elementwise.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";

const OPS: EwOp[] = [
  "add",
  "mul",
  "scale",
  "silu",
  "sigmoid",
  "swiglu",
  "silu_bwd",
  "sigmoid_bwd",
  "swiglu_bwd_a",
  "swiglu_bwd_b",
];

Deno.test("elementwise kernels match their CPU twins for ragged sizes", GPU_TEST, async () => {
  const device = await testDevice();
  // scalar threads for sizes that are not multiples of 4, vec4 threads for 4, 1028, 4100
  for (const n of [1, 4, 255, 257, 1028, 4099, 4100]) {
    for (const op of OPS) {
      const arity = op === "scale" || op === "silu" || op === "sigmoid"
        ? 1
        : op === "swiglu_bwd_a"
        ? 3
        : 2;
      const host = Array.from({ length: arity }, (_, k) => randn(n, 10 * n + k, 2));
      const ins = host.map((h) => Tensor.from(device, h, [n]));
      const out = Tensor.empty(device, [n]);
      ewForward(op, out, ins, { scalar: 0.37 });
      assertClose(await out.readF32(), ewCpu(op, host, 0.37), { label: `${op} n=${n}` });
    }
  }
});

Deno.test("elementwise accumulate adds into the output", GPU_TEST, async () => {
  const device = await testDevice();
  const a = randn(1000, 1), b = randn(1000, 2), o = randn(1000, 3);
  const out = Tensor.from(device, o, [1000]);
  ewForward("mul", out, [Tensor.from(device, a, [1000]), Tensor.from(device, b, [1000])], {
    accumulate: true,
  });
  const want = ewCpu("mul", [a, b]).map((v, i) => v + o[i]);
  assertClose(await out.readF32(), want);
});

Deno.test("broadcast add and its bias reduction match the CPU twin", GPU_TEST, async () => {
  const device = await testDevice();
  const x = randn(37 * 19, 4), b = randn(19, 5);
  const out = Tensor.empty(device, [37, 19]);
  ewForward("add", out, [Tensor.from(device, x, [37, 19]), Tensor.from(device, b, [19])]);
  assertClose(await out.readF32(), ewCpu("add", [x, b]));
  const db = Tensor.empty(device, [19]);
  sumToBias(db, Tensor.from(device, x, [37, 19]));
  assertClose(await db.readF32(), sumToBiasCpu(x, 19), { atol: 1e-4 });
  // a bias of whole vec4s: the vec4 kernel wraps around it
  const y = randn(37 * 20, 6), c = randn(20, 7);
  const out2 = Tensor.empty(device, [37, 20]);
  ewForward("add", out2, [Tensor.from(device, y, [37, 20]), Tensor.from(device, c, [20])]);
  assertClose(await out2.readF32(), ewCpu("add", [y, c]));
});

Deno.test("the same elementwise op run twice gives identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const a = Tensor.from(device, randn(5000, 9), [5000]);
  const o1 = Tensor.empty(device, [5000]), o2 = Tensor.empty(device, [5000]);
  ewForward("silu", o1, [a]);
  ewForward("silu", o2, [a]);
  assertSameBits(await o1.readF32(), await o2.readF32());
});

Deno.test("fill, bias reduction and broadcast add accumulate as documented", GPU_TEST, async () => {
  const device = await testDevice();
  const out = Tensor.from(device, randn(1001, 1), [1001]);
  fill(out, -2.5);
  assertClose(await out.readF32(), new Float32Array(1001).fill(-2.5), { atol: 0 });
  const x = randn(23 * 13, 2), b = randn(13, 3), prior = randn(13, 4), o = randn(23 * 13, 5);
  const db = Tensor.from(device, prior, [13]);
  sumToBias(db, Tensor.from(device, x, [23, 13]), true);
  const wantDb = sumToBiasCpu(x, 13).map((v, i) => v + prior[i]);
  assertClose(await db.readF32(), wantDb, { atol: 1e-4 });
  const y = Tensor.from(device, o, [23, 13]);
  ewForward("add", y, [Tensor.from(device, x, [23, 13]), Tensor.from(device, b, [13])], {
    accumulate: true,
  });
  assertClose(await y.readF32(), ewCpu("add", [x, b]).map((v, i) => v + o[i]));
  // every op accumulates (vec4 and scalar sizes)
  for (const n of [12, 13]) {
    for (const op of OPS) {
      const arity = op === "scale" || op === "silu" || op === "sigmoid"
        ? 1
        : op === "swiglu_bwd_a"
        ? 3
        : 2;
      const host = Array.from({ length: arity }, (_, k) => randn(n, 7 * n + k, 2));
      const p = randn(n, n);
      const t = Tensor.from(device, p, [n]);
      ewForward(op, t, host.map((h) => Tensor.from(device, h, [n])), {
        scalar: -1.5,
        accumulate: true,
      });
      const want = ewCpu(op, host, -1.5).map((v, i) => v + p[i]);
      assertClose(await t.readF32(), want, { label: `${op} acc n=${n}` });
    }
  }
});
