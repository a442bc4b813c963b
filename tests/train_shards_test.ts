import assert from "node:assert/strict";
import {
  readShard,
  readShardHeader,
  readShardRange,
  SHARD_HEADER_BYTES,
  ShardError,
  ShardWriter,
  writeShard,
} from "../train/shards.ts";

Deno.test("a u16 shard round-trips its ids and stores the count in the header", async () => {
  const dir = await Deno.makeTempDir();
  const ids = Array.from({ length: 5000 }, (_, i) => (i * 7919) % 6400);
  const w = await ShardWriter.create(`${dir}/a.bin`, { vocabSize: 6400, bufferTokens: 333 });
  await w.append(ids.slice(0, 1234));
  await w.append(ids.slice(1234));
  const header = await w.close();
  assert.deepEqual(header, { version: 1, dtype: "u16", vocabSize: 6400, count: 5000 });
  const bytes = await Deno.readFile(`${dir}/a.bin`);
  assert.equal(bytes.length, SHARD_HEADER_BYTES + 2 * 5000);
  assert.equal(new DataView(bytes.buffer).getUint32(24, true), 5000);
  const shard = await readShard(`${dir}/a.bin`);
  assert.ok(shard.tokens instanceof Uint16Array);
  assert.deepEqual([...shard.tokens], ids);
  assert.deepEqual(await readShardHeader(`${dir}/a.bin`), header);
  assert.deepEqual(
    [...await readShardRange(`${dir}/a.bin`, { start: 4990, count: 100 })],
    ids.slice(4990),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a u32 shard round-trips ids above 65535", async () => {
  const dir = await Deno.makeTempDir();
  const ids = [0, 65535, 65536, 129279, 42];
  await writeShard(`${dir}/b.bin`, ids, { vocabSize: 129280 });
  const shard = await readShard(`${dir}/b.bin`);
  assert.equal(shard.header.dtype, "u32");
  assert.ok(shard.tokens instanceof Uint32Array);
  assert.deepEqual([...shard.tokens], ids);
  assert.deepEqual([...await readShardRange(`${dir}/b.bin`, { start: 1, count: 2 })], [
    65535,
    65536,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a truncated shard, a bad magic and an out-of-range id give errors naming the file", async () => {
  const dir = await Deno.makeTempDir();
  await writeShard(`${dir}/c.bin`, [1, 2, 3, 4], { vocabSize: 10 });
  const bytes = await Deno.readFile(`${dir}/c.bin`);
  await Deno.writeFile(`${dir}/trunc.bin`, bytes.subarray(0, bytes.length - 3));
  await assert.rejects(
    () => readShard(`${dir}/trunc.bin`),
    (e: Error) =>
      e instanceof ShardError && e.message.includes(`${dir}/trunc.bin: truncated shard`) &&
      e.message.includes("header says 4 u16 tokens"),
  );
  await Deno.writeFile(`${dir}/short.bin`, bytes.subarray(0, 10));
  await assert.rejects(() => readShardHeader(`${dir}/short.bin`), /short\.bin: truncated shard/);
  const bad = bytes.slice();
  bad[0] = 0x58;
  await Deno.writeFile(`${dir}/magic.bin`, bad);
  await assert.rejects(
    () => readShard(`${dir}/magic.bin`),
    /magic\.bin: not a token shard \(bad magic/,
  );
  const big = bytes.slice();
  new DataView(big.buffer).setUint16(SHARD_HEADER_BYTES + 4, 10, true);
  await Deno.writeFile(`${dir}/vocab.bin`, big);
  await assert.rejects(
    () => readShard(`${dir}/vocab.bin`),
    /vocab\.bin: token 10 at index 2 is not an id below the vocab size 10/,
  );
  await assert.rejects(
    () => writeShard(`${dir}/w.bin`, [3, 11], { vocabSize: 10 }),
    /token 11 at index 1/,
  );
  assert.equal(
    (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.includes("tmp")).length,
    0,
  );
  await Deno.remove(dir, { recursive: true });
});
