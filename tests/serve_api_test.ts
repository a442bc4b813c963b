/**
 * The API surface added for DeepSeek-API compatibility, through the official `openai` client and
 * raw HTTP: logprobs, n, echo, max_tokens validation, prefix completion, reasoning_content,
 * embeddings, JSON mode, and Swarm's request and streaming shapes.
 */
import assert from "node:assert/strict";
import OpenAI, { APIError } from "openai";
import {
  BigramModel,
  demoResponder,
  ScriptedModel,
  TEST_TEXTS,
  testTokenizer,
} from "../serve/_test_model.ts";
import type { LanguageModel } from "../serve/model_api.ts";
import { createServer, type RunningServer } from "../serve/server.ts";

const tok = testTokenizer();

async function withServer(
  model: LanguageModel,
  fn: (ctx: { client: OpenAI; server: RunningServer }) => Promise<void>,
): Promise<void> {
  const server = createServer({ model, tokenizer: tok, port: 0, modelId: "api-test" });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
  try {
    await fn({ client, server });
  } finally {
    await server.shutdown();
  }
}

const bigram = () => new BigramModel(tok, TEST_TEXTS, { maxSeqLen: 1024 });
const scripted = (reply: (p: string) => string = demoResponder) =>
  new ScriptedModel(tok, reply, { maxSeqLen: 2048 });

async function status(p: Promise<unknown>): Promise<APIError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof APIError) return e;
    throw e;
  }
  throw new Error("expected an API error");
}

Deno.test("chat logprobs: one entry per token, the greedy token on top, top_logprobs alternatives", async () => {
  await withServer(scripted(() => "Hello there, how are you?"), async ({ client }) => {
    const r = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "The cat" }],
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const lp = r.choices[0].logprobs!.content!;
    assert.ok(lp.length >= 1 && lp.length <= 8);
    for (const e of lp) {
      assert.ok(e.logprob <= 0);
      assert.equal(e.top_logprobs.length, 3);
      assert.equal(e.top_logprobs[0].token, e.token, "greedy picks the most likely token");
      assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6);
      assert.deepEqual(e.bytes, [...new TextEncoder().encode(e.token)]);
    }
    assert.equal(lp.map((e) => e.token).join(""), r.choices[0].message.content);
    // Logprobs are the model's own distribution, before logit_bias and sampling.
    const biased = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "The cat" }],
      max_tokens: 2,
      temperature: 0,
      logprobs: true,
      top_logprobs: 1,
      logit_bias: { [tok.encode("Hello")[0]]: -100 },
    });
    const first = biased.choices[0].logprobs!.content![0];
    assert.ok(first.logprob < first.top_logprobs[0].logprob);
    const plain = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "The cat" }],
      max_tokens: 4,
    });
    assert.equal(plain.choices[0].logprobs, null);
    const bad = await status(client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "x" }],
      top_logprobs: 2,
    }));
    assert.equal(bad.status, 400);
    assert.equal((bad.error as { param: string }).param, "top_logprobs");
  });
});

Deno.test("n > 1: that many choices, indexed, usage summed; streamed choices carry their index", async () => {
  await withServer(bigram(), async ({ client }) => {
    const r = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "The" }],
      n: 3,
      max_tokens: 6,
      seed: 11,
    });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
    assert.ok(r.usage!.completion_tokens >= 3);
    const stream = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "The" }],
      n: 2,
      max_tokens: 5,
      seed: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    const finished = new Set<number>(), text = ["", ""];
    let usage = 0;
    for await (const c of stream) {
      for (const ch of c.choices) {
        text[ch.index] += ch.delta.content ?? "";
        if (ch.finish_reason) finished.add(ch.index);
      }
      if (c.usage) usage = c.usage.completion_tokens;
    }
    assert.deepEqual([...finished].sort(), [0, 1]);
    assert.ok(usage >= 2);
    const tooMany = await status(client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "x" }],
      n: 1000,
    }));
    assert.equal(tooMany.status, 400);
  });
});

Deno.test("completions: echo with logprobs scores every prompt token, as evaluation harnesses need", async () => {
  await withServer(bigram(), async ({ client }) => {
    const ids = tok.encode("The cat sat on the mat.");
    const r = await client.completions.create({
      model: "api-test",
      prompt: ids,
      max_tokens: 1,
      echo: true,
      logprobs: 2,
      temperature: 0,
    });
    const lp = r.choices[0].logprobs!;
    // The prompt's tokens, then the generated one unless it was the stop token.
    assert.ok(lp.tokens!.length === ids.length || lp.tokens!.length === ids.length + 1);
    assert.equal(lp.tokens!.slice(0, ids.length).join(""), "The cat sat on the mat.");
    assert.equal(lp.token_logprobs![0], null, "nothing predicts the first token");
    assert.ok(lp.token_logprobs!.slice(1).every((x) => x !== null && x <= 0));
    assert.equal(lp.tokens!.join(""), r.choices[0].text);
    assert.equal(lp.text_offset![1], lp.tokens![0].length);
    // A text prompt is read after <|eos|>, so its first token is scored too.
    const t = await client.completions.create({
      model: "api-test",
      prompt: "The cat",
      max_tokens: 1,
      echo: true,
      logprobs: 0,
    });
    assert.ok(t.choices[0].logprobs!.token_logprobs![0]! <= 0);
    assert.ok(t.choices[0].text.startsWith("The cat"));
  });
});

