import assert from "node:assert/strict";
import {
  benchmarkText,
  buildCorpus,
  calculate,
  CalculatorError,
  describeCorpus,
  dpoPairs,
  evalQuestions,
  evalToolCalls,
  type Fact,
  faqPrompt,
  generateWorld,
  gradeToolCall,
  grpoPrompts,
  isCorrect,
  isHeldOutNumbers,
  LANGS,
  type Message,
  pretrainDocuments,
  PROBLEM_TEMPLATES,
  reasoningConversations,
  runTool,
  sftConversations,
  stateFact,
  toJsonl,
  toolArgumentsMatch,
  toolSchemas,
  wordProblems,
} from "../data/mod.ts";

// Built once: every test below reads these and none mutates them.
const world = generateWorld({ seed: 1234, scale: 1 });
const corpus = buildCorpus({ seed: 1234, scale: 1 });
const evalFacts = world.facts.filter((f) => f.split === "eval");

/** Every message of every SFT conversation and DPO pair: all the data after pretraining. */
const trainingConversations: Message[][] = [
  ...corpus.sft.map((r) => r.conversations),
  ...corpus.dpo.train.flatMap((p) => [p.chosen, p.rejected]),
  ...corpus.dpo.heldOut.flatMap((p) => [p.chosen, p.rejected]),
];

Deno.test("buildCorpus() gives identical JSONL for the same seed and scale", () => {
  const again = buildCorpus({ seed: 1234, scale: 1 });
  assert.equal(toJsonl(again.pretrain), toJsonl(corpus.pretrain));
  assert.equal(toJsonl(again.sft), toJsonl(corpus.sft));
  assert.equal(toJsonl(again.dpo.train), toJsonl(corpus.dpo.train));
  assert.equal(toJsonl(again.evalQuestions), toJsonl(corpus.evalQuestions));
  assert.equal(toJsonl(again.evalToolCalls), toJsonl(corpus.evalToolCalls));
  assert.equal(toJsonl(again.grpo.train), toJsonl(corpus.grpo.train));
  assert.equal(toJsonl(again.grpo.heldOut), toJsonl(corpus.grpo.heldOut));
  assert.deepEqual(again.world, corpus.world);
});

Deno.test("buildCorpus() gives different data for a different seed", () => {
  const other = buildCorpus({ seed: 1235, scale: 1 });
  assert.notDeepEqual(other.world.cities, corpus.world.cities);
  assert.notEqual(toJsonl(other.pretrain), toJsonl(corpus.pretrain));
  assert.notEqual(toJsonl(other.sft), toJsonl(corpus.sft));
  assert.notEqual(toJsonl(other.grpo.train), toJsonl(corpus.grpo.train));
});

Deno.test("toJsonl() writes one parseable JSON object per line", () => {
  const text = toJsonl(corpus.sft.slice(0, 50));
  const lines = text.split("\n");
  assert.equal(lines.pop(), "");
  assert.equal(lines.length, 50);
  assert.deepEqual(lines.map((l) => JSON.parse(l)), corpus.sft.slice(0, 50));
  assert.equal(toJsonl([]), "");
});

Deno.test("the default corpus has the sizes the demo is budgeted for", () => {
  const d = describeCorpus(corpus);
  assert.deepEqual(d.entities, { countries: 4, cities: 12, people: 12, products: 8 });
  assert.ok(d.pretrain.utf8Bytes >= 300_000 && d.pretrain.utf8Bytes <= 1_000_000, d.summary);
  assert.ok(d.pretrain.chineseShare > 0.1, "both languages are present");
  assert.ok(d.sft.conversations >= 1000 && d.sft.conversations <= 3000, d.summary);
  assert.equal(d.sft.conversations, 2200, "2000 + 200 worked word problems");
  assert.equal(d.sft.withReasoning, 200);
  assert.deepEqual(d.grpo, { train: 440, trainTools: 80, heldOut: 110, heldOutTools: 10 });
  assert.ok(d.dpo.train >= 450 && d.dpo.train <= 600 && d.dpo.heldOut > 0, d.summary);
  assert.ok(d.eval.questions >= 80 && d.eval.questions <= 130, d.summary);
  assert.equal(d.eval.toolCalls, 40);
  assert.match(d.summary, /12 cities/);
});

