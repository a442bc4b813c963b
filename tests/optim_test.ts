import {
  adamw,
  ADAMW_MOMENT_DEFAULTS,
  adamwCpu,
  clipScale,
  clipScaleCpu,
  gradClip,
  NORM_CHUNK,
  sumSquares,
  sumSquaresCpu,
} from "../kernels/optim.ts";
import { ewForward } from "../kernels/elementwise.ts";
import { Tensor } from "../kernels/tensor.ts";
import { ADAMW_DEFAULTS } from "../train/optimizer.ts";
import { assertClose, assertSameBits, GPU_TEST, randn, randu, testDevice } from "./_util.ts";
import { default as assert, equal as assertEquals } from "node:assert/strict";

Deno.test("sumSquares matches the CPU twin over ragged ranges", GPU_TEST, async () => {
  const device = await testDevice();
  const a = randn(3 * NORM_CHUNK + 17, 1), b = randn(300, 2), c = randn(1, 3);
  // d is read as vec4 units (size and offsets 4-aligned), with a partial last unit
  const d = randn(3 * NORM_CHUNK + 20, 4);
  const cases = [
    [{ t: a }],
    [{ t: d }, { t: d, offset: 8, count: NORM_CHUNK + 13 }, { t: b, offset: 4, count: 1 }],
    [{ t: a, offset: 5, count: NORM_CHUNK + 1 }, { t: b }, { t: c }],
    [{ t: b, offset: 299, count: 1 }, { t: a, offset: 1000 }],
    [{ t: c, count: 0 }],
  ];
  const tensors = new Map([a, b, c, d].map((x) => [x, Tensor.from(device, x, [x.length])]));
  for (const ranges of cases) {
    const out = Tensor.empty(device, [1]), flag = Tensor.empty(device, [1]);
    sumSquares(out, ranges.map((r) => ({ ...r, t: tensors.get(r.t)! })), { nonfinite: flag });
    const want = sumSquaresCpu(ranges);
    assertClose(await out.readF32(), [want.sumsq], { atol: 1e-6, rtol: 1e-5 });
    assertEquals((await flag.readF32())[0], 0);
  }
});

Deno.test("sumSquares flags NaN and infinite gradients", GPU_TEST, async () => {
  const device = await testDevice();
  for (const bad of [NaN, Infinity, -Infinity]) {
    const x = randn(5000, 4);
    x[4321] = bad;
    const t = Tensor.from(device, x, [5000]);
    const out = Tensor.empty(device, [1]), flag = Tensor.empty(device, [1]);
    // the bad element inside the range is flagged ...
    sumSquares(out, [{ t: Tensor.from(device, randn(10, 5), [10]) }, { t }], { nonfinite: flag });
    assertEquals((await flag.readF32())[0], 1, `flag for ${bad}`);
    assert(sumSquaresCpu([{ t: x }]).nonfinite);
    // ... and one outside it is not
    sumSquares(out, [{ t, count: 4321 }], { nonfinite: flag });
    assertEquals((await flag.readF32())[0], 0);
  }
});

Deno.test("clipScale and gradClip match the CPU twin", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [sumsq, maxNorm] of [[16, 1], [0.25, 1], [0, 1], [9, Infinity], [100, 0]]) {
    const scale = Tensor.empty(device, [1]), norm = Tensor.empty(device, [1]);
    clipScale(scale, Tensor.from(device, [sumsq], [1]), { maxNorm, norm });
    const want = clipScaleCpu(sumsq, maxNorm);
    assertClose(await scale.readF32(), [want.scale], { label: `scale ${sumsq} ${maxNorm}` });
    assertClose(await norm.readF32(), [want.norm]);
  }
  const g1 = randn(777, 6, 0.1), g2 = randn(5000, 7, 0.1);
  const stats = gradClip([{ t: Tensor.from(device, g1, [777]) }, {
    t: Tensor.from(device, g2, [5000]),
    offset: 3,
  }], { maxNorm: 2 });
  const ss = sumSquaresCpu([{ t: g1 }, { t: g2, offset: 3 }]).sumsq;
  const want = clipScaleCpu(ss, 2);
  assert(want.scale < 1, "the test should clip");
  assertClose(await stats.norm.readF32(), [want.norm], { rtol: 1e-5 });
  assertClose(await stats.scale.readF32(), [want.scale], { rtol: 1e-5 });
  assertClose(await stats.sumsq.readF32(), [ss], { rtol: 1e-5 });
  assertEquals((await stats.nonfinite.readF32())[0], 0);
});

Deno.test(
  "adamw matches the CPU twin over ragged ranges and leaves the rest alone",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (
      const [n, offset, count] of [
        [1, 0, 1],
        [300, 7, 257],
        [5000, 1000, 3999],
        [64, 0, 64],
        [68, 4, 61],
      ]
    ) {
      const host = {
        p: randn(n, n + 1),
        g: randn(n, n + 2),
        m: randn(n, n + 3, 0.1),
        v: randu(n, n + 4, 0, 0.01),
      };
      const p = Tensor.from(device, host.p, [n]);
      const state = {
        grad: Tensor.from(device, host.g, [n]),
        m: Tensor.from(device, host.m, [n]),
        v: Tensor.from(device, host.v, [n]),
      };
      const opts = { lr: 1e-2, step: 3, wd: 0.1, offset, count };
      adamw(p, state, { ...opts, gradScale: Tensor.from(device, [0.5], [1]) });
      adamwCpu(host.p, { grad: host.g, m: host.m, v: host.v }, { ...opts, gradScale: 0.5 });
      const label = `n=${n} [${offset}, +${count})`;
      assertClose(await p.readF32(), host.p, { atol: 1e-6, rtol: 1e-5, label: `p ${label}` });
      assertClose(await state.m.readF32(), host.m, { atol: 1e-7, rtol: 1e-5, label: `m ${label}` });
      assertClose(await state.v.readF32(), host.v, { atol: 1e-9, rtol: 1e-5, label: `v ${label}` });
    }
  },
);

