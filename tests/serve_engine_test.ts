import assert from "node:assert/strict";
import { BigramModel, ScriptedModel, TEST_TEXTS, testTokenizer } from "../serve/_test_model.ts";
import { ContextLengthError, Engine, EngineOverloadedError } from "../serve/engine.ts";

const tok = testTokenizer();

/** A model that answers every prompt with `reply`. */
function scripted(reply: string | ((prompt: string) => string), options = {}) {
  return new ScriptedModel(tok, typeof reply === "string" ? () => reply : reply, options);
}

/** Waits until `cond()` holds, polling; fails after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const STOP = { stopTokenIds: [tok.imEndId] };

Deno.test("generate() streams whole characters whose concatenation is the reply", async () => {
  const reply = "Hello 世界 😀 and ünïcödé!";
  const engine = new Engine(scripted(reply), tok);
  const gen = engine.generate(tok.encode("hi"), STOP);
  const deltas: string[] = [];
  for await (const d of gen) deltas.push(d);
  const r = await gen.result;
  assert.equal(deltas.join(""), reply);
  assert.equal(r.text, reply);
  assert.ok(deltas.length > 3, "expected several deltas");
  for (const d of deltas) assert.ok(!d.includes("\uFFFD"), `a delta split a character: ${d}`);
  assert.equal(r.finishReason, "stop");
  const replyTokens = tok.encode(reply).length;
  assert.deepEqual(r.usage, {
    prompt_tokens: tok.encode("hi").length,
    completion_tokens: replyTokens + 1, // the stop token counts
    total_tokens: tok.encode("hi").length + replyTokens + 1,
  });
});

Deno.test("concurrent requests are decoded in shared batches within the limits", async () => {
  const model = scripted((p) => `echo ${p.length}`);
  const engine = new Engine(model, tok, { maxBatchSize: 4, maxSequences: 6 });
  const prompts = Array.from({ length: 10 }, (_, i) => tok.encode("x".repeat(i + 1)));
  const results = await Promise.all(prompts.map((p) => engine.generate(p, STOP).result));
  results.forEach((r, i) => assert.equal(r.text, `echo ${i + 1}`));
  assert.ok(Math.max(...model.batchSizes) === 4, `batch sizes ${model.batchSizes}`);
  assert.ok(model.peakSequences <= 6, `peak ${model.peakSequences}`);
  assert.equal(model.liveSequences, 0);
  assert.deepEqual(engine.stats().active, 0);
  assert.equal(engine.stats().completed, 10);
});

Deno.test("maxTokens ends a generation with finish reason length", async () => {
  const engine = new Engine(scripted("one two three four five six seven"), tok);
  const r = await engine.generate(tok.encode("go"), { ...STOP, maxTokens: 3 }).result;
  assert.equal(r.finishReason, "length");
  assert.equal(r.usage.completion_tokens, 3);
  assert.equal(r.text, tok.decode(tok.encode("one two three four five six seven").slice(0, 3)));
});

Deno.test("a stop string split across tokens ends the output before it", async () => {
  const reply = "The cat sat. Stop here. More text.";
  const ids = tok.encode(reply);
  // Precondition: "Stop here" is not a single token, so the match must span tokens.
  const spans = ids.map((id) => tok.decode([id]));
  assert.ok(!spans.some((s) => s.includes("Stop here")), `tokens: ${JSON.stringify(spans)}`);
  const engine = new Engine(scripted(reply), tok);
  const gen = engine.generate(tok.encode("go"), { ...STOP, stop: ["Stop here"] });
  const deltas: string[] = [];
  for await (const d of gen) deltas.push(d);
  const r = await gen.result;
  assert.equal(r.text, "The cat sat. ");
  assert.equal(deltas.join(""), "The cat sat. ");
  assert.equal(r.finishReason, "stop");
});

Deno.test("the model's context length bounds prompt and output", async () => {
  const engine = new Engine(scripted("a b c d e f g h i j k l m n o p"), tok, {});
  const small = new Engine(scripted("a b c d e f g h i j k l m n o p", { maxSeqLen: 8 }), tok);
  assert.throws(() => small.generate(new Array(8).fill(20)), ContextLengthError);
  const r = await small.generate(new Array(5).fill(20), STOP).result;
  assert.equal(r.finishReason, "length");
  assert.equal(r.usage.completion_tokens, 3);
  assert.throws(() => engine.generate([]), /empty/);
  assert.throws(() => engine.generate([tok.vocabSize]), /outside the model's vocabulary/);
  assert.throws(() => engine.generate([20], { maxTokens: 0 }), /max_tokens/);
});

Deno.test("an aborted signal cancels the generation and frees its sequence", async () => {
  const model = scripted("word ".repeat(200), { stepDelayMs: 2 });
  const engine = new Engine(model, tok);
  const abort = new AbortController();
  const gen = engine.generate(tok.encode("go"), { ...STOP, signal: abort.signal });
  let n = 0;
  for await (const _ of gen) {
    if (++n === 3) abort.abort();
    assert.ok(n < 50, "the stream went on after the abort");
  }
  const r = await gen.result;
  assert.equal(r.finishReason, "cancelled");
  await waitFor(() => model.liveSequences === 0, "the sequence to be released");
  assert.equal(engine.stats().cancelled, 1);
});

Deno.test("breaking out of the iteration cancels the generation", async () => {
  const model = scripted("word ".repeat(200), { stepDelayMs: 2 });
  const engine = new Engine(model, tok);
  const gen = engine.generate(tok.encode("go"), STOP);
  for await (const _ of gen) break;
  assert.equal((await gen.result).finishReason, "cancelled");
  await waitFor(() => model.liveSequences === 0, "the sequence to be released");
});

Deno.test("queued requests can be cancelled before they start", async () => {
  const model = scripted("word ".repeat(20), { stepDelayMs: 1 });
  const engine = new Engine(model, tok, { maxSequences: 1 });
  const first = engine.generate(tok.encode("a"), STOP);
  const abort = new AbortController();
  const second = engine.generate(tok.encode("b"), { ...STOP, signal: abort.signal });
  abort.abort();
  assert.equal((await second.result).finishReason, "cancelled");
  assert.equal((await first.result).finishReason, "stop");
  assert.equal(model.openedSequences, 1);
});

Deno.test("the same seed gives the same text, alone or batched with others", async () => {
  const model = new BigramModel(tok, TEST_TEXTS);
  const engine = new Engine(model, tok);
  const prompt = tok.encode("The");
  const opts = { maxTokens: 24, sampling: { seed: 42, temperature: 1 } };
  const alone = await engine.generate(prompt, opts).result;
  const batch = await Promise.all([
    engine.generate(prompt, { maxTokens: 24, sampling: { seed: 7 } }).result,
    engine.generate(prompt, opts).result,
    engine.generate(tok.encode("Hello"), { maxTokens: 10 }).result,
  ]);
  assert.equal(batch[1].text, alone.text);
  assert.deepEqual(batch[1].tokenIds, alone.tokenIds);
  assert.equal(alone.seed, 42);
  const seeds = await Promise.all(
    [1, 2, 3, 4].map((seed) => engine.generate(prompt, { ...opts, sampling: { seed } }).result),
  );
  assert.ok(new Set(seeds.map((r) => r.text)).size > 1, "different seeds gave identical text");
});

Deno.test("greedy decoding of the bigram model is deterministic without a seed", async () => {
  const engine = new Engine(new BigramModel(tok, TEST_TEXTS), tok);
  const a = await engine.generate(tok.encode("The dog"), {
    maxTokens: 12,
    sampling: { temperature: 0 },
  }).result;
  const b = await engine.generate(tok.encode("The dog"), {
    maxTokens: 12,
    sampling: { temperature: 0 },
  }).result;
  assert.equal(a.text, b.text);
  assert.ok(a.text.length > 0);
});

Deno.test("forced tokens start the output, stream as text and count as completion", async () => {
  const forced = tok.encode("Sure: ");
  const model = scripted("done");
  const engine = new Engine(model, tok);
  const r = await engine.generate(tok.encode("go"), { ...STOP, forcedTokens: forced }).result;
  assert.equal(r.text, "Sure: done");
  assert.equal(r.usage.completion_tokens, forced.length + tok.encode("done").length + 1);
});

Deno.test("a failing model step fails its requests and the engine keeps serving", async () => {
  const model = scripted("fine");
  const engine = new Engine(model, tok);
  model.failNextStep(new Error("device lost"));
  const gen = engine.generate(tok.encode("a"), STOP);
  await assert.rejects(gen.result, /device lost/);
  await assert.rejects(async () => {
    for await (const _ of gen) { /* drain */ }
  }, /device lost/);
  assert.equal(model.liveSequences, 0);
  const ok = await engine.generate(tok.encode("b"), STOP).result;
  assert.equal(ok.text, "fine");
  assert.equal(engine.stats().failed, 1);
});

