/**
 * Tests of the tokenizer core: pre-tokenizer, BPE training (hand-checked merges), encoding,
 * decoding, streaming decoding, and the errors bad input gives.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mulberry32 as rng } from "../random/rng.ts";
import { benchmarkText } from "../data/mod.ts";
import {
  ChunkCounter,
  lastSafeCut,
  minVocabSize,
  pretokenize,
  readCorpus,
  SPECIAL_TOKENS,
  Tokenizer,
  trainBpe,
  trainBpeFromCounts,
  trainTokenizerFromFiles,
  wellFormed,
} from "../tokenizer/mod.ts";

/** Pieces random strings are made of: every script and edge case the tokenizer must survive. */
const PIECES: ReadonlyArray<(r: () => number) => string> = [
  (r) => "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[Math.floor(r() * 52)],
  () => " ",
  (r) => ["\n", "\r\n", "\t", "  ", "\u00a0", "\u3000", "\u2028", "\u0085"][Math.floor(r() * 8)],
  (r) => String(Math.floor(r() * 100000)),
  (r) => ".,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`"[Math.floor(r() * 33)],
  (r) => String.fromCodePoint(0x4e00 + Math.floor(r() * 0x5200)), // CJK
  (r) => String.fromCodePoint(0x3041 + Math.floor(r() * 0xbe)), // kana
  (r) => String.fromCodePoint(0xac00 + Math.floor(r() * 0x2ba4)), // Hangul
  (r) => "，。！？、；：「」ー々"[Math.floor(r() * 11)],
  (r) => String.fromCodePoint(0x1f300 + Math.floor(r() * 0x350)), // emoji
  () => "👍🏽", // emoji + skin tone modifier
  () => "👨‍👩‍👧", // ZWJ sequence
  (r) => "e" + String.fromCodePoint(0x300 + Math.floor(r() * 0x70)), // combining mark
  (r) => String.fromCodePoint(0x900 + Math.floor(r() * 0x7f)), // Devanagari
  (r) => String.fromCodePoint(0x600 + Math.floor(r() * 0xff)), // Arabic
  (r) => String.fromCodePoint(Math.floor(r() * 0x20)), // control characters, NUL included
  () => "\ufeff", // BOM
  () => "\ufffd",
  (r) => String.fromCodePoint(0x10000 + Math.floor(r() * 0xfffff)), // any astral code point
  (r) => String.fromCharCode(0xd800 + Math.floor(r() * 0x800)), // lone surrogate
];

function randomString(r: () => number, maxPieces = 40, pieces = PIECES): string {
  let s = "";
  const n = Math.floor(r() * maxPieces);
  for (let i = 0; i < n; i++) s += pieces[Math.floor(r() * pieces.length)](r);
  return s;
}

/** A tokenizer trained once on ~300k characters of the demo corpus plus random strings. */
const TRAIN_TEXT = benchmarkText({ chars: 300_000 });
const tok = trainBpe([TRAIN_TEXT, ...Array.from({ length: 200 }, (_, i) => randomString(rng(i)))], {
  vocabSize: 1200,
});

Deno.test("pretokenize() splits letters, digit groups of three, punctuation, white space and CJK runs", () => {
  assert.deepEqual(pretokenize("Hello world 12345 你好！"), [
    "Hello",
    " world",
    " ",
    "123",
    "45",
    " ",
    "你好",
    "！",
  ]);
  assert.deepEqual(pretokenize("def f(x):\n\treturn x**2  \n\nカード使用 naïve"), [
    "def",
    " f",
    "(x",
    "):\n",
    "\treturn",
    " x",
    "**",
    "2",
    "  \n\n",
    "カード使用",
    " naïve",
  ]);
  // CJK never joins Latin letters, and a space before CJK stays on its own.
  assert.deepEqual(pretokenize("用Python写 代码"), ["用", "Python", "写", " ", "代码"]);
  assert.deepEqual(pretokenize("I'm here.  Ok"), ["I", "'m", " here", ".", " ", " Ok"]);
});

Deno.test("pretokenize() chunks concatenate back to the (well-formed) input for random strings", () => {
  const r = rng(1);
  for (let i = 0; i < 500; i++) {
    const s = randomString(r);
    assert.equal(pretokenize(s).join(""), wellFormed(s));
  }
});

