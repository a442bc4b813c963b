import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import {
  assertF16,
  f16Gemm,
  f16GemmCpu,
  fp8Gemm,
  fp8GemmCpu,
  linearF16,
  linearF16BackwardCpu,
  linearF16Cpu,
  linearFp8,
  linearFp8BackwardCpu,
  linearFp8Cpu,
  toHalf,
  toHalfCpu,
} from "../kernels/lowp_linear.ts";
import { linear } from "../kernels/matmul.ts";
import { quantize, quantizeCpu } from "../kernels/quant.ts";
import { f32ToF16, Tensor } from "../kernels/tensor.ts";
import {
  checkPrecision,
  linearF32,
  linearFor,
  parsePrecision,
  PRECISIONS,
} from "../model/precision.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";

const device = await testDevice();
const F16_SKIP = "skipped: this adapter lacks shader-f16";
if (!device.hasF16) console.warn(`lowp_linear_test: f16 tests ${F16_SKIP}`);
const F16_TEST = { ...GPU_TEST, ignore: !device.hasF16 };

/** (M, K, N): ragged, K below, above and not a multiple of 128, and leading dims for x. */
const SHAPES: { x: number[]; K: number; N: number }[] = [
  { x: [5], K: 7, N: 3 },
  { x: [37], K: 300, N: 45 },
  { x: [2, 65], K: 260, N: 129 },
  { x: [130], K: 128, N: 17 },
];

/** Relative Frobenius error |a - b| / |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

type Op = (x: Tensor, w: Tensor) => Tensor;

/** Runs `op` forward and backward on the GPU; returns y, dx, dw. */
async function runOp(
  op: Op,
  host: { x: Float32Array; w: Float32Array; dy: Float32Array },
  shape: { x: number[]; K: number; N: number },
) {
  const x = Tensor.from(device, host.x, [...shape.x, shape.K]);
  const w = Tensor.from(device, host.w, [shape.N, shape.K]);
  x.requiresGrad = w.requiresGrad = true;
  const tape = new Tape().start();
  const y = op(x, w);
  // seed dL/dy = dy through a sum of y * dy
  tape.backward(y, Tensor.from(device, host.dy, y.shape));
  return { y: await y.readF32(), dx: await x.grad!.readF32(), dw: await w.grad!.readF32() };
}

function hostData(shape: { x: number[]; K: number; N: number }, seed: number) {
  const M = shape.x.reduce((p, d) => p * d, 1);
  return {
    M,
    x: randn(M * shape.K, seed),
    w: randn(shape.N * shape.K, seed + 1, 0.05),
    dy: randn(M * shape.N, seed + 2),
  };
}

// The kernels sum in the CPU twins' order, so the tolerance only allows for a compiler that
// contracts the fp8 promotion `acc + blockSum * scale` into an fma (lavapipe does not: the
// results are identical bits there).
const TWIN_TOL = { atol: 1e-6, rtol: 1e-6 };

Deno.test("fp8Gemm() matches its CPU twin with block and with tile scales", GPU_TEST, async () => {
  for (const [M, K, N] of [[9, 131, 70], [33, 400, 130], [1, 5, 1]]) {
    const a = randn(M * K, M), b = randn(N * K, N, 3);
    const qa = quantize(Tensor.from(device, a, [M, K]));
    const qaCpu = quantizeCpu(a, { rows: M, cols: K });
    for (const block of [true, false]) {
      const qb = quantize(Tensor.from(device, b, [N, K]), { block });
      const want = fp8GemmCpu(qaCpu, quantizeCpu(b, { rows: N, cols: K, block }));
      for (const accumulate of [true, false]) {
        // without accumulate, out's old contents (NaN here) must be overwritten
        const init = accumulate ? randn(M * N, 4) : new Float32Array(M * N).fill(NaN);
        const out = Tensor.from(device, init, [M, N]);
        fp8Gemm(out, qa, qb, { accumulate });
        assertClose(await out.readF32(), accumulate ? want.map((v, i) => v + init[i]) : want, {
          ...TWIN_TOL,
          label: `[${M}, ${K}, ${N}] block ${block} accumulate ${accumulate}`,
        });
      }
    }
  }
});

Deno.test(
  "fp8Gemm() makes the outputs of a NaN tile NaN and leaves the other outputs finite",
  GPU_TEST,
  async () => {
    const M = 3, K = 200, N = 5;
    const a = randn(M * K, 1), b = randn(N * K, 2);
    a[K + 150] = NaN; // row 1, K block 1
    const qa = quantize(Tensor.from(device, a, [M, K]));
    const qb = quantize(Tensor.from(device, b, [N, K]), { block: true });
    const out = Tensor.empty(device, [M, N]);
    fp8Gemm(out, qa, qb);
    const got = await out.readF32();
    for (let i = 0; i < M * N; i++) {
      assert.equal(Number.isNaN(got[i]), Math.floor(i / N) === 1, `out[${i}] = ${got[i]}`);
    }
    const want = fp8GemmCpu(
      quantizeCpu(a, { rows: M, cols: K }),
      quantizeCpu(b, { rows: N, cols: K, block: true }),
    );
    const finite = (_: number, i: number) => Math.floor(i / N) !== 1;
    assertClose(got.filter(finite), want.filter(finite), TWIN_TOL);
  },
);