Deno.test("a full queue refuses new requests with EngineOverloadedError", async () => {
  const model = scripted("x", { stepDelayMs: 1 });
  const engine = new Engine(model, tok, { maxSequences: 1, maxQueue: 2 });
  const gens = [0, 1, 2].map(() => engine.generate(tok.encode("a"), STOP));
  assert.throws(() => engine.generate(tok.encode("a"), STOP), EngineOverloadedError);
  await Promise.all(gens.map((g) => g.result));
  await engine.close();
  assert.throws(() => engine.generate(tok.encode("a")), /closed/);
});

Deno.test("long prompts are prefilled in chunks of maxPrefillTokens", async () => {
  const model = new BigramModel(tok, TEST_TEXTS);
  const engine = new Engine(model, tok, { maxPrefillTokens: 16 });
  const prompt = tok.encode(TEST_TEXTS.join(" ")).slice(0, 100);
  const chunked = await engine.generate(prompt, { maxTokens: 5, sampling: { temperature: 0 } })
    .result;
  const whole = await new Engine(new BigramModel(tok, TEST_TEXTS), tok)
    .generate(prompt, { maxTokens: 5, sampling: { temperature: 0 } }).result;
  assert.equal(chunked.text, whole.text);
  assert.ok(model.batchSizes.length >= Math.ceil(100 / 16), `${model.batchSizes.length} steps`);
});
