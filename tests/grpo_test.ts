/**
 * GRPO: group advantages, the task's loss and gradients on the tiny model against the f64 CPU
 * reference model (and finite differences), a toy task whose reward must rise to ~1, and a run
 * resumed between the steps of one sampled batch ending with the same bits.
 *
 * @module
 */
import assert from "node:assert/strict";
import { grpoLossCpu } from "../kernels/grpo.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { referenceForwardBackward } from "../model/reference.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import {
  groupAdvantages,
  type GrpoBatch,
  type GrpoLossType,
  type GrpoPromptIds,
  GrpoTask,
  type GrpoTaskOptions,
} from "../train/grpo.ts";
import { type TaskOutput, trainLoop, type TrainTask } from "../train/loop.ts";
import { readMetrics } from "../train/metrics.ts";
import { packSequences } from "../train/sft.ts";
import { targetRows } from "../model/transformer.ts";
import { checkParamGrads, taskLossAndGrads } from "./_grad.ts";
import { assertClose, assertSameBits, GPU_TEST, testDevice } from "./_util.ts";

const cfg = resolveConfig("tiny");
const V = cfg.vocab_size;

Deno.test("groupAdvantages() normalizes within each group, with and without the std", () => {
  const a = groupAdvantages([1, 0, 0, 0, 2, 2, 2, 2], 4, true);
  const std = Math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 3);
  assertClose(a.slice(0, 4), [0.75, -0.25, -0.25, -0.25].map((v) => v / (std + 1e-4)), {
    atol: 1e-12,
  });
  assert.deepEqual(a.slice(4), [0, 0, 0, 0]); // no spread: no signal
  assert.deepEqual(groupAdvantages([3, 1], 2, false), [1, -1]);
});

function prompts(n: number, seed: number): GrpoPromptIds[] {
  return Array.from({ length: n }, (_, i) => ({
    ids: Array.from({ length: 3 + (i % 3) }, (_, j) => 10 + ((seed * 31 + i * 7 + j * 13) % 100)),
    source: `prompt ${i}`,
  }));
}

function options(o: Partial<GrpoTaskOptions>): GrpoTaskOptions {
  return {
    prompts: 2,
    group: 4,
    micro: 1,
    iterations: 1,
    maxTokens: 4,
    temperature: 1,
    topP: 1,
    beta: 0,
    epsLow: 0.2,
    epsHigh: 0.2,
    lossType: "dapo",
    scaleRewards: "group",
    T: 32,
    seed: 5,
    stop: [1],
    decode: (ids) => ids.join(" "),
    ...o,
  };
}

/** Old / reference log-probs of completion k's token j: fixed values near the policy's. */
const oldLp = (k: number, j: number) => -Math.log(V) + 0.3 * Math.sin(k + 2 * j);
const refLp = (k: number, j: number) => -Math.log(V) + 0.2 * Math.cos(3 * k - j);

