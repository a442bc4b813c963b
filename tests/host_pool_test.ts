import assert from "node:assert/strict";
import { defaultThreads } from "../kernels/blas.ts";
import { createCpu } from "../kernels/cpu.ts";
import { setPoolThreads, waitForWorkers, workerChunks } from "../kernels/host/_pool.ts";
import { resolveConfig } from "../model/config.ts";
import { assertSameBits } from "./_util.ts";
import { trainSteps } from "./_train_steps.ts";

// nano's 6400-word head: the cross-entropy rows, AdamW and SwiGLU are large enough to split
const cfg = resolveConfig("nano", { max_seq_len: 64, original_seq_len: 64 });
const B = 2, T = 64;

/** Losses, gradients and parameters after `steps` CPU-backend steps with `threads` host threads. */
async function run(threads: number, steps: number) {
  const cpu = createCpu(); // first: creating the backend sets the default thread count
  setPoolThreads(threads);
  if (threads > 1) assert.ok(waitForWorkers(), "the host pool's workers started");
  const r = await trainSteps(cpu, cfg, { B, T, steps, lr: 1e-3, initSeed: 7, dataSeed: 8 });
  if (threads > 1) assert.ok(workerChunks() > 0, "the workers ran some of the chunks");
  return r;
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
