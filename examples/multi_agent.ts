/**
 * A multi-agent system in OpenAI Swarm's pattern, with `@openai/agents` (Swarm's successor on
 * npm) in chat-completions mode: a triage agent hands the user off to a weather specialist or a
 * math specialist, each with its own tool.
 *
 * Handoffs are tool calls (`transfer_to_<agent>`); the triage agent is asked for a call with
 * `toolChoice: "required"` so even a small model routes every request. The SDK resets the tool
 * choice after a call, so the specialists answer in text once their tool has run.
 *
 * ```sh
 * deno run -A examples/multi_agent.ts
 * ```
 *
 * @module
 */

import {
  Agent,
  run,
  setDefaultOpenAIClient,
  setOpenAIAPI,
  setTracingDisabled,
  tool,
} from "@openai/agents";
import { z } from "zod";
import { generateWorld, runTool } from "../data/mod.ts";
import { BASE_URL, makeClient, modelName, section } from "./_env.ts";

const client = makeClient();
const model = await modelName(client);
console.log(`API ${BASE_URL}, model ${model}`);
setDefaultOpenAIClient(client as never);
setOpenAIAPI("chat_completions");
setTracingDisabled(true);
const world = generateWorld();
const maxTokens = Number(Deno.env.get("MAX_TOKENS") ?? 96);

const getWeather = tool({
  name: "get_weather",
  description: "Get the current weather in a city.",
  parameters: z.object({ city: z.string() }),
  execute: ({ city }) => runTool(world, "get_weather", { city }),
});
const calculator = tool({
  name: "calculator",
  description: "Evaluate an arithmetic expression with + - * / and parentheses.",
  parameters: z.object({ expression: z.string() }),
  execute: ({ expression }) => {
    try {
      return runTool(world, "calculator", { expression });
    } catch (e) {
      return `error: ${(e as Error).message}`;
    }
  },
});

const settings = { temperature: 0, maxTokens };
const weatherAgent = new Agent({
  name: "Weather agent",
  handoffDescription: "Answers questions about the weather in a city.",
  instructions: "You answer weather questions. Call get_weather, then answer in one sentence.",
  tools: [getWeather],
  model,
  modelSettings: { ...settings, toolChoice: "required" },
});
const mathAgent = new Agent({
  name: "Math agent",
  handoffDescription: "Computes arithmetic.",
  instructions: "You compute arithmetic. Call calculator, then give the result.",
  tools: [calculator],
  model,
  modelSettings: { ...settings, toolChoice: "required" },
});
const triage = new Agent({
  name: "Triage agent",
  instructions: "Hand the user to the agent that fits the request: weather or math.",
  handoffs: [weatherAgent, mathAgent],
  model,
  modelSettings: { ...settings, toolChoice: "required" },
});

for (const question of ["What is the weather in Mati?", "Calculate 12 * 7 + 5."]) {
  section(question);
  const result = await run(triage, question, { maxTurns: 6 });
  for (const item of result.newItems) {
    const raw = item.rawItem as { type?: string; name?: string; arguments?: string };
    if (item.type === "handoff_call_item") console.log(`  handoff call: ${raw.name}`);
    else if (item.type === "handoff_output_item") {
      console.log(`  -> now talking to ${item.targetAgent.name}`);
    } else if (item.type === "tool_call_item") {
      console.log(`  tool call: ${raw.name}(${raw.arguments})`);
    } else if (item.type === "tool_call_output_item") {
      console.log(`  tool result: ${JSON.stringify(item.output)}`);
    } else if (item.type === "message_output_item") {
      console.log(`  message from ${item.agent.name}`);
    }
  }
  console.log(`last agent: ${result.lastAgent?.name}`);
  console.log(`final answer: ${result.finalOutput}`);
}
console.log("\nmulti_agent: done");
