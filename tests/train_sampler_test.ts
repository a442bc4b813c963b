import assert from "node:assert/strict";
import {
  type Batch,
  BatchSampler,
  SamplerError,
  valBatches,
  windowCount,
} from "../train/sampler.ts";

// tokens[i] = i, so a target's value is its index in the stream.
const N = 1003, B = 4, T = 16;
const tokens = Uint32Array.from({ length: N }, (_, i) => i);

function targetsOf(batches: Batch[]): number[] {
  const out: number[] = [];
  for (const b of batches) {
    for (let i = 0; i < b.mask.length; i++) {
      if (b.mask[i] === 1) {
        assert.equal(b.targets[i], b.inputs[i] + 1, "target is the next token of its input");
        out.push(b.targets[i]);
      }
    }
  }
  return out;
}

function epoch(s: BatchSampler): Batch[] {
  return Array.from({ length: s.batchesPerEpoch }, () => s.next());
}

Deno.test("the sampler makes every token but the first a target exactly once per epoch", () => {
  const s = new BatchSampler(tokens, { B, T, seed: 7 });
  assert.equal(s.windows, windowCount(N, T));
  assert.equal(s.windows, Math.ceil((N - 1) / T));
  for (let e = 0; e < 2; e++) {
    const batches = epoch(s);
    assert.ok(batches.every((b) => b.epoch === e && b.inputs.length === B * T));
    const t = targetsOf(batches);
    assert.equal(t.length, N - 1);
    assert.deepEqual(t.toSorted((a, b) => a - b), Array.from({ length: N - 1 }, (_, i) => i + 1));
    assert.equal(batches.reduce((a, b) => a + b.targetTokens, 0), N - 1);
  }
  assert.equal(s.epoch, 2);
});

Deno.test("the window order depends on seed and epoch and only on them", () => {
  const order = (seed: number, e: number) => [...new BatchSampler(tokens, { B, T, seed }).order(e)];
  assert.deepEqual(order(1, 0), order(1, 0));
  assert.notDeepEqual(order(1, 0), order(2, 0));
  assert.notDeepEqual(order(1, 0), order(1, 1));
  const a = new BatchSampler(tokens, { B, T, seed: 3 }),
    b = new BatchSampler(tokens, { B, T, seed: 3 });
  assert.deepEqual(epoch(a), epoch(b));
});

Deno.test("a sampler restored from a saved position continues identically", () => {
  const a = new BatchSampler(tokens, { B, T, seed: 11 });
  for (let i = 0; i < a.batchesPerEpoch + 5; i++) a.next();
  const saved = JSON.parse(JSON.stringify(a.state()));
  assert.deepEqual({ epoch: saved.epoch, index: saved.index }, { epoch: 1, index: 5 });
  const b = new BatchSampler(tokens, { B, T, seed: 11 });
  b.restore(saved);
  for (let i = 0; i < 2 * a.batchesPerEpoch; i++) assert.deepEqual(b.next(), a.next());
});

Deno.test("restoring a state saved with other settings names the setting", () => {
  const a = new BatchSampler(tokens, { B, T, seed: 11 });
  const other = new BatchSampler(tokens, { B, T: 32, seed: 11 });
  assert.throws(
    () => other.restore(a.state()),
    (e: Error) =>
      e instanceof SamplerError && /saved with T=16 but this run has T=32/.test(e.message),
  );
  assert.throws(() => new BatchSampler([1], { B, T, seed: 0 }), /at least 2 are needed/);
});

Deno.test("valBatches() covers the split once in stream order with padded last batch", () => {
  const batches = [...valBatches(tokens, { B, T })];
  assert.equal(batches.length, Math.ceil(windowCount(N, T) / B));
  assert.deepEqual(targetsOf(batches), Array.from({ length: N - 1 }, (_, i) => i + 1));
  const last = batches.at(-1)!;
  assert.ok(last.rows <= B);
  assert.equal([...valBatches(tokens, { B, T, maxBatches: 2 })].length, 2);
});
