import { throws as assertThrows } from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import {
  linear,
  linearBackwardCpu,
  linearCpu,
  matmul,
  matmulBackwardCpu,
  matmulCpu,
  matmulForward,
} from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";

/** Stored shapes of A and B for op(A) [M, K] @ op(B) [K, N] under the transposes. */
function stored(M: number, N: number, K: number, transA: boolean, transB: boolean) {
  return { aShape: transA ? [K, M] : [M, K], bShape: transB ? [N, K] : [K, N] };
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
/** f32 sums of up to ~130 products of N(0,1) values: absolute error grows like sqrt(K). */
const TOL = { atol: 2e-4, rtol: 1e-4 };

Deno.test(
  "matmulForward matches the CPU twin for ragged shapes and every transpose",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [3, 5, 7],
      [17, 33, 65],
      [64, 64, 64],
      [127, 129, 63],
      [36, 132, 30], // vec4 along m and n, with a K tail of 2
      [2, 300, 12], // few rows, many columns
    ];
    for (const [M, N, K] of shapes) {
      for (const [transA, transB] of TRANS) {
        const { aShape, bShape } = stored(M, N, K, transA, transB);
        const a = randn(M * K, M * 31 + K), b = randn(K * N, N * 17 + K + 1);
        const out = Tensor.empty(device, [M, N]);
        matmulForward(out, Tensor.from(device, a, aShape), Tensor.from(device, b, bShape), {
          transA,
          transB,
        });
        const want = matmulCpu(a, b, { aShape, bShape, transA, transB });
        assertClose(await out.readF32(), want, {
          ...TOL,
          label: `${M}x${N}x${K} tA${+transA} tB${+transB}`,
        });
      }
    }
  },
);

Deno.test("matmulForward scales by alpha and accumulates into the output", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [M, N, K] of [[13, 21, 9], [16, 32, 16]]) {
    for (const [transA, transB] of TRANS) {
      const { aShape, bShape } = stored(M, N, K, transA, transB);
      const a = randn(M * K, 1), b = randn(K * N, 2), c0 = randn(M * N, 3);
      const out = Tensor.from(device, c0, [M, N]);
      const opts = { transA, transB, alpha: -0.75 };
      matmulForward(out, Tensor.from(device, a, aShape), Tensor.from(device, b, bShape), {
        ...opts,
        accumulate: true,
      });
      const want = matmulCpu(a, b, { aShape, bShape, ...opts, out: c0 });
      assertClose(await out.readF32(), want, { ...TOL, label: `${M}x${N}x${K} acc` });
    }
  }
});

Deno.test(
  "batched matmul broadcasts a 2-D operand and sums batches on request",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [M, N, K] = [9, 13, 11];
    for (const [transA, transB] of TRANS) {
      const { aShape: a2, bShape: b2 } = stored(M, N, K, transA, transB);
      const cases: { aShape: number[]; bShape: number[]; sumBatch?: boolean }[] = [
        { aShape: [2, 3, ...a2], bShape: [2, 3, ...b2] },
        { aShape: [2, 3, ...a2], bShape: b2 },
        { aShape: a2, bShape: [3, ...b2] },
        { aShape: [3, ...a2], bShape: [3, ...b2], sumBatch: true },
      ];
      for (const { aShape, bShape, sumBatch } of cases) {
        const na = aShape.reduce((p, d) => p * d), nb = bShape.reduce((p, d) => p * d);
        const a = randn(na, na), b = randn(nb, nb + 1);
        const opts = { aShape, bShape, transA, transB, sumBatch };
        const want = matmulCpu(a, b, opts);
        const batch = sumBatch ? [] : (aShape.length > 2 ? aShape : bShape).slice(0, -2);
        const out = Tensor.empty(device, [...batch, M, N]);
        matmulForward(out, Tensor.from(device, a, aShape), Tensor.from(device, b, bShape), opts);
        assertClose(await out.readF32(), want, {
          ...TOL,
          label: `[${aShape}] @ [${bShape}] tA${+transA} tB${+transB}${sumBatch ? " sum" : ""}`,
        });
      }
    }
  },
);

