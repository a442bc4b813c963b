import assert from "node:assert/strict";
import { parseToolCallBody } from "../tokenizer/tool_calls.ts";
import {
  parseToolCalls,
  toolCallId,
  type ToolCallStreamEvent,
  ToolCallStreamParser,
} from "../serve/tool_calls.ts";

const WEATHER = '<tool_call>{"name": "get_weather", "arguments": {"city": "Karo"}}</tool_call>';

Deno.test("parseToolCalls() turns a tool-call block into an OpenAI tool call", () => {
  const r = parseToolCalls(WEATHER, { idSeed: "chatcmpl-1" });
  assert.equal(r.content, null);
  assert.equal(r.toolCalls.length, 1);
  assert.deepEqual(r.toolCalls[0], {
    id: toolCallId("chatcmpl-1", 0),
    type: "function",
    function: { name: "get_weather", arguments: '{"city":"Karo"}' },
  });
  assert.match(r.toolCalls[0].id, /^call_[0-9a-f]{24}$/);
});

Deno.test("parseToolCalls() tolerates white space, several calls and surrounding text", () => {
  const text =
    'Let me check.\n<tool_call>\n  {"name":"calculator" ,\n "arguments": {"expression": "6 * 7"}}  \n' +
    "</tool_call>\n" + WEATHER;
  const r = parseToolCalls(text, { idSeed: "x" });
  assert.equal(r.content, "Let me check.");
  assert.deepEqual(r.toolCalls.map((c) => c.function.name), ["calculator", "get_weather"]);
  assert.equal(r.toolCalls[0].function.arguments, '{"expression":"6 * 7"}');
  assert.notEqual(r.toolCalls[0].id, r.toolCalls[1].id);
});

Deno.test("ids are deterministic per seed and index", () => {
  assert.equal(toolCallId("a", 0), toolCallId("a", 0));
  assert.notEqual(toolCallId("a", 0), toolCallId("a", 1));
  assert.notEqual(toolCallId("a", 0), toolCallId("b", 0));
});

Deno.test("invalid JSON inside a tool call falls back to plain content", () => {
  const bad = 'Sure <tool_call>{"name": "get_weather", "arguments": {city: Karo}}</tool_call>';
  assert.deepEqual(parseToolCalls(bad), { content: bad, toolCalls: [] });
  const noName = '<tool_call>{"arguments": {}}</tool_call>';
  assert.deepEqual(parseToolCalls(noName), { content: noName, toolCalls: [] });
  // One good call and one bad: the good one is a call, the bad one stays in the content.
  const mixed = WEATHER + "\n<tool_call>{oops</tool_call>";
  const r = parseToolCalls(mixed);
  assert.equal(r.toolCalls.length, 1);
  assert.equal(r.content, "<tool_call>{oops</tool_call>");
});

Deno.test("plain text without tool calls comes back unchanged", () => {
  assert.deepEqual(parseToolCalls("  hi <tool not a call  "), {
    content: "  hi <tool not a call  ",
    toolCalls: [],
  });
});

Deno.test("parseToolCallBody() accepts string arguments, missing arguments and 'parameters'", () => {
  assert.deepEqual(parseToolCallBody('{"name": "f", "arguments": "{\\"x\\": 1}"}'), {
    name: "f",
    arguments: '{"x":1}',
  });
  assert.deepEqual(parseToolCallBody('{"name": "f"}'), { name: "f", arguments: "{}" });
  assert.deepEqual(parseToolCallBody('{"name": "f", "parameters": {"a": [1]}}'), {
    name: "f",
    arguments: '{"a":[1]}',
  });
  assert.equal(parseToolCallBody('{"name": "f", "arguments": [1]}'), null);
  assert.equal(parseToolCallBody("[]"), null);
});

Deno.test("an unclosed last block is a call when its JSON is complete", () => {
  const r = parseToolCalls('<tool_call>{"name": "f", "arguments": {"a": 1}}');
  assert.equal(r.toolCalls[0].function.arguments, '{"a":1}');
  const cut = parseToolCalls('<tool_call>{"name": "f", "argu');
  assert.deepEqual(cut, { content: '<tool_call>{"name": "f", "argu', toolCalls: [] });
});

function feed(pieces: string[]): ToolCallStreamEvent[] {
  const p = new ToolCallStreamParser({ idSeed: "s" });
  return [...pieces.flatMap((x) => p.push(x)), ...p.finish()];
}

Deno.test("the streaming parser holds text back from the <tool_call> marker on", () => {
  const p = new ToolCallStreamParser({ idSeed: "s" });
  assert.deepEqual(p.push("Checking <to"), [{ type: "content", text: "Checking" }]);
  assert.deepEqual(p.push('ol_call>{"name": "get_weather", '), []);
  const ev = p.push('"arguments": {"city": "Karo"}}</tool_call>');
  assert.deepEqual(ev, [{
    type: "tool_call",
    index: 0,
    id: toolCallId("s", 0),
    name: "get_weather",
    arguments: '{"city":"Karo"}',
  }]);
  assert.deepEqual(p.finish(), []);
  assert.equal(p.toolCallCount, 1);
});

Deno.test("streaming and whole-text parsing agree, character by character", () => {
  const texts = [
    WEATHER,
    "Hello there, how are you?",
    "Let me check.\n" + WEATHER + "\n" + WEATHER,
    "A <tool_call>{bad json</tool_call> B",
    "Text with a < and <tool but no call",
    WEATHER + "\nDone.",
  ];
  for (const text of texts) {
    const whole = parseToolCalls(text, { idSeed: "s" });
    const events = feed([...text]);
    const content = events.filter((e) => e.type === "content").map((e) => e.text).join("");
    const calls = events.filter((e) => e.type === "tool_call");
    assert.deepEqual(
      calls.map((c) => c.type === "tool_call" && [c.id, c.name, c.arguments]),
      whole.toolCalls.map((c) => [c.id, c.function.name, c.function.arguments]),
      text,
    );
    assert.equal(content, whole.content ?? "", text);
  }
});
