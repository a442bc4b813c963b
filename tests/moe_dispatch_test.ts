import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import {
  type DispatchShape,
  gatherRows,
  gatherRowsBackward,
  gatherRowsBackwardCpu,
  gatherRowsCpu,
  gatherRowsForward,
  invertPermutation,
  invertPermutationCpu,
  permFromChoicesCpu,
  scatterWeighted,
  scatterWeightedBackward,
  scatterWeightedBackwardCpu,
  scatterWeightedCpu,
  scatterWeightedForward,
} from "../kernels/moe_dispatch.ts";
import { Tensor } from "../kernels/tensor.ts";
import {
  assertClose,
  assertSameBits,
  finiteDiff,
  GPU_TEST,
  randn,
  rng,
  testDevice,
} from "./_util.ts";

/** Each token picks K distinct experts among `allowed` (seeded), as a router would. */
function randomChoices(N: number, K: number, allowed: number[], seed: number): Int32Array {
  const r = rng(seed);
  const out = new Int32Array(N * K);
  for (let t = 0; t < N; t++) {
    const pool = [...allowed];
    for (let s = 0; s < K; s++) out[t * K + s] = pool.splice(Math.floor(r() * pool.length), 1)[0];
  }
  return out;
}

interface Case extends DispatchShape {
  E: number;
  allowed: number[];
}

// N=7, K=2, E=5 with experts 1 and 3 receiving nothing; D not a multiple of anything.
const CASES: Case[] = [
  { N: 7, K: 2, D: 13, E: 5, allowed: [0, 2, 4] },
  { N: 33, K: 3, D: 300, E: 6, allowed: [0, 1, 2, 3, 4, 5] },
  { N: 1, K: 1, D: 1, E: 1, allowed: [0] },
];

function routing(c: Case, seed: number) {
  const choices = randomChoices(c.N, c.K, c.allowed, seed);
  const { perm, offsets } = permFromChoicesCpu(choices, c.E);
  const weights = randn(c.N * c.K, seed + 1);
  return { perm, offsets, weights };
}

Deno.test("permFromChoicesCpu groups (token, slot) entries by expert in token order", () => {
  const { perm, offsets } = permFromChoicesCpu(Int32Array.from([1, 0, 1, 2]), 3);
  assertEquals([...perm], [1, 0, 2, 3]);
  assertEquals([...offsets], [0, 1, 3, 4]);
  assertEquals([...invertPermutationCpu([2, 0, 1])], [1, 2, 0]);
});

Deno.test("invertPermutation() matches the CPU twin", GPU_TEST, async () => {
  const device = await testDevice();
  for (const c of CASES) {
    const { perm } = routing(c, 3);
    const inv = invertPermutation(Tensor.from(device, perm, [perm.length], "i32"));
    assertEquals([...(await inv.read())], [...invertPermutationCpu(perm)]);
  }
});

Deno.test(
  "gather and weighted scatter match their CPU twins for ragged shapes",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const c of CASES) {
      const { N, K, D } = c;
      const { perm, weights } = routing(c, 10 + N);
      const x = randn(N * D, 20 + N), ys = randn(N * K * D, 30 + N);
      const permT = Tensor.from(device, perm, [N * K], "i32");
      const inv = invertPermutation(permT);
      const xs = Tensor.empty(device, [N * K, D]);
      gatherRowsForward(xs, Tensor.from(device, x, [N, D]), permT);
      assertClose(await xs.readF32(), gatherRowsCpu(x, perm, c), { label: `gather N=${N}` });
      const y = Tensor.empty(device, [N, D]);
      scatterWeightedForward(
        y,
        Tensor.from(device, ys, [N * K, D]),
        inv,
        Tensor.from(device, weights, [N, K]),
      );
      assertClose(await y.readF32(), scatterWeightedCpu(ys, perm, weights, c), {
        label: `scatter N=${N}`,
      });
    }
  },
);

Deno.test(
  "gather and weighted scatter forwards accumulate into their outputs",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const c of CASES) {
      const { N, K, D } = c;
      const { perm, weights } = routing(c, 70 + N);
      const x = randn(N * D, 71), ys = randn(N * K * D, 72);
      const baseXs = randn(N * K * D, 73), baseY = randn(N * D, 74);
      const permT = Tensor.from(device, perm, [N * K], "i32");
      const xs = Tensor.from(device, baseXs, [N * K, D]);
      gatherRowsForward(xs, Tensor.from(device, x, [N, D]), permT, { accumulate: true });
      const wantXs = gatherRowsCpu(x, perm, c).map((v, i) => v + baseXs[i]);
      assertClose(await xs.readF32(), wantXs, { label: `gather acc N=${N}` });
      const y = Tensor.from(device, baseY, [N, D]);
      scatterWeightedForward(
        y,
        Tensor.from(device, ys, [N * K, D]),
        invertPermutation(permT),
        Tensor.from(device, weights, [N, K]),
        { accumulate: true },
      );
      const wantY = scatterWeightedCpu(ys, perm, weights, c).map((v, i) => v + baseY[i]);
      assertClose(await y.readF32(), wantY, { label: `scatter acc N=${N}` });
    }
  },
);

