import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { ParamArena } from "../kernels/arena.ts";
import { Tape } from "../kernels/autograd.ts";
import { ewCpu, swiglu } from "../kernels/elementwise.ts";
import { gatherRows, permFromChoicesCpu, scatterWeighted } from "../kernels/moe_dispatch.ts";
import {
  groupedGemmBackwardInput,
  groupedGemmBackwardWeight,
  groupedGemmForward,
  groupedLinear,
  groupedLinearBackwardCpu,
  groupedLinearCpu,
  type GroupedShape,
  groupedTiles,
  groupedTilesCpu,
  maxRowTiles,
  weightSpan,
} from "../kernels/moe_gemm.ts";
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

/** A weight range whose padding holds a sentinel, so stray reads/writes show. */
function weightRange(shape: GroupedShape, seed: number): Float32Array {
  const w = new Float32Array(weightSpan(shape)).fill(1e6);
  const vals = randn(shape.E * shape.Kout * shape.Kin, seed, 0.5);
  for (let e = 0; e < shape.E; e++) {
    w.set(
      vals.subarray(e * shape.Kout * shape.Kin, (e + 1) * shape.Kout * shape.Kin),
      e * shape.strideElems,
    );
  }
  return w;
}

interface Case {
  N: number;
  K: number;
  allowed: number[];
  shape: GroupedShape;
}

// Ragged: Kin/Kout not multiples of 4 (the scalar variant) or multiples of 4 but not of the
// 12-row or 128-column tiles (the vec4 variant), strides with padding, experts with no rows,
// experts with full and partial row tiles (N=150, K=2 puts ~100 rows on each of three experts),
// several column tiles and several weight-gradient tiles.
const CASES: Case[] = [
  { N: 7, K: 2, allowed: [0, 2, 4], shape: { E: 5, Kin: 19, Kout: 37, strideElems: 37 * 19 + 13 } },
  { N: 150, K: 2, allowed: [0, 1, 3], shape: { E: 4, Kin: 70, Kout: 130, strideElems: 70 * 130 } },
  { N: 3, K: 1, allowed: [1], shape: { E: 2, Kin: 1, Kout: 1, strideElems: 64 } },
  { N: 150, K: 2, allowed: [0, 1, 3], shape: { E: 4, Kin: 132, Kout: 136, strideElems: 18000 } },
];

function setup(c: Case, seed: number) {
  const { perm, offsets } = permFromChoicesCpu(randomChoices(c.N, c.K, c.allowed, seed), c.shape.E);
  const rows = c.N * c.K;
  return {
    perm,
    offsets,
    rows,
    x: randn(rows * c.shape.Kin, seed + 1),
    w: weightRange(c.shape, seed + 2),
    dy: randn(rows * c.shape.Kout, seed + 3),
  };
}

Deno.test("groupedTiles() builds the CPU twin's tile table", GPU_TEST, async () => {
  const device = await testDevice();
  for (const offsets of [[0, 0, 5, 5, 40, 100, 100], [0, 33, 33], [0, 0]]) {
    const rows = offsets[offsets.length - 1];
    const off = Int32Array.from(offsets);
    const t = await groupedTiles(Tensor.from(device, off, [off.length], "i32"), rows).read();
    const want = groupedTilesCpu(off);
    const got = Array.from({ length: t[0] }, (_, i) => [...t.slice(4 * i + 4, 4 * i + 7)]);
    assertEquals(got, want);
    if (want.length > maxRowTiles(rows, off.length - 1)) throw new Error("tile bound too small");
  }
});

