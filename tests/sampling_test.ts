import assert from "node:assert/strict";
import { argmax } from "../model/decode.ts";
import { Rng } from "../random/rng.ts";
import {
  applyLogitBias,
  applyPresenceFrequencyPenalty,
  applyRepetitionPenalty,
  minPMask,
  resolveSampling,
  sampleIndex,
  Sampler,
  softmaxProbs,
  StopStringMatcher,
  topKMask,
  topPMask,
} from "../model/sampling.ts";

const NEG = -Infinity;

Deno.test("argmax() picks the largest logit and the lowest id on ties", () => {
  assert.equal(argmax(Float32Array.of(0.5, 3, -1, 3)), 1);
  assert.equal(argmax(Float32Array.of(NEG, NEG)), 0);
});

Deno.test("temperature 0 is greedy and never draws a random number", () => {
  const s = new Sampler({ temperature: 0, seed: 1 });
  const logits = Float32Array.of(0.1, 0.2, 5, 0.3);
  for (let i = 0; i < 5; i++) assert.equal(s.sample(logits), 2);
});

Deno.test("the same seed gives the same tokens, another seed other tokens", () => {
  const logits = new Float32Array(50).map((_, i) => Math.sin(i) * 2);
  const run = (seed: number) => {
    const s = new Sampler({ seed, temperature: 1.5 });
    return Array.from({ length: 40 }, () => s.sample(logits));
  };
  assert.deepEqual(run(123), run(123));
  assert.notDeepEqual(run(123), run(124));
  assert.equal(Rng.fromSeed64(2 ** 40 + 5).next(), Rng.fromSeed64(2 ** 40 + 5).next());
  assert.notEqual(Rng.fromSeed64(2 ** 40 + 5).next(), Rng.fromSeed64(5).next());
});

Deno.test("sampling at temperature 1 follows the softmax probabilities", () => {
  const logits = Float32Array.of(Math.log(0.7), Math.log(0.2), Math.log(0.1));
  const s = new Sampler({ seed: 9 });
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  assert.ok(Math.abs(counts[0] / n - 0.7) < 0.02, `${counts}`);
  assert.ok(Math.abs(counts[2] / n - 0.1) < 0.02, `${counts}`);
});

Deno.test("softmaxProbs() and sampleIndex() on hand values", () => {
  assert.deepEqual([...softmaxProbs(Float32Array.of(0, 0, NEG))], [0.5, 0.5, 0]);
  assert.equal(sampleIndex(Float64Array.of(0.25, 0, 0.75), 0.3), 2);
  assert.equal(sampleIndex(Float64Array.of(0.25, 0, 0.75), 0.1), 0);
  assert.equal(sampleIndex(Float64Array.of(0.5, 0.5, 0), 0.9999999999), 1);
});

Deno.test("topKMask() keeps exactly k tokens, ties to the lower ids", () => {
  const l = Float32Array.of(1, 4, 2, 3);
  topKMask(l, 2);
  assert.deepEqual([...l], [NEG, 4, NEG, 3]);
  const t = Float32Array.of(1, 1, 1, 0);
  topKMask(t, 2);
  assert.deepEqual([...t], [1, 1, NEG, NEG]);
  const all = Float32Array.of(1, 2);
  topKMask(all, 0);
  assert.deepEqual([...all], [1, 2]);
  assert.throws(() => topKMask(all, -1), /top_k/);
});

Deno.test("topPMask() keeps the smallest nucleus reaching p", () => {
  const mk = () => Float32Array.of(Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05));
  let l = mk();
  topPMask(l, 0.7);
  assert.deepEqual([...l].map(Number.isFinite), [true, true, false, false]);
  l = mk();
  topPMask(l, 0.8); // exactly 0.5 + 0.3
  assert.deepEqual([...l].map(Number.isFinite), [true, true, false, false]);
  l = mk();
  topPMask(l, 0.1); // the top token alone
  assert.deepEqual([...l].map(Number.isFinite), [true, false, false, false]);
  l = mk();
  topPMask(l, 1);
  assert.ok([...l].every(Number.isFinite));
});

Deno.test("top-k and top-p restrict what the sampler can draw", () => {
  const logits = Float32Array.of(3, 2.9, 2.8, 0, 0, 0);
  const k = new Sampler({ seed: 3, topK: 2 });
  const p = new Sampler({ seed: 3, topP: 0.5 });
  for (let i = 0; i < 300; i++) {
    assert.ok(k.sample(logits) <= 1);
    assert.ok(p.sample(logits) <= 1);
  }
});

Deno.test("minPMask() drops tokens below min_p times the best", () => {
  const l = Float32Array.of(0, Math.log(0.5), Math.log(0.05));
  minPMask(l, 0.1);
  assert.deepEqual([...l].map(Number.isFinite), [true, true, false]);
});

