import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import { concatLastDim } from "../kernels/copy.ts";
import { add } from "../kernels/elementwise.ts";
import { embedding } from "../kernels/embedding.ts";
import { linear } from "../kernels/matmul.ts";
import { rmsnorm } from "../kernels/rmsnorm.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { kvCacheBytesPerToken, type ModelConfig, resolveConfig } from "../model/config.ts";
import { argmax, Decoder, generateGreedy } from "../model/decode.ts";
import { moeForward } from "../model/ffn.ts";
import { mlaForward } from "../model/mla.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import type { LanguageModel } from "../serve/model_api.ts";
import { AdamW } from "../train/optimizer.ts";
import { assertClose, GPU_TEST, randint, testDevice } from "./_util.ts";

/**
 * Decoder logits vs the full forward: |diff| <= ATOL + RTOL |full| (observed: ~1e-6 at
 * init_std 0.1, ~1e-7 at the preset's 0.02).
 */
const ATOL = 1e-4, RTOL = 1e-4;
const T = 64;
/**
 * The tests' init scale. At the preset's 0.02 the logits stay below 0.5 and attention barely
 * moves them (a 10% error in the softmax scale changes them by 7e-5); at 0.1 the same error
 * changes them by 0.36, so an attention bug cannot hide under the tolerance.
 */
const SHARP = { init_std: 0.1 };

async function tinyModel(seed = 5, overrides: Partial<ModelConfig> = SHARP): Promise<DeepSeekV3> {
  return DeepSeekV3.create(await testDevice(), resolveConfig("tiny", overrides), { seed });
}

/** The full forward's logits [T, V] of one sequence. */
async function fullLogits(model: DeepSeekV3, tokens: Int32Array): Promise<Float32Array> {
  const scope = new Scope();
  const out = model.forward(
    model.upload({ tokens, targets: new Int32Array(0), B: 1, T: tokens.length }),
    { logitsOnly: true },
  );
  const l = await out.logits.readF32();
  scope.dispose();
  return l;
}

for (
  const [what, overrides, atol] of [
    ["init_std 0.1", SHARP, ATOL],
    ["the preset's init_std 0.02", {}, 1e-5],
  ] as const
) {
  Deno.test(
    `the decoder's logits equal the full forward's at every position (tiny, ${what}, 64 tokens; chunks of 1, 7, 64)`,
    GPU_TEST,
    async () => {
      const model = await tinyModel(5, overrides);
      const V = model.cfg.vocab_size;
      const tokens = randint(T, 21, V);
      const full = await fullLogits(model, tokens);
      const row = (i: number) => full.subarray(i * V, (i + 1) * V);
      const tol = (label: string) => ({ atol, rtol: RTOL, label });
      for (const chunk of [1, 7, 64]) {
        const dec = new Decoder(model, { maxBatch: 1 });
        const seq = dec.newSequence();
        for (let s = 0; s < T; s += chunk) {
          const part = [...tokens.subarray(s, Math.min(T, s + chunk))];
          if (chunk === 1) {
            // token by token through the server's entry point
            const [l] = await dec.step([{ seq, tokens: part }]);
            assertClose(l, row(s), tol(`chunk 1, position ${s}`));
          } else {
            const [ls] = await dec.stepAll([{ seq, tokens: part }]);
            assert.equal(ls.length, part.length);
            ls.forEach((l, k) =>
              assertClose(l, row(s + k), tol(`chunk ${chunk}, position ${s + k}`))
            );
          }
        }
        assert.equal(dec.length(seq), T);
        await assert.rejects(dec.step([{ seq, tokens: [1] }]), /past maxSeqLen 64/);
        dec.dispose();
      }
    },
  );
}