Deno.test("lastSafeCut() cuts where pre-tokenizing the two halves gives the same chunks", () => {
  const r = rng(2);
  const nlPieces = [...PIECES, () => "\n", () => "\n\n", () => " \n"];
  let cuts = 0;
  for (let i = 0; i < 500; i++) {
    const s = wellFormed(randomString(r, 60, nlPieces));
    const cut = lastSafeCut(s);
    if (cut < 0) continue;
    cuts++;
    assert.ok(cut > 0 && cut < s.length && s[cut - 1] === "\n");
    assert.deepEqual(
      [...pretokenize(s.slice(0, cut)), ...pretokenize(s.slice(cut))],
      pretokenize(s),
    );
  }
  assert.ok(cuts > 100, `only ${cuts} strings had a cut point`);
  assert.equal(lastSafeCut("a\nb\n\nc d"), 5);
  assert.equal(lastSafeCut("no newline"), -1);
  assert.equal(lastSafeCut("a\n  b"), -1);
});

Deno.test("trainBpeFromCounts() reproduces the merges of a worked example computed by hand", () => {
  // aaab x1, ab x2 (bytes: a = 97, b = 98; no specials, so byte b has id b).
  // Pairs: (a,a) = 2, (a,b) = 1 + 2 = 3 -> merge 0: (a,b) -> 256. Now aaab = a a 256, ab = 256.
  // Pairs: (a,a) = 1, (a,256) = 1 -> tie, smaller right id wins -> merge 1: (a,a) -> 257.
  // Now aaab = 257 256 -> merge 2: (257,256) -> 258. No pairs left.
  const data = trainBpeFromCounts(new Map([["aaab", 1], ["ab", 2]]), {
    vocabSize: 300,
    minFrequency: 1,
    specialTokens: [],
  });
  assert.deepEqual(data.merges, [[97, 98], [97, 97], [257, 256]]);
  const t = new Tokenizer(data);
  assert.equal(t.vocabSize, 259);
  assert.deepEqual(t.encode("aaab"), [258]);
  assert.deepEqual(t.encode("aaaab"), [257, 97, 256]); // leftmost (a,a) first: aa a ab
  assert.deepEqual(t.encode("ba"), [98, 97]);
  // The default minFrequency of 2 stops before the pairs seen once.
  const strict = trainBpeFromCounts(new Map([["aaab", 1], ["ab", 2]]), {
    vocabSize: 300,
    specialTokens: [],
  });
  assert.deepEqual(strict.merges, [[97, 98]]);
});

Deno.test("trainBpeFromCounts() counts overlapping pairs and weights chunks by their counts", () => {
  // "aaaa" x3: (a,a) occurs 3 times per chunk -> count 9; merging leftmost gives "AA", and the
  // next merge (A,A) has count 3. "xy" x5: (x,y) = 5 ranks between them.
  const data = trainBpeFromCounts(new Map([["aaaa", 3], ["xy", 5]]), {
    vocabSize: 300,
    specialTokens: [],
  });
  assert.deepEqual(data.merges, [[97, 97], [120, 121], [256, 256]]);
});

Deno.test("trainBpeFromCounts() breaks ties by smaller ids, whatever the order of the input", () => {
  const entries: Array<[string, number]> = [["zy", 4], ["ba", 4], ["bc", 4], ["ca", 4]];
  const a = trainBpeFromCounts(new Map(entries), { vocabSize: 300, specialTokens: [] });
  const b = trainBpeFromCounts(new Map([...entries].reverse()), {
    vocabSize: 300,
    specialTokens: [],
  });
  assert.deepEqual(a.merges, [[98, 97], [98, 99], [99, 97], [122, 121]]);
  assert.deepEqual(b.merges, a.merges);
});

Deno.test("trainBpe() puts the special tokens at ids 0..15, then the 256 bytes, then merges", () => {
  assert.equal(tok.vocabSize, 1200);
  assert.equal(tok.merges.length, 1200 - 256 - SPECIAL_TOKENS.length);
  SPECIAL_TOKENS.forEach((s, id) => {
    assert.equal(tok.specialId(s), id);
    assert.ok(tok.isSpecial(id));
    assert.equal(tok.idToToken(id), s);
  });
  assert.deepEqual(
    [tok.bosId, tok.eosId, tok.padId, tok.imStartId, tok.imEndId],
    [0, 1, 2, 3, 4],
  );
  for (let b = 0; b < 256; b++) assert.deepEqual([...tok.tokenBytes(16 + b)], [b]);
  assert.equal(tok.idToToken(16 + 32), "Ġ");
  // Every merge joins two earlier tokens and yields the next id.
  tok.merges.forEach(([a, b], r) => {
    const joined = [...tok.tokenBytes(a), ...tok.tokenBytes(b)];
    assert.deepEqual([...tok.tokenBytes(272 + r)], joined);
    assert.ok(a < 272 + r && b < 272 + r);
  });
  // Frequent words of the training text became single tokens.
  assert.equal(tok.encode(" the").length, 1);
});