Deno.test("repetition penalty divides positive and multiplies negative logits (CTRL rule)", () => {
  const l = Float32Array.of(2, -2, 1, 4);
  applyRepetitionPenalty(l, [0, 1, 1], 2);
  assert.deepEqual([...l], [1, -4, 1, 4]);
  assert.throws(() => applyRepetitionPenalty(l, [0], 0), /repetition penalty/);
});

Deno.test("presence and frequency penalties follow OpenAI's formula", () => {
  const l = Float32Array.of(1, 1, 1);
  applyPresenceFrequencyPenalty(l, new Map([[0, 2], [2, 1]]), { presence: 0.5, frequency: 0.25 });
  assert.deepEqual([...l], [0, 1, 0.25]);
  const neg = Float32Array.of(0, 0);
  applyPresenceFrequencyPenalty(neg, new Map([[1, 3]]), { presence: -1, frequency: 0 });
  assert.deepEqual([...neg], [0, 1]);
});

Deno.test("the sampler applies penalties to its own output and the prompt", () => {
  // Greedy would repeat token 0 forever; a frequency penalty makes it move on.
  const logits = Float32Array.of(1, 0.9, 0.8);
  const s = new Sampler({ temperature: 0, frequencyPenalty: 0.15 });
  // [1, .9, .8] -> 0; [.85, .9, .8] -> 1; [.85, .75, .8] -> 0; [.7, .75, .8] -> 2.
  assert.deepEqual([0, 1, 2, 3].map(() => s.sample(logits)), [0, 1, 0, 2]);
  // The repetition penalty also covers prompt tokens.
  const r = new Sampler({ temperature: 0, repetitionPenalty: 2 }, { promptTokens: [0] });
  assert.equal(r.sample(logits), 1);
  // logit_bias bans a token.
  const b = new Sampler({ temperature: 0, logitBias: new Map([[0, -100]]) });
  assert.equal(b.sample(logits), 1);
  const l = Float32Array.of(0, 0);
  applyLogitBias(l, new Map([[1, 3], [7, 1]]));
  assert.deepEqual([...l], [0, 3]);
});

Deno.test("resolveSampling() names the field that is out of range", () => {
  assert.throws(() => resolveSampling({ topP: 0 }), /top_p/);
  assert.throws(() => resolveSampling({ temperature: -1 }), /temperature/);
  assert.throws(() => resolveSampling({ presencePenalty: 3 }), /presence_penalty/);
  assert.equal(resolveSampling({}).temperature, 1);
});

Deno.test("stop strings split across pieces are held back and never emitted", () => {
  const m = new StopStringMatcher(["\nUser:", "END"]);
  assert.deepEqual(m.push("Hello"), { text: "Hello", stopped: false });
  assert.deepEqual(m.push(" there\nUs"), { text: " there", stopped: false });
  assert.deepEqual(m.push("e"), { text: "", stopped: false });
  assert.deepEqual(m.push("r: more"), { text: "", stopped: true });
  assert.equal(m.flush(), "");
  assert.deepEqual(m.push("x"), { text: "", stopped: true });
});

Deno.test("held-back text comes out when it stops matching or at the end", () => {
  const m = new StopStringMatcher(["END"]);
  assert.deepEqual(m.push("the E"), { text: "the ", stopped: false });
  assert.deepEqual(m.push("N"), { text: "", stopped: false });
  assert.deepEqual(m.push("D?"), { text: "", stopped: true });
  const n = new StopStringMatcher(["END"]);
  assert.deepEqual(n.push("EN"), { text: "", stopped: false });
  assert.deepEqual(n.push("d"), { text: "ENd", stopped: false });
  assert.deepEqual(n.push("E"), { text: "", stopped: false });
  assert.equal(n.flush(), "E");
  // The earliest of several stop strings wins; the text before it is emitted.
  const o = new StopStringMatcher(["bc", "a"]);
  assert.deepEqual(o.push("xbca"), { text: "x", stopped: true });
  // No stop strings: everything passes straight through.
  assert.deepEqual(new StopStringMatcher([]).push("E"), { text: "E", stopped: false });
});

Deno.test("vocabLimit keeps the sampler off a model's padded vocabulary rows", () => {
  const logits = Float32Array.of(0, 1, 9, 9);
  assert.equal(new Sampler({ temperature: 0 }, { vocabLimit: 2 }).sample(logits), 1);
  const s = new Sampler({ seed: 1 }, { vocabLimit: 2 });
  for (let i = 0; i < 50; i++) assert.ok(s.sample(logits) < 2);
});
