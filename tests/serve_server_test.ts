import assert from "node:assert/strict";
import OpenAI, { APIError } from "openai";
import { generateWorld, runTool, toolSchemas } from "../data/mod.ts";
import { demoResponder, ScriptedModel, testTokenizer } from "../serve/_test_model.ts";
import { createServer, type RunningServer, type ServerOptions } from "../serve/server.ts";

const tok = testTokenizer();
const world = generateWorld();
const CITY = world.cities[0].name.en;

type Options = Partial<ServerOptions> & {
  stepDelayMs?: number;
  reply?: (p: string) => string;
  stopId?: number;
};

/** Runs `fn` against a fresh server on a free loopback port, then shuts it down. */
async function withServer(
  options: Options,
  fn: (ctx: { server: RunningServer; model: ScriptedModel; client: OpenAI }) => Promise<void>,
): Promise<void> {
  const model = new ScriptedModel(tok, options.reply ?? demoResponder, {
    stepDelayMs: options.stepDelayMs ?? 0,
    maxSequences: 64,
    // The test tokenizer's 400 tokens compress little: the tool prompt alone is ~550 tokens.
    maxSeqLen: 2048,
    stopId: options.stopId,
  });
  const server = createServer({ model, tokenizer: tok, port: 0, modelId: "mini-test", ...options });
  const client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: options.apiKey ?? "unused",
    maxRetries: 0,
    timeout: 20_000,
  });
  try {
    await fn({ server, model, client });
  } finally {
    await server.shutdown();
  }
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, json: await res.json() };
}

Deno.test("GET /v1/models and /health describe the served model", async () => {
  await withServer({}, async ({ server, client }) => {
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assert.deepEqual(models, ["mini-test"]);
    assert.equal((await client.models.retrieve("mini-test")).id, "mini-test");
    const health = await (await fetch(`${server.url}/health`)).json();
    assert.equal(health.status, "ok");
    assert.equal(health.model, "mini-test");
  });
});

Deno.test("the openai client gets a plain chat completion with usage", async () => {
  await withServer({}, async ({ client }) => {
    const r = await client.chat.completions.create({
      model: "mini-test",
      messages: [{ role: "system", content: "Be brief." }, {
        role: "user",
        content: "Hello there",
      }],
      temperature: 0,
    });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.model, "mini-test");
    assert.equal(r.choices[0].message.role, "assistant");
    assert.equal(r.choices[0].message.content, "You said: Hello there");
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.ok(r.usage!.prompt_tokens > 5);
    assert.equal(r.usage!.completion_tokens, tok.encode("You said: Hello there").length + 1);
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });
});

Deno.test("streaming chat sends a role delta, content deltas that add up, and [DONE]", async () => {
  await withServer({}, async ({ server, client }) => {
    const stream = await client.chat.completions.create({
      model: "mini-test",
      messages: [{ role: "user", content: "Stream 你好 😀 please" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const deltas: string[] = [];
    const finishes: (string | null)[] = [];
    let role: string | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      role ??= c.delta.role;
      if (c.delta.content) deltas.push(c.delta.content);
      finishes.push(c.finish_reason);
    }
    assert.equal(role, "assistant");
    assert.equal(deltas.join(""), "You said: Stream 你好 😀 please");
    assert.ok(deltas.length > 3);
    assert.equal(finishes.at(-1), "stop");
    assert.ok(finishes.slice(0, -1).every((f) => f === null));
    assert.ok(usage && usage.completion_tokens > 0);

    // The raw wire format: `data: {...}` events, the last one `data: [DONE]`.
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "raw" }], stream: true }),
    });
    assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
    const text = await res.text();
    const events = text.split("\n\n").filter((e) => e.length > 0);
    assert.ok(events.every((e) => e.startsWith("data: ")));
    assert.equal(events.at(-1), "data: [DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    assert.equal(
      chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""),
      "You said: raw",
    );
  });
});