Deno.test("entity names are unique and no name contains another, in either language", () => {
  const names = [
    ...world.countries,
    ...world.cities.map((c) => c.name),
    ...world.people.map((p) => p.name),
    ...world.products.map((p) => p.name),
  ];
  for (const lang of LANGS) {
    for (const a of names) {
      for (const b of names) {
        if (a !== b) assert.ok(!a[lang].includes(b[lang]), `${a[lang]} contains ${b[lang]}`);
      }
    }
  }
});

Deno.test("every eval fact is stated in pretraining text in both languages", () => {
  const docs = corpus.pretrain.map((d) => d.text);
  assert.ok(evalFacts.length >= 20);
  for (const fact of evalFacts) {
    for (const lang of LANGS) {
      const sentences = [0, 1, 2].map((form) => stateFact(fact, { lang, form }));
      const count = docs.filter((t) => sentences.some((s) => t.includes(s))).length;
      assert.ok(count >= 5, `${fact.id} (${lang}) is stated in only ${count} documents`);
    }
  }
});

/** Whether a text names the fact's entity, in any language (product names also bare). */
const mentions = (text: string, fact: Fact) =>
  LANGS.some((lang) => text.includes(fact.entity[lang]));
const hasValue = (text: string, fact: Fact) =>
  LANGS.some((lang) => text.includes(fact.value[lang]));

Deno.test("no eval fact is asked, answered or stated in SFT or DPO data", () => {
  const evalPrompts = new Set(corpus.evalQuestions.map((q) => q.question));
  for (const conversation of trainingConversations) {
    for (let i = 0; i < conversation.length; i++) {
      const text = conversation[i].content ?? "";
      if (conversation[i].role === "user") assert.ok(!evalPrompts.has(text), `SFT asks: ${text}`);
      for (const fact of evalFacts) {
        assert.ok(
          !(mentions(text, fact) && hasValue(text, fact)),
          `message states ${fact.id}: ${text}`,
        );
        // A question about the entity answered with the value is the fact, split over two turns.
        const next = conversation[i + 1];
        if (conversation[i].role === "user" && next?.role === "assistant" && mentions(text, fact)) {
          assert.ok(!hasValue(next.content ?? "", fact), `answers ${fact.id}: ${text}`);
        }
      }
    }
  }
});

Deno.test("SFT asks about every attribute, so eval questions use familiar phrasings", () => {
  const sftAttributes = new Set(
    world.facts.filter((f) => f.split === "sft").map((f) => f.attribute),
  );
  for (const q of corpus.evalQuestions) assert.ok(sftAttributes.has(q.attribute));
  const userTurns = new Set(
    corpus.sft.flatMap((r) =>
      r.conversations.filter((m) => m.role === "user").map((m) => m.content)
    ),
  );
  // The same template filled with an SFT entity appears in SFT.
  const q = corpus.evalQuestions[0];
  const fact = evalFacts.find((f) => f.id === q.fact)!;
  const sibling = world.facts.find((f) => f.split === "sft" && f.attribute === fact.attribute)!;
  const template = q.question.replace(fact.entity.en, "\u0000").replace(fact.entity.zh, "\u0000");
  const wanted = template.replace("\u0000", sibling.entity.en);
  assert.ok(
    [...userTurns].some((u) => u === wanted || u === template.replace("\u0000", sibling.entity.zh)),
  );
});

Deno.test("eval answers are short and in the question's language", () => {
  for (const q of corpus.evalQuestions) {
    assert.ok(q.answer.length > 0 && q.answer.split(" ").length <= 2, q.answer);
    const han = /\p{Script=Han}/u.test(q.question);
    assert.equal(han, q.lang === "zh", q.question);
    if (q.lang === "en") assert.ok(!/\p{Script=Han}/u.test(q.answer), q.answer);
  }
});

