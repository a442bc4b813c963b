import assert from "node:assert/strict";
import { anyObjectNode, compileSchema, JsonMatcher } from "../serve/json_grammar.ts";
import { jsonConstraint, toolCallConstraint } from "../serve/constraint.ts";
import { CompletionService } from "../serve/completions.ts";
import { Engine } from "../serve/engine.ts";
import type { LanguageModel, SeqHandle, StepItem } from "../serve/model_api.ts";
import { parseChatRequest } from "../serve/protocol.ts";
import { testTokenizer } from "../serve/_test_model.ts";

const tok = testTokenizer();

/**
 * A weak model: logits are a fixed pseudo-random function of the sequence length and the last
 * token, so without constraints its replies are noise (and it never stops on its own).
 */
class NoiseModel implements LanguageModel {
  readonly id = "noise";
  readonly vocabSize = tok.vocabSize;
  readonly maxSeqLen = 4096;
  readonly maxSequences = 64;
  #seqs = new Map<SeqHandle, number[]>();
  #next = 1;
  constructor(readonly salt = 1) {}
  newSequence(): SeqHandle {
    this.#seqs.set(this.#next, []);
    return this.#next++;
  }
  release(seq: SeqHandle): void {
    this.#seqs.delete(seq);
  }
  step(items: readonly StepItem[]): Promise<Float32Array[]> {
    return Promise.resolve(items.map(({ seq, tokens }) => {
      const ctx = this.#seqs.get(seq)!;
      ctx.push(...tokens);
      let x = (ctx.length * 7919 + ctx[ctx.length - 1] * 104729 + this.salt * 31) >>> 0;
      const out = new Float32Array(this.vocabSize);
      for (let i = 0; i < out.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        out[i] = ((x >>> 0) / 4294967296) * 8;
      }
      // Special tokens (the stop tokens among them) are unlikely, as in a model mid-sentence.
      for (const s of tok.specialTokens) out[s.id] -= 6;
      return out;
    }));
  }
}

function service(salt = 1): CompletionService {
  return new CompletionService(new Engine(new NoiseModel(salt), tok), tok, { modelId: "noise" });
}

const WEATHER_SCHEMA = {
  type: "object",
  properties: {
    city: { type: "string" },
    unit: { enum: ["celsius", "fahrenheit"] },
    days: { type: "integer" },
    hourly: { type: "array", items: { type: "number" }, maxItems: 3 },
    alerts: { type: ["boolean", "null"] },
  },
  required: ["city", "days", "alerts"],
  additionalProperties: false,
};

/** Checks a value against the schema subset the grammar enforces. */
function follows(v: unknown, s: Record<string, unknown>): boolean {
  if (Array.isArray(s.enum)) return s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v));
  const types = Array.isArray(s.type) ? s.type : [s.type];
  return types.some((t) => {
    switch (t) {
      case "object": {
        if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
        const props = s.properties as Record<string, Record<string, unknown>>;
        const o = v as Record<string, unknown>;
        if (((s.required ?? []) as string[]).some((k) => !(k in o))) return false;
        return Object.entries(o).every(([k, x]) => k in props && follows(x, props[k]));
      }
      case "array":
        return Array.isArray(v) && v.length <= ((s.maxItems as number) ?? Infinity) &&
          v.every((x) => follows(x, s.items as Record<string, unknown>));
      case "string":
        return typeof v === "string";
      case "integer":
        return Number.isInteger(v);
      case "number":
        return typeof v === "number";
      case "boolean":
        return typeof v === "boolean";
      case "null":
        return v === null;
    }
    return false;
  });
}

Deno.test("JsonMatcher accepts valid prefixes, refuses invalid ones and counts the bytes to finish", () => {
  const m = JsonMatcher.start(compileSchema(WEATHER_SCHEMA));
  const ok =
    '{"city": "Karo", "unit": "celsius", "days": 3, "hourly": [1.5, -2e3], "alerts": null}';
  assert.ok(m.advanceText(ok)?.accepting);
  assert.equal(m.advanceText(ok)?.closed, true);
  for (
    const bad of [
      '{"days": 1',
      '{"city": 1',
      '{"city": "x", "unit": "kelvin"',
      '{"city": "x", "days": 1.5',
      '{"city": "x", "days": 1, "alerts": null, "extra"',
      '{"city": "x", "days": 1, "hourly": [1, 2, 3, 4',
      " {",
      '{"city": "\u0001',
    ]
  ) assert.equal(m.advanceText(bad), null, bad);
  // '"' + ',"days":0' + ',"alerts":true' (the shortest literal of boolean|null) + '}'
  assert.equal(m.advanceText('{"city": "Ka')!.finishBytes(), 1 + 9 + 14 + 1);
  // A UTF-8 character split across tokens is fine; a broken one is not.
  const e = new TextEncoder().encode('{"city": "é');
  assert.ok(m.advanceText(e.subarray(0, e.length - 1)));
  assert.equal(m.advanceText(new Uint8Array([...e.subarray(0, e.length - 1), 0x41])), null);
  const any = JsonMatcher.start(anyObjectNode());
  assert.ok(any.advanceText('{"a": [1, {"b": "\\u00e9"}], "c": true}')?.accepting);
  assert.equal(any.advanceText("[1]"), null, "json_object must be an object");
});