Deno.test("grouped GEMM forward matches the CPU twin for ragged shapes", GPU_TEST, async () => {
  const device = await testDevice();
  for (const c of CASES) {
    const { offsets, rows, x, w } = setup(c, 100);
    const { Kin, Kout } = c.shape;
    const offT = Tensor.from(device, offsets, [offsets.length], "i32");
    const wT = Tensor.from(device, w, [w.length]).view([Kout, Kin]);
    const y = Tensor.empty(device, [rows, Kout]);
    groupedGemmForward(y, Tensor.from(device, x, [rows, Kin]), wT, c.shape, {
      tiles: groupedTiles(offT, rows),
    });
    assertClose(await y.readF32(), groupedLinearCpu(x, w, offsets, c.shape), {
      atol: 1e-4,
      label: `fwd ${JSON.stringify(c.shape)}`,
    });
  }
});

Deno.test("grouped GEMM CPU backward matches central finite differences", () => {
  const c = CASES[0];
  const { offsets, x, w, dy } = setup(c, 200);
  const f64 = (a: Float32Array) => Float64Array.from(a);
  const [X, W, G] = [f64(x), f64(w.map((v) => (v === 1e6 ? 0 : v))), f64(dy)];
  const loss = (xx: Float64Array, ww: Float64Array) =>
    groupedLinearCpu(xx, ww, offsets, c.shape).reduce((s, v, i) => s + v * G[i], 0);
  const { dx, dw } = groupedLinearBackwardCpu(G, X, W, offsets, c.shape);
  assertClose(dx, finiteDiff((v) => loss(v, W), X), { atol: 1e-6, label: "dx" });
  const idx = [...W.keys()].filter((i) => i % 7 === 0); // a spread subset, padding included
  const fdW = finiteDiff((v) => loss(X, v), W, { indices: idx });
  assertClose(idx.map((i) => dw[i]), fdW, { atol: 1e-6, label: "dw" });
});

Deno.test("grouped GEMM GPU backward matches the CPU backward", GPU_TEST, async () => {
  const device = await testDevice();
  for (const c of CASES) {
    const { offsets, rows, x, w, dy } = setup(c, 300);
    const { Kin, Kout } = c.shape;
    const offT = Tensor.from(device, offsets, [offsets.length], "i32");
    const tiles = groupedTiles(offT, rows);
    const xT = Tensor.from(device, x, [rows, Kin]), dyT = Tensor.from(device, dy, [rows, Kout]);
    const wT = Tensor.from(device, w, [w.length]).view([Kout, Kin]);
    const want = groupedLinearBackwardCpu(dy, x, w, offsets, c.shape);
    const label = JSON.stringify(c.shape);
    for (const accumulate of [false, true]) {
      const baseX = randn(rows * Kin, 301), baseW = randn(w.length, 302);
      const dx = Tensor.from(device, baseX, [rows, Kin]);
      groupedGemmBackwardInput(dx, dyT, wT, c.shape, { tiles, accumulate });
      const dwT = Tensor.from(device, baseW, [w.length]);
      groupedGemmBackwardWeight(dwT.view([Kout, Kin]), dyT, xT, c.shape, {
        offsets: offT,
        accumulate,
      });
      const wantDx = accumulate ? want.dx.map((v, i) => v + baseX[i]) : want.dx;
      assertClose(await dx.readF32(), wantDx, { atol: 1e-4, label: `dx ${label}` });
      // padding keeps its old value; without accumulate, experts with no rows get zeros
      const gotDw = await dwT.readF32();
      const inExpert = (i: number) => i % c.shape.strideElems < Kout * Kin;
      const wantDw = want.dw.map((
        v,
        i,
      ) => (!inExpert(i) ? baseW[i] : accumulate ? v + baseW[i] : v));
      assertClose(gotDw, wantDw, { atol: 1e-4, label: `dw accumulate=${accumulate} ${label}` });
    }
  }
});