Deno.test("tool-call conversations are well formed and results equal runTool()", () => {
  const schemaNames = toolSchemas().map((t) => t.function.name);
  let calls = 0;
  for (const record of corpus.sft) {
    const messages = record.conversations;
    messages.forEach((m, i) => {
      if (!m.tool_calls) return;
      assert.equal(m.role, "assistant");
      assert.equal(m.content, null);
      assert.ok(record.tools, "a conversation that calls tools offers them");
      for (const call of m.tool_calls) {
        calls++;
        assert.equal(call.type, "function");
        assert.ok(schemaNames.includes(call.function.name));
        const args = JSON.parse(call.function.arguments);
        assert.equal(typeof args, "object");
        const reply = messages[i + 1];
        assert.equal(reply.role, "tool");
        assert.equal(reply.tool_call_id, call.id);
        assert.equal(reply.name, call.function.name);
        assert.equal(reply.content, runTool(world, call.function.name, call.function.arguments));
        assert.ok(!("error" in JSON.parse(reply.content!)), reply.content!);
        const answer = messages[i + 2];
        assert.equal(answer.role, "assistant");
        assert.ok(answer.content && answer.content.length > 0);
      }
    });
  }
  assert.ok(calls > 300, `only ${calls} tool calls`);
});

Deno.test("tool-call ids are unique within each conversation", () => {
  for (const record of corpus.sft) {
    const ids = record.conversations.flatMap((m) => m.tool_calls ?? []).map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length);
  }
});

Deno.test("conversations alternate roles and end with an assistant answer", () => {
  for (const { conversations: c } of corpus.sft) {
    assert.equal(c.at(-1)!.role, "assistant");
    assert.ok(c.at(-1)!.content);
    const rest = c[0].role === "system" ? c.slice(1) : c;
    assert.equal(rest[0].role, "user");
    assert.ok(!rest.slice(1).some((m) => m.role === "system"));
  }
});

Deno.test("runTool() answers weather from the world, in the language of the city name", () => {
  const city = world.cities[0];
  assert.deepEqual(JSON.parse(runTool(world, "get_weather", { city: city.name.en })), {
    city: city.name.en,
    condition: city.weather.en,
    temperature_c: city.temperatureC,
  });
  const zh = JSON.parse(runTool(world, "get_weather", JSON.stringify({ city: city.name.zh })));
  assert.equal(zh.condition, city.weather.zh);
  assert.match(runTool(world, "get_weather", { city: "Atlantis" }), /unknown city/);
  assert.match(runTool(world, "get_weather", "{not json"), /not valid JSON/);
  assert.match(runTool(world, "search", {}), /unknown tool 'search'/);
  assert.match(runTool(world, "calculator", { expression: "1 / 0" }), /division by zero/);
  assert.equal(runTool(world, "calculator", '{"expression": "6 * 7"}'), '{"result":42}');
});

Deno.test("calculate() follows precedence, parentheses and unary minus", () => {
  const cases: [string, number][] = [
    ["17 + 25", 42],
    ["2 + 3 * 4", 14],
    ["(2 + 3) * 4", 20],
    ["20 - 5 - 3", 12],
    ["100 / 10 / 5", 2],
    ["7 / 2", 3.5],
    ["-3 + 5", 2],
    ["-(2 + 3) * -2", 10],
    ["  8*9 ", 72],
    ["0 - 0", 0],
  ];
  for (const [expression, value] of cases) assert.equal(calculate(expression), value, expression);
});

Deno.test("calculate() rejects bad expressions with a message that says where", () => {
  const cases: [string, RegExp][] = [
    ["2 +", /expected a number at position 3/],
    ["2 & 3", /unexpected character '&' at position 2/],
    ["(1 + 2", /expected '\)'/],
    ["1 + 2)", /unexpected '\)'/],
    ["", /empty expression/],
    ["1 / (2 - 2)", /division by zero/],
    ["1.5 + 2", /unexpected character '\.'/],
    ["alert(1)", /unexpected character 'a'/],
    ["99999999999 * 99999999999", /result too large/],
    ["1+".repeat(150) + "1", /longer than 200/],
  ];
  for (const [expression, message] of cases) {
    assert.throws(() => calculate(expression), (e: unknown) => {
      assert.ok(e instanceof CalculatorError);
      assert.match(e.message, message);
      return true;
    }, expression);
  }
});

