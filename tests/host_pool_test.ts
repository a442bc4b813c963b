import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import { defaultThreads } from "../kernels/blas.ts";
import { createCpu } from "../kernels/cpu.ts";
import { setPoolThreads, waitForWorkers, workerChunks } from "../kernels/host/_pool.ts";
import { Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { AdamW } from "../train/optimizer.ts";
import { assertSameBits, randint } from "./_util.ts";

// nano's 6400-word head: the cross-entropy rows, AdamW and SwiGLU are large enough to split
const cfg = resolveConfig("nano", { max_seq_len: 64, original_seq_len: 64 });
const B = 2, T = 64;

/** Losses, gradients and parameters after `steps` CPU-backend steps with `threads` host threads. */
async function run(threads: number, steps: number) {
  const cpu = createCpu(); // first: creating the backend sets the default thread count
  setPoolThreads(threads);
  if (threads > 1) assert.ok(waitForWorkers(), "the host pool's workers started");
  const scope = new Scope();
  const model = new DeepSeekV3(cpu, cfg);
  model.load(initParameters(cfg, 7));
  const opt = new AdamW(model.arena);
  const tokens = randint(B * T, 8, cfg.vocab_size), targets = randint(B * T, 9, cfg.vocab_size);
  const losses: number[] = [];
  let grads: Map<string, Float32Array> | null = null;
  for (let s = 0; s < steps; s++) {
    const step = new Scope();
    model.arena.zeroGrads();
    const tape = new Tape().start();
    const out = model.forward(model.upload({ tokens, targets, B, T }));
    tape.backward(out.losses!.total);
    losses.push((await out.losses!.total.readF32())[0]);
    grads ??= await model.arena.readAll("grads");
    opt.update(1e-3);
    model.updateBiases(out.loads);
    step.dispose();
  }
  if (threads > 1) assert.ok(workerChunks() > 0, "the workers ran some of the chunks");
  const params = await model.arena.readAll("params");
  model.arena.destroy();
  scope.dispose();
  return { losses, grads: grads!, params };
}

Deno.test("a nano training step gives the same bits on one host thread and on two", async () => {
  try {
    const two = await run(2, 2), one = await run(1, 2), again = await run(2, 2);
    assert.deepEqual(again.losses, two.losses);
    assert.deepEqual(two.losses, one.losses);
    for (const [name, g] of one.grads) assertSameBits(two.grads.get(name)!, g, `grad ${name}`);
    for (const [name, p] of one.params) assertSameBits(two.params.get(name)!, p, name);
  } finally {
    setPoolThreads(defaultThreads());
  }
});
