import {
  balanceLoss,
  balanceLossBackward,
  balanceLossBackwardCpu,
  balanceLossCpu,
  balanceLossForward,
} from "../kernels/moe_balance.ts";
import { moeRoute, moeRouteBackwardCpu, moeRouteCpu } from "../kernels/moe_route.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, finiteDiff, GPU_TEST, randn, testDevice } from "./_util.ts";

const sigmoid = (x: Float32Array) => x.map((v) => 1 / (1 + Math.exp(-v)));

Deno.test(
  "balance loss: GPU vs CPU, CPU backward vs finite differences, GPU backward",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [B, T, E, K] of [[1, 1, 2, 1], [2, 7, 8, 2], [3, 50, 6, 3]]) {
      const N = B * T, alpha = 0.01;
      const s = sigmoid(randn(N * E, N + E, 2));
      const { indices } = moeRouteCpu(s, new Float32Array(E), {
        K,
        groups: 1,
        topkGroups: 1,
        routeScale: 1,
      });
      const opts = { B, E, alpha };
      const sT = Tensor.from(device, s, [N, E]), idxT = Tensor.from(device, indices, [N, K], "i32");
      const loss = Tensor.empty(device, [1]);
      const cache = { f: Tensor.empty(device, [B, E]), stats: Tensor.empty(device, [N, 2]) };
      balanceLossForward({ loss, cache }, { s: sT, indices: idxT }, opts);
      const label = `B${B} T${T} E${E} K${K}`;
      assertClose(await loss.readF32(), [balanceLossCpu(s, indices, opts)], { rtol: 1e-5, label });
      // f is held constant (no gradient through the selection), as in V3
      const ds = balanceLossBackwardCpu(s, indices, { ...opts, dloss: 1.7 });
      const fd = finiteDiff((y) => 1.7 * balanceLossCpu(y, indices, opts), Float64Array.from(s));
      assertClose(ds, fd, { atol: 1e-9, rtol: 1e-6, label: `fd ${label}` });
      const dsT = Tensor.empty(device, [N, E]);
      balanceLossBackward(dsT, { cache, dloss: Tensor.from(device, [1.7], [1]) }, opts);
      assertClose(await dsT.readF32(), ds, { atol: 1e-8, rtol: 1e-4, label: `device ${label}` });
    }
    // V3's worked value: T = 1, E = 2, K = 1, expert 0 chosen, s = [0.6, 0.2] -> 2 * 0.75
    assertClose([balanceLossCpu([0.6, 0.2], [0], { B: 1, E: 2, alpha: 1 })], [1.5]);
  },
);

Deno.test(
  "moeRoute and balanceLoss accumulate their gradients into s on the tape",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const B = 2, T = 9, E = 8, N = B * T, cfg = { K: 2, groups: 2, topkGroups: 1, routeScale: 2.5 };
    const sh = sigmoid(randn(N * E, 11, 2)), bh = randn(E, 12, 0.1), dw = randn(N * cfg.K, 13);
    const s = Tensor.from(device, sh, [N, E]);
    s.requiresGrad = true;
    const tape = new Tape().start();
    const { indices, weights } = moeRoute(s, Tensor.from(device, bh, [E]), cfg);
    const lb = balanceLoss(s, indices, { B, alpha: 0.1 });
    tape.stop();
    // seed both outputs by hand: weights with dw, the loss with 1
    weights.grad = Tensor.from(device, dw, [N, cfg.K]);
    lb.grad = Tensor.from(device, [1], [1]);
    for (let i = tape.entries.length - 1; i >= 0; i--) tape.entries[i].backward();
    const idx = moeRouteCpu(sh, bh, cfg).indices;
    const want = moeRouteBackwardCpu({ s: sh, indices: idx, dweights: dw }, {
      E,
      routeScale: cfg.routeScale,
    });
    const bal = balanceLossBackwardCpu(sh, idx, { B, E, alpha: 0.1 });
    assertClose(await s.grad!.readF32(), want.map((v, i) => v + bal[i]), {
      atol: 1e-6,
      rtol: 1e-4,
    });
  },
);
