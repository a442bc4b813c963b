/**
 * Parity of our `tokenizer.json` with `@huggingface/tokenizers` (the JS port of HF tokenizers):
 * same pre-tokenizer chunks, same ids, same decoded text; and the save / load round trip.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mulberry32 as rng } from "../random/rng.ts";
import { SplitPreTokenizer, Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { benchmarkText } from "../data/mod.ts";
import {
  CHAT_TEMPLATE,
  loadTokenizer,
  loadTokenizerConfig,
  pretokenize,
  PRETOKENIZE_PATTERN,
  saveTokenizer,
  tokenizerFromJson,
  toTokenizerConfig,
  toTokenizerJson,
  trainBpe,
} from "../tokenizer/mod.ts";

const MIXED = [
  "DeepSeek-V3 是一个强大的混合专家（MoE）语言模型，总参数量为 671B，每个 token 激活 37B。",
  "It uses Multi-head Latent Attention (MLA) and DeepSeekMoE; training cost 2.788M H800 GPU hours.",
  "```python\ndef softmax(x: list[float]) -> list[float]:\n    m = max(x)\n    e = [math.exp(v - m) for v in x]\n    return [v / sum(e) for v in e]\n```",
  "const ids = tok.encode(`héllo ${name}`); // naïve café — “quotes” ‘single’ …",
  "Emoji: 😀👍🏽👨‍👩‍👧🚀🇨🇳 ❤️ and kana: カタカナ ひらがな ラーメン、한국어 텍스트, العربية, हिन्दी",
  "Numbers 1234567 3.14159 2025-01-31 +86-10-1234-5678 ０１２３ ⅫⅣ",
  "White space:\t\ttabs,   runs,\n\n\nnewlines \r\n CRLF \u00a0nbsp \u3000ideographic\u2028LS",
  "Specials inline: <|im_start|>user\nhi<|im_end|>\n<think>hmm</think><tool_call>{}</tool_call>",
].join("\n");

const TRAIN_TEXT = benchmarkText({ chars: 300_000 }) + "\n" + MIXED.repeat(3);
const tok = trainBpe([TRAIN_TEXT], { vocabSize: 1500 });
const hf = new HfTokenizer(
  JSON.parse(JSON.stringify(toTokenizerJson(tok))),
  JSON.parse(JSON.stringify(toTokenizerConfig(tok))),
);

Deno.test("the pre-tokenizer matches @huggingface/tokenizers' Split with the same pattern", () => {
  const split = new SplitPreTokenizer({
    type: "Split",
    pattern: { Regex: PRETOKENIZE_PATTERN },
    behavior: "Isolated",
    invert: false,
  });
  const alphabet = [...MIXED, "\u0085", "\ufeff", "\u200d", "\u0301", "\u30fc", "々", "〇", "𠀀"];
  const r = rng(11);
  const samples = [MIXED, TRAIN_TEXT.slice(0, 20_000)];
  for (let i = 0; i < 500; i++) {
    samples.push(
      Array.from(
        { length: 1 + Math.floor(r() * 30) },
        () => alphabet[Math.floor(r() * alphabet.length)],
      ).join(""),
    );
  }
  for (const s of samples) {
    assert.deepEqual(pretokenize(s), split.pre_tokenize_text(s), JSON.stringify(s));
  }
});

Deno.test("a saved tokenizer loads in @huggingface/tokenizers and gives identical ids on mixed Chinese / English / code / emoji text", () => {
  const ours = tok.encode(MIXED, { allowedSpecial: "all" });
  const theirs = hf.encode(MIXED).ids;
  assert.deepEqual(ours, theirs);
  assert.ok(ours.length > 200);
  // Paragraph by paragraph too, including the training text itself.
  for (const para of TRAIN_TEXT.slice(0, 50_000).split("\n\n")) {
    if (para) assert.deepEqual(tok.encode(para, { allowedSpecial: "all" }), hf.encode(para).ids);
  }
});

Deno.test("decode() matches @huggingface/tokenizers, special tokens kept or skipped", () => {
  const ids = tok.encode(MIXED, { allowedSpecial: "all" });
  assert.equal(tok.decode(ids), hf.decode(ids));
  assert.equal(tok.decode(ids), MIXED);
  assert.equal(
    tok.decode(ids, { skipSpecialTokens: true }),
    hf.decode(ids, { skip_special_tokens: true }),
  );
  // Broken UTF-8 decodes the same way on both sides.
  const broken = [16 + 0xe4, 16 + 0xbd, 16 + 0x41, tok.imEndId, 16 + 0xf0];
  assert.equal(tok.decode(broken), hf.decode(broken));
});

Deno.test("tokenizer.json marks the special tokens special and describes a byte-level BPE", () => {
  const json = toTokenizerJson(tok);
  assert.equal(json.added_tokens.length, 16);
  assert.ok(json.added_tokens.every((t, i) => t.special && t.id === i && !t.normalized));
  assert.equal(json.model.type, "BPE");
  assert.equal(json.model.merges.length, 1500 - 272);
  assert.equal(Object.keys(json.model.vocab).length, 1500);
  assert.equal(json.model.vocab["Ġ"], 16 + 32);
  assert.deepEqual(json.pre_tokenizer, {
    type: "Sequence",
    pretokenizers: [
      {
        type: "Split",
        pattern: { Regex: PRETOKENIZE_PATTERN },
        behavior: "Isolated",
        invert: false,
      },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  });
  assert.equal(json.decoder.type, "ByteLevel");
  assert.equal(hf.token_to_id("<|im_end|>"), 4);
  assert.deepEqual(hf.encode("<|im_end|>").ids, [4]);
});

Deno.test("saveTokenizer() and loadTokenizer() round-trip tokenizer.json and tokenizer_config.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const written = await saveTokenizer(tok, `${dir}/tok`, { modelMaxLength: 4096 });
    assert.deepEqual(written, [`${dir}/tok/tokenizer.json`, `${dir}/tok/tokenizer_config.json`]);
    const back = await loadTokenizer(`${dir}/tok`);
    assert.equal(back.vocabSize, tok.vocabSize);
    assert.deepEqual(back.merges, tok.merges);
    assert.deepEqual(back.specialTokens, tok.specialTokens);
    assert.deepEqual(
      back.encode(MIXED, { allowedSpecial: "all" }),
      tok.encode(MIXED, { allowedSpecial: "all" }),
    );
    const config = await loadTokenizerConfig(`${dir}/tok`);
    assert.equal(config.bos_token, "<|bos|>");
    assert.equal(config.eos_token, "<|eos|>");
    assert.equal(config.pad_token, "<|pad|>");
    assert.equal(config.model_max_length, 4096);
    assert.equal(config.chat_template, CHAT_TEMPLATE);
    assert.equal(config.clean_up_tokenization_spaces, false);
    assert.equal(config.added_tokens_decoder["4"].content, "<|im_end|>");
    // The HF loader reads the files as written.
    const fromFiles = new HfTokenizer(
      JSON.parse(await Deno.readTextFile(`${dir}/tok/tokenizer.json`)),
      JSON.parse(await Deno.readTextFile(`${dir}/tok/tokenizer_config.json`)),
    );
    assert.deepEqual(fromFiles.encode(MIXED).ids, tok.encode(MIXED, { allowedSpecial: "all" }));
    await assert.rejects(
      loadTokenizer(`${dir}/missing`),
      /missing\/tokenizer\.json.*tokenizer train/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizerFromJson() rejects unsupported files and names the field", () => {
  const json = JSON.parse(JSON.stringify(toTokenizerJson(tok)));
  assert.throws(
    () =>
      tokenizerFromJson({ ...json, model: { ...json.model, type: "Unigram" } }, {
        source: "x.json",
      }),
    /x\.json: model\.type must be "BPE"/,
  );
  assert.throws(() => tokenizerFromJson({ ...json, normalizer: { type: "NFC" } }), /normalizer/);
  assert.throws(
    () => tokenizerFromJson({ ...json, pre_tokenizer: { type: "ByteLevel", use_regex: true } }),
    /use_regex true/,
  );
  assert.throws(
    () => tokenizerFromJson({ ...json, model: { ...json.model, merges: ["Ġ zzzz"] } }),
    /merges\[0\].*missing from model\.vocab/,
  );
  // Merges as [left, right] arrays (tokenizers >= 0.20) are read too.
  const arrays = {
    ...json,
    model: { ...json.model, merges: json.model.merges.map((m: string) => m.split(" ")) },
  };
  assert.deepEqual(tokenizerFromJson(arrays).merges, tok.merges);
});

Deno.test("a tokenizer.json with an id far past its size, a duplicate id or no special tokens is named", async () => {
  const json = toTokenizerJson(tok) as unknown as {
    model: { vocab: Record<string, number> };
    added_tokens: unknown[];
  };
  const t0 = performance.now();
  const huge = structuredClone(json);
  huge.model.vocab["zz"] = 2_000_000_000;
  assert.throws(
    () => tokenizerFromJson(huge, { source: "t/tokenizer.json" }),
    /^Error: t\/tokenizer\.json: model\.vocab\["zz"\] is 2000000000, past the \d+ tokens/,
  );
  assert.ok(performance.now() - t0 < 2000, "refused without allocating 2e9 slots");
  const dup = structuredClone(json);
  dup.model.vocab["zz"] = 7;
  assert.throws(() => tokenizerFromJson(dup, { source: "t/tokenizer.json" }), /gives id 7 to both/);
  const dir = await Deno.makeTempDir();
  try {
    await saveTokenizer(tok, `${dir}/tok`);
    const noAdded = { ...json, added_tokens: undefined };
    await Deno.writeTextFile(`${dir}/tok/tokenizer.json`, JSON.stringify(noAdded));
    await assert.rejects(
      loadTokenizer(`${dir}/tok`),
      (e: Error) =>
        e.message.startsWith(
          `${dir}/tok/tokenizer.json: no special token <|bos|>, <|eos|>, <|pad|> in added_tokens`,
        ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