Deno.test("dpoPairs() chosen and rejected share the prompt and differ in the last turn", () => {
  const { train, heldOut } = corpus.dpo;
  const flaws = new Set<string>();
  for (const pair of [...train, ...heldOut]) {
    assert.deepEqual(pair.chosen.slice(0, -1), pair.rejected.slice(0, -1));
    assert.notDeepEqual(pair.chosen.at(-1), pair.rejected.at(-1));
    assert.equal(pair.chosen.at(-1)!.role, "assistant");
    assert.equal(pair.rejected.at(-1)!.role, "assistant");
    assert.equal(pair.chosen.at(-2)!.role === "user" || pair.chosen.at(-2)!.role === "tool", true);
    flaws.add(pair.flaw);
  }
  assert.deepEqual([...flaws].sort(), ["broken_format", "rambling", "wrong_fact"]);
  // The train and held-out sets do not overlap.
  const trainKeys = new Set(train.map((p) => JSON.stringify(p.chosen)));
  const overlap = heldOut.filter((p) => trainKeys.has(JSON.stringify(p.chosen))).length;
  assert.ok(overlap < heldOut.length / 2, `${overlap} held-out pairs repeat train pairs`);
});

Deno.test("evalToolCalls() prompts expect calls that runTool() can answer", () => {
  const sftExpressions = new Set(
    corpus.sft.flatMap((r) => r.conversations).flatMap((m) => m.tool_calls ?? [])
      .filter((c) => c.function.name === "calculator")
      .map((c) => JSON.parse(c.function.arguments).expression),
  );
  const names = new Set<string>();
  for (const item of corpus.evalToolCalls) {
    assert.equal(item.messages.at(-1)!.role, "user");
    names.add(item.expected.name);
    const result = JSON.parse(runTool(world, item.expected.name, item.expected.arguments));
    assert.ok(!("error" in result), JSON.stringify(item.expected));
    if (item.expected.name === "calculator") {
      assert.ok(!sftExpressions.has(item.expected.arguments.expression), "held out from SFT");
    }
    const asText = { name: item.expected.name, arguments: JSON.stringify(item.expected.arguments) };
    assert.ok(gradeToolCall(world, asText, item.expected));
  }
  assert.deepEqual([...names].sort(), ["calculator", "get_weather"]);
});

Deno.test("gradeToolCall() and isCorrect() accept equivalent answers and reject others", () => {
  const city = world.cities[1];
  const weather = { name: "get_weather", arguments: { city: city.name.en } };
  assert.ok(
    gradeToolCall(world, { name: "get_weather", arguments: { city: city.name.zh } }, weather),
  );
  assert.ok(
    !gradeToolCall(world, { name: "get_weather", arguments: '{"city": "Nowhere"}' }, weather),
  );
  assert.ok(!gradeToolCall(world, { name: "get_weather", arguments: "{bad" }, weather));
  assert.ok(
    !gradeToolCall(world, { name: "calculator", arguments: { city: city.name.en } }, weather),
  );
  const calc = { name: "calculator", arguments: { expression: "17 + 25" } };
  assert.ok(
    gradeToolCall(world, { name: "calculator", arguments: '{"expression":"25+17"}' }, calc),
  );
  assert.ok(!gradeToolCall(world, { name: "calculator", arguments: '{"expression":"42"}' }, calc));
  assert.ok(isCorrect(" The Silver Tower. ", "Silver Tower"));
  assert.ok(isCorrect("300万。", "300万"));
  assert.ok(!isCorrect("It is Dalmor", "Dalmor"));
});

