/**
 * Function calling with the `openai` npm SDK: a weather tool and a calculator, the loop that runs
 * the model's calls and sends the results back as `tool` messages, and parallel calls.
 *
 * The tools run here, in the script (the demo world's `get_weather` answers for its cities; the
 * calculator evaluates + - * / and parentheses). The first request asks for a call with
 * `tool_choice: "required"`, so even a small model calls a tool; later turns use `auto`.
 *
 * ```sh
 * deno run -A examples/function_calling.ts
 * ```
 *
 * @module
 */

import type OpenAI from "openai";
import { generateWorld, runTool } from "../data/mod.ts";
import { BASE_URL, makeClient, modelName, section } from "./_env.ts";

const client = makeClient();
const model = await modelName(client);
const world = generateWorld();
const maxTokens = Number(Deno.env.get("MAX_TOKENS") ?? 96);
console.log(`API ${BASE_URL}, model ${model}`);

const tools: OpenAI.ChatCompletionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string", description: "City name" } },
        required: ["city"],
        additionalProperties: false,
      },
      strict: true,
    },
  },
  {
    type: "function",
    function: {
      name: "calculator",
      description: "Evaluate an arithmetic expression with + - * / and parentheses.",
      parameters: {
        type: "object",
        properties: { expression: { type: "string", description: "e.g. (17 + 25) * 2" } },
        required: ["expression"],
        additionalProperties: false,
      },
      strict: true,
    },
  },
];

/** Runs one call; bad arguments become an error message the model can read. */
function execute(call: OpenAI.ChatCompletionMessageToolCall): string {
  if (call.type !== "function") return `unknown call type ${call.type}`;
  try {
    return runTool(world, call.function.name, call.function.arguments);
  } catch (e) {
    return `error: ${(e as Error).message}`;
  }
}

/** The loop: ask, run every call, send the results, until the model answers in text. */
async function converse(question: string, options: { parallel?: boolean; rounds?: number } = {}) {
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: "system", content: "Use the tools to answer. Call several at once when useful." },
    { role: "user", content: question },
  ];
  console.log(`user: ${question}`);
  for (let round = 0; round < (options.rounds ?? 3); round++) {
    const r = await client.chat.completions.create({
      model,
      messages,
      tools,
      tool_choice: round === 0 ? "required" : "auto",
      parallel_tool_calls: options.parallel ?? true,
      max_tokens: maxTokens,
      temperature: 0,
    });
    const msg = r.choices[0].message;
    messages.push(msg);
    const calls = msg.tool_calls ?? [];
    if (calls.length === 0) {
      console.log(`assistant: ${msg.content}`);
      return messages;
    }
    for (const call of calls) {
      const result = execute(call);
      if (call.type === "function") {
        console.log(`  call ${call.function.name}(${call.function.arguments}) -> ${result}`);
      }
      messages.push({ role: "tool", tool_call_id: call.id, content: result });
    }
  }
  console.log("(stopped after the round limit)");
  return messages;
}

section("1. one tool, the whole loop");
await converse("What is the weather in Mati?");

section("2. the calculator");
await converse("Calculate (17 + 25) * 2.");

section("3. parallel calls");
const parallel = await client.chat.completions.create({
  model,
  messages: [{
    role: "user",
    content: "What is the weather in Mati and in Kamu, and what is 6 * 7?",
  }],
  tools,
  tool_choice: "required",
  max_tokens: 160,
  temperature: 0,
});
const calls = parallel.choices[0].message.tool_calls ?? [];
console.log(`${calls.length} call(s) in one reply:`);
for (const c of calls) {
  if (c.type === "function") {
    console.log(`  ${c.function.name}(${c.function.arguments}) -> ${execute(c)}`);
  }
}

section("4. a named function");
const named = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "How is the weather in Kamu today?" }],
  tools,
  tool_choice: { type: "function", function: { name: "get_weather" } },
  max_tokens: maxTokens,
  temperature: 0,
});
const call = named.choices[0].message.tool_calls?.[0];
console.log(
  call?.type === "function"
    ? `forced call: ${call.function.name}(${call.function.arguments})`
    : "no call",
);
console.log("\nfunction_calling: done");
