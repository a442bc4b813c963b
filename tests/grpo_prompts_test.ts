/**
 * The GRPO prompt reader: both record forms, the demo corpus's files, and malformed lines
 * reported with the file, the line and the field.
 *
 * @module
 */
import assert from "node:assert/strict";
import { buildCorpus, toJsonl } from "../data/mod.ts";
import { JsonlError } from "../train/jsonl.ts";
import { readGrpoPrompts } from "../train/grpo_prompts.ts";

const tools = [{
  type: "function",
  function: { name: "calculator", description: "math", parameters: { type: "object" } },
}];

async function withFile<T>(lines: unknown[], f: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  try {
    await Deno.writeTextFile(path, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    return await f(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("readGrpoPrompts() reads messages records and the prompt shorthand", async () => {
  const prompts = await withFile([
    { prompt: "What is 2 + 3?", answer: 5 },
    {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Lin has 7 apples, buys 5 more and gives 3 away. How many?" },
      ],
      answer: "9",
      lang: "en",
      kind: "arithmetic",
    },
    {
      messages: [{ role: "user", content: "Calculate 3 + 4." }],
      tools,
      tool_call: { name: "calculator", arguments: { expression: "3 + 4" } },
      kind: "tool",
    },
  ], readGrpoPrompts);
  assert.equal(prompts.length, 3);
  assert.deepEqual(prompts[0].messages, [{ role: "user", content: "What is 2 + 3?" }]);
  assert.deepEqual(
    prompts[0].target,
    { answer: "5", question: "What is 2 + 3?" },
    "a number answer becomes its text; the user's turn is the question steps are checked against",
  );
  assert.equal(prompts[0].line, 1);
  assert.equal(prompts[1].messages.length, 2);
  assert.equal(prompts[1].lang, "en");
  assert.equal(prompts[1].kind, "arithmetic");
  assert.equal(prompts[1].tools, undefined);
  assert.deepEqual(prompts[2].target, {
    toolCall: { name: "calculator", arguments: { expression: "3 + 4" } },
  });
  assert.equal(prompts[2].tools?.length, 1);
  assert.ok(prompts[2].file.endsWith(".jsonl"));
});

Deno.test("readGrpoPrompts() reads the demo corpus's GRPO files", async () => {
  const { grpo } = buildCorpus({ seed: 3, scale: 0.25 });
  for (const records of [grpo.train, grpo.heldOut]) {
    const path = await Deno.makeTempFile({ suffix: ".jsonl" });
    try {
      await Deno.writeTextFile(path, toJsonl(records));
      const prompts = await readGrpoPrompts(path);
      assert.equal(prompts.length, records.length);
      prompts.forEach((p, i) => {
        assert.equal(p.target.answer, records[i].answer);
        assert.deepEqual(p.target.toolCall, records[i].tool_call);
        assert.equal(p.kind, records[i].kind);
      });
    } finally {
      await Deno.remove(path);
    }
  }
});

Deno.test("readGrpoPrompts() names the file, line and field of a malformed record", async () => {
  const user = { role: "user", content: "Hi" };
  const cases: [unknown, RegExp][] = [
    [[1, 2], /expected a JSON object/],
    [{ answer: "3" }, /missing field "messages"/],
    [{ prompt: 3 }, /field "prompt" must be a string/],
    [{ prompt: "  " }, /field "prompt" is empty/],
    [{ prompt: "x", messages: [user] }, /give "prompt" or "messages", not both/],
    [{ messages: [] }, /"messages" is empty/],
    [{ messages: [{ role: "bot", content: "hi" }] }, /messages\[0\]\.role must be one of/],
    [
      { messages: [user, { role: "assistant", content: "Hello" }] },
      /last message must be the user's turn .* got role "assistant" at messages\[1\]/,
    ],
    [{ messages: [user], answer: [4] }, /field "answer" must be a string or a number, got array/],
    [{ messages: [user], answer: null }, /got null/],
    [{ messages: [user], answer: "" }, /field "answer" is empty/],
    [
      { messages: [user], tool_call: { name: "calculator", arguments: {} } },
      /"tool_call" needs "tools"/,
    ],
    [
      { messages: [user], tools, tool_call: { name: "get_weather", arguments: {} } },
      /tool_call\.name "get_weather" is not among "tools" \(calculator\)/,
    ],
    [{ messages: [user], tools, tool_call: { name: "calculator" } }, /tool_call\.arguments/],
    [{ messages: [user], tools, tool_call: "calculator" }, /field "tool_call" must be an object/],
    [{ messages: [user], tools: [{ type: "function" }] }, /tools\[0\]\.function/],
    [{ messages: [user], lang: 1 }, /field "lang" must be a string/],
  ];
  for (const [record, reason] of cases) {
    await withFile([{ prompt: "fine", answer: "1" }, record], async (path) => {
      await assert.rejects(() => readGrpoPrompts(path), (e: unknown) => {
        assert.ok(e instanceof JsonlError, String(e));
        assert.equal(e.file, path);
        assert.equal(e.line, 2);
        assert.match(e.message, reason, JSON.stringify(record));
        return true;
      });
    });
  }
  // skipBad goes on and reports each bad line.
  const bad: string[] = [];
  const prompts = await withFile(
    [{ prompt: "a", answer: 1 }, { answer: 2 }, "not an object", { prompt: "b", answer: 3 }],
    (path) => readGrpoPrompts(path, { skipBad: true, onBad: (m) => bad.push(m) }),
  );
  assert.deepEqual(prompts.map((p) => p.target.answer), ["1", "3"]);
  assert.equal(bad.length, 2);
  assert.match(bad[0], /:2: missing field "messages"/);
});
