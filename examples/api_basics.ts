/**
 * API basics with the `openai` npm SDK: a chat completion, a streamed one with usage, a
 * multi-turn conversation, and JSON output.
 *
 * ```sh
 * deno run -A cli.ts serve --model runs/demo/dpo          # in another terminal
 * deno run -A examples/api_basics.ts
 * OPENAI_BASE_URL=https://api.deepseek.com OPENAI_API_KEY=sk-... OPENAI_MODEL=deepseek-chat \
 *   deno run -A examples/api_basics.ts
 * ```
 *
 * @module
 */

import type OpenAI from "openai";
import { BASE_URL, makeClient, modelName, section } from "./_env.ts";

const client = makeClient();
const model = await modelName(client);
console.log(`API ${BASE_URL}, model ${model}`);
const maxTokens = Number(Deno.env.get("MAX_TOKENS") ?? 64);

section("1. chat");
const reply = await client.chat.completions.create({
  model,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is the weather usually like in Mati?" },
  ],
  max_tokens: maxTokens,
  temperature: 0,
});
console.log(`assistant: ${reply.choices[0].message.content}`);
console.log(`finish: ${reply.choices[0].finish_reason}, usage: ${JSON.stringify(reply.usage)}`);

section("2. streaming");
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Tell me about the Saru lamp." }],
  max_tokens: maxTokens,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "", chunks = 0;
for await (const chunk of stream) {
  const piece = chunk.choices[0]?.delta?.content ?? "";
  streamed += piece;
  chunks++;
  await Deno.stdout.write(new TextEncoder().encode(piece));
  if (chunk.usage) console.log(`\n[${chunks} chunks, usage ${JSON.stringify(chunk.usage)}]`);
}

section("3. multi-turn");
const history: OpenAI.ChatCompletionMessageParam[] = [
  { role: "user", content: "Who makes the Saru lamp?" },
];
for (const next of ["How much does it cost?", "And what color is it?"]) {
  const r = await client.chat.completions.create({
    model,
    messages: history,
    max_tokens: maxTokens,
    temperature: 0,
  });
  const text = r.choices[0].message.content ?? "";
  console.log(`user: ${(history[history.length - 1] as { content: string }).content}`);
  console.log(`assistant: ${text}`);
  // The reply goes back into the history so the next turn can refer to it.
  history.push({ role: "assistant", content: text }, { role: "user", content: next });
}
console.log(`(${history.length} messages sent in the last turn)`);

section("4. JSON output");
const jsonReply = await client.chat.completions.create({
  model,
  messages: [
    {
      role: "system",
      content: 'Answer in JSON: {"city": string, "weather": string}. Output json only.',
    },
    { role: "user", content: "What is the weather in Mati?" },
  ],
  response_format: { type: "json_object" },
  max_tokens: maxTokens,
  temperature: 0,
});
const raw = jsonReply.choices[0].message.content ?? "";
const parsed = JSON.parse(raw);
console.log(`raw: ${raw}`);
console.log(
  `parsed: a JSON ${Array.isArray(parsed) ? "array" : typeof parsed} with keys ${
    Object.keys(parsed).join(", ") || "(none)"
  }`,
);
console.log("\napi_basics: done");