Deno.test("groupedLinear() backpropagates into a strided weight gradient", GPU_TEST, async () => {
  const device = await testDevice();
  const c = CASES[3]; // the vec4 variant, which every model preset takes
  const { offsets, rows, x, w, dy } = setup(c, 400);
  const { Kin, Kout } = c.shape;
  const xT = Tensor.from(device, x, [rows, Kin]);
  const wT = Tensor.from(device, w, [w.length]).view([Kout, Kin]);
  xT.requiresGrad = wT.requiresGrad = true;
  const tape = new Tape().start();
  const y = groupedLinear(xT, wT, {
    E: c.shape.E,
    strideElems: c.shape.strideElems,
    offsets: Tensor.from(device, offsets, [offsets.length], "i32"),
  });
  tape.backward(y, Tensor.from(device, dy, [rows, Kout]));
  const want = groupedLinearBackwardCpu(dy, x, w, offsets, c.shape);
  assertClose(await y.readF32(), groupedLinearCpu(x, w, offsets, c.shape), { atol: 1e-4 });
  assertClose(await xT.grad!.readF32(), want.dx, { atol: 1e-4 });
  const dw = new Tensor(device, wT.grad!.buffer, [w.length], "f32", wT.grad!.offset);
  assertClose(await dw.readF32(), want.dw, { atol: 1e-4 });
});

Deno.test("grouped GEMMs run twice give identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const c = CASES[3];
  const { offsets, rows, x, w, dy } = setup(c, 500);
  const { Kin, Kout } = c.shape;
  const offT = Tensor.from(device, offsets, [offsets.length], "i32");
  const tiles = groupedTiles(offT, rows);
  const xT = Tensor.from(device, x, [rows, Kin]), dyT = Tensor.from(device, dy, [rows, Kout]);
  const wT = Tensor.from(device, w, [w.length]).view([Kout, Kin]);
  const runs: Float32Array[][] = [];
  for (let i = 0; i < 2; i++) {
    const y = Tensor.empty(device, [rows, Kout]), dx = Tensor.empty(device, [rows, Kin]);
    const dw = Tensor.zeros(device, [w.length]);
    groupedGemmForward(y, xT, wT, c.shape, { tiles });
    groupedGemmBackwardInput(dx, dyT, wT, c.shape, { tiles });
    groupedGemmBackwardWeight(dw.view([Kout, Kin]), dyT, xT, c.shape, { offsets: offT });
    runs.push(await Promise.all([y, dx, dw].map((t) => t.readF32())));
  }
  runs[0].forEach((a, k) => assertSameBits(a, runs[1][k], `output ${k}`));
});

/** CPU reference of the routed MoE FFN, a dense loop over tokens and their chosen experts. */
function moeFfnCpu(
  x: Float32Array,
  choices: Int32Array,
  gate: Float32Array,
  experts: { w1: Float32Array; w3: Float32Array; w2: Float32Array }[],
  s: { N: number; K: number; D: number; I: number },
): Float32Array {
  const y = new Float32Array(s.N * s.D);
  const mv = (m: Float32Array, v: Float32Array, rowsOut: number, cols: number) =>
    Float32Array.from({ length: rowsOut }, (_, o) => {
      let a = 0;
      for (let i = 0; i < cols; i++) a += m[o * cols + i] * v[i];
      return a;
    });
  for (let t = 0; t < s.N; t++) {
    const u = x.subarray(t * s.D, (t + 1) * s.D);
    for (let k = 0; k < s.K; k++) {
      const ex = experts[choices[t * s.K + k]];
      const h = ewCpu("swiglu", [mv(ex.w1, u, s.I, s.D), mv(ex.w3, u, s.I, s.D)]);
      const o = mv(ex.w2, h, s.D, s.I);
      for (let d = 0; d < s.D; d++) y[t * s.D + d] += gate[t * s.K + k] * o[d];
    }
  }
  return y;
}

