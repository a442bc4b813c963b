/**
 * The server through clients no one here wrote: `@openai/agents` (Swarm's successor: handoffs,
 * tools, streaming), `@langchain/openai` (chat, streaming, tool calls, structured output,
 * embeddings) and the Python `openai` SDK (run as a child process; skipped with the reason when
 * no Python with `openai` is found: set MINIDEEPSEEK_PYTHON, as `.ci/run` does).
 */
import assert from "node:assert/strict";
import { ChatOpenAI, OpenAIEmbeddings } from "@langchain/openai";
import { Agent, OpenAIChatCompletionsModel, run, setTracingDisabled, tool } from "@openai/agents";
import OpenAI from "openai";
import { z } from "zod";
import { demoResponder, ScriptedModel, testTokenizer } from "../serve/_test_model.ts";
import { createServer, type RunningServer } from "../serve/server.ts";

const tok = testTokenizer();
setTracingDisabled(true);

async function withServer(
  reply: (prompt: string) => string,
  fn: (server: RunningServer) => Promise<void>,
): Promise<void> {
  const model = new ScriptedModel(tok, reply, { maxSeqLen: 4096 });
  const server = createServer({ model, tokenizer: tok, port: 0, modelId: "clients-test" });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

const call = (name: string, args: unknown) =>
  `<tool_call>{"name": ${JSON.stringify(name)}, "arguments": ${JSON.stringify(args)}}</tool_call>`;

/** A triage / weather-agent script: hand off, call the tool, answer from its result. */
function agentScript(prompt: string): string {
  const turns = prompt.split("<|im_start|>");
  const last = turns[turns.length - 2] ?? "";
  const tools = /<tools>\n([\s\S]*?)\n<\/tools>/.exec(prompt)?.[1] ?? "";
  const offers = (name: string) => new RegExp(`"name":\\s*"${name}"`, "i").test(tools);
  if (last.startsWith("tool\n") && /sunny/.test(last)) return "It is sunny in Rona.";
  // tool_choice "required" forces the opening marker: the reply continues after it.
  const cut = (text: string) => prompt.endsWith("<tool_call>") ? text.slice(11) : text;
  if (offers("transfer_to_weather_agent")) return cut(call("transfer_to_Weather_agent", {}));
  if (offers("get_weather")) return cut(call("get_weather", { city: "Rona" }));
  return "I cannot help with that.";
}

Deno.test("@openai/agents: a triage agent hands off to a weather agent that runs its tool", async () => {
  await withServer(agentScript, async (server) => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
    const model = new OpenAIChatCompletionsModel(client as never, "clients-test");
    const cities: string[] = [];
    const weather = new Agent({
      name: "Weather agent",
      handoffDescription: "Knows the weather.",
      instructions: "Answer weather questions with get_weather.",
      tools: [tool({
        name: "get_weather",
        description: "Weather in a city.",
        parameters: z.object({ city: z.string() }),
        execute: ({ city }) => {
          cities.push(city);
          return `sunny in ${city}`;
        },
      })],
      model,
    });
    const triage = new Agent({
      name: "Triage agent",
      instructions: "Route the user.",
      handoffs: [weather],
      model,
      modelSettings: { toolChoice: "required", temperature: 0 },
    });
    const result = await run(triage, "What is the weather in Rona?");
    assert.equal(result.lastAgent?.name, "Weather agent");
    assert.deepEqual(cities, ["Rona"]);
    assert.equal(result.finalOutput, "It is sunny in Rona.");
    // The same run, streamed: tool-call deltas must merge into the same calls.
    cities.length = 0;
    const streamed = await run(triage, "What is the weather in Rona?", { stream: true });
    let events = 0;
    for await (const _ of streamed) events++;
    await streamed.completed;
    assert.ok(events > 3);
    assert.equal(streamed.lastAgent?.name, "Weather agent");
    assert.deepEqual(cities, ["Rona"]);
    assert.equal(streamed.finalOutput, "It is sunny in Rona.");
  });
});

