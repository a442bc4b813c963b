/**
 * The server on the real GPU model: a tiny checkpoint saved like a training run's, loaded by
 * `loadForServing` (decoder with the latent KV cache), answering the official OpenAI client.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { testDevice } from "./_util.ts";
import { resolveConfig } from "../model/config.ts";
import { toHfConfig } from "../model/hf_config.ts";
import { Decoder } from "../model/decode.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { loadForServing } from "../serve/load.ts";
import { createServer } from "../serve/server.ts";
import { saveTokenizer, trainBpe } from "../tokenizer/mod.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";
import { GPU_TEST } from "./_util.ts";

Deno.test(
  "a saved GPU checkpoint serves chat completions, streamed and not, through loadForServing",
  GPU_TEST,
  async () => {
    const root = await Deno.makeTempDir();
    const tok = trainBpe(["the weather in Rona is sunny. 罗纳的天气晴朗。".repeat(20)], {
      vocabSize: 300,
    });
    await saveTokenizer(tok, `${root}/tokenizer`);
    const cfg = resolveConfig("tiny", { vocab_size: tok.vocabSize, max_seq_len: 256 });
    const device = await testDevice();
    const trained = DeepSeekV3.create(device, cfg, { seed: 2 });
    await saveCheckpoint(`${root}/run`, {
      table: trained.arena.entries,
      params: await trained.weights(),
      m: new Map(),
      v: new Map(),
      hfConfig: toHfConfig(cfg),
      state: { step: 1, tokensSeen: 0 },
    });
    trained.arena.destroy();

    // The run directory resolves to its latest checkpoint; the tokenizer is found two levels up.
    const loaded = await loadForServing(`${root}/run`, { maxSequences: 4 });
    const server = createServer({ ...loaded, port: 0 });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
    try {
      const req = {
        model: loaded.modelId,
        messages: [{ role: "user" as const, content: "weather in Rona?" }],
        max_tokens: 6,
        temperature: 0,
      };
      const a = await client.chat.completions.create(req);
      const b = await client.chat.completions.create(req);
      assert.equal(a.choices[0].message.content, b.choices[0].message.content, "greedy repeats");
      assert.equal(a.usage!.completion_tokens <= 6, true);
      assert.ok(a.usage!.prompt_tokens > 3);
      let streamed = "";
      let chunks = 0;
      for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
        streamed += c.choices[0]?.delta?.content ?? "";
        chunks++;
      }
      assert.ok(chunks >= 2);
      assert.equal(streamed, a.choices[0].message.content, "streaming gives the same text");
    } finally {
      await server.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "Decoder.stepHidden returns the head's input: lm_head of it gives step()'s logits; /v1/embeddings pools it",
  GPU_TEST,
  async () => {
    const tok = trainBpe(["the weather in Rona is sunny and warm today. ".repeat(20)], {
      vocabSize: 300,
    });
    const cfg = resolveConfig("tiny", { vocab_size: tok.vocabSize, max_seq_len: 128 });
    const model = DeepSeekV3.create(await testDevice(), cfg, { seed: 5 });
    const head = (await model.weights()).get("lm_head.weight")!; // [V, D]
    const dec = new Decoder(model, { maxBatch: 2 });
    const ids = tok.encode("the weather in Rona");
    const a = dec.newSequence(), b = dec.newSequence();
    const [logits] = await dec.step([{ seq: a, tokens: ids }]);
    const [states] = await dec.stepHidden([{ seq: b, tokens: ids }]);
    assert.equal(states.length, ids.length);
    assert.equal(states[0].length, cfg.dim);
    const h = states[states.length - 1], D = cfg.dim;
    for (let v = 0; v < cfg.vocab_size; v += 7) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += head[v * D + d] * h[d];
      assert.ok(Math.abs(dot - logits[v]) < 1e-3 + 1e-3 * Math.abs(logits[v]), `logit ${v}`);
    }
    dec.release(a);
    dec.release(b);
    const server = createServer({ model: dec, tokenizer: tok, port: 0 });
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      const r = await client.embeddings.create({
        model: "minideepseek",
        input: ["the weather in Rona", "sunny and warm"],
        encoding_format: "float",
      });
      for (const d of r.data) {
        assert.equal(d.embedding.length, cfg.dim);
        assert.ok(Math.abs(Math.hypot(...d.embedding) - 1) < 1e-4);
      }
    } finally {
      await server.shutdown();
      dec.dispose();
      model.arena.destroy();
    }
  },
);
