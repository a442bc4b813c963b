/**
 * Fuzzed request bodies: valid requests with fields replaced by values of every shape. Whatever
 * comes in, the server answers 200 or a 4xx that names a field, never a 500.
 */
import assert from "node:assert/strict";
import { mulberry32 as rng } from "../random/rng.ts";
import { demoResponder, ScriptedModel, testTokenizer } from "../serve/_test_model.ts";
import { createServer } from "../serve/server.ts";

const tok = testTokenizer();

const VALUES: unknown[] = [
  null,
  true,
  false,
  0,
  1,
  -1,
  2,
  20,
  21,
  1e308,
  -1e308,
  0.5,
  2048,
  99999,
  "",
  "x",
  "json_object",
  "required",
  "auto",
  "none",
  [],
  [1],
  [2048],
  ["a"],
  [[1, 2]],
  [null],
  {},
  { type: "json_object" },
  { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
  { type: "json_schema", json_schema: { schema: { type: "tuple" } } },
  { type: "json_schema", json_schema: { schema: "no" } },
  { type: "text" },
  { include_usage: true },
  { type: "function", function: { name: "get_weather" } },
  { function: {} },
  [{ type: "function", function: { name: "f", parameters: { type: "object" }, strict: true } }],
  [{ type: "function", function: { name: "f", parameters: { $ref: "#/x" }, strict: true } }],
  [{ role: "user", content: "hi" }],
  [{ role: "assistant", content: "x", prefix: true }],
  [{ role: "user", content: [{ type: "text", text: "a" }, { type: "image_url" }] }],
  [{ role: "user", content: "q" }, { role: "assistant", content: "{", prefix: true }],
];

const BASE: Record<string, Record<string, unknown>> = {
  "chat/completions": {
    model: "fuzz",
    messages: [{ role: "user", content: "What is the weather in Karo?" }],
    max_tokens: 8,
  },
  "completions": { model: "fuzz", prompt: "The cat", max_tokens: 4 },
  "embeddings": { model: "fuzz", input: "The cat" },
};
const FIELDS = [
  "messages",
  "prompt",
  "input",
  "max_tokens",
  "max_completion_tokens",
  "n",
  "logprobs",
  "top_logprobs",
  "echo",
  "stream",
  "stream_options",
  "response_format",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "temperature",
  "seed",
  "stop",
  "encoding_format",
  "dimensions",
  "model",
];

Deno.test("600 fuzzed bodies on chat, completions and embeddings: no 500s", async () => {
  const model = new ScriptedModel(tok, demoResponder, { maxSeqLen: 1024 });
  const server = createServer({ model, tokenizer: tok, port: 0, modelId: "fuzz" });
  const next = rng(15);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)];
  const counts = new Map<number, number>();
  try {
    for (let i = 0; i < 600; i++) {
      const path = pick(Object.keys(BASE));
      const body: Record<string, unknown> = structuredClone(BASE[path]);
      for (let k = 0; k < 1 + Math.floor(next() * 3); k++) body[pick(FIELDS)] = pick(VALUES);
      const res = await fetch(`${server.url}/v1/${path}`, {
        method: "POST",
        body: JSON.stringify(body),
      });
      const text = await res.text();
      counts.set(res.status, (counts.get(res.status) ?? 0) + 1);
      assert.ok(res.status < 500, `${res.status} for ${JSON.stringify(body)}: ${text}`);
      assert.ok(!/"type":"server_error"/.test(text), `${JSON.stringify(body)}: ${text}`);
      if (res.status === 400) assert.ok(JSON.parse(text).error.param !== undefined);
    }
  } finally {
    await server.shutdown();
  }
  assert.ok((counts.get(200) ?? 0) > 50, `too few successes: ${JSON.stringify([...counts])}`);
});
