import assert from "node:assert/strict";
import { createCpu } from "../kernels/cpu.ts";
import { getGpu } from "../kernels/gpu.ts";
import type { Device } from "../kernels/backend.ts";
import { resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";
import { trainLoop } from "../train/loop.ts";
import { PretrainTask } from "../train/pretrain.ts";
import { assertClose, assertSameBits, GPU_TEST, randint } from "./_util.ts";
import { trainSteps } from "./_train_steps.ts";

const cfg = resolveConfig("tiny", { balance_alpha: 0.05 });
const B = 2, T = 8;

/** Loss, every gradient, then the parameters after `steps` AdamW steps, on one backend. */
function run(device: Device, steps: number) {
  return trainSteps(device, cfg, { B, T, steps, lr: 1e-2, initSeed: 3, dataSeed: 4 });
}

Deno.test(
  "the CPU backend and WebGPU agree on the tiny model: loss, every gradient, 4 AdamW steps",
  GPU_TEST,
  async () => {
    const cpu = await run(createCpu(), 4), gpu = await run(await getGpu(), 4);
    assertClose(cpu.losses, gpu.losses, { atol: 2e-5, rtol: 1e-4, label: "losses" });
    let n = 0;
    for (const [name, g] of gpu.grads) {
      let maxAbs = 0;
      for (const v of g) maxAbs = Math.max(maxAbs, Math.abs(v));
      assertClose(cpu.grads.get(name)!, g, { atol: 1e-6 + 1e-3 * maxAbs, rtol: 2e-3, label: name });
      n++;
    }
    assert.ok(n > 40, `compared ${n} gradients`);
    for (const [name, p] of gpu.params) {
      assertClose(cpu.params.get(name)!, p, {
        atol: 2e-4,
        rtol: 1e-3,
        label: `${name} after 4 steps`,
      });
    }
  },
);

Deno.test("the CPU backend gives the same bits twice for the same seed", GPU_TEST, async () => {
  const a = await run(createCpu(), 3), b = await run(createCpu(), 3);
  assert.deepEqual(a.losses, b.losses);
  for (const [name, p] of a.params) assertSameBits(b.params.get(name)!, p, name);
});

Deno.test(
  "a checkpoint written on the CPU backend resumes on WebGPU, and one from WebGPU on the CPU",
  GPU_TEST,
  async () => {
    const train = randint(3000, 21, cfg.vocab_size), val = randint(300, 22, cfg.vocab_size);
    const opts = { lr: 5e-3, warmupSteps: 1, logEvery: 1, progress: false, log: () => {} };
    const task = () => new PretrainTask(train, val, { B: 2, T: 16, seed: 5, evalBatches: 1 });
    const model = (device: Device) => DeepSeekV3.create(device, cfg, { seed: 8 });
    const finals: Map<string, Float32Array>[] = [];
    for (const [first, second] of [[createCpu(), await getGpu()], [await getGpu(), createCpu()]]) {
      const dir = await Deno.makeTempDir();
      try {
        const m1 = model(first);
        await trainLoop(m1, task(), { ...opts, runDir: dir, steps: 3 });
        m1.arena.destroy();
        const m2 = new DeepSeekV3(second, cfg);
        const r = await trainLoop(m2, task(), { ...opts, runDir: dir, steps: 5, resume: true });
        m2.arena.destroy();
        assert.equal(r.step, 5);
        assert.ok(Number.isFinite(r.lastLoss));
        finals.push((await loadCheckpoint(r.checkpoint)).params);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    // Both orders train the same 5 steps; they differ only by f32 rounding.
    for (const [name, p] of finals[0]) {
      assertClose(finals[1].get(name)!, p, { atol: 2e-4, rtol: 1e-3, label: name });
    }
  },
);

Deno.test("without a BLAS library the CPU backend says what to install", async () => {
  const code = 'import { createCpu } from "./kernels/cpu.ts"; createCpu();';
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: new URL("..", import.meta.url),
    env: { MINIDEEPSEEK_BLAS: "/nonexistent/libnoblas.so" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.match(err, /\/nonexistent\/libnoblas\.so/);
  assert.match(err, /apt-get install libopenblas0-pthread/);
  assert.match(err, /MINIDEEPSEEK_BLAS/);
});