Deno.test(
  "sequences of different lengths decoded in one batch give the logits they get alone",
  GPU_TEST,
  async () => {
    const model = await tinyModel(6);
    const V = model.cfg.vocab_size;
    const prompts = [[...randint(10, 1, V)], [...randint(23, 2, V)], [...randint(1, 3, V)]];
    const follow = prompts.map((_, i) => [...randint(6, 10 + i, V)]);
    // alone: each sequence in its own decoder
    const alone: Float32Array[][] = [];
    for (const [i, p] of prompts.entries()) {
      const dec = new Decoder(model, { maxBatch: 1 });
      const seq = dec.newSequence();
      const got = [Float32Array.from((await dec.step([{ seq, tokens: p }]))[0])];
      for (const t of follow[i]) {
        got.push(Float32Array.from((await dec.step([{ seq, tokens: [t] }]))[0]));
      }
      alone.push(got);
      dec.dispose();
    }
    // together: prefill of all three in one step, then one token each per step; a fourth
    // sequence is opened and released on the way, so slots are reused
    const dec = new Decoder(model, { maxBatch: 4 });
    const lm: LanguageModel = dec; // the server's interface, checked by the compiler
    const junk = lm.newSequence();
    await lm.step([{ seq: junk, tokens: [5, 6, 7] }]);
    const seqs = prompts.map(() => lm.newSequence());
    lm.release(junk);
    // continuous batching: sequences 0 and 1 prefill together; sequence 2 prefills in the step
    // where they decode their first token, and sits out a later step
    const fed = [-1, -1, -1]; // -1: not prefilled yet
    const tokensOf = (i: number) => fed[i] < 0 ? prompts[i] : [follow[i][fed[i]]];
    for (let k = 0; k < 9; k++) {
      const idx = [0, 1, 2].filter((i) => fed[i] < 6 && !(i === 2 && (k === 0 || k === 4)));
      const ls = await lm.step(idx.map((i) => ({ seq: seqs[i], tokens: tokensOf(i) })));
      idx.forEach((i, j) => {
        fed[i]++;
        assertClose(ls[j], alone[i][fed[i]], { atol: 1e-5, label: `seq ${i} output ${fed[i]}` });
      });
    }
    assert.deepEqual(fed, [6, 6, 6]);
    assert.deepEqual(seqs.map((s) => dec.length(s)), [16, 29, 7]);
    dec.dispose();
  },
);

Deno.test(
  "the latent cache holds (rkv + dr) * 4 * n_layers bytes per token, as config.ts counts",
  GPU_TEST,
  async () => {
    const model = await tinyModel();
    const cfg = model.cfg;
    const dec = new Decoder(model, { maxBatch: 3 });
    const want = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4 * cfg.n_layers;
    assert.equal(want, 160);
    assert.equal(dec.cacheBytesPerToken, want);
    assert.equal(dec.cacheBytesPerToken, kvCacheBytesPerToken(cfg).mla.f32);
    // standard MHA would cache every head's key and value
    assert.ok(kvCacheBytesPerToken(cfg).mha.f32 > dec.cacheBytesPerToken);
    dec.dispose();
  },
);

Deno.test("step() refuses bad items and leaves the sequences unchanged", GPU_TEST, async () => {
  const model = await tinyModel();
  const dec = new Decoder(model, { maxBatch: 2 });
  const a = dec.newSequence(), b = dec.newSequence();
  assert.throws(() => dec.newSequence(), /all 2 sequences are in use/);
  await dec.step([{ seq: a, tokens: [1, 2] }]);
  await assert.rejects(dec.step([{ seq: 99, tokens: [1] }]), /not open/);
  await assert.rejects(dec.step([{ seq: b, tokens: [] }]), /no tokens/);
  await assert.rejects(dec.step([{ seq: b, tokens: [128] }]), /outside the vocabulary/);
  await assert.rejects(dec.step([{ seq: b, tokens: [1.5] }]), /outside the vocabulary/);
  await assert.rejects(
    dec.step([{ seq: a, tokens: [1] }, { seq: a, tokens: [2] }]),
    /appears twice/,
  );
  await assert.rejects(dec.step([{ seq: a, tokens: new Array(63).fill(0) }]), /past maxSeqLen/);
  await assert.rejects(dec.mtpStep([{ seq: a, tokens: [1] }]), /mtp: true/);
  assert.equal(dec.length(a), 2);
  assert.equal(dec.length(b), 0);
  assert.deepEqual(await dec.step([]), []);
  dec.release(b);
  dec.release(b); // a no-op
  dec.release(12345);
  dec.newSequence(); // the slot is free again
  assert.throws(() => dec.truncate(a, 3), /outside \[0, 2\]/);
  dec.dispose();
  assert.throws(() => dec.newSequence(), /after dispose/);
  assert.throws(() => new Decoder(model, { maxSeqLen: 65 }), /maxSeqLen must be an integer/);
  assert.throws(() => new Decoder(model, { maxBatch: 0 }), /maxBatch/);
  const short = new Decoder(model, { maxSeqLen: 8 });
  assert.equal(short.maxSeqLen, 8);
  const s = short.newSequence();
  await short.step([{ seq: s, tokens: [1, 2, 3, 4, 5, 6, 7, 8] }]);
  await assert.rejects(short.step([{ seq: s, tokens: [1] }]), /past maxSeqLen 8/);
  short.dispose();
});