Deno.test("size scales with scale", () => {
  const small = buildCorpus({ seed: 5, scale: 0.5 });
  const big = buildCorpus({ seed: 5, scale: 2 });
  const a = describeCorpus(small);
  const b = describeCorpus(big);
  assert.ok(
    b.entities.cities >= 3 * a.entities.cities,
    `${a.entities.cities} -> ${b.entities.cities}`,
  );
  assert.ok(b.pretrain.chars > 3 * a.pretrain.chars);
  assert.equal(b.sft.conversations, 4 * a.sft.conversations);
  assert.ok(b.dpo.train > 3 * a.dpo.train);
  assert.ok(b.eval.questions > 3 * a.eval.questions);
  assert.throws(() => generateWorld({ scale: 0 }), RangeError);
});

Deno.test("generators accept explicit counts and seeds", () => {
  assert.equal(sftConversations(world, { count: 7, reasoning: 0 }).length, 7);
  const mixed = sftConversations(world, { count: 7, reasoning: 3 });
  assert.equal(mixed.length, 10);
  assert.equal(mixed.filter((r) => r.conversations.at(-1)!.reasoning_content).length, 3);
  assert.deepEqual(
    mixed.filter((r) => !r.conversations.at(-1)!.reasoning_content),
    sftConversations(world, { count: 7, reasoning: 0 }),
    "the other conversations do not change",
  );
  const g = grpoPrompts(world, {
    trainArithmetic: 5,
    trainTools: 2,
    heldOutArithmetic: 4,
    heldOutTools: 1,
  });
  assert.deepEqual([g.train.length, g.heldOut.length], [7, 5]);
  const { train, heldOut } = dpoPairs(world, { count: 20, heldOutFraction: 0.25 });
  assert.equal(train.length, 15);
  assert.equal(heldOut.length, 5);
  assert.equal(evalToolCalls(world, { count: 6 }).length, 6);
  assert.equal(evalQuestions(world, { formsPerLang: 1 }).length, evalFacts.length * 2);
  const few = pretrainDocuments(world, {
    profileRepeats: 1,
    listRepeats: 0,
    faqRepeats: 0,
    stories: 0,
    arithmetic: 0,
  });
  assert.equal(few.length, (world.cities.length + world.people.length + world.products.length) * 2);
  assert.notDeepEqual(pretrainDocuments(world, { seed: 1 }), pretrainDocuments(world, { seed: 2 }));
});

Deno.test("benchmarkText() makes 20M mixed characters in a few seconds", () => {
  const start = performance.now();
  const text = benchmarkText({ chars: 20_000_000 });
  const seconds = (performance.now() - start) / 1000;
  assert.equal(text.length, 20_000_000);
  assert.ok(/\p{Script=Han}/u.test(text.slice(0, 100_000)) && /[a-z]/.test(text.slice(0, 100_000)));
  assert.ok(seconds < 5, `took ${seconds.toFixed(1)} s`);
  assert.equal(benchmarkText({ chars: 1000 }), text.slice(0, 1000));
});

Deno.test("faqPrompt() + the answer is how the pretraining FAQs ask every eval fact", () => {
  // Every question line with the line after it: the prompt and its answer, as one unit.
  const pairs = new Set(
    pretrainDocuments(world).flatMap((d) =>
      d.text.split("\n").map((line, i, all) => `${line}\n${all[i + 1] ?? ""}`)
    ),
  );
  const found = new Map<string, number>();
  for (const q of evalQuestions(world, { formsPerLang: 3 })) {
    const pair = faqPrompt(q.question, q.lang) + (q.lang === "en" ? " " : "") + q.answer;
    const key = `${q.fact}/${q.lang}`;
    found.set(key, (found.get(key) ?? 0) + (pairs.has(pair) ? 1 : 0));
  }
  assert.equal(found.size, evalFacts.length * 2);
  for (const [key, n] of found) assert.ok(n > 0, `${key}: no FAQ line asks it as faqPrompt() does`);
});