Deno.test("a tools round trip: tool_calls, a tool result message, then the answer", async () => {
  await withServer({}, async ({ client }) => {
    const tools = toolSchemas() as OpenAI.ChatCompletionTool[];
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: "user", content: `What is the weather in ${CITY}?` },
    ];
    const first = await client.chat.completions.create({ model: "mini-test", messages, tools });
    const choice = first.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(choice.message.content, null);
    const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.match(call.id, /^call_[0-9a-f]{24}$/);
    assert.equal(call.type, "function");
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: CITY });

    const result = runTool(world, call.function.name, call.function.arguments);
    assert.ok(!result.includes("error"), result);
    messages.push(choice.message, { role: "tool", tool_call_id: call.id, content: result });
    const second = await client.chat.completions.create({ model: "mini-test", messages, tools });
    assert.equal(second.choices[0].finish_reason, "stop");
    assert.equal(second.choices[0].message.content, `The tool says: ${result}`);
  });
});

Deno.test("streamed tool calls arrive in OpenAI's delta shape", async () => {
  await withServer({}, async ({ client }) => {
    const stream = await client.chat.completions.create({
      model: "mini-test",
      messages: [{ role: "user", content: "Please calculate 6 * 7" }],
      tools: toolSchemas() as OpenAI.ChatCompletionTool[],
      stream: true,
    });
    const calls: { id?: string; name: string; args: string }[] = [];
    let content = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? "";
      for (const tc of c.delta.tool_calls ?? []) {
        const slot = calls[tc.index] ??= { name: "", args: "" };
        if (tc.id) slot.id = tc.id;
        slot.name += tc.function?.name ?? "";
        slot.args += tc.function?.arguments ?? "";
      }
      finish = c.finish_reason ?? finish;
    }
    assert.equal(content, "");
    assert.equal(finish, "tool_calls");
    assert.equal(calls.length, 1);
    assert.equal(calls[0].name, "calculator");
    assert.deepEqual(JSON.parse(calls[0].args), { expression: "6 * 7" });
    assert.match(calls[0].id!, /^call_/);
  });
});

Deno.test("tool_choice none, required and a named function steer the reply", async () => {
  await withServer({}, async ({ client }) => {
    const tools = toolSchemas() as OpenAI.ChatCompletionTool[];
    const ask = (tool_choice: OpenAI.ChatCompletionToolChoiceOption, content: string) =>
      client.chat.completions.create({
        model: "mini-test",
        messages: [{ role: "user", content }],
        tools,
        tool_choice,
      });
    // none: tools are not shown, so the scripted model just echoes.
    const none = await ask("none", `weather in ${CITY}?`);
    assert.equal(none.choices[0].message.content, `You said: weather in ${CITY}?`);
    assert.equal(none.choices[0].message.tool_calls, undefined);
    // required: the reply is forced to open a tool call.
    const required = await ask("required", "hello");
    assert.equal(required.choices[0].finish_reason, "tool_calls");
    // named: the name is forced too; the model writes the arguments.
    const named = await ask({ type: "function", function: { name: "calculator" } }, "hello");
    const call = named.choices[0].message
      .tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, "calculator");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Karo" });
    await assert.rejects(
      ask({ type: "function", function: { name: "nope" } }, "x"),
      (e: APIError) => e.status === 400 && e.param === "tool_choice",
    );
  });
});

Deno.test("/v1/completions completes a prompt, streaming or not, with echo", async () => {
  await withServer({ reply: () => "once upon a time", stopId: tok.eosId }, async ({ client }) => {
    const r = await client.completions.create({
      model: "mini-test",
      prompt: "Tell",
      max_tokens: 50,
    });
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices[0].text, "once upon a time");
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.equal(r.usage!.prompt_tokens, 1 + tok.encode("Tell").length); // <|eos|> first
    const short = await client.completions.create({
      model: "mini-test",
      prompt: "Tell",
      max_tokens: 2,
    });
    assert.equal(short.choices[0].finish_reason, "length");
    assert.equal(short.usage!.completion_tokens, 2);
    const echo = await client.completions.create({
      model: "mini-test",
      prompt: "Tell:",
      max_tokens: 3,
      echo: true,
    });
    assert.ok(echo.choices[0].text.startsWith("Tell:once"));
    const stream = await client.completions.create({
      model: "mini-test",
      prompt: "Tell",
      max_tokens: 8,
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, tok.decode(tok.encode("once upon a time").slice(0, 8)));
  });
});