/** The CPU loss of a batch: reference logits of each sequence alone, then grpoLossCpu. */
function cpuLoss(
  params: ReadonlyMap<string, ArrayLike<number>>,
  ps: GrpoPromptIds[],
  batch: GrpoBatch,
  o: GrpoTaskOptions,
): number {
  const C = batch.completion.length;
  const seqs = batch.completion.map((c, k) => [...ps[batch.prompt[k]].ids, ...c]);
  const T = Math.max(...seqs.map((s) => s.length - 1));
  const tokens = new Int32Array(C * T), targets = new Int32Array(C * T).fill(-1);
  seqs.forEach((s, k) => {
    const p = ps[batch.prompt[k]].ids.length;
    for (let i = 0; i + 1 < s.length; i++) {
      tokens[k * T + i] = s[i];
      if (i + 1 >= p) targets[k * T + i] = s[i + 1];
    }
  });
  const r = referenceForwardBackward(cfg, {
    params,
    tokens,
    targets,
    shape: { B: C, T },
    backward: false,
  });
  const lp: number[] = [], old: number[] = [], ref: number[] = [], adv: number[] = [];
  const w: number[] = [];
  const total = batch.completion.reduce((a, c) => a + c.length, 0);
  seqs.forEach((_, k) => {
    const p = ps[batch.prompt[k]].ids.length, n = batch.completion[k].length;
    for (let j = 0; j < n; j++) {
      const i = k * T + p - 1 + j, t = targets[i];
      let m = -Infinity, z = 0;
      for (let c = 0; c < V; c++) m = Math.max(m, r.logits[i * V + c] / o.temperature);
      for (let c = 0; c < V; c++) z += Math.exp(r.logits[i * V + c] / o.temperature - m);
      lp.push(r.logits[i * V + t] / o.temperature - m - Math.log(z));
      old.push(oldLp(k, j));
      ref.push(refLp(k, j));
      adv.push(batch.advantage[k]);
      w.push(
        o.lossType === "grpo"
          ? 1 / (n * C)
          : o.lossType === "dr_grpo"
          ? 1 / (C * o.maxTokens)
          : 1 / total,
      );
    }
  });
  return grpoLossCpu(lp, old, o.beta > 0 ? ref : null, adv, w, {
    beta: o.beta,
    epsLow: o.epsLow,
    epsHigh: o.epsHigh,
  }).loss;
}

/** A hand-made batch whose old / reference log-probs follow the packed rows of the task. */
function handBatch(ps: GrpoPromptIds[], o: GrpoTaskOptions): GrpoBatch {
  const completion = [[5, 9, 1], [7, 7, 7, 7], [3, 1], [20, 21, 22], [1], [8, 6, 1], [9, 9], [4]];
  const batch: GrpoBatch = {
    index: 0,
    uses: 0,
    prompt: [0, 0, 0, 0, 1, 1, 1, 1],
    completion,
    advantage: groupAdvantages([1, 0, 0.5, 0, 0, 1, 1, 0], 4, true),
    old: [[]],
    ref: [[]],
    stats: {},
  };
  const examples = completion.map((c, k) => {
    const p = ps[batch.prompt[k]].ids;
    const ids = Int32Array.from([...p, ...c]);
    const mask = new Uint8Array(ids.length).fill(1, p.length);
    return { ids, mask, source: "" };
  });
  const b = packSequences(examples, { T: o.T });
  const seen = new Array(completion.length).fill(0);
  for (const r of targetRows(b.targets)) {
    const k = b.item[r], j = seen[k]++;
    batch.old[0].push(oldLp(k, j));
    batch.ref![0].push(refLp(k, j));
  }
  return batch;
}

for (const lossType of ["dapo", "grpo", "dr_grpo"] as GrpoLossType[]) {
  Deno.test(
    `the GRPO loss (${lossType}) and gradients on the tiny model match the CPU reference`,
    GPU_TEST,
    async () => {
      const device = await testDevice();
      const params = initParameters(cfg, 3);
      const model = new DeepSeekV3(device, cfg);
      model.load(params);
      const ps = prompts(2, 1);
      const o = options({ beta: 0.3, temperature: 0.7, lossType, epsLow: 0.1, epsHigh: 0.15 });
      const task = new GrpoTask(
        ps,
        { prompts: [], rewards: [] },
        [{
          name: "none",
          weight: 1,
          fn: () => 0,
        }],
        model,
        o,
      );
      const batch = handBatch(ps, o);
      task.restore({ epoch: 0, cursor: 0, batches: 1, batch });
      await task.prepare(model); // reuses the batch: uses 0 < iterations
      const { loss, grads } = await taskLossAndGrads(model, task);
      const p64 = new Map([...params].map(([k, v]) => [k, Float64Array.from(v)]));
      const want = cpuLoss(p64, ps, batch, o);
      assertClose([loss], [want], { atol: 2e-5, label: "loss" });
      assert.ok(Math.abs(want) > 1e-3, `loss ${want} should not be ~0`);
      checkParamGrads((p) => cpuLoss(p, ps, batch, o), p64, grads, [
        ["lm_head.weight", [0, 77, 1000, 4000]],
        ["model.norm.weight", [1, 30]],
        ["model.layers.1.self_attn.o_proj.weight", [5, 300]],
      ], { rtol: 2e-3 });
      task.dispose();
      model.arena.destroy();
    },
  );
}