/** The MTP module's logits [T, V] over a whole sequence, as the training forward computes them. */
async function fullMtpLogits(model: DeepSeekV3, tokens: Int32Array): Promise<Float32Array> {
  const cfg = model.cfg, n = tokens.length, eps = cfg.norm_eps;
  const p = (name: string) => model.param(name);
  const scope = new Scope();
  const hidden = model.forward(
    model.upload({ tokens, targets: new Int32Array(0), B: 1, T: n }),
    { logitsOnly: true },
  ).hidden;
  const next = new Int32Array(n); // position i embeds token i + 1 (0 past the end, unused)
  next.set(tokens.subarray(1));
  const pre = `model.layers.${cfg.n_layers}`;
  const e = rmsnorm(
    embedding(p("model.embed_tokens.weight"), Tensor.from(model.device, next, [n], "i32")),
    p(`${pre}.enorm.weight`),
    { eps },
  );
  const hn = rmsnorm(hidden, p(`${pre}.hnorm.weight`), { eps });
  const x = linear(concatLastDim([hn, e]), p(`${pre}.eh_proj.weight`));
  const ctx = {
    cfg,
    param: p,
    rope: model.rope,
    scale: model.scale,
    seg: null,
    shape: { B: 1, T: n },
  };
  const h = add(
    x,
    mlaForward(ctx, `${pre}.self_attn`, rmsnorm(x, p(`${pre}.input_layernorm.weight`), { eps })),
  );
  const u = rmsnorm(h, p(`${pre}.post_attention_layernorm.weight`), { eps });
  const y = add(h, moeForward(model.arena, cfg, `${pre}.mlp`, u, { B: 1 }).y);
  const logits = linear(
    rmsnorm(y, p(`${pre}.shared_head.norm.weight`), { eps }),
    p("lm_head.weight"),
  );
  const out = await logits.readF32();
  scope.dispose();
  return out;
}

Deno.test(
  "mtpStep() gives the MTP module's full-sequence logits at every position (tiny)",
  GPU_TEST,
  async () => {
    const model = await tinyModel(8);
    const V = model.cfg.vocab_size, n = 40;
    const tokens = randint(n, 31, V);
    const full = await fullMtpLogits(model, tokens);
    const dec = new Decoder(model, { maxBatch: 2, mtp: true });
    const seq = dec.newSequence();
    await dec.step([{ seq, tokens: [...tokens] }]);
    // one chunk of 9 positions, then one position at a time
    let [l] = await dec.mtpStep([{ seq, tokens: [...tokens.subarray(1, 10)] }]);
    assertClose(l, full.subarray(8 * V, 9 * V), { atol: ATOL, rtol: RTOL, label: "position 8" });
    for (let j = 9; j < n - 1; j++) {
      [l] = await dec.mtpStep([{ seq, tokens: [tokens[j + 1]] }]);
      assertClose(l, full.subarray(j * V, (j + 1) * V), {
        atol: ATOL,
        rtol: RTOL,
        label: `MTP position ${j}`,
      });
    }
    assert.equal(dec.mtpLength(seq), n - 1);
    // position n - 1 needs the token after the last one fed: the main model has no position n
    await assert.rejects(dec.mtpStep([{ seq, tokens: [1, 2] }]), /step the main model first/);
    dec.dispose();
  },
);

Deno.test(
  "greedy MTP speculation equals plain greedy decoding, whether drafts are accepted or rejected",
  GPU_TEST,
  async () => {
    const model = await tinyModel(9);
    const V = model.cfg.vocab_size;
    const prompts = [[...randint(5, 41, V)], [...randint(12, 42, V)], [...randint(1, 43, V)]];
    const maxTokens = 24;
    const dec = new Decoder(model, { maxBatch: 3, mtp: true });
    const plain = await generateGreedy(dec, prompts, { maxTokens });
    assert.equal(plain.stats.drafted, 0);
    assert.deepEqual(plain.tokens.map((t) => t.length), [24, 24, 24]);
    // the server's path (logits read back, argmax on the host) gives the same tokens
    {
      const seq = dec.newSequence();
      let [l] = await dec.step([{ seq, tokens: prompts[1] }]);
      const manual = [argmax(l)];
      while (manual.length < maxTokens) {
        [l] = await dec.step([{ seq, tokens: [manual[manual.length - 1]] }]);
        manual.push(argmax(l));
      }
      dec.release(seq);
      assert.deepEqual(manual, plain.tokens[1]);
    }
    // each prompt alone, plain, gives the same tokens as the batch
    for (const [i, p] of prompts.entries()) {
      assert.deepEqual((await generateGreedy(dec, [p], { maxTokens })).tokens[0], plain.tokens[i]);
    }
    const oracle = (i: number, position: number) => plain.tokens[i][position - prompts[i].length];
    const patterns: [string, (i: number, pos: number, d: number) => number][] = [
      ["the MTP's own drafts", (_i, _p, d) => d],
      ["always right", (i, pos) => oracle(i, pos)],
      ["always wrong", (i, pos) => (oracle(i, pos) + 1) % V],
      ["alternating", (i, pos, d) => (pos % 2 ? oracle(i, pos) : (oracle(i, pos) + 1 + d) % V)],
    ];
    for (const [name, draftOverride] of patterns) {
      const spec = await generateGreedy(dec, prompts, {
        maxTokens,
        speculative: true,
        draftOverride,
      });
      assert.deepEqual(spec.tokens, plain.tokens, name);
      const s = spec.stats;
      assert.ok(s.drafted > 0, name);
      if (name === "always right") {
        assert.equal(s.accepted, s.drafted, name);
        assert.ok(s.steps < plain.stats.steps * 0.6, `${name}: ${s.steps} steps`);
      }
      if (name === "always wrong") assert.equal(s.accepted, 0, name);
      if (name === "alternating") assert.ok(s.accepted > 0 && s.accepted < s.drafted, name);
    }
    dec.dispose();
  },
);