Deno.test("errors: 400 names the malformed field, 404 unknown model/path, 405, 413", async () => {
  await withServer({ maxBodyBytes: 2000 }, async ({ server, client }) => {
    const url = `${server.url}/v1/chat/completions`;
    const msgs = [{ role: "user", content: "hi" }];

    const notJson = await post(url, "{not json");
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.type, "invalid_request_error");
    assert.match(notJson.json.error.message, /not valid JSON/);

    const wrongType = await post(url, { messages: msgs, temperature: "hot" });
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.json.error.param, "temperature");
    assert.match(wrongType.json.error.message, /'temperature' must be a number/);
    assert.deepEqual(Object.keys(wrongType.json.error).sort(), [
      "code",
      "message",
      "param",
      "type",
    ]);

    const badMessage = await post(url, { messages: [{ role: "user", content: 5 }] });
    assert.equal(badMessage.json.error.param, "messages[0].content");
    const missing = await post(url, { model: "mini-test" });
    assert.equal(missing.json.error.param, "messages");
    const badStream = await post(url, { messages: msgs, stream: "yes" });
    assert.equal(badStream.json.error.param, "stream");

    await assert.rejects(
      client.chat.completions.create({
        model: "mini-test",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: -3,
      }),
      (e: APIError) => e instanceof OpenAI.BadRequestError && e.param === "max_tokens",
    );
    await assert.rejects(
      client.chat.completions.create({
        model: "gpt-9",
        messages: [{ role: "user", content: "x" }],
      }),
      (e: APIError) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found",
    );

    const unknownPath = await fetch(`${server.url}/v1/nothing`);
    assert.equal(unknownPath.status, 404);
    assert.equal((await unknownPath.json()).error.code, "not_found");

    const wrongMethod = await fetch(url);
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "POST");
    await wrongMethod.body?.cancel();

    const huge = await post(url, { messages: [{ role: "user", content: "x".repeat(5000) }] });
    assert.equal(huge.status, 413);
    assert.equal(huge.json.error.code, "request_too_large");
  });
});