Deno.test("out-of-vocabulary prompt ids and bad max_tokens are 400s that name the field", async () => {
  await withServer(bigram(), async ({ server }) => {
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${server.url}/v1/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, error: (await res.json()).error };
    };
    const msgs = [{ role: "user", content: "hi" }];
    for (
      const [path, body, param] of [
        ["completions", { prompt: [2048], echo: true }, "prompt"],
        ["completions", { prompt: [2048] }, "prompt"],
        [
          "chat/completions",
          { messages: msgs, max_tokens: 0, max_completion_tokens: 5 },
          "max_tokens",
        ],
        ["chat/completions", { messages: msgs, max_tokens: 1e308 }, "max_tokens"],
        ["chat/completions", { messages: msgs, max_tokens: 5000 }, "max_tokens"],
        [
          "chat/completions",
          { messages: msgs, max_completion_tokens: 5000 },
          "max_completion_tokens",
        ],
        ["completions", { prompt: "x", max_tokens: 1024 }, "max_tokens"],
      ] as const
    ) {
      const r = await post(path, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.error.param, param, JSON.stringify(r.error));
    }
    const past = await post("chat/completions", { messages: msgs, max_tokens: 5000 });
    assert.equal(past.error.code, "context_length_exceeded");
    assert.match(past.error.message, /'max_tokens' is 5000.*context is 1024/);
  });
});

Deno.test("DeepSeek prefix completion continues the last assistant message", async () => {
  const reply = (p: string) =>
    p.endsWith("assistant\n```python\n") ? 'print("hi")\n```' : "no prefix";
  await withServer(scripted(reply), async ({ client, server }) => {
    const r = await client.chat.completions.create({
      model: "api-test",
      messages: [
        { role: "user", content: "Write hello world." },
        { role: "assistant", content: "```python\n", prefix: true } as never,
      ],
      stop: ["```"],
    });
    assert.equal(r.choices[0].message.content, 'print("hi")\n');
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        messages: [{ role: "assistant", content: "x", prefix: true }, {
          role: "user",
          content: "y",
        }],
      }),
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, "messages[0].prefix");
  });
});

Deno.test("<think> reasoning comes back as reasoning_content, whole and streamed", async () => {
  const reply = () => "<think>\nThe user greets me.\n</think>\n\nHello there!";
  await withServer(scripted(reply), async ({ client }) => {
    const req = { model: "api-test", messages: [{ role: "user" as const, content: "Hi" }] };
    const r = await client.chat.completions.create(req);
    const msg = r.choices[0].message as typeof r.choices[0]["message"] & {
      reasoning_content?: string;
    };
    assert.equal(msg.content, "Hello there!");
    assert.equal(msg.reasoning_content, "The user greets me.");
    let reasoning = "", content = "";
    for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
      const d = c.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
      reasoning += d?.reasoning_content ?? "";
      content += d?.content ?? "";
    }
    assert.equal(reasoning, "The user greets me.");
    assert.equal(content, "Hello there!");
  });
});

