/**
 * A seeded fuzzer over every reader a user's files go through: JSONL lines (pretraining, SFT and
 * DPO records, invalid UTF-8 and binary included), model configs (`--model`, HF `config.json`),
 * run-option files, `tokenizer.json`, and checkpoints (truncated or corrupted files). Each broken
 * input must end in a named error of the reader's own class (or a counted skip with skipBad),
 * never an uncaught TypeError/RangeError from deep inside, and never a message that hides the
 * value ("got null null").
 *
 * The seed is fixed so a failure reproduces; FUZZ_SEED=n explores others.
 */
import assert from "node:assert/strict";
import { resolveConfig } from "../model/config.ts";
import { fromHfConfig, toHfConfig } from "../model/hf_config.ts";
import { benchmarkText } from "../data/mod.ts";
import { tokenizerFromJson, toTokenizerJson, trainBpe } from "../tokenizer/mod.ts";
import { CheckpointError, loadCheckpoint, saveCheckpoint } from "../train/checkpoint.ts";
import { pairCheck, readPreferencePairs, tokenizePairs } from "../train/dpo.ts";
import { fieldCheck, JsonlError, readJsonl } from "../train/jsonl.ts";
import { checkConfigObject, OptionsError } from "../train/options.ts";
import { Rng } from "../random/rng.ts";
import { PRETRAIN_OPTIONS } from "../train/run_pretrain.ts";
import { conversationCheck, readConversations, tokenizeConversations } from "../train/sft.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 17);
const enc = new TextEncoder();

/** Values that break typed fields: wrong types, empties, extremes. */
const ODD: unknown[] = [
  null,
  "",
  " ",
  0,
  -1,
  1.5,
  1e9,
  2 ** 31,
  1e300,
  "3",
  true,
  [],
  [1],
  {},
  { a: 1 },
  "\u0000",
  "<|eos|>",
];

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** Replaces, deletes or adds one field somewhere inside a JSON value. */
function mutate(rng: Rng, v: unknown, depth = 0): unknown {
  if (Array.isArray(v)) {
    if (v.length === 0 || rng.uniform() < 0.2) return pick(rng, ODD);
    const out = [...v];
    const i = rng.int(out.length);
    if (rng.uniform() < 0.2) out.splice(i, 1);
    else out[i] = mutate(rng, out[i], depth + 1);
    return out;
  }
  if (typeof v === "object" && v !== null) {
    const out = { ...v } as Record<string, unknown>;
    const keys = Object.keys(out);
    const r = rng.uniform();
    if (keys.length === 0 || r < 0.1) out[pick(rng, ["x", "tools", "content", "role"])] = 1;
    else {
      const k = pick(rng, keys);
      if (r < 0.3) delete out[k];
      else if (r < 0.6 || depth > 3) out[k] = pick(rng, ODD);
      else out[k] = mutate(rng, out[k], depth + 1);
    }
    return out;
  }
  return pick(rng, ODD);
}

/** A line's bytes, broken at the byte level one time in three: cut, invalid UTF-8, NUL, 1e999. */
function breakBytes(rng: Rng, line: string): Uint8Array {
  const bytes = enc.encode(line);
  const r = rng.uniform();
  if (r < 0.1) return bytes.subarray(0, rng.int(bytes.length));
  if (r < 0.2) {
    const at = rng.int(bytes.length + 1);
    const junk = pick(rng, [[0xff], [0xc3, 0x28], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0x00], [
      0x80,
    ]]);
    return new Uint8Array([...bytes.subarray(0, at), ...junk, ...bytes.subarray(at)]);
  }
  if (r < 0.25) return enc.encode(line.replace(/\d+(\.\d+)?/, "1e999"));
  if (r < 0.3) return new Uint8Array(Array.from({ length: 40 }, () => rng.int(256)));
  return bytes;
}

function sftRecord(rng: Rng): unknown {
  return {
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: `what is ${rng.int(99)}?` },
      { role: "assistant", content: "a number" },
    ],
    tools: [{ type: "function", function: { name: "calc", parameters: { type: "object" } } }],
  };
}

function dpoRecord(rng: Rng): unknown {
  return rng.uniform() < 0.5 ? { prompt: `q${rng.int(9)}`, chosen: "good", rejected: "bad" } : {
    chosen: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }],
    rejected: [{ role: "user", content: "hi" }, { role: "assistant", content: "go away" }],
  };
}