Deno.test("a prompt longer than the context is a 400 context_length_exceeded", async () => {
  await withServer({}, async ({ server }) => {
    const res = await post(`${server.url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "The cat sat on the mat. ".repeat(600) }],
    });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, "context_length_exceeded");
    assert.equal(res.json.error.param, "messages");
  });
});

Deno.test("with an API key, requests without it get 401 and the page stays open", async () => {
  await withServer({ apiKey: "sekret" }, async ({ server, client }) => {
    const r = await client.chat.completions.create({
      model: "mini-test",
      messages: [{ role: "user", content: "hi" }],
    });
    assert.equal(r.choices[0].message.content, "You said: hi");

    const anon = await post(`${server.url}/v1/chat/completions`, { messages: [] });
    assert.equal(anon.status, 401);
    assert.equal(anon.json.error.code, "invalid_api_key");
    const wrong = await post(`${server.url}/v1/chat/completions`, {}, {
      authorization: "Bearer nope",
    });
    assert.equal(wrong.status, 401);
    const models = await fetch(`${server.url}/v1/models`);
    assert.equal(models.status, 401);
    await models.body?.cancel();
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    await page.body?.cancel();
    assert.equal((await (await fetch(`${server.url}/health`)).json()).auth, true);
  });
});

Deno.test("32 concurrent streaming clients all complete without an error", async () => {
  await withServer({ stepDelayMs: 2 }, async ({ client, model, server }) => {
    const run = async (i: number) => {
      const stream = await client.chat.completions.create({
        model: "mini-test",
        messages: [{ role: "user", content: `client number ${i}` }],
        stream: true,
      });
      let text = "";
      let finish: string | null = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      return { text, finish };
    };
    const results = await Promise.all(Array.from({ length: 32 }, (_, i) => run(i)));
    results.forEach((r, i) => {
      assert.equal(r.text, `You said: client number ${i}`);
      assert.equal(r.finish, "stop");
    });
    assert.ok(Math.max(...model.batchSizes) >= 8, `batches ${model.batchSizes.join(",")}`);
    assert.equal(model.liveSequences, 0);
    assert.equal(server.engine.stats().completed, 32);
    assert.equal(server.engine.stats().failed, 0);
  });
});

Deno.test("a client that aborts mid-stream cancels its generation and frees its sequence", async () => {
  const long = () => "and on ".repeat(150);
  await withServer({ stepDelayMs: 3, reply: long }, async ({ client, model, server }) => {
    const abort = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "mini-test", messages: [{ role: "user", content: "go on" }], stream: true },
      { signal: abort.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) {
        if (++chunks === 5) abort.abort();
        assert.ok(chunks < 200, "the stream went on after the abort");
      }
    } catch (e) {
      // The client reports the abort as an error (or just ends the stream).
      assert.ok(e instanceof Error && /abort/i.test(e.name + e.message), String(e));
    }
    assert.ok(chunks >= 5);
    await waitFor(() => server.engine.stats().cancelled === 1, "the engine to cancel");
    await waitFor(() => model.liveSequences === 0, "the sequence to be released");
    assert.equal(server.engine.stats().active, 0);
    // It stopped early: far fewer model steps than the 300-token reply needs.
    assert.ok(model.batchSizes.length < 150, `${model.batchSizes.length} steps`);
  });
});

Deno.test("a non-streaming client that disconnects cancels its generation", async () => {
  const long = () => "and on ".repeat(150);
  await withServer({ stepDelayMs: 3, reply: long }, async ({ server, model }) => {
    const abort = new AbortController();
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "go" }] }),
      signal: abort.signal,
    });
    assert.equal(res.status, 200); // committed before generating; the body follows
    await waitFor(() => model.openedSequences === 1, "the generation to start");
    abort.abort();
    await assert.rejects(res.text());
    await waitFor(() => server.engine.stats().cancelled === 1, "the engine to cancel");
    await waitFor(() => model.liveSequences === 0, "the sequence to be released");
  });
});

Deno.test("the web page and its assets are served locally", async () => {
  await withServer({}, async ({ server }) => {
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /text\/html/);
    assert.match(page.headers.get("content-security-policy")!, /default-src 'self'/);
    const html = await page.text();
    // No CDN: every src/href is a local path.
    for (const m of html.matchAll(/(?:src|href)="([^"]+)"/g)) assert.ok(m[1].startsWith("/"), m[1]);
    for (const asset of ["/app.js", "/style.css", "/favicon.svg"]) {
      const res = await fetch(server.url + asset);
      assert.equal(res.status, 200, asset);
      assert.ok((await res.text()).length > 100, asset);
    }
    const head = await fetch(`${server.url}/`, { method: "HEAD" });
    assert.equal(head.status, 200);
    await head.body?.cancel();
  });
});

Deno.test("the page's demo tools are listed and run through /api/tools", async () => {
  const tools = {
    schemas: toolSchemas(),
    run: (name: string, args: string) => runTool(world, name, args),
  };
  await withServer({ tools }, async ({ server }) => {
    const list = await (await fetch(`${server.url}/api/tools`)).json();
    assert.deepEqual(list.tools.map((t: { function: { name: string } }) => t.function.name), [
      "get_weather",
      "calculator",
    ]);
    const r = await post(`${server.url}/api/tools/run`, {
      name: "calculator",
      arguments: '{"expression": "6 * 7"}',
    });
    assert.deepEqual(r.json, { content: '{"result":42}' });
    const unknown = await post(`${server.url}/api/tools/run`, { name: "rm", arguments: "{}" });
    assert.equal(unknown.status, 404);
  });
});

Deno.test("a model failure reaches the client as an OpenAI error, streamed or not", async () => {
  await withServer({}, async ({ server, model }) => {
    const url = `${server.url}/v1/chat/completions`;
    const messages = [{ role: "user", content: "hi" }];
    model.failNextStep(new Error("device lost"));
    const res = await fetch(url, {
      method: "POST",
      body: JSON.stringify({ messages, stream: true }),
    });
    const events = (await res.text()).split("\n\n").filter((e) => e);
    assert.equal(events.at(-1), "data: [DONE]");
    const err = JSON.parse(events.at(-2)!.slice(6));
    assert.equal(err.error.type, "server_error");
    assert.match(err.error.message, /device lost/);

    model.failNextStep(new Error("device lost again"));
    const plain = await post(url, { messages });
    assert.equal(plain.status, 200); // committed before generating (see serve/server.ts)
    assert.match(plain.json.error.message, /device lost again/);

    // The server keeps serving.
    const ok = await post(url, { messages });
    assert.equal(ok.json.choices[0].message.content, "You said: hi");
  });
});
