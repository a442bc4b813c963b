import assert from "node:assert/strict";
import { Command } from "commander";
import { prepareCommand } from "../cli/prepare.ts";
import { saveTokenizer } from "../tokenizer/io.ts";
import { trainBpe } from "../tokenizer/train.ts";
import { JsonlError } from "../train/jsonl.ts";
import { type PrepareMeta, prepareShards, type TokenizerLike } from "../train/prepare.ts";
import { readShard } from "../train/shards.ts";

/** One id per UTF-16 unit (mod 250) plus 3: ids 0..2 are specials, eos = 1. */
const CHARS: TokenizerLike = {
  encode: (text) => Array.from(text, (c) => 3 + (c.charCodeAt(0) % 250)),
  eosId: 1,
  vocabSize: 253,
};

async function corpus(dir: string): Promise<string[]> {
  const lines = Array.from(
    { length: 200 },
    (_, i) => JSON.stringify({ text: `document number ${i}` }),
  );
  lines.splice(50, 0, "{broken");
  lines.splice(120, 0, JSON.stringify({ title: "no text" }));
  await Deno.writeTextFile(`${dir}/a.jsonl`, lines.join("\n") + "\n");
  await Deno.writeTextFile(`${dir}/b.txt`, "first paragraph\nstill first\n\n\nsecond paragraph\n");
  return [`${dir}/a.jsonl`, `${dir}/b.txt`];
}

function countEos(tokens: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < tokens.length; i++) n += tokens[i] === 1 ? 1 : 0;
  return n;
}