Deno.test("encode() round-trips 1000 random Unicode strings (lone surrogates become U+FFFD)", () => {
  const r = rng(3);
  for (let i = 0; i < 1000; i++) {
    const s = randomString(r);
    const ids = tok.encode(s);
    assert.equal(tok.decode(ids), wellFormed(s), `string ${i}: ${JSON.stringify(s)}`);
    for (const id of ids) assert.ok(!tok.isSpecial(id));
  }
});

Deno.test("encode() replaces lone surrogates with U+FFFD deterministically", () => {
  assert.deepEqual(tok.encode("a\ud800b"), tok.encode("a\ufffdb"));
  assert.deepEqual(tok.encode("\udc00"), tok.encode("\ufffd"));
  assert.equal(tok.decode(tok.encode("x\ud83d")), "x\ufffd");
});

/** Textbook BPE, for reference: repeatedly merge the lowest-rank adjacent pair, leftmost first. */
function referenceEncode(t: Tokenizer, text: string): number[] {
  const rank = new Map(t.merges.map(([a, b], r) => [`${a},${b}`, r]));
  const byId = new Map<string, number>();
  for (let id = 0; id < t.vocabSize; id++) {
    if (!t.isSpecial(id)) byId.set([...t.tokenBytes(id)].join(","), id);
  }
  const out: number[] = [];
  for (const chunk of pretokenize(text)) {
    let ids = [...new TextEncoder().encode(chunk)].map((b) => byId.get(String(b))!);
    for (;;) {
      let best = Infinity, at = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = rank.get(`${ids[i]},${ids[i + 1]}`);
        if (r !== undefined && r < best) [best, at] = [r, i];
      }
      if (at < 0) break;
      const joined = [...t.tokenBytes(ids[at]), ...t.tokenBytes(ids[at + 1])].join(",");
      ids = [...ids.slice(0, at), byId.get(joined)!, ...ids.slice(at + 2)];
    }
    out.push(...ids);
  }
  return out;
}

Deno.test("encode() matches textbook BPE on short chunks and on long ones (the heap path)", () => {
  const r = rng(4);
  const samples = [
    TRAIN_TEXT.slice(0, 3000),
    "哈奇的天气".repeat(60), // one 300-character CJK chunk: 900 bytes
    " ".repeat(500) + "x",
    "=".repeat(333),
    ...Array.from({ length: 200 }, () => randomString(r)),
  ];
  for (const s of samples) assert.deepEqual(tok.encode(s), referenceEncode(tok, s));
  // The cache gives the same answer the second time.
  assert.deepEqual(tok.encode(samples[0]), referenceEncode(tok, samples[0]));
});

Deno.test("encode() recognizes special tokens only when allowed", () => {
  const text = "Hi<|im_end|>\n<think>ok</think>";
  const plain = tok.encode(text);
  assert.ok(!plain.some((id) => tok.isSpecial(id)));
  assert.equal(tok.decode(plain), text);
  const all = tok.encode(text, { allowedSpecial: "all" });
  assert.deepEqual(all.filter((id) => tok.isSpecial(id)), [4, 9, 10]);
  assert.equal(tok.decode(all), text);
  const some = tok.encode(text, { allowedSpecial: ["<think>"] });
  assert.deepEqual(some.filter((id) => tok.isSpecial(id)), [9]);
  assert.equal(tok.decode(all, { skipSpecialTokens: true }), "Hi\nok");
  assert.throws(() => tok.encode("x", { allowedSpecial: ["<nope>"] }), /not a special token/);
});

Deno.test("decode() turns broken UTF-8 into U+FFFD and rejects ids outside the vocabulary", () => {
  const byte = (b: number) => 16 + b;
  assert.equal(tok.decode([byte(0xe4), byte(0xbd)]), "\ufffd"); // truncated 3-byte character
  assert.equal(tok.decode([byte(0xff), byte(0x41)]), "\ufffdA");
  assert.equal(tok.decode([byte(0xef), byte(0xbb), byte(0xbf)]), "\ufeff"); // BOM kept
  assert.equal(tok.decode([]), "");
  assert.throws(() => tok.decode([tok.vocabSize]), /token id 1200 is out of range/);
  assert.throws(() => tok.decode([-1]), RangeError);
});

Deno.test("StreamingDecoder emits only complete characters and ends equal to decode()", () => {
  const byte = (b: number) => 16 + b;
  const dec = tok.streamingDecoder();
  // 😀 = F0 9F 98 80, fed one byte token at a time.
  assert.equal(dec.push(byte(0xf0)), "");
  assert.equal(dec.push(byte(0x9f)), "");
  assert.equal(dec.push(byte(0x98)), "");
  assert.equal(dec.push(byte(0x80)), "😀");
  assert.equal(dec.push(byte(0xe4)), "");
  assert.equal(dec.flush(), "\ufffd"); // the stream ended inside a character

  const r = rng(5);
  for (let i = 0; i < 300; i++) {
    const s = randomString(r);
    const ids = tok.encode(s, { allowedSpecial: "all" });
    const stream = tok.streamingDecoder();
    let text = "";
    for (const id of ids) {
      const piece = stream.push(id);
      assert.ok(!/[\ud800-\udbff]$/.test(piece), "a piece ends inside a surrogate pair");
      text += piece;
    }
    text += stream.flush();
    assert.equal(text, tok.decode(ids));
  }
  const skip = tok.streamingDecoder({ skipSpecialTokens: true });
  assert.equal(skip.push([tok.imEndId, ...tok.encode("ok")]) + skip.flush(), "ok");
});

