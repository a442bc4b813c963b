/**
 * The `tokenizer train` and `tokenizer encode` commands, run in-process.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Command } from "commander";
import { benchmarkText } from "../data/mod.ts";
import { tokenizerCommand } from "../cli/tokenizer.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";

/** Runs `tokenizer ...args`, returning stdout lines; command errors throw with their message. */
async function run(args: string[]): Promise<string[]> {
  const cmd: Command = tokenizerCommand();
  for (const c of [cmd, ...cmd.commands]) {
    c.exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  }
  const lines: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...xs: unknown[]) => lines.push(xs.join(" "));
  console.error = () => {};
  try {
    await cmd.parseAsync(args, { from: "user" });
  } finally {
    console.log = log;
    console.error = error;
  }
  return lines;
}

Deno.test("tokenizer train writes a tokenizer that tokenizer encode uses", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = benchmarkText({ chars: 100_000 });
    await Deno.writeTextFile(`${dir}/a.txt`, text);
    await Deno.writeTextFile(
      `${dir}/b.jsonl`,
      text.split("\n\n").map((t) => JSON.stringify({ text: t })).join("\n"),
    );
    const out = await run([
      "train",
      "--input",
      `${dir}/a.txt`,
      `${dir}/b.jsonl`,
      "--vocab-size",
      "500",
      "--out",
      `${dir}/tok`,
      "--no-progress",
    ]);
    assert.match(out[0], /^trained 500 tokens \(228 merges\) in /);
    assert.deepEqual(out.slice(1), [
      `wrote ${dir}/tok/tokenizer.json`,
      `wrote ${dir}/tok/tokenizer_config.json`,
    ]);
    const tok = await loadTokenizer(`${dir}/tok`);
    const ids = JSON.parse(
      (await run(["encode", "--tokenizer", `${dir}/tok`, "--text", "Hi 你好<|im_end|>"]))[0],
    );
    assert.deepEqual(ids, tok.encode("Hi 你好<|im_end|>"));
    const special = await run([
      "encode",
      "--tokenizer",
      `${dir}/tok`,
      "--text",
      "<|im_end|>",
      "--allow-special",
    ]);
    assert.deepEqual(special, ["[4]"]);
    await Deno.writeTextFile(`${dir}/in.txt`, "hello");
    const rows = await run([
      "encode",
      "--tokenizer",
      `${dir}/tok`,
      "--file",
      `${dir}/in.txt`,
      "--tokens",
    ]);
    assert.equal(rows.map((r) => JSON.parse(r.split("\t")[1])).join(""), "hello");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizer train and encode reject bad flags and bad files with the flag or file named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/blob.bin`, new Uint8Array([0xff, 0xfe, 0x00, 0x81]));
    await assert.rejects(
      run(["train", "--input", `${dir}/blob.bin`, "--out", `${dir}/o`]),
      /blob\.bin.*binary/,
    );
    await assert.rejects(
      run(["train", "--input", `${dir}/blob.bin`, "--out", `${dir}/o`, "--vocab-size", "200"]),
      /--vocab-size must be an integer >= 272, got "200"/,
    );
    await assert.rejects(run(["train", "--out", `${dir}/o`]), /--input/);
    await assert.rejects(
      run(["train", "--input", "x", "--out", "o", "--bogus"]),
      /unknown option '--bogus'/,
    );
    await assert.rejects(
      run(["encode", "--tokenizer", dir]),
      /exactly one of --text T or --file F/,
    );
    await assert.rejects(
      run(["encode", "--tokenizer", `${dir}/none`, "--text", "x"]),
      /none\/tokenizer\.json/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