Deno.test("prepareShards() splits documents by a seeded hash and writes shards plus meta.json", async () => {
  const dir = await Deno.makeTempDir();
  const inputs = await corpus(dir);
  const run = (out: string, seed: number) =>
    prepareShards({
      inputs,
      tokenizer: CHARS,
      outDir: `${dir}/${out}`,
      valFraction: 0.1,
      seed,
      skipBad: true,
    });
  const meta = await run("a", 5);
  assert.equal(meta.train.documents + meta.val.documents, 202);
  assert.ok(meta.val.documents > 5 && meta.val.documents < 45, `val docs ${meta.val.documents}`);
  assert.equal(meta.badLines, 2);
  assert.match(meta.firstBadLines[0], /a\.jsonl:51: invalid JSON/);
  assert.match(meta.firstBadLines[1], /a\.jsonl:121: missing field "text"/);
  assert.deepEqual(meta.inputs.map((i) => [i.format, i.documents]), [["jsonl", 200], ["text", 2]]);
  const train = await readShard(`${dir}/a/train.bin`), val = await readShard(`${dir}/a/val.bin`);
  assert.equal(train.header.dtype, "u16");
  assert.equal(train.tokens.length, meta.train.tokens);
  assert.equal(countEos(train.tokens), meta.train.documents);
  assert.equal(countEos(val.tokens), meta.val.documents);
  assert.equal(train.tokens.at(-1), 1);
  const onDisk: PrepareMeta = JSON.parse(await Deno.readTextFile(`${dir}/a/meta.json`));
  assert.deepEqual(onDisk, meta);

  const again = await run("b", 5), other = await run("c", 6);
  assert.deepEqual(again, meta);
  assert.deepEqual(
    await Deno.readFile(`${dir}/b/train.bin`),
    await Deno.readFile(`${dir}/a/train.bin`),
  );
  assert.notDeepEqual(
    await Deno.readFile(`${dir}/c/val.bin`),
    await Deno.readFile(`${dir}/a/val.bin`),
    "another seed gives another split",
  );
  assert.equal(other.train.documents + other.val.documents, 202);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("prepareShards() stops at the first bad line with file:line unless skipBad", async () => {
  const dir = await Deno.makeTempDir();
  const inputs = await corpus(dir);
  await assert.rejects(
    () => prepareShards({ inputs, tokenizer: CHARS, outDir: `${dir}/out` }),
    (e: Error) =>
      e instanceof JsonlError && e.message.startsWith(`${dir}/a.jsonl:51: invalid JSON`),
  );
  const left = (await Array.fromAsync(Deno.readDir(`${dir}/out`))).map((e) => e.name);
  assert.deepEqual(left, [], "no partial shards are left behind");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli.ts prepare tokenizes with a saved tokenizer and prints a summary", async () => {
  const dir = await Deno.makeTempDir();
  const texts = Array.from({ length: 60 }, (_, i) => `the cat number ${i} sat on the mat`);
  await saveTokenizer(trainBpe(texts, { vocabSize: 300 }), `${dir}/tok`);
  await Deno.writeTextFile(
    `${dir}/c.jsonl`,
    texts.map((text) => JSON.stringify({ text })).join("\n"),
  );
  const logs: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => logs.push(a.join(" "));
  try {
    const program = new Command("t").exitOverride().addCommand(prepareCommand());
    await program.parseAsync([
      "deno",
      "t",
      "prepare",
      "--input",
      `${dir}/c.jsonl`,
      "--tokenizer",
      `${dir}/tok`,
      "--out",
      `${dir}/data`,
      "--val-fraction",
      "0.2",
      "--seed",
      "3",
      "--quiet",
    ]);
  } finally {
    console.log = log;
  }
  const meta: PrepareMeta = JSON.parse(await Deno.readTextFile(`${dir}/data/meta.json`));
  assert.equal(meta.train.documents + meta.val.documents, 60);
  assert.equal(meta.tokenizer, `${dir}/tok`);
  assert.match(logs.join("\n"), /train\.bin: \d+ tokens in \d+ documents/);
  const { tokens } = await readShard(`${dir}/data/train.bin`);
  assert.equal(countEosId(tokens, meta.eosId), meta.train.documents);
  await Deno.remove(dir, { recursive: true });
});

function countEosId(tokens: ArrayLike<number>, eos: number): number {
  let n = 0;
  for (let i = 0; i < tokens.length; i++) n += tokens[i] === eos ? 1 : 0;
  return n;
}

Deno.test("prepareShards() names file:line for invalid UTF-8 or binary text, skips and counts it with skipBad", async () => {
  const dir = await Deno.makeTempDir();
  const enc = new TextEncoder();
  const txt = `${dir}/c.txt`;
  await Deno.writeFile(
    txt,
    new Uint8Array([
      ...enc.encode("first paragraph\n\n"),
      0xff,
      0xfe,
      0x0a, // line 3: not UTF-8
      ...enc.encode("ok line\nbin\u0000ary\n"), // line 5: a NUL byte
    ]),
  );
  const jsonl = `${dir}/d.jsonl`;
  await Deno.writeFile(
    jsonl,
    new Uint8Array([...enc.encode('{"text":"a"}\n{"text":"'), 0xc0, ...enc.encode('"}\n')]),
  );
  const opts = { tokenizer: CHARS, tokenizerPath: "chars", outDir: `${dir}/out`, seed: 1 };
  await assert.rejects(
    prepareShards({ ...opts, inputs: [txt] }),
    (e: Error) => e instanceof JsonlError && e.message.startsWith(`${txt}:3: not valid UTF-8`),
  );
  await assert.rejects(
    prepareShards({ ...opts, inputs: [jsonl] }),
    (e: Error) => e instanceof JsonlError && e.message.startsWith(`${jsonl}:2: not valid UTF-8`),
  );
  const meta = await prepareShards({ ...opts, inputs: [txt, jsonl], skipBad: true });
  assert.equal(meta.badLines, 3);
  assert.deepEqual(meta.inputs.map((i) => [i.documents, i.badLines]), [[2, 2], [1, 1]]);
  assert.match(meta.firstBadLines[1], /c\.txt:5: has a NUL byte/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("prepareShards() names an --input that is a directory or missing, before writing", async () => {
  const dir = await Deno.makeTempDir();
  const opts = { tokenizer: CHARS, tokenizerPath: "chars", outDir: `${dir}/out`, seed: 1 };
  await assert.rejects(
    prepareShards({ ...opts, inputs: [dir] }),
    (e: Error) => e.message.startsWith(`prepare: --input ${dir}: is a directory`),
  );
  await assert.rejects(
    prepareShards({ ...opts, inputs: [`${dir}/nope.txt`] }),
    (e: Error) => e.message === `prepare: --input ${dir}/nope.txt: no such file`,
  );
  assert.deepEqual([...Deno.readDirSync(dir)], []);
  await Deno.remove(dir, { recursive: true });
});