/** Lines that are valid, mutated in structure, or broken in bytes; blank lines among them. */
function fuzzLines(rng: Rng, n: number, make: (rng: Rng) => unknown): Uint8Array {
  const parts: number[] = [];
  for (let i = 0; i < n; i++) {
    let v = make(rng);
    if (rng.uniform() < 0.7) v = mutate(rng, v);
    const bytes = breakBytes(rng, JSON.stringify(v));
    parts.push(...bytes.filter((b) => b !== 10), 10);
  }
  return new Uint8Array(parts);
}

const tok = trainBpe([benchmarkText({ chars: 4000 })], { vocabSize: 400 });

/** A reader over a fuzzed file: either it throws JsonlError (without skipBad) or every line is
 * yielded or counted (with skipBad); and what it accepts tokenizes without an exception. */
async function fuzzReader(
  name: string,
  make: (rng: Rng) => unknown,
  read: (path: string, skipBad: boolean) => Promise<{ accepted: number; bad: number }>,
  lines: number,
) {
  const rng = new Rng(SEED, lines);
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/${name}.jsonl`;
    const bytes = fuzzLines(rng, lines, make);
    await Deno.writeFile(path, bytes);
    const blank = new TextDecoder().decode(bytes).split("\n").slice(0, lines)
      .filter((l) => l.trim() === "").length;
    const r = await read(path, true);
    assert.equal(r.accepted + r.bad + blank, lines, `${name}: every line yielded or counted`);
    assert.ok(r.bad > lines / 10, `${name}: the fuzzer broke only ${r.bad} of ${lines} lines`);
    assert.ok(r.accepted > 0, `${name}: some lines stay valid`);
    // Without skipBad: the first bad line is a JsonlError naming the file and line.
    await assert.rejects(
      read(path, false),
      (e: Error) => e instanceof JsonlError && e.message.startsWith(`${path}:${e.line}: `),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fuzzed pretraining JSONL lines end in a named error or a counted skip", async () => {
  await fuzzReader("text", (rng) => ({ text: `doc ${rng.int(1000)}` }), async (path, skipBad) => {
    const s = readJsonl(path, { check: fieldCheck({ text: "string" }), skipBad });
    let accepted = 0;
    for await (const _ of s) accepted++;
    return { accepted, bad: s.bad };
  }, 300);
});

Deno.test("fuzzed SFT records end in a named error or a counted skip, through tokenization", async () => {
  await fuzzReader("sft", sftRecord, async (path, skipBad) => {
    const r = await readConversations(path, { skipBad });
    const t = tokenizeConversations(tok, r.conversations, { skipBad });
    for (const c of r.conversations) {
      assert.equal(conversationCheck({ messages: c.messages }), undefined);
    }
    return { accepted: t.examples.length, bad: r.bad + t.bad };
  }, 300);
});

Deno.test("fuzzed DPO records end in a named error or a counted skip, through tokenization", async () => {
  await fuzzReader("dpo", dpoRecord, async (path, skipBad) => {
    const r = await readPreferencePairs(path, { skipBad });
    const t = tokenizePairs(tok, r.pairs, { skipBad, T: 64 });
    for (const p of r.pairs) {
      assert.equal(pairCheck({ chosen: p.chosen, rejected: p.rejected }), undefined);
    }
    return { accepted: t.examples.length, bad: r.bad + t.bad };
  }, 300);
});

/** Messages must show the bad value, not a JSON.stringify artefact. */
function assertReadable(message: string) {
  assert.ok(
    !/got null null|got number null|got undefined|\[object Object\]/.test(message),
    message,
  );
}

Deno.test("fuzzed model configs and run-option files end in an error naming the field", () => {
  const rng = new Rng(SEED, 1);
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const which = i % 3;
    try {
      if (which === 0) {
        resolveConfig(pick(rng, ["tiny", "nano"]), mutate(rng, {}) as never);
        const base = { ...resolveConfig("nano") } as Record<string, unknown>;
        resolveConfig(mutate(rng, base) as never);
      } else if (which === 1) {
        fromHfConfig(mutate(rng, toHfConfig(resolveConfig("tiny"))));
      } else {
        checkConfigObject(
          PRETRAIN_OPTIONS,
          mutate(rng, { lr: 1e-3, gradAccum: 2, seqLen: 64, model: "{}" }),
          "run.json",
        );
      }
    } catch (e) {
      refused++;
      const m = (e as Error).message;
      assertReadable(m);
      if (which === 0) {
        assert.ok(e instanceof RangeError && /^invalid model config field '\w+'/.test(m), m);
      } else if (which === 1) {
        assert.ok(e instanceof RangeError && /^hf config\.json/.test(m), m);
      } else {
        assert.ok(e instanceof OptionsError && /^run\.json: /.test(m), m);
      }
    }
  }
  assert.ok(refused > 100, `only ${refused} of 300 fuzzed configs were refused`);
});

Deno.test("fuzzed tokenizer.json files end in an error naming the file, quickly", () => {
  const rng = new Rng(SEED, 2);
  const json = toTokenizerJson(tok) as unknown as Record<string, unknown>;
  const model = json.model as Record<string, unknown>;
  const vocab = model.vocab as Record<string, number>;
  const tokens = Object.keys(vocab);
  let refused = 0;
  for (let i = 0; i < 200; i++) {
    let bad: unknown;
    const r = rng.uniform();
    if (r < 0.4) {
      // One vocabulary id broken: huge, negative, fractional, a string, a duplicate.
      const v = { ...vocab };
      v[pick(rng, tokens)] = pick(rng, [
        2_000_000_000,
        -3,
        1.5,
        "7",
        vocab[pick(rng, tokens)],
      ]) as number;
      bad = { ...json, model: { ...model, vocab: v } };
    } else if (r < 0.6) {
      bad = { ...json, added_tokens: mutate(rng, json.added_tokens) };
    } else {
      bad = mutate(rng, json);
    }
    const t0 = performance.now();
    try {
      tokenizerFromJson(bad, { source: "fuzz/tokenizer.json" });
    } catch (e) {
      refused++;
      const m = (e as Error).message;
      assertReadable(m);
      assert.ok(m.startsWith("fuzz/tokenizer.json: "), m);
    }
    assert.ok(performance.now() - t0 < 2000, `case ${i} took ${performance.now() - t0} ms`);
  }
  assert.ok(refused > 100, `only ${refused} of 200 fuzzed tokenizers were refused`);
});

Deno.test("fuzzed checkpoint files end in a CheckpointError naming the file", async () => {
  const rng = new Rng(SEED, 3);
  const dir = await Deno.makeTempDir();
  const table = [{ name: "a.weight", shape: [8, 4] }, { name: "b.bias", shape: [4] }];
  const params = new Map(table.map((t, i) => [t.name, new Float32Array(t.shape[0]).fill(i + 1)]));
  params.set("a.weight", new Float32Array(32).fill(0.5));
  await saveCheckpoint(dir, {
    table,
    params,
    m: new Map([["a.weight", new Float32Array(32)]]),
    v: new Map([["a.weight", new Float32Array(32)]]),
    hfConfig: { model_type: "deepseek_v3" },
    state: { step: 1, tokensSeen: 8, task: { epoch: 0 } },
  });
  const ck = `${dir}/step-000001`;
  const files = ["model.safetensors", "optimizer.safetensors", "state.json", "config.json"];
  const originals = new Map(files.map((f) => [f, Deno.readFileSync(`${ck}/${f}`)]));
  const latest = Deno.readFileSync(`${dir}/latest.json`);
  let refused = 0;
  try {
    for (let i = 0; i < 120; i++) {
      const file = pick(rng, [...files, "latest.json"]);
      const path = file === "latest.json" ? `${dir}/latest.json` : `${ck}/${file}`;
      const orig = file === "latest.json" ? latest : originals.get(file)!;
      const bytes = new Uint8Array(orig);
      const r = rng.uniform();
      let broken: Uint8Array;
      if (r < 0.35) broken = bytes.subarray(0, rng.int(bytes.length));
      else if (r < 0.7) {
        for (let k = 0; k < 1 + rng.int(4); k++) {
          bytes[rng.int(Math.min(bytes.length, 200))] = rng.int(256);
        }
        broken = bytes;
      } else if (file.endsWith(".json")) {
        broken = enc.encode(
          JSON.stringify(mutate(rng, JSON.parse(new TextDecoder().decode(orig)))),
        );
      } else broken = new Uint8Array(0);
      Deno.writeFileSync(path, broken);
      try {
        await loadCheckpoint(dir, { expect: table });
      } catch (e) {
        refused++;
        const m = (e as Error).message;
        assertReadable(m);
        assert.ok(e instanceof CheckpointError, `${file}: ${(e as Error).name}: ${m}`);
        assert.ok(m.includes(dir), `${file}: ${m}`);
      }
      Deno.writeFileSync(path, orig);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.ok(refused > 60, `only ${refused} of 120 broken checkpoints were refused`);
});