Deno.test("trainBpe() rejects a vocabulary smaller than 256 bytes + the specials, naming --vocab-size", () => {
  assert.throws(
    () => trainBpe(["hello"], { vocabSize: 100 }),
    (e: Error) => e.message.includes("--vocab-size 100") && e.message.includes(`${minVocabSize()}`),
  );
  assert.throws(() => trainBpeFromCounts(new Map(), { vocabSize: 300 }), /corpus is empty/);
});

Deno.test("ChunkCounter counts the same chunks from JSONL and from text streamed in tiny blocks", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const docs = [TRAIN_TEXT.slice(0, 20_000), "第二个文档：你好 😀\r\n\nline", ""];
    await Deno.writeTextFile(
      `${dir}/a.jsonl`,
      docs.map((text) => JSON.stringify({ text })).join("\n"),
    );
    await Deno.writeTextFile(`${dir}/b.txt`, docs[0]);
    const expected = new ChunkCounter();
    for (const d of docs) expected.add(d);
    expected.add(docs[0]);
    // 7-byte blocks cut UTF-8 characters and lines in the middle.
    const got = new ChunkCounter();
    let bytes = 0;
    for await (
      const t of readCorpus([`${dir}/a.jsonl`, `${dir}/b.txt`], {
        blockSize: 7,
        onBytes: (n) => (bytes = n),
      })
    ) {
      got.add(t);
    }
    assert.deepEqual(got.counts, expected.counts);
    assert.equal(
      bytes,
      (await Deno.stat(`${dir}/a.jsonl`)).size + (await Deno.stat(`${dir}/b.txt`)).size,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainTokenizerFromFiles() gives the same tokenizer as in-memory training", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = TRAIN_TEXT.slice(0, 100_000);
    await Deno.writeTextFile(`${dir}/c.txt`, text);
    const phases = new Set<string>();
    const fromFile = await trainTokenizerFromFiles([`${dir}/c.txt`], {
      vocabSize: 600,
      onProgress: (p) => phases.add(p.phase),
    });
    const inMemory = trainBpe([text], { vocabSize: 600 });
    assert.deepEqual(fromFile.merges, inMemory.merges);
    assert.deepEqual([...phases], ["read", "merge"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainTokenizerFromFiles() names the file for binary input, bad JSONL and an empty corpus", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(
      `${dir}/model.bin`,
      Uint8Array.from({ length: 300 }, (_, i) => (i * 37) & 255),
    );
    await assert.rejects(
      trainTokenizerFromFiles([`${dir}/model.bin`]),
      (e: Error) => e.message.includes(`${dir}/model.bin`) && /binary/.test(e.message),
    );
    await Deno.writeFile(`${dir}/nul.txt`, new Uint8Array([104, 105, 0, 0, 1]));
    await assert.rejects(trainTokenizerFromFiles([`${dir}/nul.txt`]), /nul\.txt contains NUL/);
    await Deno.writeTextFile(`${dir}/bad.jsonl`, '{"text": "ok"}\n{"txt": "oops"}\n');
    await assert.rejects(
      trainTokenizerFromFiles([`${dir}/bad.jsonl`]),
      (e: Error) => e.message.includes("bad.jsonl:2") && e.message.includes('"text"'),
    );
    await Deno.writeTextFile(`${dir}/broken.jsonl`, '{"text": \n');
    await assert.rejects(
      trainTokenizerFromFiles([`${dir}/broken.jsonl`]),
      /broken\.jsonl:1: not valid JSON/,
    );
    await Deno.writeTextFile(`${dir}/empty.txt`, "");
    await assert.rejects(
      trainTokenizerFromFiles([`${dir}/empty.txt`]),
      (e: Error) => e.message.includes("corpus is empty") && e.message.includes("empty.txt"),
    );
    await assert.rejects(trainTokenizerFromFiles([`${dir}/missing.txt`]), /missing\.txt/);
    await assert.rejects(trainTokenizerFromFiles([]), /--input/);
    await assert.rejects(
      trainTokenizerFromFiles([`${dir}/empty.txt`], { vocabSize: 271 }),
      /--vocab-size 271 is too small/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