Deno.test("matmulForward folds grids past 65535 workgroups", GPU_TEST, async () => {
  const device = await testDevice();
  // 65537 batch entries of 1x1x2, and 12 * 65536 + 5 rows of one column.
  const Z = 65537;
  const a = randn(Z * 2, 5), b = randn(Z * 2, 6);
  const out = Tensor.empty(device, [Z, 1, 1]);
  matmulForward(out, Tensor.from(device, a, [Z, 1, 2]), Tensor.from(device, b, [Z, 2, 1]));
  assertClose(await out.readF32(), matmulCpu(a, b, { aShape: [Z, 1, 2], bShape: [Z, 2, 1] }), TOL);
  const M = 12 * 65536 + 5;
  const x = randn(M, 7), w = randn(1, 8);
  const y = Tensor.empty(device, [M, 1]);
  matmulForward(y, Tensor.from(device, x, [M, 1]), Tensor.from(device, w, [1, 1]), {
    transB: true,
  });
  assertClose(await y.readF32(), matmulCpu(x, w, { aShape: [M, 1], bShape: [1, 1] }), TOL);
});

Deno.test(
  "matmulForward rejects mismatched shapes with both shapes in the message",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const a = Tensor.zeros(device, [3, 4]), b = Tensor.zeros(device, [5, 6]);
    assertThrows(() => matmulForward(Tensor.empty(device, [3, 6]), a, b), /\[3,4\].*\[5,6\]/);
    assertThrows(
      () => matmulForward(Tensor.empty(device, [3, 6]), a, Tensor.zeros(device, [4, 5]), {}),
      /out is \[3,6\]/,
    );
    assertThrows(
      () =>
        matmulForward(
          Tensor.empty(device, [2, 3, 5]),
          Tensor.zeros(device, [2, 3, 4]),
          Tensor.zeros(device, [3, 4, 5]),
        ),
      /batch dims/,
    );
  },
);

Deno.test("the same matmul run twice gives identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  // scalar loads with a K tail, then the vec4 12x16 path
  for (const [M, N, K] of [[67, 45, 129], [40, 136, 64]]) {
    const a = Tensor.from(device, randn(M * K, 11), [M, K]);
    const b = Tensor.from(device, randn(N * K, 12), [N, K]);
    const o1 = Tensor.empty(device, [M, N]), o2 = Tensor.empty(device, [M, N]);
    matmulForward(o1, a, b, { transB: true });
    matmulForward(o2, a, b, { transB: true });
    assertSameBits(await o1.readF32(), await o2.readF32(), `matmul rerun ${M}x${N}x${K}`);
  }
});

Deno.test("the CPU matmul backward matches finite differences for every transpose", () => {
  const [M, N, K] = [3, 4, 5];
  for (const [transA, transB] of TRANS) {
    for (const batched of ["both", "a", "b"]) {
      const { aShape: a2, bShape: b2 } = stored(M, N, K, transA, transB);
      const aShape = batched !== "b" ? [2, ...a2] : a2, bShape = batched !== "a" ? [2, ...b2] : b2;
      const opts = { aShape, bShape, transA, transB, alpha: 0.5 };
      const a = f64(randn(aShape.reduce((p, d) => p * d), 21));
      const b = f64(randn(bShape.reduce((p, d) => p * d), 22));
      const G = randn(2 * M * N, 23);
      const { da, db } = matmulBackwardCpu(f64(G), { a, b, ...opts });
      const label = `tA${+transA} tB${+transB} batched ${batched}`;
      checkFiniteDiff((x) => matmulCpu(x, b, opts), a, G, da, { label: `${label} da` });
      checkFiniteDiff((x) => matmulCpu(a, x, opts), b, G, db, { label: `${label} db` });
    }
  }
});

