import { dispatchPlan, dispatchPlanCpu } from "../kernels/moe_plan.ts";
import { moeRouteCpu } from "../kernels/moe_route.ts";
import { Tensor } from "../kernels/tensor.ts";
import { GPU_TEST, randn, testDevice } from "./_util.ts";
import { deepEqual, default as assert } from "node:assert/strict";

const sigmoid = (x: Float32Array) => x.map((v) => 1 / (1 + Math.exp(-v)));

Deno.test(
  "dispatchPlan matches the CPU twin and is a permutation in token order",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [N, K, E] of [[1, 1, 4], [300, 3, 16], [97, 2, 7], [1000, 1, 3]]) {
      // skewed: expert E - 1 never chosen, lower experts often
      const s = sigmoid(
        randn(N * E, N + K, 1).map((v, i) => v + 3 * ((i % E) === E - 1 ? -9 : -(i % E) / E)),
      );
      const cfg = { K, groups: 1, topkGroups: 1, routeScale: 1 };
      const { indices } = moeRouteCpu(s, new Float32Array(E), cfg);
      const plan = dispatchPlan(Tensor.from(device, indices, [N, K], "i32"), { E });
      const want = dispatchPlanCpu(indices, { E });
      const label = `N${N} K${K} E${E}`;
      deepEqual(await plan.counts.read(), want.counts, `counts ${label}`);
      deepEqual(await plan.offsets.read(), want.offsets, `offsets ${label}`);
      deepEqual(await plan.perm.read(), want.perm, `perm ${label}`);
      deepEqual(await plan.inv.read(), want.inv, `inv ${label}`);
      // the twin itself: expert blocks in order, slots increasing inside each block
      for (let e = 0; e < E; e++) {
        for (let r = want.offsets[e]; r < want.offsets[e + 1]; r++) {
          assert(indices[want.perm[r]] === e);
          if (r > want.offsets[e]) assert(want.perm[r] > want.perm[r - 1]);
        }
      }
      assert(want.counts[E - 1] === 0 || N * K < E);
    }
  },
);
