import {
  crossEntropy,
  crossEntropyBackward,
  crossEntropyBackwardCpu,
  crossEntropyCpu,
  crossEntropyForward,
  tokenLogprobs,
  tokenLogprobsBackward,
  tokenLogprobsBackwardCpu,
  tokenLogprobsCpu,
  tokenLogprobsForward,
} from "../kernels/cross_entropy.ts";
import { add, mul } from "../kernels/elementwise.ts";
import { sumAll } from "../kernels/reduce.ts";
import { Tape } from "../kernels/autograd.ts";
import type { Device } from "../kernels/backend.ts";
import { Tensor } from "../kernels/tensor.ts";
import {
  assertClose,
  assertSameBits,
  GPU_TEST,
  randint,
  randn,
  randu,
  testDevice,
} from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";

// [N, V]: one-element rows, ragged, one thread per row over several workgroups (130 x 64),
// 8 lanes per row (300, 6400, scalar 1001), 16 lanes (16900)
const SHAPES: [number, number][] = [
  [1, 1],
  [5, 7],
  [130, 64],
  [33, 300],
  [11, 1001],
  [9, 6400],
  [2, 16900],
];

/** Targets in [0, V) with every fourth row ignored (-1) and one out-of-range id. */
function makeTargets(N: number, V: number, seed: number): Int32Array {
  const t = randint(N, seed, V);
  for (let i = 2; i < N; i += 4) t[i] = -1;
  if (N > 3) t[3] = V;
  return t;
}

function buffers(device: Device, N: number) {
  return {
    rowLoss: Tensor.empty(device, [N]),
    lse: Tensor.empty(device, [N]),
    loss: Tensor.empty(device, [1]),
    stats: Tensor.empty(device, [2]),
  };
}

Deno.test(
  "cross-entropy forward matches the CPU twin, with and without weights",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [N, V] of SHAPES) {
      const x = randn(N * V, N + V, 3), t = makeTargets(N, V, N * V);
      const w = randu(N, 5, 0, 2);
      const xt = Tensor.from(device, x, [N, V]), tt = Tensor.from(device, t, [N], "i32");
      for (const weighted of [false, true]) {
        const b = buffers(device, N);
        const opts = weighted ? { weights: w } : {};
        crossEntropyForward(b, xt, tt, weighted ? { weights: Tensor.from(device, w, [N]) } : {});
        const want = crossEntropyCpu(x, t, V, opts);
        const label = `${N}x${V} weighted=${weighted}`;
        assertClose(await b.rowLoss.readF32(), want.rowLoss, {
          atol: 1e-5,
          label: `${label} rows`,
        });
        assertClose(await b.lse.readF32(), want.lse, { atol: 1e-5, label: `${label} lse` });
        assertClose(await b.loss.readF32(), [want.loss], { atol: 1e-5, label: `${label} loss` });
        assertClose(await b.stats.readF32(), [want.count, Math.max(1, want.count)], { label });
      }
    }
  },
);

Deno.test(
  "cross-entropy uses an explicit denominator and survives all-ignored rows",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [N, V] = [6, 10];
    const x = randn(N * V, 1), t = makeTargets(N, V, 2);
    const b = buffers(device, N);
    const xt = Tensor.from(device, x, [N, V]);
    crossEntropyForward(b, xt, Tensor.from(device, t, [N], "i32"), { denominator: 40 });
    assertClose(await b.loss.readF32(), [crossEntropyCpu(x, t, V, { denominator: 40 }).loss]);
    const none = Tensor.from(device, new Int32Array(N).fill(-1), [N], "i32");
    crossEntropyForward(b, xt, none);
    assertClose(await b.loss.readF32(), [0]);
    const dx = Tensor.from(device, randn(N * V, 3), [N, V]);
    crossEntropyBackward(dx, Tensor.from(device, [1], [1]), { logits: xt, targets: none, ...b });
    assertClose(await dx.readF32(), new Float32Array(N * V), { label: "ignored rows: zero grad" });
  },
);

Deno.test("cross-entropy and log-prob CPU backwards match finite differences", () => {
  const [N, V] = [5, 4];
  const x = f64(randn(N * V, 1)), t = makeTargets(N, V, 2), w = f64(randu(N, 3, 0.5, 2));
  for (const opts of [{}, { weights: w }, { weights: w, denominator: 7 }]) {
    const grad = crossEntropyBackwardCpu(x, t, V, { ...opts, dloss: 1.3 });
    checkFiniteDiff((v) => [crossEntropyCpu(v, t, V, opts).loss], x, [1.3], grad, {
      label: `ce ${Object.keys(opts)}`,
    });
  }
  const G = f64(randn(N, 4));
  checkFiniteDiff(
    (v) => tokenLogprobsCpu(v, t, V),
    x,
    G,
    tokenLogprobsBackwardCpu(x, t, V, G),
    { label: "logprobs" },
  );
});