Deno.test("embeddings: strings, token ids, float and base64, unit length, usage, errors", async () => {
  await withServer(bigram(), async ({ client, server }) => {
    const texts = ["The cat sat on the mat.", "The dog sat on the log.", "你好，世界"];
    // The openai client asks for base64 unless told otherwise, and decodes it.
    const b64 = await client.embeddings.create({ model: "api-test", input: texts });
    const flt = await client.embeddings.create({
      model: "api-test",
      input: texts,
      encoding_format: "float",
    });
    assert.equal(b64.data.length, 3);
    assert.deepEqual(b64.data.map((d) => d.index), [0, 1, 2]);
    for (const [i, d] of flt.data.entries()) {
      assert.equal(d.embedding.length, 64);
      const norm = Math.hypot(...d.embedding);
      assert.ok(Math.abs(norm - 1) < 1e-5);
      assert.ok(d.embedding.every((x, k) => Math.abs(x - b64.data[i].embedding[k]) < 1e-6));
    }
    assert.equal(flt.usage.prompt_tokens, texts.reduce((a, t) => a + tok.encode(t).length + 1, 0));
    const dot = (a: number[], b: number[]) => a.reduce((s, x, k) => s + x * b[k], 0);
    const [cat, dog, zh] = flt.data.map((d) => d.embedding);
    assert.ok(dot(cat, dog) > dot(cat, zh), "texts sharing words are closer");
    // GraphRAG's query side sends token ids.
    const ids = await client.embeddings.create({
      model: "api-test",
      input: [tok.encode("The cat"), tok.encode("The dog")],
      encoding_format: "float",
    });
    assert.equal(ids.data.length, 2);
    for (
      const [body, param] of [
        [{ input: "" }, "input[0]"],
        [{ input: [] }, "input"],
        [{ input: "x", dimensions: 8 }, "dimensions"],
        [{ input: "x", encoding_format: "hex" }, "encoding_format"],
        [{ input: [[99999]] }, "input[0]"],
      ] as const
    ) {
      const res = await fetch(`${server.url}/v1/embeddings`, {
        method: "POST",
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal((await res.json()).error.param, param);
    }
  });
});

Deno.test("JSON mode through the client: the reply parses even when the script says otherwise", async () => {
  await withServer(scripted(() => "Sure! Here is some JSON for you."), async ({ client }) => {
    const r = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "json" }],
      response_format: { type: "json_object" },
      max_tokens: 30,
    });
    assert.equal(typeof JSON.parse(r.choices[0].message.content!), "object");
    const s = await client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "json" }],
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "answer",
          strict: true,
          schema: {
            type: "object",
            properties: { answer: { type: "integer" }, sure: { type: "boolean" } },
            required: ["answer", "sure"],
            additionalProperties: false,
          },
        },
      },
      max_tokens: 30,
    });
    const v = JSON.parse(s.choices[0].message.content!);
    assert.ok(Number.isInteger(v.answer) && typeof v.sure === "boolean");
    const bad = await status(client.chat.completions.create({
      model: "api-test",
      messages: [{ role: "user", content: "json" }],
      response_format: {
        type: "json_schema",
        json_schema: { name: "x", schema: { type: "tuple" } },
      },
    }));
    assert.equal(bad.status, 400);
  });
});

Deno.test("Swarm's requests (explicit nulls, extra message fields) and the stream shape its merge needs", async () => {
  await withServer(scripted(), async ({ server }) => {
    const tools = [{
      type: "function",
      function: {
        name: "get_weather",
        description: "weather",
        parameters: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        },
      },
    }];
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: "api-test",
        messages: [
          { role: "system", content: "You are a helpful agent." },
          { role: "user", content: "hi" },
          {
            role: "assistant",
            content: "Hello",
            sender: "Agent A",
            tool_calls: null,
            function_call: null,
          },
          { role: "user", content: "What is the weather in Rona?" },
        ],
        tools,
        tool_choice: null,
        parallel_tool_calls: true,
        stream: true,
      }),
    });
    assert.equal(res.status, 200);
    const chunks = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: {"))
      .map((e) => JSON.parse(e.slice(6)));
    for (const c of chunks) assert.ok(c.choices[0]?.delta, "every chunk has choices[0].delta");
    const parts = chunks.flatMap((c) => c.choices[0].delta.tool_calls ?? []);
    assert.ok(parts.length >= 2);
    for (const c of chunks) assert.ok((c.choices[0].delta.tool_calls ?? []).length <= 1);
    assert.ok(parts.every((p) => typeof p.index === "number"));
    assert.equal(parts.filter((p) => p.id).length, 1, "id once");
    assert.equal(parts.filter((p) => p.type).length, 1, "type once");
    assert.equal(parts.filter((p) => p.function?.name).length, 1, "name once");
    const args = parts.map((p) => p.function.arguments).join("");
    assert.deepEqual(JSON.parse(args), { city: "Rona" });
    // The history Swarm sends back: a tool message with its extra tool_name field; tools null.
    const back = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: "api-test",
        messages: [
          { role: "user", content: "What is the weather in Rona?" },
          {
            role: "assistant",
            content: null,
            sender: "Agent A",
            tool_calls: [{
              id: parts[0].id,
              type: "function",
              function: { name: "get_weather", arguments: args },
            }],
          },
          { role: "tool", tool_call_id: parts[0].id, tool_name: "get_weather", content: "sunny" },
        ],
        tools: null,
        tool_choice: null,
      }),
    });
    assert.equal(back.status, 200);
    assert.equal((await back.json()).choices[0].message.content, "The tool says: sunny");
  });
});

Deno.test("embeddings read tiktoken ids as text when the server is told so (GraphRAG's query side)", async () => {
  const { getEncoding } = await import("js-tiktoken");
  const cl100k = getEncoding("cl100k_base");
  const model = bigram();
  const server = createServer({
    model,
    tokenizer: tok,
    port: 0,
    modelId: "api-test",
    embeddingTokenIds: "cl100k_base",
  });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
  try {
    const text = "The weather in Karo is rainy and cold.";
    const embed = async (input: string | number[][]) =>
      (await client.embeddings.create({ model: "api-test", input, encoding_format: "float" }))
        .data[0].embedding;
    const a = await embed(text), b = await embed([cl100k.encode(text)]);
    assert.ok(a.every((x, i) => Math.abs(x - b[i]) < 1e-6), "the same text either way");
  } finally {
    await server.shutdown();
  }
});
