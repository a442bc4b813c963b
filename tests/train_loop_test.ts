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

Deno.test(
  "an update that overflows the weights (--lr 1e39) writes no checkpoint and names the last good one",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    // Two good steps and their checkpoint, then a run resumed from it with a huge LR.
    let model = DeepSeekV3.create(device, cfg, { seed: 1 });
    await trainLoop(model, task(), { ...loopOpts, steps: 2, runDir: root });
    model.arena.destroy();
    model = DeepSeekV3.create(device, cfg, { seed: 1 });
    await assert.rejects(
      trainLoop(model, task(), {
        ...loopOpts,
        lr: 1e39,
        warmupSteps: 0,
        steps: 4,
        checkpointEvery: 1,
        runDir: root,
        resume: true,
      }),
      (e: Error) =>
        e instanceof NonFiniteError &&
        /^step 3: the parameter '.+' after the update \(\d+ non-finite/.test(e.message) &&
        e.message.includes(`last good checkpoint is ${root}/step-000002`),
    );
    model.arena.destroy();
    // Step 3's update made every weight inf; its checkpoint was refused.
    const ck = await loadCheckpoint(root);
    assert.equal(ck.state.step, 2, "the latest checkpoint is still the good one");
    for (const [name, w] of ck.params) assert.ok(w.every(Number.isFinite), name);
    const names = [...Deno.readDirSync(root)].map((e) => e.name).sort();
    assert.deepEqual(names.filter((n) => n.startsWith("step-")), ["step-000002"]);
    // Resuming from it with a sane LR continues.
    model = DeepSeekV3.create(device, cfg, { seed: 1 });
    const ok = await trainLoop(model, task(), {
      ...loopOpts,
      steps: 4,
      runDir: root,
      resume: true,
    });
    assert.equal(ok.step, 4);
    model.arena.destroy();
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "resume never restarts from scratch over a run it cannot continue, nor truncates its metrics",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    const model = DeepSeekV3.create(device, cfg, { seed: 1 });
    try {
      await trainLoop(model, task(), { ...loopOpts, steps: 4, checkpointEvery: 2, runDir: root });
      const metricsBefore = await Deno.readTextFile(`${root}/metrics.jsonl`);
      const resume = () =>
        trainLoop(model, task(), { ...loopOpts, steps: 6, runDir: root, resume: true });
      // latest.json names step 4, whose directory is gone: fall back to step 2 with a warning.
      await Deno.rename(`${root}/step-000004`, `${root}/moved-away`);
      // No checkpoint left at all, latest.json still naming step 4: an error, not step 0.
      await Deno.rename(`${root}/step-000002`, `${root}/moved-away-2`);
      await assert.rejects(resume(), /latest\.json names step-000004, but .* is missing/);
      assert.equal(await Deno.readTextFile(`${root}/metrics.jsonl`), metricsBefore);
      // Without latest.json either, the metrics of the earlier run still stop it.
      await Deno.remove(`${root}/latest.json`);
      await assert.rejects(resume(), /no checkpoint to continue, but its metrics\.jsonl holds/);
      assert.equal(await Deno.readTextFile(`${root}/metrics.jsonl`), metricsBefore);
      // With step 2 back, resume continues from it and says why it is not step 4.
      await Deno.rename(`${root}/moved-away-2`, `${root}/step-000002`);
      await Deno.writeTextFile(
        `${root}/latest.json`,
        JSON.stringify({ format: 1, step: 4, dir: "step-000004" }),
      );
      const lines: string[] = [];
      const r = await trainLoop(model, task(), {
        ...loopOpts,
        steps: 6,
        runDir: root,
        resume: true,
        log: (l) => lines.push(l),
      });
      assert.equal(r.step, 6);
      assert.ok(lines.some((l) => /names step-000004, which is missing.*step-000002/.test(l)));
      assert.ok(lines.some((l) => /resumed pretrain from .*step-000002 at step 2/.test(l)));
    } finally {
      model.arena.destroy();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "resume refuses a state.json without the data position, or of another stage",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    const model = DeepSeekV3.create(device, cfg, { seed: 1 });
    try {
      await trainLoop(model, task(), { ...loopOpts, steps: 2, runDir: root });
      const statePath = `${root}/step-000002/state.json`;
      const state = JSON.parse(await Deno.readTextFile(statePath));
      const resume = () =>
        trainLoop(model, task(), { ...loopOpts, steps: 4, runDir: root, resume: true });
      await Deno.writeTextFile(statePath, JSON.stringify({ ...state, task: undefined }));
      await assert.rejects(
        resume(),
        (e: Error) => e.message.startsWith(`${statePath}: no "task" field`),
      );
      await Deno.writeTextFile(statePath, JSON.stringify({ ...state, stage: "sft" }));
      await assert.rejects(resume(), /a sft checkpoint cannot resume pretrain/);
    } finally {
      model.arena.destroy();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "a run removes partial files of an earlier failed write when it starts, and warns over an earlier run",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const root = await Deno.makeTempDir();
    await Deno.mkdir(`${root}/step-000004.tmp-12345`);
    await Deno.writeTextFile(`${root}/step-000004.tmp-12345/model.safetensors`, "partial");
    await Deno.writeTextFile(`${root}/metrics.jsonl.tmp-12345`, "partial");
    await Deno.writeTextFile(`${root}/notes.tmp-1`, "not ours: kept");
    const model = DeepSeekV3.create(device, cfg, { seed: 1 });
    const lines: string[] = [];
    try {
      await trainLoop(model, task(), {
        ...loopOpts,
        steps: 1,
        runDir: root,
        log: (l) => lines.push(l),
      });
      const names = [...Deno.readDirSync(root)].map((e) => e.name);
      assert.ok(!names.some((n) => n.includes(".tmp-") && n !== "notes.tmp-1"), String(names));
      assert.ok(names.includes("notes.tmp-1"));
      assert.ok(lines.some((l) => l.startsWith("removed 2 partial file(s)")));
      // A fresh run over it says what it replaces.
      lines.length = 0;
      await trainLoop(model, task(), {
        ...loopOpts,
        steps: 1,
        runDir: root,
        log: (l) => lines.push(l),
      });
      assert.ok(
        lines.some((l) => l.startsWith(`warning: ${root} holds an earlier run (checkpoint `)),
        lines.join("\n"),
      );
    } finally {
      model.arena.destroy();
      await Deno.remove(root, { recursive: true });
    }
  },
);