Deno.test(
  "cross-entropy and log-prob GPU backwards match the CPU and accumulate",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [N, V] of SHAPES) {
      const x = randn(N * V, N * 3 + V, 2), t = makeTargets(N, V, V), w = randu(N, 6, 0, 2);
      const prior = randn(N * V, 8);
      const xt = Tensor.from(device, x, [N, V]), tt = Tensor.from(device, t, [N], "i32");
      const wt = Tensor.from(device, w, [N]);
      const b = buffers(device, N);
      crossEntropyForward(b, xt, tt, { weights: wt });
      const saved = { logits: xt, targets: tt, lse: b.lse, stats: b.stats, weights: wt };
      const want = crossEntropyBackwardCpu(x, t, V, { weights: w, dloss: 0.7 });
      const dloss = Tensor.from(device, [0.7], [1]);
      const dx = Tensor.empty(device, [N, V]);
      crossEntropyBackward(dx, dloss, saved);
      const tol = { atol: 1e-6, rtol: 1e-4 };
      assertClose(await dx.readF32(), want, { ...tol, label: `ce ${N}x${V}` });
      const dxa = Tensor.from(device, prior, [N, V]);
      crossEntropyBackward(dxa, dloss, saved, { accumulate: true });
      assertClose(await dxa.readF32(), want.map((v, i) => v + prior[i]), {
        ...tol,
        label: "ce acc",
      });

      const lp = Tensor.empty(device, [N]), lse = Tensor.empty(device, [N]);
      tokenLogprobsForward({ logprobs: lp, lse }, xt, tt);
      assertClose(await lp.readF32(), tokenLogprobsCpu(x, t, V), { atol: 1e-5, label: "logprobs" });
      const g = randn(N, 12);
      const dl = Tensor.from(device, prior, [N, V]);
      tokenLogprobsBackward(dl, Tensor.from(device, g, [N]), { logits: xt, targets: tt, lse }, {
        accumulate: true,
      });
      const wantL = tokenLogprobsBackwardCpu(x, t, V, g);
      assertClose(await dl.readF32(), wantL.map((v, i) => v + prior[i]), {
        ...tol,
        label: "lp acc",
      });
    }
  },
);

Deno.test("cross-entropy run twice gives identical bits", GPU_TEST, async () => {
  const device = await testDevice();
  const [N, V] = [300, 1000];
  const xt = Tensor.from(device, randn(N * V, 3, 4), [N, V]);
  const tt = Tensor.from(device, makeTargets(N, V, 4), [N], "i32");
  const run = async () => {
    const b = buffers(device, N);
    crossEntropyForward(b, xt, tt);
    const dx = Tensor.empty(device, [N, V]);
    crossEntropyBackward(dx, Tensor.from(device, [1], [1]), { logits: xt, targets: tt, ...b });
    return [await b.loss.readF32(), await b.rowLoss.readF32(), await dx.readF32()];
  };
  const a = await run(), c = await run();
  a.forEach((v, i) => assertSameBits(v, c[i], `output ${i}`));
});

Deno.test(
  "crossEntropy and tokenLogprobs ops accumulate into logits under the tape",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [B, T, V] = [2, 3, 17], N = B * T;
    const xh = randn(N * V, 1), th = makeTargets(N, V, 3), g = randn(N, 4);
    const logits = Tensor.from(device, xh, [B, T, V]);
    logits.requiresGrad = true;
    const targets = Tensor.from(device, th, [B, T], "i32");
    const tape = new Tape().start();
    const { loss, rowLoss, count } = crossEntropy(logits, targets);
    const lp = tokenLogprobs(logits, targets);
    // total = loss + sum(g * lp): two writers into logits.grad
    const gl = Tensor.from(device, g, [B, T]);
    const total = add(loss, sumAll(mul(lp, gl)));
    tape.backward(total);
    const want = crossEntropyBackwardCpu(xh, th, V);
    const wantL = tokenLogprobsBackwardCpu(xh, th, V, g);
    assertClose(await logits.grad!.readF32(), want.map((v, i) => v + wantL[i]), { atol: 1e-6 });
    const ref = crossEntropyCpu(xh, th, V);
    assertClose(await rowLoss.readF32(), ref.rowLoss, { atol: 1e-5 });
    assertClose(await count.readF32(), [ref.count]);
  },
);