Deno.test("compileSchema follows $defs refs, anyOf, const and refuses what it cannot enforce", () => {
  const node = compileSchema({
    $defs: {
      tree: {
        type: "object",
        properties: { kids: { type: "array", items: { $ref: "#/$defs/tree" } } },
        required: ["kids"],
      },
    },
    anyOf: [{ $ref: "#/$defs/tree" }, { const: 7 }],
  });
  const m = JsonMatcher.start(node);
  assert.ok(m.advanceText('{"kids": [{"kids": []}]}')?.accepting);
  assert.ok(m.advanceText("7")?.accepting);
  assert.equal(m.advanceText("8"), null);
  assert.throws(() => compileSchema({ $ref: "http://x/y" }), /local refs/);
  assert.throws(() => compileSchema({ type: "tuple" }), /unknown type/);
});

Deno.test("json_object and json_schema replies of a noise model always parse and follow the schema", async () => {
  for (let salt = 1; salt <= 6; salt++) {
    for (
      const [format, schema] of [["json_object", null], ["json_schema", WEATHER_SCHEMA]] as const
    ) {
      const req = parseChatRequest({
        messages: [{ role: "user", content: "weather as json" }],
        response_format: format === "json_object"
          ? { type: "json_object" }
          : { type: "json_schema", json_schema: { name: "w", schema, strict: true } },
        max_tokens: salt % 2 === 0 ? 24 : 120,
        temperature: salt % 3 === 0 ? 0 : 1,
        seed: salt,
      });
      const r = await service(salt).startChat(req).response();
      const text = r.choices[0].message.content!;
      const value = JSON.parse(text); // throws if the reply does not parse
      assert.ok(r.usage.completion_tokens <= (salt % 2 === 0 ? 24 : 120));
      if (schema) assert.ok(follows(value, schema), `${text} does not follow the schema`);
      else assert.equal(typeof value, "object");
    }
  }
});

Deno.test("a tight max_tokens still closes the JSON: every token leaves room to finish", async () => {
  for (const max of [3, 5, 8, 13]) {
    const req = parseChatRequest({
      messages: [{ role: "user", content: "x" }],
      response_format: { type: "json_object" },
      max_tokens: max,
      temperature: 0,
    });
    const r = await service(max).startChat(req).response();
    assert.doesNotThrow(() => JSON.parse(r.choices[0].message.content!), `max_tokens ${max}`);
  }
});

Deno.test("constrained decoding is deterministic at temperature 0", async () => {
  const body = {
    messages: [{ role: "user", content: "json please" }],
    response_format: { type: "json_schema", json_schema: { name: "w", schema: WEATHER_SCHEMA } },
    max_tokens: 80,
    temperature: 0,
  };
  const a = await service(3).startChat(parseChatRequest(body)).response();
  const b = await service(3).startChat(parseChatRequest(body)).response();
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      strict: true,
    },
  },
  {
    type: "function",
    function: {
      name: "calculator",
      parameters: {
        type: "object",
        properties: { expression: { type: "string" } },
        required: ["expression"],
        additionalProperties: false,
      },
      strict: true,
    },
  },
];

Deno.test("tool_choice required always yields well-formed calls to offered tools, strict args following their schema", async () => {
  for (let salt = 1; salt <= 8; salt++) {
    const req = parseChatRequest({
      messages: [{ role: "user", content: "do something" }],
      tools: TOOLS,
      tool_choice: "required",
      parallel_tool_calls: salt % 2 === 0,
      max_tokens: 60,
      temperature: salt % 3 === 0 ? 0 : 0.8,
      seed: salt,
    });
    const r = await service(salt).startChat(req).response();
    const calls = r.choices[0].message.tool_calls ?? [];
    assert.ok(calls.length >= 1, `salt ${salt}: no call in ${JSON.stringify(r.choices[0])}`);
    if (salt % 2 !== 0) assert.equal(calls.length, 1, "parallel_tool_calls false: one call");
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    for (const c of calls) {
      const schema = TOOLS.find((t) => t.function.name === c.function.name)?.function.parameters;
      assert.ok(schema, `unknown tool ${c.function.name}`);
      assert.ok(follows(JSON.parse(c.function.arguments), schema), c.function.arguments);
    }
  }
});

Deno.test("a named tool_choice calls that tool once, in the stream too", async () => {
  const req = parseChatRequest({
    messages: [{ role: "user", content: "hi" }],
    tools: TOOLS,
    tool_choice: { type: "function", function: { name: "calculator" } },
    stream: true,
    max_tokens: 40,
    temperature: 0,
  });
  const deltas = [];
  for await (const c of service(5).startChat(req).chunks()) deltas.push(c.choices[0]);
  const calls = deltas.flatMap((d) => d.delta.tool_calls ?? []);
  assert.equal(calls.filter((c) => c.function.name).length, 1);
  assert.equal(calls[0].function.name, "calculator");
  const args = calls.map((c) => c.function.arguments).join("");
  assert.equal(typeof JSON.parse(args).expression, "string");
  assert.equal(deltas[deltas.length - 1].finish_reason, "tool_calls");
});

Deno.test("the token masks let byte-level tokens span JSON characters", () => {
  const c = jsonConstraint(tok, { node: anyObjectNode(), stopIds: [tok.imEndId] });
  const first = c.allowed(100);
  const allowed = [...first.keys()].filter((i) => first[i]).map((i) => tok.decode([i]));
  assert.ok(allowed.length > 0 && allowed.every((t) => t.startsWith("{")), allowed.join("|"));
  assert.equal(first[tok.imEndId], 0, "no stop before the value is complete");
  const t = toolCallConstraint(tok, {
    tools: [{ name: "f", parameters: {}, strict: false }],
    mode: "calls",
    parallel: false,
    stopIds: [tok.imEndId],
    opened: "",
  });
  const m = t.allowed(100);
  assert.ok([...m.keys()].filter((i) => m[i]).every((i) => tok.decode([i]).startsWith("{")));
});
