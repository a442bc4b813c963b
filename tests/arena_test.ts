import assert from "node:assert/strict";
import { ParamArena } from "../kernels/arena.ts";
import { assertSameBits, GPU_TEST, randn, testDevice } from "./_util.ts";

Deno.test(
  "arena lays tensors out aligned and splits chunks at the binding limit",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const arena = new ParamArena(device, [
      { name: "a", shape: [3, 5] },
      { name: "b", shape: [7] },
      { name: "c", shape: [20, 10] },
      { name: "bias", shape: [4], trainable: false },
    ], { chunkBytes: 1024 });
    const layout = arena.entries.map((e) => [e.chunk, e.offset]);
    assert.deepEqual(layout, [[0, 0], [0, 256], [1, 0], [2, 0]]);
    for (const e of arena.entries) assert.equal(e.offset % 256, 0);
    assert.equal(arena.entry("c").chunk, 1); // 800 bytes do not fit after 512 used bytes
    assert.equal(arena.entry("a").decay, true);
    assert.equal(arena.entry("b").decay, false);
    assert.equal(arena.param("bias").requiresGrad, false);
    assert.equal(arena.numParams, 15 + 7 + 200 + 4);
    assert.throws(() => arena.entry("nope"), /no parameter named nope/);
    assert.throws(() => arena.upload("b", new Float32Array(3)), /b expects 7 values/);
  },
);

Deno.test("arena uploads, reads back and zeroes gradients exactly", GPU_TEST, async () => {
  const device = await testDevice();
  const arena = new ParamArena(device, [{ name: "w", shape: [33, 9] }, { name: "n", shape: [9] }]);
  const w = randn(33 * 9, 1), n = randn(9, 2);
  arena.upload("w", w);
  arena.upload("n", n);
  const all = await arena.readAll();
  assertSameBits(all.get("w")!, w, "w");
  assertSameBits(all.get("n")!, n, "n");
  arena.param("w").grad!.upload(randn(33 * 9, 3));
  arena.zeroGrads();
  const g = await arena.readAll("grads");
  assert.ok(g.get("w")!.every((v) => v === 0));
});

Deno.test("arena keeps a group of tensors in one chunk", GPU_TEST, async () => {
  const device = await testDevice();
  const arena = new ParamArena(device, [
    { name: "x", shape: [100] },
    { name: "e0", shape: [50], group: "experts" },
    { name: "e1", shape: [50], group: "experts" },
    { name: "y", shape: [10] },
  ], { chunkBytes: 1024 });
  // x takes 512 bytes; the group (256 + 200 = 456) still fits after it.
  assert.equal(arena.entry("e0").chunk, arena.entry("e1").chunk);
  const small = new ParamArena(device, [
    { name: "x", shape: [200] },
    { name: "e0", shape: [50], group: "g" },
    { name: "e1", shape: [50], group: "g" },
  ], { chunkBytes: 1024 });
  // x ends at 1024 bytes: e0 alone would fit nowhere after it, so the group starts chunk 1.
  assert.deepEqual([small.entry("e0").chunk, small.entry("e1").chunk], [1, 1]);
  const split = new ParamArena(device, [
    { name: "x", shape: [150] },
    { name: "e0", shape: [50], group: "g" },
    { name: "e1", shape: [50], group: "g" },
  ], { chunkBytes: 1024 });
  // Without grouping e0 would sit at 768 and e1 in the next chunk; the group moves both.
  assert.deepEqual([split.entry("e0").chunk, split.entry("e1").chunk], [1, 1]);
  assert.throws(
    () =>
      new ParamArena(device, [{ name: "a", shape: [200], group: "g" }, {
        name: "b",
        shape: [200],
        group: "g",
      }], { chunkBytes: 1024 }),
    /group g needs 1824 bytes/,
  );
  for (const a of [arena, small, split]) a.destroy();
});