Deno.test("word problems: held-out templates and number tuples never occur in train", () => {
  const { train, heldOut } = corpus.grpo;
  assert.equal(
    PROBLEM_TEMPLATES.train.filter((t) => PROBLEM_TEMPLATES.heldOut.includes(t)).length,
    0,
  );
  const trainProblems = wordProblems(world, { split: "train", count: 360 });
  const heldProblems = wordProblems(world, { split: "heldOut", count: 100 });
  assert.equal(heldProblems.length, 100);
  // The same problems, in the same order, as the corpus's arithmetic prompts.
  assert.deepEqual(
    train.filter((r) => r.kind === "arithmetic").map((r) => r.messages.at(-1)!.content),
    trainProblems.map((p) => p.question),
  );
  assert.deepEqual(
    heldOut.filter((r) => r.kind === "arithmetic").map((r) => r.answer),
    heldProblems.map((p) => String(p.answer)),
  );
  for (const p of trainProblems) {
    assert.ok(PROBLEM_TEMPLATES.train.includes(p.template));
    assert.ok(!isHeldOutNumbers(p.numbers), `${p.numbers}`);
  }
  for (const p of heldProblems) {
    assert.ok(PROBLEM_TEMPLATES.heldOut.includes(p.template));
    assert.ok(isHeldOutNumbers(p.numbers), `${p.numbers}`);
  }
  const trainNumbers = new Set(trainProblems.map((p) => p.numbers.join(",")));
  assert.ok(heldProblems.every((p) => !trainNumbers.has(p.numbers.join(","))));
  const trainQuestions = new Set(trainProblems.map((p) => p.question));
  assert.ok(heldProblems.every((p) => !trainQuestions.has(p.question)));
  assert.equal(new Set(heldProblems.map((p) => p.question)).size, heldProblems.length);
  // Both languages and every template of each split are used.
  for (const problems of [trainProblems, heldProblems]) {
    assert.deepEqual(new Set(problems.map((p) => p.lang)), new Set(["en", "zh"]));
  }
  assert.equal(new Set(trainProblems.map((p) => p.template)).size, PROBLEM_TEMPLATES.train.length);
  assert.equal(new Set(heldProblems.map((p) => p.template)).size, PROBLEM_TEMPLATES.heldOut.length);
});

Deno.test("word problems: the worked steps compute the answer, with small numbers", () => {
  for (const split of ["train", "heldOut"] as const) {
    for (const p of wordProblems(world, { split, count: 200 })) {
      const steps = p.reasoning.split(/(?<=\.) /);
      assert.ok(steps.length >= 2 && steps.length <= 3, p.reasoning);
      let prev: number | null = null;
      for (const step of steps) {
        const m = /^(\d+) ([-+*/]) (\d+) = (\d+)\.$/.exec(step);
        assert.ok(m, `step ${JSON.stringify(step)} of ${p.reasoning}`);
        assert.equal(calculate(`${m[1]} ${m[2]} ${m[3]}`), Number(m[4]), step);
        if (prev !== null) assert.equal(Number(m[1]), prev, "each step goes on from the last");
        prev = Number(m[4]);
      }
      assert.equal(prev, p.answer);
      assert.ok(Number.isInteger(p.answer) && p.answer >= 0 && p.answer <= 100, p.question);
      // Every number of the problem is in its text.
      for (const n of p.numbers) {
        assert.match(p.question, new RegExp(`(^|\\D)${n}(\\D|$)`), `${n}: ${p.question}`);
      }
      assert.equal(/\p{Script=Han}/u.test(p.question), p.lang === "zh", p.question);
    }
  }
});