Deno.test(
  "the routed MoE FFN composed from grouped GEMMs equals a dense loop over experts",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 7, K = 2, E = 5, D = 21, I = 11;
    const choices = randomChoices(N, K, [0, 2, 3], 600); // experts 1 and 4 get nothing
    const { perm, offsets } = permFromChoicesCpu(choices, E);
    // the model's parameter table order: each expert's gate, up, down, padded to 256 bytes
    const specs = [];
    for (let e = 0; e < E; e++) {
      for (
        const [n, shape] of [["gate_proj", [I, D]], ["up_proj", [I, D]], ["down_proj", [D, I]]]
      ) {
        specs.push({ name: `experts.${e}.${n}.weight`, shape: shape as number[] });
      }
    }
    const arena = new ParamArena(device, specs);
    const experts = Array.from({ length: E }, (_, e) => {
      const ws = [
        randn(I * D, 610 + e, 0.3),
        randn(I * D, 620 + e, 0.3),
        randn(D * I, 630 + e, 0.3),
      ];
      ["gate_proj", "up_proj", "down_proj"].forEach((n, k) =>
        arena.upload(`experts.${e}.${n}.weight`, ws[k])
      );
      return { w1: ws[0], w3: ws[1], w2: ws[2] };
    });
    const stride = (arena.entry("experts.1.gate_proj.weight").offset -
      arena.entry("experts.0.gate_proj.weight").offset) / 4;
    const x = randn(N * D, 640), gate = randn(N * K, 641);
    const xT = Tensor.from(device, x, [N, D]), gT = Tensor.from(device, gate, [N, K]);
    xT.requiresGrad = gT.requiresGrad = true;
    const permT = Tensor.from(device, perm, [N * K], "i32");
    const offT = Tensor.from(device, offsets, [E + 1], "i32");
    const tiles = groupedTiles(offT, N * K);
    const opts = { E, strideElems: stride, offsets: offT, tiles };
    const w = (n: string) => arena.param(`experts.0.${n}.weight`);

    const tape = new Tape().start();
    const xs = gatherRows(xT, permT);
    const h = swiglu(
      groupedLinear(xs, w("gate_proj"), opts),
      groupedLinear(xs, w("up_proj"), opts),
    );
    const y = scatterWeighted(groupedLinear(h, w("down_proj"), opts), permT, { weights: gT });
    const want = moeFfnCpu(x, choices, gate, experts, { N, K, D, I });
    assertClose(await y.readF32(), want, { atol: 1e-4, label: "MoE FFN" });

    // gradients: L = sum(y * g) vs finite differences of the CPU reference (in f32, so loose)
    const g = randn(N * D, 650);
    tape.backward(y, Tensor.from(device, g, [N, D]));
    const L = (xx: Float32Array, gg: Float32Array, ex = experts) =>
      moeFfnCpu(xx, choices, gg, ex, { N, K, D, I }).reduce((s, v, i) => s + v * g[i], 0);
    const fd = (f: (v: Float64Array) => number, v: Float32Array, indices?: number[]) =>
      finiteDiff(f, Float64Array.from(v), { h: 1e-2, indices });
    const dxWant = fd((v) => L(Float32Array.from(v), gate), x);
    assertClose(await xT.grad!.readF32(), dxWant, { atol: 2e-3, rtol: 1e-2, label: "dx" });
    const dgWant = fd((v) => L(x, Float32Array.from(v)), gate);
    assertClose(await gT.grad!.readF32(), dgWant, { atol: 2e-3, rtol: 1e-2, label: "dgate" });
    const grads = await arena.readAll("grads");
    for (const e of [0, 1, 3]) {
      const name = `experts.${e}.up_proj.weight`;
      const idx = [0, 5, 17, I * D - 1];
      const want = fd(
        (v) => {
          const ex = experts.map((q, k) => (k === e ? { ...q, w3: Float32Array.from(v) } : q));
          return L(x, gate, ex);
        },
        experts[e].w3,
        idx,
      );
      assertClose(idx.map((i) => grads.get(name)![i]), want, {
        atol: 2e-3,
        rtol: 1e-2,
        label: name,
      });
    }
    // an expert that got no tokens keeps a zero gradient
    assertClose(grads.get("experts.1.down_proj.weight")!, new Float32Array(D * I));
    arena.destroy();
  },
);