Deno.test("@langchain/openai: chat, streaming, tool calls, structured output and embeddings", async () => {
  await withServer(demoResponder, async (server) => {
    const configuration = { baseURL: `${server.url}/v1` };
    const llm = new ChatOpenAI({
      model: "clients-test",
      apiKey: "x",
      configuration,
      temperature: 0,
      maxRetries: 0,
    });
    const msg = await llm.invoke("hello world");
    assert.equal(msg.content, "You said: hello world");
    let streamed = "";
    for await (const chunk of await llm.stream("hello stream")) streamed += chunk.content;
    assert.equal(streamed, "You said: hello stream");
    const withTools = llm.bindTools([{
      type: "function",
      function: {
        name: "get_weather",
        description: "Weather in a city",
        parameters: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        },
      },
    }]);
    const ai = await withTools.invoke("What is the weather in Rona?");
    assert.equal(ai.tool_calls?.[0]?.name, "get_weather");
    assert.deepEqual(ai.tool_calls?.[0]?.args, { city: "Rona" });
    // Structured output through response_format json_schema: the reply follows the schema
    // although the script writes prose.
    const structured = llm.withStructuredOutput(
      z.object({ answer: z.number(), unit: z.enum(["C", "F"]) }),
      { name: "reading", method: "jsonSchema" },
    );
    const reading = await structured.invoke("temperature?");
    assert.equal(typeof reading.answer, "number");
    assert.ok(reading.unit === "C" || reading.unit === "F");
    const emb = new OpenAIEmbeddings({ model: "clients-test", apiKey: "x", configuration });
    const [a, b] = await emb.embedDocuments(["The cat sat.", "The dog sat."]);
    const q = await emb.embedQuery("The cat sat.");
    assert.equal(a.length, 64);
    assert.equal(b.length, 64);
    assert.ok(q.every((x, i) => Math.abs(x - a[i]) < 1e-6), "the same text, the same vector");
  });
});

const PYTHON_SCRIPT = `
import json, sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
out = {}
out["models"] = [m.id for m in c.models.list().data]
r = c.chat.completions.create(model="clients-test", messages=[{"role": "user", "content": "hello py"}], temperature=0)
out["chat"] = r.choices[0].message.content
text, usage = "", None
for ch in c.chat.completions.create(model="clients-test", messages=[{"role": "user", "content": "hello stream"}],
                                    stream=True, stream_options={"include_usage": True}):
    if ch.choices:
        text += ch.choices[0].delta.content or ""
    if ch.usage:
        usage = ch.usage.completion_tokens
out["stream"], out["usage"] = text, usage
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
          "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": True}}]
r = c.chat.completions.create(model="clients-test", messages=[{"role": "user", "content": "no tools please"}],
                              tools=tools, tool_choice="required", temperature=0, max_tokens=40)
tc = r.choices[0].message.tool_calls
out["required"] = {"finish": r.choices[0].finish_reason, "name": tc[0].function.name,
                   "args": json.loads(tc[0].function.arguments)}
# Swarm's request: explicit nulls and extra fields on history messages.
r = c.chat.completions.create(model="clients-test", messages=[
    {"role": "user", "content": "hi", "sender": "user"},
    {"role": "assistant", "content": "hello", "sender": "Agent", "tool_calls": None},
    {"role": "user", "content": "swarm"}], tools=None, tool_choice=None)
out["swarm"] = r.choices[0].message.content
r = c.chat.completions.create(model="clients-test", messages=[{"role": "user", "content": "json"}],
                              response_format={"type": "json_object"}, max_tokens=30)
out["json"] = json.loads(r.choices[0].message.content)
e = c.embeddings.create(model="clients-test", input=["The cat sat.", "The dog sat."])
out["embeddings"] = [len(d.embedding) for d in e.data]
out["norm"] = sum(x * x for x in e.data[0].embedding) ** 0.5
print(json.dumps(out))
`;

async function findPython(): Promise<{ python?: string; why: string }> {
  const python = Deno.env.get("MINIDEEPSEEK_PYTHON") ?? "python3";
  try {
    const probe = await new Deno.Command(python, {
      args: ["-c", "import openai; print(openai.__version__)"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (probe.success) return { python, why: "" };
    return {
      why: `${python} has no 'openai' package (set MINIDEEPSEEK_PYTHON to a venv's python)`,
    };
  } catch {
    return { why: `no ${python} on this machine` };
  }
}

const py = await findPython();
if (!py.python) console.log(`skipping the Python SDK test: ${py.why}`);

Deno.test({
  name:
    "the Python openai SDK: chat, streaming with usage, required tools, Swarm nulls, JSON, embeddings",
  ignore: !py.python,
  fn: async () => {
    await withServer(demoResponder, async (server) => {
      const file = await Deno.makeTempFile({ suffix: ".py" });
      await Deno.writeTextFile(file, PYTHON_SCRIPT);
      const res = await new Deno.Command(py.python!, {
        args: [file, `${server.url}/v1`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      await Deno.remove(file);
      const stderr = new TextDecoder().decode(res.stderr);
      assert.ok(res.success, stderr);
      const out = JSON.parse(new TextDecoder().decode(res.stdout));
      assert.deepEqual(out.models, ["clients-test"]);
      assert.equal(out.chat, "You said: hello py");
      assert.equal(out.stream, "You said: hello stream");
      assert.ok(out.usage > 0);
      assert.equal(out.required.finish, "tool_calls");
      assert.equal(out.required.name, "get_weather");
      assert.equal(typeof out.required.args.city, "string");
      assert.equal(out.swarm, "You said: swarm");
      assert.equal(typeof out.json, "object");
      assert.deepEqual(out.embeddings, [64, 64]);
      assert.ok(Math.abs(out.norm - 1) < 1e-5);
    });
  },
});