Deno.test("adamw CPU twin follows the AdamW formula on one element", () => {
  // step 1 from zero moments: mhat = g, vhat = g^2, so the update is lr * (sign(g) + wd * p)
  const p = Float64Array.of(2), m = Float64Array.of(0), v = Float64Array.of(0);
  adamwCpu(p, { grad: [-3], m, v }, { lr: 0.1, step: 1, wd: 0.5, eps: 0 });
  assertClose(p, [2 - 0.1 * (-1 + 0.5 * 2)], { atol: 1e-12 });
  assertClose(m, [-0.3], { atol: 1e-12 });
  assertClose(v, [0.05 * 9], { atol: 1e-12 });
});

Deno.test("AdamW defaults: V3's betas and eps, one source for kernels and train/", () => {
  assertEquals(ADAMW_MOMENT_DEFAULTS.beta1, 0.9);
  assertEquals(ADAMW_MOMENT_DEFAULTS.beta2, 0.95);
  assertEquals(ADAMW_MOMENT_DEFAULTS.eps, 1e-8);
  for (const k of ["beta1", "beta2", "eps"] as const) {
    assertEquals(ADAMW_DEFAULTS[k], ADAMW_MOMENT_DEFAULTS[k]);
  }
  // a call that leaves them out gets exactly the explicit defaults
  const run = (o: { beta1?: number; beta2?: number; eps?: number }) => {
    const p = Float32Array.of(1.5, -2), m = Float32Array.of(0.1, 0.2), v = Float32Array.of(1, 2);
    adamwCpu(p, { grad: [0.3, -4], m, v }, { lr: 0.01, step: 3, wd: 0.1, ...o });
    return [...p, ...m, ...v];
  };
  const explicit = run({ beta1: 0.9, beta2: 0.95, eps: 1e-8 });
  const implicit = run({});
  for (let i = 0; i < explicit.length; i++) assertEquals(implicit[i], explicit[i]);
});

Deno.test(
  "clipped AdamW steps decrease a quadratic and match the twin step by step",
  GPU_TEST,
  async () => {
    // f(p) = 1/2 sum a_i (p_i - c_i)^2, gradient a (p - c), computed on the GPU
    const device = await testDevice();
    const n = 1000, half = 437; // weight decay on [0, 437), none on the rest: two calls
    const a = randu(n, 1, 0.5, 2), c = randn(n, 2), p0 = randn(n, 3);
    const negC = c.map((x) => -x);
    const f = (p: ArrayLike<number>) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += 0.5 * a[i] * (p[i] - c[i]) ** 2;
      return s;
    };
    const p = Tensor.from(device, p0, [n]);
    const aT = Tensor.from(device, a, [n]), negCT = Tensor.from(device, negC, [n]);
    const grad = Tensor.empty(device, [n]), diff = Tensor.empty(device, [n]);
    const m = Tensor.zeros(device, [n]), v = Tensor.zeros(device, [n]);
    const host = { p: Float32Array.from(p0), m: new Float32Array(n), v: new Float32Array(n) };
    const hyper = { lr: 0.05, wd: 0.01 };
    let prev = f(p0);
    const start = prev;
    for (let step = 1; step <= 30; step++) {
      ewForward("add", diff, [p, negCT]);
      ewForward("mul", grad, [aT, diff]);
      const stats = gradClip([{ t: grad }], { maxNorm: 5 });
      adamw(p, { grad, m, v }, { ...hyper, step, count: half, gradScale: stats.scale });
      adamw(p, { grad, m, v }, { ...hyper, wd: 0, step, offset: half, gradScale: stats.scale });
      // the twin, with an f32 gradient like the GPU's
      const g = Float32Array.from(host.p, (x, i) => a[i] * Math.fround(x + negC[i]));
      const { scale } = clipScaleCpu(sumSquaresCpu([{ t: g }]).sumsq, 5);
      adamwCpu(host.p, { grad: g, m: host.m, v: host.v }, {
        ...hyper,
        step,
        count: half,
        gradScale: scale,
      });
      adamwCpu(host.p, { grad: g, m: host.m, v: host.v }, {
        ...hyper,
        wd: 0,
        step,
        offset: half,
        gradScale: scale,
      });
      const got = await p.readF32();
      assertClose(got, host.p, { atol: 1e-5, rtol: 1e-4, label: `step ${step}` });
      const now = f(got);
      assert(now < prev, `step ${step}: f went from ${prev} to ${now}`);
      prev = now;
    }
    assert(prev < 0.5 * start, `f only fell from ${start} to ${prev}`);
  },
);

Deno.test("the norm and AdamW give identical bits on rerun", GPU_TEST, async () => {
  const device = await testDevice();
  const n = 3 * NORM_CHUNK + 5;
  const g = Tensor.from(device, randn(n, 9), [n]);
  const run = async () => {
    const stats = gradClip([{ t: g }], { maxNorm: 1 });
    const p = Tensor.from(device, randn(n, 10), [n]);
    const m = Tensor.zeros(device, [n]), v = Tensor.zeros(device, [n]);
    adamw(p, { grad: g, m, v }, { lr: 1e-3, step: 1, wd: 0.1, gradScale: stats.scale });
    return [await stats.sumsq.readF32(), await p.readF32()];
  };
  const x = await run(), y = await run();
  assertSameBits(x[0], y[0], "sumsq");
  assertSameBits(x[1], y[1], "p");
});
