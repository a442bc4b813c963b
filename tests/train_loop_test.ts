import assert from "node:assert/strict";
import { scale } from "../kernels/elementwise.ts";
import { testDevice } from "./_util.ts";
import { resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";
import { NonFiniteError, type TaskOutput, trainLoop, type TrainTask } from "../train/loop.ts";
import { PretrainTask } from "../train/pretrain.ts";
import { assertSameBits, GPU_TEST, randint } from "./_util.ts";

const cfg = resolveConfig("tiny");
const train = randint(4000, 21, cfg.vocab_size);
const val = randint(300, 22, cfg.vocab_size);
const loopOpts = {
  steps: 6,
  lr: 5e-3,
  warmupSteps: 2,
  logEvery: 2,
  progress: false,
  log: () => {},
};

/** Wraps a task to fail at a given step: a crash (throw) or a NaN loss. */
class Faulty implements TrainTask {
  readonly name = "pretrain";
  calls = 0;
  constructor(readonly inner: PretrainTask, readonly at: number, readonly kind: "crash" | "nan") {}
  forward(model: DeepSeekV3): TaskOutput {
    this.calls++;
    if (this.calls === this.at && this.kind === "crash") throw new Error("simulated crash");
    const out = this.inner.forward(model);
    if (this.calls === this.at) return { ...out, loss: scale(out.loss, NaN) };
    return out;
  }
  validate(model: DeepSeekV3) {
    return this.inner.validate(model);
  }
  state() {
    return this.inner.state();
  }
  restore(s: unknown) {
    this.inner.restore(s);
  }
}

const task = () => new PretrainTask(train, val, { B: 2, T: 16, seed: 5, evalBatches: 2 });

async function weightsAfter(dir: string): Promise<Map<string, Float32Array>> {
  return (await loadCheckpoint(dir)).params;
}

Deno.test(
  "resuming after a crash gives weights bit-identical to an uninterrupted run",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    // Uninterrupted: 6 steps.
    let model = DeepSeekV3.create(device, cfg, { seed: 1 });
    const full = await trainLoop(model, task(), { ...loopOpts, runDir: `${root}/a` });
    model.arena.destroy();
    // Interrupted: checkpoint every 3 steps, crash during step 5, then resume in a fresh model.
    model = DeepSeekV3.create(device, cfg, { seed: 1 });
    await assert.rejects(
      trainLoop(model, new Faulty(task(), 5, "crash"), {
        ...loopOpts,
        runDir: `${root}/b`,
        checkpointEvery: 3,
      }),
      /simulated crash/,
    );
    model.arena.destroy();
    model = DeepSeekV3.create(device, cfg, { seed: 99 }); // different init: everything must come back
    const resumed = await trainLoop(model, task(), {
      ...loopOpts,
      runDir: `${root}/b`,
      checkpointEvery: 3,
      resume: true,
    });
    model.arena.destroy();
    assert.equal(resumed.step, 6);
    const a = await weightsAfter(full.checkpoint), b = await weightsAfter(resumed.checkpoint);
    assert.equal(a.size, b.size);
    for (const [name, w] of a) assertSameBits(w, b.get(name)!, name);
    assert.equal(resumed.lastLoss, full.lastLoss);
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "a NaN loss stops the run naming the step and writes no NaN checkpoint",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    const model = DeepSeekV3.create(device, cfg, { seed: 1 });
    const err = await assert.rejects(
      trainLoop(model, new Faulty(task(), 5, "nan"), {
        ...loopOpts,
        runDir: root,
        checkpointEvery: 2,
      }),
      NonFiniteError,
    ) as unknown;
    void err;
    model.arena.destroy();
    const ck = await loadCheckpoint(root);
    assert.equal(ck.state.step, 4, "the last good checkpoint stays the latest");
    for (const [name, w] of ck.params) {
      assert.ok(w.every(Number.isFinite), `${name} has a non-finite value`);
    }
    const metrics = await Deno.readTextFile(`${root}/metrics.jsonl`);
    assert.ok(!metrics.includes("NaN") && !metrics.includes("null,"), "no NaN line in the metrics");
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test("the NaN error message names the step and the last good checkpoint", () => {
  const e = new NonFiniteError(7, "the loss (NaN)", "runs/x/step-000006");
  assert.match(e.message, /^step 7: the loss \(NaN\) is not finite/);
  assert.match(e.message, /runs\/x\/step-000006/);
});