Deno.test("GRPO learns a toy task: the reward of answering 7 rises to ~1", GPU_TEST, async () => {
  const device = await testDevice();
  const model = DeepSeekV3.create(device, cfg, { seed: 11 });
  const dir = await Deno.makeTempDir();
  const ps = prompts(8, 2);
  const seven = (reply: string) => (reply.split(" ")[0] === "7" ? 1 : 0);
  const task = new GrpoTask(
    ps,
    { prompts: ps.slice(0, 4), rewards: [{ name: "seven", weight: 1, fn: seven }] },
    [{ name: "seven", weight: 1, fn: seven }],
    null,
    options({ prompts: 4, group: 8, maxTokens: 1, beta: 0 }),
  );
  try {
    const r = await trainLoop(model, task, {
      runDir: dir,
      steps: 40,
      lr: 1e-2,
      logEvery: 1,
      progress: false,
      log: () => {},
    });
    const rewards = (await readMetrics(`${dir}/metrics.jsonl`))
      .filter((x) => x.kind !== "val").map((x) => x.stats!.reward);
    const first = rewards.slice(0, 5).reduce((a, b) => a + b) / 5;
    const last = rewards.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(first < 0.3, `the first steps' reward ${first} should be low`);
    assert.ok(last > 0.9, `the last steps' reward ${last} should be near 1 (${rewards})`);
    assert.ok(r.val["rewards/seven/mean"] === 1, `greedy replies: ${JSON.stringify(r.val)}`);
  } finally {
    task.dispose();
    model.arena.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Forwards to a GRPO task and throws at a given forward call. */
class Crashing implements TrainTask {
  readonly name = "grpo";
  calls = 0;
  constructor(readonly inner: GrpoTask, readonly at: number) {}
  prepare(model: DeepSeekV3) {
    return this.inner.prepare(model);
  }
  forward(model: DeepSeekV3): TaskOutput {
    if (++this.calls === this.at) throw new Error("simulated crash");
    return this.inner.forward(model);
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

Deno.test(
  "a GRPO run resumed between the steps of one sampled batch ends with the same bits",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const ps = prompts(6, 3);
    const o = options({ iterations: 2, beta: 0.1, micro: 2, temperature: 0.9, topP: 0.95 });
    const reward = [{
      name: "len",
      weight: 1,
      fn: (reply: string) => reply.split(" ").length / 4,
    }];
    const run = async (dir: string, crashAt: number | null, resume: boolean) => {
      const model = DeepSeekV3.create(device, cfg, { seed: 4 });
      const ref = DeepSeekV3.create(device, cfg, { seed: 4 });
      const inner = new GrpoTask(ps, { prompts: [], rewards: [] }, reward, ref, o);
      const task = crashAt ? new Crashing(inner, crashAt) : inner;
      try {
        await trainLoop(model, task, {
          runDir: dir,
          steps: 4,
          gradAccum: 2,
          lr: 3e-3,
          checkpointEvery: 1,
          keep: 0,
          resume,
          progress: false,
          log: () => {},
        });
        return await model.arena.readAll("params");
      } finally {
        inner.dispose();
        ref.arena.destroy();
        model.arena.destroy();
      }
    };
    const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
    try {
      const whole = await run(a, null, false);
      // Step 4 (forward calls 7 and 8: two micro-batches) is the second step on batch 1.
      await assert.rejects(() => run(b, 7, false), /simulated crash/);
      const resumed = await run(b, null, true);
      for (const [name, w] of whole) assertSameBits(resumed.get(name)!, w, name);
    } finally {
      await Deno.remove(a, { recursive: true });
      await Deno.remove(b, { recursive: true });
    }
  },
);
