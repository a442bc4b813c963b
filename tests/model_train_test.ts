import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import { Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { DeepSeekV3, type HostBatch } from "../model/transformer.ts";
import { AdamW } from "../train/optimizer.ts";
import { assertSameBits, GPU_TEST, randint, testDevice } from "./_util.ts";

async function train(steps: number): Promise<{ losses: number[]; weights: Float32Array }> {
  const device = await testDevice();
  const cfg = resolveConfig("tiny");
  const model = DeepSeekV3.create(device, cfg, { seed: 3 });
  const opt = new AdamW(model.arena, { weightDecay: 0.1 });
  const B = 2, T = 16;
  const tokens = randint(B * T, 5, cfg.vocab_size);
  const targets = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) targets[i] = (tokens[i] * 7 + 3) % cfg.vocab_size;
  const batch: HostBatch = { tokens, targets, B, T };
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const scope = new Scope();
    model.arena.zeroGrads();
    const tape = new Tape().start();
    const out = model.forward(model.upload(batch));
    tape.backward(out.losses!.total);
    opt.update(3e-3);
    model.updateBiases(out.loads);
    losses.push((await out.losses!.main.readF32())[0]);
    scope.dispose();
  }
  const w = await model.arena.readAll("params");
  model.arena.destroy();
  return { losses, weights: w.get("model.layers.1.mlp.experts.3.up_proj.weight")! };
}

Deno.test(
  "30 AdamW steps on one batch at least halve the tiny model's loss, bit-identically on a rerun",
  GPU_TEST,
  async () => {
    const a = await train(30);
    assert.ok(
      a.losses[29] < a.losses[0] / 2,
      `loss went ${a.losses[0].toFixed(4)} -> ${a.losses[29].toFixed(4)}`,
    );
    const b = await train(30);
    assertSameBits(Float32Array.from(a.losses), Float32Array.from(b.losses), "losses");
    assertSameBits(a.weights, b.weights, "weights");
  },
);

Deno.test(
  "repeated bias updates shrink the max/min expert load ratio of a skewed router",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny", { bias_update_speed: 0.02, mtp_depth: 0 });
    const model = DeepSeekV3.create(device, cfg, { seed: 4 });
    // Skew the router: experts 0 and 1 start with a large selection bias, so every token picks
    // them; the aux-loss-free updates must pull the loads back together.
    const bias = "model.layers.1.mlp.gate.e_score_correction_bias";
    const b0 = new Float32Array(cfg.n_routed_experts);
    b0[0] = b0[1] = 0.5;
    model.arena.upload(bias, b0);
    const B = 4, T = 16;
    const tokens = randint(B * T, 9, cfg.vocab_size);
    const ratio = (loads: Int32Array | Uint32Array | Float32Array | Uint16Array) =>
      Math.max(...loads) / Math.max(1, Math.min(...loads));
    let first = 0, last = 0;
    for (let s = 0; s < 60; s++) {
      const scope = new Scope();
      const out = model.forward(model.upload({ tokens, targets: new Int32Array(0), B, T }), {
        logitsOnly: true,
      });
      const loads = await out.loads[0].read();
      if (s === 0) first = ratio(loads);
      last = ratio(loads);
      model.updateBiases(out.loads);
      scope.dispose();
    }
    assert.ok(first >= 20, `the skew should start large, got max/min ${first}`);
    assert.ok(last < first / 3, `max/min load ratio ${first} -> ${last}`);
    model.arena.destroy();
  },
);
