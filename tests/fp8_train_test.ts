/**
 * The FP8 recipe in training: the same run in f32 and in emulated FP8 (E4M3, 1x128 / 128x128
 * scales, f32 accumulation) must end at nearly the same validation loss (V3 reports < 0.25%
 * relative difference at scale; the issue asks for 2%). The 200-step nano figure is measured by
 * `bench/fp8_nano.ts`; this CI-sized check runs the tiny preset for 200 steps.
 */
import assert from "node:assert/strict";
import { testDevice } from "./_util.ts";
import { resolveConfig } from "../model/config.ts";
import type { Precision } from "../model/precision.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { trainLoop } from "../train/loop.ts";
import { PretrainTask } from "../train/pretrain.ts";
import { GPU_TEST } from "./_util.ts";

/** A learnable stream: a noisy repeating pattern over the tiny vocabulary. */
function stream(n: number, seed: number): Int32Array {
  let s = seed >>> 0;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s >>> 28) === 0 ? (s >>> 8) % 128 : (i * 7 + (i >> 3)) % 97;
  }
  return out;
}

async function valLoss(precision: Precision): Promise<number> {
  const device = await testDevice();
  const cfg = resolveConfig("tiny", { dim: 64, inter_dim: 128 });
  const model = DeepSeekV3.create(device, cfg, { seed: 7 });
  model.precision = precision;
  const dir = await Deno.makeTempDir();
  const task = new PretrainTask(stream(20000, 1), stream(2000, 2), { B: 4, T: 32, seed: 3 });
  const r = await trainLoop(model, task, {
    runDir: dir,
    steps: 200,
    lr: 1e-2,
    warmupSteps: 10,
    logEvery: 50,
    progress: false,
    log: () => {},
  });
  model.arena.destroy();
  await Deno.remove(dir, { recursive: true });
  return r.val.loss;
}

Deno.test(
  "a 200-step fp8 run ends within 2% of the f32 run's validation loss (tiny)",
  GPU_TEST,
  async () => {
    const f32 = await valLoss("f32");
    const fp8 = await valLoss("fp8");
    assert.ok(f32 < Math.log(128) / 2, `the f32 run should learn the stream: val ${f32}`);
    const rel = Math.abs(fp8 - f32) / f32;
    assert.ok(rel < 0.02, `fp8 val ${fp8} vs f32 ${f32}: ${(100 * rel).toFixed(2)}% apart`);
  },
);