Deno.test(
  "after training on a repeating text the MTP drafts are mostly accepted, output unchanged",
  GPU_TEST,
  async () => {
    const model = await tinyModel(10);
    const period = [3, 17, 42, 99, 7, 64, 23];
    const B = 2, n = 32;
    const tokens = new Int32Array(B * n), targets = new Int32Array(B * n);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < n; i++) {
        tokens[b * n + i] = period[(i + 3 * b) % period.length];
        targets[b * n + i] = period[(i + 3 * b + 1) % period.length];
      }
    }
    const opt = new AdamW(model.arena, { weightDecay: 0 });
    let loss = 0;
    for (let s = 0; s < 40; s++) {
      const scope = new Scope();
      model.arena.zeroGrads();
      const tape = new Tape().start();
      const out = model.forward(model.upload({ tokens, targets, B, T: n }));
      tape.backward(out.losses!.total);
      opt.update(1e-2);
      if (s === 39) loss = (await out.losses!.mtpPerDepth[0].readF32())[0];
      scope.dispose();
    }
    assert.ok(loss < 1, `MTP loss after training ${loss}`);
    const dec = new Decoder(model, { maxBatch: 2, mtp: true });
    const prompt = period.slice(0, 4);
    const plain = await generateGreedy(dec, [prompt], { maxTokens: 20 });
    const spec = await generateGreedy(dec, [prompt], { maxTokens: 20, speculative: true });
    assert.deepEqual(spec.tokens, plain.tokens);
    const { drafted, accepted, steps } = spec.stats;
    assert.ok(accepted / drafted > 0.7, `accepted ${accepted} of ${drafted}`);
    assert.ok(steps < plain.stats.steps, `${steps} vs ${plain.stats.steps} steps`);
    assert.equal(argmax(new Float32Array([0, 2, 2])), 1);
    dec.dispose();
  },
);

Deno.test(
  "greedyStep() keeps the accepted prefix of several drafts and rolls back the rest",
  GPU_TEST,
  async () => {
    const model = await tinyModel(11);
    const V = model.cfg.vocab_size;
    const prompt = [...randint(9, 51, V)], n = prompt.length;
    const dec = new Decoder(model, { maxBatch: 2, mtp: true });
    const want = (await generateGreedy(dec, [prompt], { maxTokens: 6 })).tokens[0];
    const seq = dec.newSequence();
    const [l] = await dec.step([{ seq, tokens: prompt }]);
    assert.equal(argmax(l), want[0]);
    await assert.rejects(dec.greedyStep([{ seq, tokens: [want[0]] }]), /bring the MTP cache level/);
    // drafts: right, wrong, (right but after a wrong one)
    const wrong = (want[2] + 1) % V;
    let [r] = await dec.greedyStep([{ seq, tokens: [want[0], want[1], wrong, want[3]] }], {
      draft: false,
    });
    assert.deepEqual(r, { accepted: 1, tokens: [want[1], want[2]], draft: -1 });
    assert.equal(dec.length(seq), n + 2);
    // the rejected positions were rolled back: decoding goes on as if they were never fed
    [r] = await dec.greedyStep([{ seq, tokens: [want[2]] }], { draft: false });
    assert.deepEqual(r.tokens, [want[3]]);
    [r] = await dec.greedyStep([{ seq, tokens: [want[3], want[4]] }], { draft: false });
    assert.deepEqual(r, { accepted: 1, tokens: [want[4], want[5]], draft: -1 });
    dec.dispose();
    const plainDec = new Decoder(model, { maxBatch: 1 });
    const s2 = plainDec.newSequence();
    await assert.rejects(plainDec.greedyStep([{ seq: s2, tokens: [1] }], { draft: true }), /mtp/);
    plainDec.dispose();
  },
);
