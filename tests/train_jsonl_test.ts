import assert from "node:assert/strict";
import {
  fieldCheck,
  JsonlError,
  JsonlWriter,
  readJsonl,
  splitLines,
  writeJsonl,
} from "../train/jsonl.ts";

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

Deno.test("readJsonl() reports file:line for invalid JSON", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/d.jsonl`;
  await Deno.writeTextFile(path, '{"text":"a"}\n\n{"text": "b"\n{"text":"c"}\n');
  await assert.rejects(
    () => collect(readJsonl(path)),
    (e: Error) => e instanceof JsonlError && e.message.startsWith(`${path}:3: invalid JSON`),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readJsonl() reports a missing or wrong-typed field with the schema check", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/d.jsonl`;
  const check = fieldCheck({ text: "string" });
  await Deno.writeTextFile(path, '{"text":"a"}\n{"txt":"b"}\n');
  await assert.rejects(() => collect(readJsonl(path, { check })), {
    message: `${path}:2: missing field "text" (expected a string)`,
  });
  await Deno.writeTextFile(path, '{"text":"a"}\r\n{"text":"b"}\r\n{"text":7}\r\n');
  await assert.rejects(() => collect(readJsonl(path, { check })), {
    message: `${path}:3: field "text" must be a string, got number`,
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readJsonl() with skipBad goes on, counts bad lines and keeps line numbers", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/d.jsonl`;
  await Deno.writeTextFile(path, '\ufeff{"text":"a"}\nnot json\n[1]\n{"text":"d"}\n{"text":"e"');
  const stream = readJsonl<{ text: string }>(path, {
    check: fieldCheck({ text: "string" }),
    skipBad: true,
  });
  const got = await collect(stream);
  assert.deepEqual(got.map((r) => [r.line, r.value.text]), [[1, "a"], [4, "d"]]);
  assert.equal(stream.bad, 3);
  assert.equal(stream.lines, 5);
  assert.match(stream.firstErrors[0], /d\.jsonl:2: invalid JSON/);
  assert.match(stream.firstErrors[1], /d\.jsonl:3: expected a JSON object, got array/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("splitLines() joins lines split across chunks, CRLF included", async () => {
  async function* chunks() {
    yield* ["ab", "c\r", "\nde\n", "", "f"];
  }
  assert.deepEqual(await collect(splitLines(chunks())), ["abc", "de", "f"]);
});

Deno.test("JsonlWriter writes values that readJsonl reads back, appending when asked", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/o.jsonl`;
  await writeJsonl(path, [{ a: 1 }, { s: "x\ny" }]);
  const w = await JsonlWriter.open(path, { append: true });
  await w.write([3]);
  await w.close();
  assert.deepEqual((await collect(readJsonl(path))).map((r) => r.value), [{ a: 1 }, { s: "x\ny" }, [
    3,
  ]]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readJsonl() names file:line for invalid UTF-8 and --skip-bad skips and counts it", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/d.jsonl`;
  const enc = new TextEncoder();
  const bytes = [
    enc.encode('{"text":"a"}\n'),
    new Uint8Array([0x7b, 0x22, 0x74, 0xff, 0xfe, 0x22, 0x7d, 0x0a]), // {"t\xff\xfe"}
    enc.encode('{"text":"c \u00e9"}\r\n'),
    new Uint8Array([0x00, 0x01, 0xc3, 0x28, 0x0a]), // binary, then an invalid 2-byte sequence
    enc.encode('{"text":"e"}'),
  ];
  await Deno.writeFile(path, new Uint8Array(bytes.flatMap((b) => [...b])));
  await assert.rejects(
    () => collect(readJsonl(path)),
    (e: Error) =>
      e instanceof JsonlError && e.line === 2 &&
      e.message.startsWith(`${path}:2: not valid UTF-8 (byte 0xff at column 4`),
  );
  const stream = readJsonl<{ text: string }>(path, { skipBad: true });
  const got = await collect(stream);
  assert.deepEqual(got.map((r) => [r.line, r.value.text]), [[1, "a"], [3, "c \u00e9"], [5, "e"]]);
  assert.equal(stream.bad, 2);
  assert.match(stream.firstErrors[1], /d\.jsonl:4: not valid UTF-8 \(byte 0xc3 at column 3/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readJsonl() names the path when it is a directory or missing", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(
    () => collect(readJsonl(dir)),
    (e: Error) => e.message.startsWith(`${dir}: is a directory, not a JSONL file`),
  );
  await assert.rejects(
    () => collect(readJsonl(`${dir}/nope.jsonl`)),
    (e: Error) =>
      e instanceof Deno.errors.NotFound && e.message.startsWith(`${dir}/nope.jsonl: no such file`),
  );
  await Deno.remove(dir, { recursive: true });
});
