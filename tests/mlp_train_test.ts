/**
 * End-to-end check of the runtime: a two-layer MLP trained with the tape and AdamW on the GPU
 * against the same training run on the kernels' CPU twins, step by step.
 */
import assert from "node:assert/strict";
import { ParamArena } from "../kernels/arena.ts";
import { Tape } from "../kernels/autograd.ts";
import {
  crossEntropy,
  crossEntropyBackwardCpu,
  crossEntropyCpu,
} from "../kernels/cross_entropy.ts";
import { ewCpu, silu } from "../kernels/elementwise.ts";
import { linear, linearBackwardCpu, linearCpu } from "../kernels/matmul.ts";
import { adamwCpu, clipScaleCpu, sumSquaresCpu } from "../kernels/optim.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { AdamW } from "../train/optimizer.ts";
import { assertClose, GPU_TEST, randint, randn, testDevice } from "./_util.ts";

const N = 24, DIN = 10, HID = 17, C = 5, STEPS = 50, LR = 1e-2, MAX_NORM = 1.0;

Deno.test(
  "a tiny MLP trained 50 steps on the GPU lowers its loss and tracks its CPU twin step by step",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const x = randn(N * DIN, 1);
    const y = randint(N, 2, C);
    const w1 = randn(HID * DIN, 3, 0.3), w2 = randn(C * HID, 4, 0.3);

    // GPU run: parameters in an arena, AdamW with clipping and decay on the matrices.
    const arena = new ParamArena(device, [{ name: "w1", shape: [HID, DIN] }, {
      name: "w2",
      shape: [C, HID],
    }]);
    arena.upload("w1", w1);
    arena.upload("w2", w2);
    const opt = new AdamW(arena, { maxGradNorm: MAX_NORM, weightDecay: 0.1 });
    const xs = Tensor.from(device, x, [N, DIN]), ys = Tensor.from(device, y, [N], "i32");
    const gpuLoss: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const scope = new Scope();
      arena.zeroGrads();
      const tape = new Tape().start();
      const logits = linear(silu(linear(xs, arena.param("w1"))), arena.param("w2"));
      const { loss } = crossEntropy(logits, ys);
      tape.backward(loss);
      opt.update(LR);
      gpuLoss.push((await loss.readF32())[0]);
      scope.dispose();
    }

    // CPU twin run in f32 arithmetic order of the twins.
    const p1 = Float32Array.from(w1), p2 = Float32Array.from(w2);
    const m1 = new Float32Array(p1.length), v1 = new Float32Array(p1.length);
    const m2 = new Float32Array(p2.length), v2 = new Float32Array(p2.length);
    const cpuLoss: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const a = linearCpu(x, p1, { fout: HID });
      const h = ewCpu("silu", [a]);
      const logits = linearCpu(h, p2, { fout: C });
      cpuLoss.push(crossEntropyCpu(logits, y, C).loss);
      const dlogits = crossEntropyBackwardCpu(logits, y, C);
      const g2 = linearBackwardCpu(dlogits, { x: h, w: p2, fout: C });
      const da = ewCpu("silu_bwd", [a, g2.dx]);
      const g1 = linearBackwardCpu(da, { x, w: p1, fout: HID });
      const { sumsq } = sumSquaresCpu([{ t: g1.dw }, { t: g2.dw }]);
      const { scale } = clipScaleCpu(sumsq, MAX_NORM);
      const hyper = { lr: LR, step: s + 1, wd: 0.1, gradScale: scale };
      adamwCpu(p1, { grad: g1.dw, m: m1, v: v1 }, hyper);
      adamwCpu(p2, { grad: g2.dw, m: m2, v: v2 }, hyper);
    }

    assert.ok(gpuLoss[STEPS - 1] < 0.5 * gpuLoss[0], `loss ${gpuLoss[0]} -> ${gpuLoss[STEPS - 1]}`);
    assertClose(gpuLoss, cpuLoss, { atol: 1e-4, rtol: 1e-3, label: "loss per step" });
    const w = await arena.readAll();
    assertClose(w.get("w1")!, p1, { atol: 1e-4, rtol: 1e-3, label: "w1 after 50 steps" });
    assertClose(w.get("w2")!, p2, { atol: 1e-4, rtol: 1e-3, label: "w2 after 50 steps" });
    arena.destroy();
  },
);