Deno.test(
  "matmul backward on the GPU matches the CPU twin, broadcast and accumulate",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [M, N, K] = [7, 10, 9];
    for (const [transA, transB] of TRANS) {
      for (const batched of ["both", "a", "b"]) {
        const { aShape: a2, bShape: b2 } = stored(M, N, K, transA, transB);
        const aShape = batched !== "b" ? [3, ...a2] : a2,
          bShape = batched !== "a" ? [3, ...b2] : b2;
        const ha = randn(aShape.reduce((p, d) => p * d), 31);
        const hb = randn(bShape.reduce((p, d) => p * d), 32);
        const hg = randn(3 * M * N, 33), hb0 = randn(hb.length, 34);
        const a = Tensor.from(device, ha, aShape), b = Tensor.from(device, hb, bShape);
        a.requiresGrad = b.requiresGrad = true;
        b.grad = Tensor.from(device, hb0, bShape); // b's gradient already holds something: add into it
        const tape = new Tape().start();
        const c = matmul(a, b, { transA, transB, alpha: 1.5 });
        tape.backward(c, Tensor.from(device, hg, c.shape));
        const want = matmulBackwardCpu(hg, {
          a: ha,
          b: hb,
          aShape,
          bShape,
          transA,
          transB,
          alpha: 1.5,
        });
        const label = `tA${+transA} tB${+transB} batched ${batched}`;
        assertClose(
          await c.readF32(),
          matmulCpu(ha, hb, { aShape, bShape, transA, transB, alpha: 1.5 }),
          TOL,
        );
        assertClose(await a.grad!.readF32(), want.da, { ...TOL, label: `${label} da` });
        assertClose(await b.grad!.readF32(), want.db.map((v, i) => v + hb0[i]), {
          ...TOL,
          label: `${label} db`,
        });
      }
    }
  },
);

Deno.test("linear's CPU backward matches finite differences", () => {
  const [rows, fin, fout] = [4, 5, 3];
  const x = f64(randn(rows * fin, 41)), w = f64(randn(fout * fin, 42)), G = randn(rows * fout, 43);
  const { dx, dw } = linearBackwardCpu(f64(G), { x, w, fout, alpha: 0.25 });
  checkFiniteDiff((v) => linearCpu(v, w, { fout, alpha: 0.25 }), x, G, dx, { label: "dx" });
  checkFiniteDiff((v) => linearCpu(x, v, { fout, alpha: 0.25 }), w, G, dw, { label: "dw" });
});

Deno.test("linear forward and backward on the GPU match the CPU twin", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [B, T, fin, fout] of [[2, 5, 12, 20], [1, 33, 64, 48], [3, 1, 7, 9]]) {
    const hx = randn(B * T * fin, fin), hw = randn(fout * fin, fout), hg = randn(B * T * fout, 3);
    const hw0 = randn(fout * fin, 4);
    const x = Tensor.from(device, hx, [B, T, fin]), w = Tensor.from(device, hw, [fout, fin]);
    x.requiresGrad = w.requiresGrad = true;
    w.grad = Tensor.from(device, hw0, [fout, fin]); // a parameter gradient accumulates
    const tape = new Tape().start();
    const y = linear(x, w);
    tape.backward(y, Tensor.from(device, hg, y.shape));
    const label = `[${B},${T},${fin}] -> ${fout}`;
    assertClose(await y.readF32(), linearCpu(hx, hw, { fout }), { ...TOL, label: `${label} y` });
    const want = linearBackwardCpu(hg, { x: hx, w: hw, fout });
    assertClose(await x.grad!.readF32(), want.dx, { ...TOL, label: `${label} dx` });
    assertClose(await w.grad!.readF32(), want.dw.map((v, i) => v + hw0[i]), {
      ...TOL,
      label: `${label} dw`,
    });
  }
});
