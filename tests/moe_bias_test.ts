import { biasUpdate, biasUpdateCpu } from "../kernels/moe_bias.ts";
import { dispatchPlan } from "../kernels/moe_plan.ts";
import { moeRouteForward } from "../kernels/moe_route.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";
import { deepEqual, default as assert } from "node:assert/strict";

const sigmoid = (x: Float32Array) => x.map((v) => 1 / (1 + Math.exp(-v)));

Deno.test("biasUpdate matches the CPU twin bit for bit", GPU_TEST, async () => {
  const device = await testDevice();
  // sum 24 over 6 experts: mean 4 exactly, so expert 2 (load 4) keeps its bias
  for (const loads of [[5, 1, 4, 10, 0, 4], [3, 3, 3], [7, 0, 0, 1, 2]]) {
    const E = loads.length;
    const b = randn(E, E, 0.01);
    const bias = Tensor.from(device, b, [E]);
    biasUpdate(bias, Tensor.from(device, loads, [E], "i32"), { gamma: 0.001 });
    assertSameBits(await bias.readF32(), biasUpdateCpu(b, loads, { gamma: 0.001 }), `${loads}`);
  }
  deepEqual(
    [...biasUpdateCpu(new Float32Array(3), [5, 1, 3], { gamma: 0.5 })],
    [-0.5, 0.5, 0],
  );
});

Deno.test("repeated bias updates shrink the load imbalance", GPU_TEST, async () => {
  const device = await testDevice();
  const N = 256, E = 8, cfg = { K: 2, groups: 2, topkGroups: 1, routeScale: 1 };
  // experts 0 and 1 get +2 logits: they take most tokens before balancing
  const logits = randn(N * E, 42, 1).map((v, i) => v + ((i % E) < 2 ? 2 : 0));
  const s = Tensor.from(device, sigmoid(logits), [N, E]);
  const bias = Tensor.zeros(device, [E]);
  const indices = Tensor.empty(device, [N, cfg.K], "i32"),
    weights = Tensor.empty(device, [N, cfg.K]);
  const ratio = (c: Int32Array) => Math.max(...c) / Math.max(1, Math.min(...c));
  let first = 0, last = 0;
  for (let step = 0; step < 150; step++) {
    moeRouteForward({ indices, weights }, { s, bias }, cfg);
    const plan = dispatchPlan(indices, { E });
    biasUpdate(bias, plan.counts, { gamma: 0.005 });
    if (step === 0) first = ratio((await plan.counts.read()) as Int32Array);
    if (step === 149) last = ratio((await plan.counts.read()) as Int32Array);
  }
  assert(first > 5, `the start should be imbalanced (max/min ${first})`);
  assert(last < 1.6, `max/min load went from ${first} to ${last}`);
});
