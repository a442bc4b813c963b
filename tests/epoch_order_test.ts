/**
 * The shuffled-pass order SFT, DPO and GRPO draw their data with: every pass a permutation, a
 * new one each pass, the same for the same seed, and a saved position resumes exactly.
 *
 * @module
 */
import assert from "node:assert/strict";
import { EpochOrder } from "../train/epoch_order.ts";
import { Rng } from "../random/rng.ts";

Deno.test("EpochOrder: each pass is a permutation, passes differ, a seed repeats", () => {
  const order = new EpochOrder(10, 3);
  const pass0 = order.take(10), pass1 = order.take(10);
  for (const pass of [pass0, pass1]) {
    assert.deepEqual([...pass].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  }
  assert.notDeepEqual(pass0, pass1, "a new order every pass");
  assert.deepEqual(new EpochOrder(10, 3).take(20), [...pass0, ...pass1], "same seed, same order");
  assert.notDeepEqual(new EpochOrder(10, 4).take(10), pass0, "another seed, another order");
  assert.deepEqual(
    pass0,
    [...new Rng(3, 0).shuffle(Int32Array.from({ length: 10 }, (_, i) => i))],
    "pass e is Rng(seed, e)'s shuffle: the order checkpoints of earlier runs resume into",
  );
});

Deno.test("EpochOrder: take() runs into the next pass; remaining()/advance() stay in one", () => {
  const order = new EpochOrder(5, 1);
  const all = new EpochOrder(5, 1).take(10);
  assert.deepEqual(order.take(3), all.slice(0, 3));
  assert.deepEqual(order.take(3), all.slice(3, 6), "two from pass 0, one from pass 1");
  assert.deepEqual(order.position(), { epoch: 1, cursor: 1 });

  const packed = new EpochOrder(5, 1);
  assert.deepEqual([...packed.remaining()], all.slice(0, 5));
  packed.advance(4);
  assert.deepEqual([...packed.remaining()], all.slice(4, 5), "the rest of pass 0 only");
  packed.advance(9);
  assert.deepEqual(packed.position(), { epoch: 0, cursor: 5 }, "advance stops at the pass's end");
  assert.deepEqual([...packed.remaining()], all.slice(5, 10), "then a new pass starts");
  assert.deepEqual(packed.position(), { epoch: 1, cursor: 0 });
});

Deno.test("EpochOrder: seek() to a saved position continues exactly", () => {
  const order = new EpochOrder(7, 9);
  order.take(11);
  const saved = order.position();
  const next = order.take(9);
  const resumed = new EpochOrder(7, 9);
  resumed.seek(JSON.parse(JSON.stringify(saved)));
  assert.deepEqual(resumed.take(9), next);
  assert.throws(() => new EpochOrder(0, 1), /size must be a positive integer, got 0/);
});