Deno.test(
  "linearFp8() forward and backward match the CPU twins for ragged M, N, K",
  GPU_TEST,
  async () => {
    for (const [s, shape] of SHAPES.entries()) {
      const h = hostData(shape, 10 * s + 1);
      const got = await runOp(linearFp8, h, shape);
      const label = `x [${shape.x}, ${shape.K}], w [${shape.N}, ${shape.K}]`;
      assertClose(got.y, linearFp8Cpu(h.x, h.w, { fout: shape.N }), { ...TWIN_TOL, label });
      const { dx, dw } = linearFp8BackwardCpu(h.dy, { x: h.x, w: h.w, fout: shape.N });
      assertClose(got.dx, dx, { ...TWIN_TOL, label: `dx of ${label}` });
      assertClose(got.dw, dw, { ...TWIN_TOL, label: `dw of ${label}` });
    }
  },
);

Deno.test(
  "linearFp8() is within 5% (relative Frobenius) of the f32 linear on normal data, both ways",
  GPU_TEST,
  async () => {
    // a transformer-like shape: 256 tokens, 384 -> 320 features
    const shape = { x: [256], K: 384, N: 320 };
    const h = hostData(shape, 77);
    const f8 = await runOp(linearFp8, h, shape);
    const f32 = await runOp(linearF32, h, shape);
    // measured on lavapipe: y 0.037, dx 0.037, dw 0.036 (E4M3 keeps 3 mantissa bits)
    for (const k of ["y", "dx", "dw"] as const) {
      const e = relErr(f8[k], f32[k]);
      assert.ok(e < 0.05 && e > 0.005, `${k}: relative error ${e}`);
    }
  },
);

Deno.test(
  "linearFp8() adds into existing gradients and gives the same bits on rerun",
  GPU_TEST,
  async () => {
    const shape = { x: [40], K: 200, N: 24 };
    const h = hostData(shape, 5);
    const run = async (preGrad: boolean) => {
      const x = Tensor.from(device, h.x, [40, 200]);
      const w = Tensor.from(device, h.w, [24, 200]);
      x.requiresGrad = w.requiresGrad = true;
      // a parameter's gradient lives in the arena and is added into, like here
      if (preGrad) w.grad = Tensor.from(device, new Float32Array(24 * 200).fill(0.5), [24, 200]);
      const tape = new Tape().start();
      const y = linearFp8(x, w);
      tape.backward(y, Tensor.from(device, h.dy, y.shape));
      return { y: await y.readF32(), dw: await w.grad!.readF32() };
    };
    const a = await run(false), b = await run(false), c = await run(true);
    assertSameBits(a.y, b.y, "y");
    assertSameBits(a.dw, b.dw, "dw");
    assertClose(c.dw, a.dw.map((v) => v + 0.5), { atol: 1e-6, rtol: 1e-6 });
  },
);

Deno.test("toHalf() rounds like f32ToF16, transposes and zero-pads rows", F16_TEST, async () => {
  const specials = [
    0,
    -0,
    1,
    -1,
    65504,
    65520,
    65519.99,
    1e6,
    -1e6,
    Infinity,
    -Infinity,
    NaN,
    1e-40,
    2 ** -24,
    2 ** -25,
    1.5 * 2 ** -25,
    2 ** -14 * 1.0009765625,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
  ];
  const x = randn(7 * 13, 3, 100);
  specials.forEach((v, i) => x[i * 4] = v);
  for (const transpose of [false, true]) {
    const [R, C] = transpose ? [13, 7] : [7, 13];
    const h = toHalf(Tensor.from(device, x, [7, 13]), { transpose });
    assert.deepEqual(h.t.shape, [R, Math.ceil(C / 4) * 4]);
    const raw = new Uint16Array(await device.read(h.t.binding));
    const want = toHalfCpu(x, { rows: R, cols: C, transpose });
    assert.deepEqual([...raw], [...want], `transpose ${transpose}`);
  }
  // the twin is tensor.ts's f32ToF16 with padding
  const one = toHalfCpu(Float32Array.of(1.5, -2, 3), { rows: 1, cols: 3 });
  assert.deepEqual([...one], [...f32ToF16(Float32Array.of(1.5, -2, 3)), 0]);
});