Deno.test("GRPO prompts: the record shape, tool calls runTool() answers, tools kept apart", () => {
  const { train, heldOut } = corpus.grpo;
  const trainExpressions = new Set<string>();
  for (const [records, held] of [[train, false], [heldOut, true]] as const) {
    for (const r of records) {
      assert.equal(r.messages.at(-1)!.role, "user");
      assert.ok(
        r.messages.length <= 2 && (r.messages.length === 1 || r.messages[0].role === "system"),
      );
      assert.ok(r.lang === "en" || r.lang === "zh");
      if (r.kind === "arithmetic") {
        assert.match(r.answer!, /^\d+$/);
        assert.equal(r.tools, undefined);
        assert.equal(r.tool_call, undefined);
      } else {
        assert.equal(r.kind, "tool");
        assert.equal(r.answer, undefined);
        assert.deepEqual(r.tools, toolSchemas());
        const result = JSON.parse(runTool(world, r.tool_call!.name, r.tool_call!.arguments));
        assert.ok(!("error" in result), JSON.stringify(r.tool_call));
        const asText = {
          name: r.tool_call!.name,
          arguments: JSON.stringify(r.tool_call!.arguments),
        };
        assert.ok(gradeToolCall(world, asText, r.tool_call!));
        if (r.tool_call!.name === "calculator") {
          const e = r.tool_call!.arguments.expression;
          if (held) assert.ok(!trainExpressions.has(e), `held-out ${e} is a train expression`);
          else trainExpressions.add(e);
        }
      }
      // The JSONL line carries exactly the documented fields.
      const keys = Object.keys(JSON.parse(JSON.stringify(r))).sort();
      assert.ok(
        keys.every((k) => ["answer", "kind", "lang", "messages", "tool_call", "tools"].includes(k)),
      );
    }
  }
  assert.deepEqual(new Set(train.map((r) => r.kind)), new Set(["arithmetic", "tool"]));
});

Deno.test("reasoning conversations work train problems only, in the chat template's form", () => {
  const reasoning = corpus.sft.filter((r) => r.conversations.some((m) => m.reasoning_content));
  assert.equal(reasoning.length, 200);
  assert.deepEqual(reasoning, reasoningConversations(world));
  const heldOutQuestions = new Set(
    corpus.grpo.heldOut.map((r) => r.messages.at(-1)!.content),
  );
  const trainQuestions = new Set(corpus.grpo.train.map((r) => r.messages.at(-1)!.content));
  for (const { conversations: c, tools } of reasoning) {
    assert.equal(tools, undefined);
    const user = c.at(-2)!, reply = c.at(-1)!;
    assert.equal(user.role, "user");
    assert.ok(!heldOutQuestions.has(user.content), "never a held-out problem");
    assert.ok(trainQuestions.has(user.content), "a GRPO train problem");
    assert.equal(reply.role, "assistant");
    assert.match(reply.reasoning_content!, /^(\d+ [-+*/] \d+ = \d+\. ?){2,3}$/);
    const answer = reply.reasoning_content!.match(/= (\d+)\.$/)![1];
    assert.ok(
      reply.content === `The answer is ${answer}.` || reply.content === `答案是 ${answer}。`,
      reply.content!,
    );
  }
  // Spread through the SFT file rather than bunched at its end.
  const first = corpus.sft.findIndex((r) => r.conversations.some((m) => m.reasoning_content));
  assert.ok(first < 50, `first reasoning conversation at ${first}`);
});

Deno.test("toolArgumentsMatch() is gradeToolCall()'s rule, with or without a world", () => {
  assert.ok(toolArgumentsMatch("calculator", { expression: "4+3" }, { expression: "3 + 4" }));
  assert.ok(!toolArgumentsMatch("calculator", { expression: "7" }, { expression: "3 + 4" }));
  assert.ok(!toolArgumentsMatch("calculator", { expression: 7 }, { expression: "3 + 4" }));
  const city = world.cities[0].name;
  assert.ok(toolArgumentsMatch("get_weather", { city: city.zh }, { city: city.en }, { world }));
  assert.ok(!toolArgumentsMatch("get_weather", { city: city.zh }, { city: city.en }));
  assert.ok(
    toolArgumentsMatch("get_weather", { city: ` ${city.en.toUpperCase()}` }, { city: city.en }),
  );
  assert.ok(toolArgumentsMatch("f", { n: "3", s: " Tea " }, { n: 3, s: "tea" }));
  assert.ok(!toolArgumentsMatch("f", { n: 4, s: "tea" }, { n: 3, s: "tea" }));
  assert.ok(!toolArgumentsMatch("f", {}, { n: 3 }));
});