Deno.test("dispatch CPU backwards match central finite differences", () => {
  const c = CASES[0];
  const { N, K, D } = c;
  const { perm, weights } = routing(c, 5);
  const f64 = (a: Float32Array) => Float64Array.from(a);
  const G = f64(randn(N * D, 6)), Gs = f64(randn(N * K * D, 7));
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  // gather: L = <gather(x), Gs>
  const x = f64(randn(N * D, 8));
  const fdX = finiteDiff((v) => dot(gatherRowsCpu(v, perm, c), Gs), x);
  assertClose(gatherRowsBackwardCpu(Gs, perm, c), fdX, { atol: 1e-6, label: "gather dx" });
  // scatter: L = <scatter(ys, w), G>
  const ys = f64(randn(N * K * D, 9)), w = f64(weights);
  const { dys, dweights } = scatterWeightedBackwardCpu(G, ys, perm, w, c);
  const fdYs = finiteDiff((v) => dot(scatterWeightedCpu(v, perm, w, c), G), ys);
  assertClose(dys, fdYs, { atol: 1e-6, label: "scatter dys" });
  const fdW = finiteDiff((v) => dot(scatterWeightedCpu(ys, perm, v, c), G), w);
  assertClose(dweights, fdW, { atol: 1e-6, label: "scatter dweights" });
});

Deno.test(
  "dispatch GPU backwards match the CPU backwards, overwriting and accumulating",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const c of CASES) {
      const { N, K, D } = c;
      const { perm, weights } = routing(c, 40 + N);
      const dy = randn(N * D, 41), dxs = randn(N * K * D, 42), ys = randn(N * K * D, 43);
      const base = randn(N * K * D, 44), baseW = randn(N * K, 45), baseX = randn(N * D, 46);
      const permT = Tensor.from(device, perm, [N * K], "i32");
      const inv = invertPermutation(permT);
      const route = {
        ys: Tensor.from(device, ys, [N * K, D]),
        perm: permT,
        inv,
        weights: Tensor.from(device, weights, [N, K]),
      };
      const want = scatterWeightedBackwardCpu(dy, ys, perm, weights, c);
      const wantDx = gatherRowsBackwardCpu(dxs, perm, c);
      for (const accumulate of [false, true]) {
        const dx = Tensor.from(device, baseX, [N, D]);
        gatherRowsBackward(dx, Tensor.from(device, dxs, [N * K, D]), inv, { accumulate });
        const dys = Tensor.from(device, base, [N * K, D]), dw = Tensor.from(device, baseW, [N, K]);
        scatterWeightedBackward(dys, dw, Tensor.from(device, dy, [N, D]), route, {
          accumulateRows: accumulate,
          accumulateWeights: accumulate,
        });
        const plus = (a: Float32Array, b: Float32Array) =>
          accumulate ? a.map((v, i) => v + b[i]) : a;
        const label = `N=${N} accumulate=${accumulate}`;
        assertClose(await dx.readF32(), plus(wantDx, baseX), { label: `gather dx ${label}` });
        assertClose(await dys.readF32(), plus(want.dys, base), { label: `dys ${label}` });
        assertClose(await dw.readF32(), plus(want.dweights, baseW), {
          atol: 1e-4,
          label: `dweights ${label}`,
        });
      }
    }
  },
);

Deno.test("gatherRows and scatterWeighted backpropagate through the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const c = CASES[1];
  const { N, K, D } = c;
  const { perm, weights } = routing(c, 50);
  const x = randn(N * D, 51), g = randn(N * D, 52);
  const permT = Tensor.from(device, perm, [N * K], "i32");
  const xT = Tensor.from(device, x, [N, D]), wT = Tensor.from(device, weights, [N, K]);
  xT.requiresGrad = wT.requiresGrad = true;
  const tape = new Tape().start();
  const y = scatterWeighted(gatherRows(xT, permT), permT, { weights: wT });
  tape.backward(y, Tensor.from(device, g, [N, D]));
  // y[t] = (sum_s w[t, s]) x[t]: dx[t] = (sum_s w[t, s]) g[t], dw[t, s] = <g[t], x[t]>
  const wantDx = new Float32Array(N * D), wantDw = new Float32Array(N * K);
  for (let t = 0; t < N; t++) {
    let ws = 0, dot = 0;
    for (let s = 0; s < K; s++) ws += weights[t * K + s];
    for (let d = 0; d < D; d++) {
      wantDx[t * D + d] = ws * g[t * D + d];
      dot += g[t * D + d] * x[t * D + d];
    }
    for (let s = 0; s < K; s++) wantDw[t * K + s] = dot;
  }
  assertClose(await y.readF32(), scatterWeightedCpu(gatherRowsCpu(x, perm, c), perm, weights, c));
  assertClose(await xT.grad!.readF32(), wantDx, { atol: 1e-4 });
  assertClose(await wT.grad!.readF32(), wantDw, { atol: 1e-4 });
});

Deno.test("dispatch kernels run twice give identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const c = CASES[1];
  const { N, K, D } = c;
  const { perm, weights } = routing(c, 60);
  const permT = Tensor.from(device, perm, [N * K], "i32");
  const inv = invertPermutation(permT);
  const route = {
    ys: Tensor.from(device, randn(N * K * D, 61), [N * K, D]),
    perm: permT,
    inv,
    weights: Tensor.from(device, weights, [N, K]),
  };
  const dy = Tensor.from(device, randn(N * D, 62), [N, D]);
  const runs: Float32Array[][] = [];
  for (let i = 0; i < 2; i++) {
    const y = Tensor.empty(device, [N, D]), dys = Tensor.empty(device, [N * K, D]);
    const dw = Tensor.empty(device, [N, K]), dx = Tensor.empty(device, [N, D]);
    scatterWeightedForward(y, route.ys, inv, route.weights);
    scatterWeightedBackward(dys, dw, dy, route);
    gatherRowsBackward(dx, route.ys, inv);
    runs.push(await Promise.all([y, dys, dw, dx].map((t) => t.readF32())));
  }
  runs[0].forEach((a, k) => assertSameBits(a, runs[1][k], `output ${k}`));
});
