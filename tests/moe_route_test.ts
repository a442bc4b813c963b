import { balanceLoss } from "../kernels/moe_balance.ts";
import { dispatchPlan } from "../kernels/moe_plan.ts";
import {
  moeRoute,
  moeRouteBackward,
  moeRouteBackwardCpu,
  moeRouteCpu,
  moeRouteForward,
  type RouteConfig,
} from "../kernels/moe_route.ts";
import { Tensor } from "../kernels/tensor.ts";
import {
  assertClose,
  assertSameBits,
  finiteDiff,
  GPU_TEST,
  randn,
  randu,
  testDevice,
} from "./_util.ts";
import { deepEqual } from "node:assert/strict";

/** Configs: V3-like grouping, 4 groups keep 2, no grouping, one-expert groups, K = 1. */
const CONFIGS: (RouteConfig & { E: number })[] = [
  { E: 8, K: 2, groups: 2, topkGroups: 1, routeScale: 2.5 },
  { E: 16, K: 4, groups: 4, topkGroups: 2, routeScale: 1.5 },
  { E: 6, K: 3, groups: 1, topkGroups: 1, routeScale: 1 },
  { E: 6, K: 2, groups: 6, topkGroups: 3, routeScale: 1 },
  { E: 5, K: 1, groups: 1, topkGroups: 1, routeScale: 1 },
];

const sigmoid = (x: Float32Array) => x.map((v) => 1 / (1 + Math.exp(-v)));

Deno.test("moeRoute matches the CPU twin for ragged token counts", GPU_TEST, async () => {
  const device = await testDevice();
  for (const cfg of CONFIGS) {
    for (const N of [1, 67, 300]) {
      const s = sigmoid(randn(N * cfg.E, N + cfg.E, 2));
      const b = randn(cfg.E, cfg.E, 0.1);
      const indices = Tensor.empty(device, [N, cfg.K], "i32"),
        weights = Tensor.empty(device, [N, cfg.K]);
      moeRouteForward({ indices, weights }, {
        s: Tensor.from(device, s, [N, cfg.E]),
        bias: Tensor.from(device, b, [cfg.E]),
      }, cfg);
      const want = moeRouteCpu(s, b, cfg);
      const label = `E${cfg.E} K${cfg.K} G${cfg.groups}/${cfg.topkGroups} N${N}`;
      deepEqual(await indices.read(), want.indices, label);
      assertClose(await weights.readF32(), want.weights, { atol: 1e-6, rtol: 1e-5, label });
    }
  }
});

Deno.test(
  "moeRoute breaks exact ties like the CPU twin (lower index first)",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const cfg of CONFIGS) {
      const N = 64;
      // scores on a coarse grid and no bias: ties among experts and groups are everywhere
      const s = randu(N * cfg.E, cfg.E, 0, 1).map((v) => Math.round(v * 3) / 4);
      const b = new Float32Array(cfg.E);
      const indices = Tensor.empty(device, [N, cfg.K], "i32"),
        weights = Tensor.empty(device, [N, cfg.K]);
      moeRouteForward({ indices, weights }, {
        s: Tensor.from(device, s, [N, cfg.E]),
        bias: Tensor.from(device, b, [cfg.E]),
      }, cfg);
      const want = moeRouteCpu(s, b, cfg);
      deepEqual(await indices.read(), want.indices, `E${cfg.E} K${cfg.K} G${cfg.groups}`);
    }
  },
);

Deno.test("moeRouteCpu follows the group-limited rule and breaks ties to the lower index", () => {
  const cfg = { K: 1, groups: 2, topkGroups: 1, routeScale: 1 };
  // group 1 (0.8 + 0.7) beats group 0 (0.9 + 0.1) although 0.9 is the best expert
  deepEqual(moeRouteCpu([0.9, 0.1, 0.8, 0.7], [0, 0, 0, 0], cfg).indices, Int32Array.of(2));
  // the bias changes the selection but not the weights (unbiased s, normalized, scaled)
  const r = moeRouteCpu([0.5, 0.4, 0.2, 0.1], [0, 0, 0.5, 0.5], { ...cfg, K: 2, routeScale: 2 });
  deepEqual(r.indices, Int32Array.of(2, 3));
  assertClose(r.weights, [2 * 0.2 / 0.3, 2 * 0.1 / 0.3], { atol: 1e-12 });
  // ties: equal scores go to the lower index, for experts and for groups
  const t = moeRouteCpu([0.3, 0.3, 0.3, 0.3], [0, 0, 0, 0], { ...cfg, K: 2 });
  deepEqual(t.indices, Int32Array.of(0, 1));
});

Deno.test("moeRoute weight backward: CPU vs finite differences, GPU vs CPU", GPU_TEST, async () => {
  const device = await testDevice();
  for (const cfg of CONFIGS) {
    const N = 13, E = cfg.E;
    const s = sigmoid(randn(N * E, 3 * E, 2)), b = randn(E, 4, 0.1);
    const dw = randn(N * cfg.K, 5);
    const { indices } = moeRouteCpu(s, b, cfg);
    const ds = moeRouteBackwardCpu({ s, indices, dweights: dw }, { E, routeScale: cfg.routeScale });
    // loss = sum(weights * dw); h is far below the score gaps, so the selection is fixed
    const x = Float64Array.from(s);
    const fd = finiteDiff((y) => {
      const r = moeRouteCpu(y, b, cfg);
      deepEqual(r.indices, indices, "a perturbation changed the selection");
      return r.weights.reduce((acc, w, i) => acc + w * dw[i], 0);
    }, x);
    assertClose(ds, fd, { atol: 1e-7, rtol: 1e-6, label: `fd E${E}` });
    const sT = Tensor.from(device, s, [N, E]);
    const idxT = Tensor.from(device, indices, [N, cfg.K], "i32");
    const dwT = Tensor.from(device, dw, [N, cfg.K]);
    const out = Tensor.empty(device, [N, E]);
    moeRouteBackward(out, { s: sT, indices: idxT, dweights: dwT }, { routeScale: cfg.routeScale });
    assertClose(await out.readF32(), ds, { atol: 1e-5, rtol: 1e-4, label: `device E${E}` });
    const pre = randn(N * E, 6);
    const acc = Tensor.from(device, pre, [N, E]);
    moeRouteBackward(acc, { s: sT, indices: idxT, dweights: dwT }, {
      routeScale: cfg.routeScale,
      accumulate: true,
    });
    assertClose(await acc.readF32(), ds.map((v, i) => v + pre[i]), { atol: 1e-5, rtol: 1e-4 });
  }
});

Deno.test("routing, plan and balance loss give identical bits on rerun", GPU_TEST, async () => {
  const device = await testDevice();
  const N = 200, E = 16, cfg = { K: 4, groups: 4, topkGroups: 2, routeScale: 1.5 };
  const s = Tensor.from(device, sigmoid(randu(N * E, 1, -3, 3)), [N, E]);
  const bias = Tensor.from(device, randn(E, 2, 0.1), [E]);
  const run = async () => {
    const { indices, weights } = moeRoute(s, bias, cfg);
    const plan = dispatchPlan(indices, { E });
    const loss = balanceLoss(s, indices, { B: 4, alpha: 1e-4 });
    return [
      await weights.readF32(),
      new Float32Array((await plan.perm.read()).buffer),
      await loss.readF32(),
    ];
  };
  const a = await run(), b = await run();
  a.forEach((x, i) => assertSameBits(x, b[i], `output ${i}`));
});