Deno.test("f16Gemm() matches its CPU twin", F16_TEST, async () => {
  const M = 19, K = 135, N = 70;
  const a = randn(M * K, 1), b = randn(N * K, 2);
  const out = Tensor.empty(device, [M, N]);
  f16Gemm(out, toHalf(Tensor.from(device, a, [M, K])), toHalf(Tensor.from(device, b, [N, K])));
  const want = f16GemmCpu(toHalfCpu(a, { rows: M, cols: K }), toHalfCpu(b, { rows: N, cols: K }), {
    M,
    N,
    K,
  });
  // f16 products are exact in f32 and summed in the twin's order: identical bits
  assertSameBits(await out.readF32(), want, "f16Gemm");
});

Deno.test(
  "linearF16() forward and backward match the CPU twins and stay within 0.1% of f32",
  F16_TEST,
  async () => {
    for (const [s, shape] of SHAPES.entries()) {
      const h = hostData(shape, 10 * s + 3);
      const got = await runOp(linearF16, h, shape);
      const label = `x [${shape.x}, ${shape.K}], w [${shape.N}, ${shape.K}]`;
      assertClose(got.y, linearF16Cpu(h.x, h.w, { fout: shape.N }), { ...TWIN_TOL, label });
      const { dx, dw } = linearF16BackwardCpu(h.dy, { x: h.x, w: h.w, fout: shape.N });
      assertClose(got.dx, dx, { ...TWIN_TOL, label: `dx of ${label}` });
      assertClose(got.dw, dw, { ...TWIN_TOL, label: `dw of ${label}` });
      const f32 = await runOp(linearF32, h, shape);
      // measured: about 3e-4 (f16 keeps 10 mantissa bits)
      for (const k of ["y", "dx", "dw"] as const) {
        const e = relErr(got[k], f32[k]);
        assert.ok(e < 1e-3, `${label} ${k}: relative error ${e}`);
      }
    }
  },
);

Deno.test("f16 on an adapter without shader-f16 fails with a message saying what to do", () => {
  const noF16 = { hasF16: false, info: { description: "some adapter" } };
  assert.throws(() => assertF16(noF16), /shader-f16.*some adapter.*--precision f32/);
  assert.throws(() => checkPrecision(noF16, "f16"), /shader-f16/);
  checkPrecision(noF16, "fp8");
  checkPrecision({ hasF16: true, info: { description: "" } }, "f16");
  const cpu = { hasF16: false, info: { description: "CPU backend", backend: "cpu" } };
  assert.throws(() => assertF16(cpu), /CPU backend.*--precision f32 or --precision fp8/);
});

// The CPU backend computes in f32: every f16 entry point must refuse its tensors with the message
// above instead of reaching a WebGPU-only path. Other backends run the f16 tests instead.
Deno.test(
  "on the CPU backend toHalf(), f16Gemm() and linearF16() refuse f16, naming --precision f32/fp8",
  { ...GPU_TEST, ignore: device.kind !== "cpu" },
  () => {
    const x = Tensor.from(device, randn(8, 1), [2, 4]);
    const w = Tensor.from(device, randn(12, 2), [3, 4]);
    const msg = /shader-f16.*CPU backend.*--precision f32 or --precision fp8/;
    assert.throws(() => toHalf(x), msg);
    assert.throws(() => toHalf(x, { transpose: true }), msg);
    assert.throws(() => linearF16(x, w), msg);
    const h = { t: Tensor.empty(device, [2, 4], "f16"), rows: 2, cols: 4 };
    assert.throws(() => f16Gemm(Tensor.empty(device, [2, 2]), h, h), msg);
    assert.throws(() => checkPrecision(device, "f16"), msg);
    checkPrecision(device, "fp8");
  },
);

Deno.test("linearFor() maps each precision to its op; parsePrecision() names the choices", () => {
  assert.equal(linearFor("f32"), linearF32);
  assert.equal(linearFor("f16"), linearF16);
  assert.equal(linearFor("fp8"), linearFp8);
  assert.deepEqual([...PRECISIONS], ["f32", "f16", "fp8"]);
  assert.equal(parsePrecision("fp8"), "fp8");
  assert.throws(() => parsePrecision("bf16"), /--precision: expected one of f32, f16, fp8/);
  assert.throws(() => linearFor("int4" as never), /unknown precision "int4"/);
});

Deno.test("linearF32 is the f32 linear", GPU_TEST, async () => {
  const x = Tensor.from(device, randn(6 * 10, 1), [6, 10]);
  const w = Tensor.from(device, randn(4 * 10, 2), [4, 10]);
  assertSameBits(await linearF32(x, w).readF32(), await linear(x, w).readF32(), "linearF32");
});
