/**
 * A chat UI on the server: replays the requests Open-WebUI sends to an OpenAI-compatible
 * connection, so the connection is checked without installing Open-WebUI. The README's
 * "Chat UI" section lists the settings to enter in Open-WebUI itself.
 *
 * The requests (Open-WebUI's `routers/openai.py` and `routers/tasks.py`): the model list, a
 * streamed chat with `stream_options.include_usage` whose parameters the user left unset arrive
 * as explicit nulls and whose user message is an array of content parts, then a non-streamed
 * title generation (`max_completion_tokens` 1000 unless the model's "Max Tokens" is set, and a
 * `metadata` object) whose reply Open-WebUI reads as JSON `{"title": ...}`.
 *
 * ```sh
 * deno run -A examples/chat_ui.ts
 * ```
 *
 * @module
 */

import { API_KEY, BASE_URL, section } from "./_env.ts";

const headers = { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" };
const maxTitleTokens = Number(Deno.env.get("TITLE_MAX_TOKENS") ?? 1000);

async function post(path: string, body: unknown): Promise<Response> {
  const res = await fetch(`${BASE_URL}${path}`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
  return res;
}

section("1. GET /models (the connection check and the model picker)");
const models = await (await fetch(`${BASE_URL}/models`, { headers })).json();
const model = Deno.env.get("OPENAI_MODEL") ?? models.data[0].id;
console.log(`models: ${models.data.map((m: { id: string }) => m.id).join(", ")}; using ${model}`);

section("2. a streamed chat, as the chat page sends it");
const question = "What is the weather like in Mati?";
const res = await post("/chat/completions", {
  model,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: [{ type: "text", text: question }] },
  ],
  stream: true,
  stream_options: { include_usage: true },
  temperature: null,
  top_p: null,
  max_tokens: Number(Deno.env.get("MAX_TOKENS") ?? 64),
  seed: null,
  stop: null,
  frequency_penalty: null,
  presence_penalty: null,
  logit_bias: null,
  user: "open-webui-user",
});
let answer = "", events = 0, usage: unknown = null, done = false;
const text = await res.text();
for (const line of text.split("\n")) {
  if (!line.startsWith("data: ")) continue;
  const data = line.slice(6);
  if (data === "[DONE]") {
    done = true;
    continue;
  }
  const chunk = JSON.parse(data);
  events++;
  answer += chunk.choices?.[0]?.delta?.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
console.log(`assistant: ${answer}`);
console.log(
  `${events} events, usage ${JSON.stringify(usage)}, [DONE] ${done ? "seen" : "MISSING"}`,
);
if (!done || usage === null) throw new Error("the stream must end with a usage chunk and [DONE]");

section("3. title generation (a background task)");
const titlePrompt = `### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: ${question}
ASSISTANT: ${answer.slice(0, 200)}
</chat_history>`;
const title = await (await post("/chat/completions", {
  model,
  messages: [{ role: "user", content: titlePrompt }],
  stream: false,
  max_completion_tokens: maxTitleTokens,
  metadata: { task: "title_generation", chat_id: "local" },
})).json();
const content: string = title.choices[0].message.content ?? "";
console.log(`title reply: ${content.slice(0, 120)}`);
const match = /\{[\s\S]*\}/.exec(content);
let parsed = "(not JSON: Open-WebUI keeps the chat's default title)";
try {
  if (match) parsed = JSON.parse(match[0]).title ?? parsed;
} catch { /* a small model may not write JSON here; Open-WebUI falls back the same way */ }
console.log(`title: ${parsed}`);
console.log("\nchat_ui: done");
