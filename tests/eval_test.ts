/**
 * Evaluation: the graders and the tool-call parser on hand examples, the report, and a quick
 * end-to-end run of the post-training pipeline on the tiny preset: pretrain a few steps, SFT,
 * DPO (reference cached in the run directory, TRL metric names logged), then `eval` of all
 * three checkpoints side by side.
 *
 * @module
 */
import assert from "node:assert/strict";
import { DEMO_CORPUS, generateWorld, gradeToolCall, isCorrect, toJsonl } from "../data/mod.ts";
import { IM_END_TOKEN, saveTokenizer, trainBpe } from "../tokenizer/mod.ts";
import { readMetrics } from "../train/metrics.ts";
import { resolveOptions } from "../train/options.ts";
import { prepareShards } from "../train/prepare.ts";
import { renderEvalReport, replyText, type ReportRow } from "../train/eval.ts";
import { parseFirstToolCall } from "../tokenizer/tool_calls.ts";

const parseToolCall = (text: string) => parseFirstToolCall(text, { strict: true });
import { DPO_OPTIONS, runDpo } from "../train/run_dpo.ts";
import { EVAL_OPTIONS, runEval } from "../train/run_eval.ts";
import { PRETRAIN_OPTIONS, runPretrain } from "../train/run_pretrain.ts";
import { runSft, SFT_OPTIONS } from "../train/run_sft.ts";
import { GPU_TEST } from "./_util.ts";

Deno.test("parseFirstToolCall() strict reads the first complete <tool_call> block", () => {
  const call = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>';
  assert.deepEqual(parseToolCall(call), { name: "calculator", arguments: '{"expression":"2+3"}' });
  // arguments given as a JSON string, as OpenAI transmits them; text before the block
  assert.deepEqual(
    parseToolCall('ok <tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>'),
    { name: "f", arguments: '{"x":1}' },
  );
  assert.equal(parseToolCall("It is sunny in Verin."), null);
  assert.equal(parseToolCall('<tool_call>{"name": "f", "arguments": {}}'), null); // unclosed
  assert.equal(parseToolCall('<tool_call>{"name": "f", "arguments": {"x": }</tool_call>'), null);
  assert.equal(parseToolCall('<tool_call>{"arguments": {}}</tool_call>'), null); // no name
  assert.equal(parseToolCall('<tool_call>{"name": "f"}</tool_call>'), null); // strict: no arguments
  assert.equal(parseToolCall('<tool_call>{"name": "f", "arguments": [1]}</tool_call>'), null);
});

Deno.test("the graders: exact-match answers and tool calls by function and values", () => {
  assert.ok(isCorrect("Dalmor.", "Dalmor"));
  assert.ok(isCorrect(" the silver tower ", "Silver Tower"));
  assert.ok(!isCorrect("It is Dalmor", "Dalmor"));
  assert.ok(isCorrect("34岁", "34岁"));
  const world = generateWorld({ seed: DEMO_CORPUS.seed, scale: DEMO_CORPUS.scale });
  const city = world.cities[0].name, other = world.cities[1].name;
  const weather = { name: "get_weather", arguments: { city: city.en } };
  const grade = (text: string) => {
    const call = parseToolCall(text);
    return call !== null && gradeToolCall(world, call, weather);
  };
  const asCall = (name: string, args: unknown) =>
    `<tool_call>${JSON.stringify({ name, arguments: args })}</tool_call>`;
  assert.ok(grade(asCall("get_weather", { city: city.en })));
  assert.ok(grade(asCall("get_weather", { city: city.zh })), "either language's name counts");
  assert.ok(!grade(asCall("get_weather", { city: other.en })), "wrong city");
  assert.ok(!grade(asCall("calculator", { city: city.en })), "wrong function");
  assert.ok(!grade(`get_weather({"city": "${city.en}"})`), "prose is not a call");
  const calc = { name: "calculator", arguments: { expression: "17 + 25" } };
  const gc = (args: unknown) => {
    const call = parseToolCall(asCall("calculator", args));
    return call !== null && gradeToolCall(world, call, calc);
  };
  assert.ok(gc({ expression: "25+17" }));
  assert.ok(!gc({ expression: "42" }), "the bare result is not the call");
  assert.ok(!gc({ expression: "17 + 24" }));
  assert.ok(!gc({ expr: "17 + 25" }), "wrong argument name");
});

Deno.test("replyText() stops at <|im_end|>; renderEvalReport() puts models side by side", () => {
  const tok = trainBpe(["Dalmor is a city. Karo is 34."], { vocabSize: 300 });
  const end = tok.specialId(IM_END_TOKEN);
  assert.equal(replyText(tok, [...tok.encode("Dalmor"), end, ...tok.encode("x")]), "Dalmor");
  assert.equal(replyText(tok, tok.encode("Dal")), "Dal");
  const acc = (c: number, n: number) => ({
    accuracy: c / n,
    correct: c,
    total: n,
    byGroup: {},
    samples: [{ prompt: "How old is Karo?", expected: "34", output: "34", correct: true }],
  });
  const rows: ReportRow[] = ["pretrain", "sft"].map((name, i) => ({
    name,
    checkpoint: `runs/${name}`,
    eval: {
      valLoss: 2 + i,
      valPpl: Math.exp(2 + i),
      qa: acc(i, 4),
      recall: acc(2 * i, 4),
      tools: null,
      preference: { accuracy: 0.5, total: 50, logpsChosen: -3, logpsRejected: -4 },
      arithmetic: i ? { ...acc(1, 4), reasoningFormat: 0.5 } : null,
      seconds: 1,
    },
  }));
  const md = renderEvalReport(rows);
  const table = md.split("\n").filter((l) => l.startsWith("| "));
  assert.equal(table.length, 3);
  assert.match(
    table[1],
    /^\| pretrain \| 2\.000 \| 7\.4 \| 0\.000 \(0\/4\) \| 0\.000 \(0\/4\) \| - \| 0\.500 \(50 pairs\)/,
  );
  assert.match(table[2], /^\| sft \| 3\.000 \| 20\.1 \| 0\.250 \(1\/4\) \| 0\.500 \(2\/4\)/);
  // The arithmetic columns: accuracy (counts), then the share of well-formed reasoning replies.
  assert.match(table[0], /\| arithmetic accuracy \| reasoning format \| checkpoint \|$/);
  assert.match(table[1], /\| - \| - \| runs\/pretrain \|$/);
  assert.match(table[2], /\| 0\.250 \(1\/4\) \| 0\.500 \| runs\/sft \|$/);
});

Deno.test(
  "end to end on the tiny preset: pretrain, SFT, DPO, then eval of all three",
  GPU_TEST,
  async () => {
    const root = await Deno.makeTempDir();
    const facts = ["Karo is 34 years old.", "Mira is 29 years old.", "Dalmor is a city."];
    const text = Array.from({ length: 60 }, (_, i) => facts[i % 3]).join(" ");
    const tok = trainBpe([text, "How old is Karo? What is 2 + 3?"], { vocabSize: 320 });
    await saveTokenizer(tok, `${root}/tok`);
    await Deno.writeTextFile(
      `${root}/pre.jsonl`,
      toJsonl(
        Array.from({ length: 40 }, (_, i) => ({ text: facts[i % 3] + " " + facts[(i + 1) % 3] })),
      ),
    );
    await prepareShards({
      inputs: [`${root}/pre.jsonl`],
      tokenizer: tok,
      tokenizerPath: `${root}/tok`,
      outDir: `${root}/data`,
      valFraction: 0.2,
      seed: 1,
    });
    const quiet = ["--no-progress", "--log-every", "1", "--eval-every", "0"];
    const log = () => {};
    const model = JSON.stringify({ max_seq_len: 256 });
    const pre = await resolveOptions(PRETRAIN_OPTIONS, [
      ...["--data", `${root}/data`, "--out", `${root}/pre`, "--preset", "tiny"],
      ...["--model", model, "--steps", "3", "--batch-size", "2", "--seq-len", "32"],
      ...quiet,
    ]);
    await runPretrain(pre.values, { log });

    const qa = (q: string, a: string) => [
      { role: "user", content: q },
      { role: "assistant", content: a },
    ];
    const sft = [
      { conversations: qa("How old is Karo?", "34") },
      { messages: [...qa("How old is Mira?", "29"), ...qa("And Karo?", "34")] },
      {
        conversations: [
          { role: "system", content: "Be brief." },
          ...qa("Where is Dalmor?", "here"),
        ],
      },
    ];
    await Deno.writeTextFile(`${root}/sft.jsonl`, toJsonl([...sft, ...sft, ...sft]));
    const sftRun = await resolveOptions(SFT_OPTIONS, [
      ...["--init", `${root}/pre`, "--data", `${root}/sft.jsonl`, "--out", `${root}/sft`],
      ...["--steps", "3", "--batch-size", "2", "--seq-len", "64", "--val-fraction", "0.2"],
      ...quiet,
    ]);
    const s = await runSft(sftRun.values, { log });
    assert.ok(Number.isFinite(s.val.loss), "held-out SFT loss");

    const pairs = [
      { prompt: "How old is Karo?", chosen: "34", rejected: "29" },
      {
        chosen: qa("How old is Mira?", "29"),
        rejected: qa("How old is Mira?", "Mira is old I think"),
      },
    ];
    await Deno.writeTextFile(`${root}/dpo.jsonl`, toJsonl([...pairs, ...pairs]));
    await Deno.writeTextFile(`${root}/dpo_val.jsonl`, toJsonl(pairs));
    const dpoArgs = [
      ...["--init", `${root}/sft`, "--data", `${root}/dpo.jsonl`, "--out", `${root}/dpo`],
      ...["--val-data", `${root}/dpo_val.jsonl`, "--steps", "3", "--batch-size", "2"],
      ...["--seq-len", "64", "--lr", "1e-3"],
      ...quiet,
    ];
    const d = await runDpo((await resolveOptions(DPO_OPTIONS, dpoArgs)).values, { log });
    assert.ok(Number.isFinite(d.val.loss) && d.val["rewards/accuracies"] >= 0);
    const cache = JSON.parse(await Deno.readTextFile(`${root}/dpo/reference_logps.json`));
    assert.equal(cache.train.length, 4);
    assert.match(cache.refDigest, /^[0-9a-f]{64}$/, "the cache names the reference's weights");
    // A rerun into the same directory from other weights must not reuse those log-probs.
    const rerun = async (init: string) => {
      const lines: string[] = [];
      const args = dpoArgs.map((a) => a === `${root}/sft` ? init : a)
        .map((a) => a === `${root}/dpo` ? `${root}/dpo2` : a);
      await runDpo((await resolveOptions(DPO_OPTIONS, args)).values, {
        log: (l) => lines.push(l),
      });
      return lines.some((l) => l.includes("reference log-probabilities from"));
    };
    assert.equal(await rerun(`${root}/sft`), false, "first run computes");
    assert.equal(await rerun(`${root}/sft`), true, "same reference: cached");
    assert.equal(await rerun(`${root}/pre`), false, "other weights: recomputed");
    assert.equal(cache.val.length, 2);
    const train = (await readMetrics(`${root}/dpo/metrics.jsonl`)).filter((r) =>
      r.kind === "train"
    );
    assert.equal(train.length, 3);
    for (
      const k of ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
    ) {
      assert.ok(Number.isFinite(train[0].losses?.[k]), `metric ${k} logged`);
    }
    // A policy equal to its reference starts at ln 2.
    assert.ok(Math.abs(train[0].loss! - Math.LN2) < 1e-4, `first DPO loss ${train[0].loss}`);

    await Deno.writeTextFile(
      `${root}/eval.jsonl`,
      toJsonl([{ question: "How old is Karo?", answer: "34", lang: "en" }]),
    );
    await Deno.writeTextFile(
      `${root}/tools.jsonl`,
      toJsonl([{
        messages: [{ role: "user", content: "What is 2 + 3?" }],
        tools: [{ type: "function", function: { name: "calculator" } }],
        expected: { name: "calculator", arguments: { expression: "2 + 3" } },
      }]),
    );
    // Held-out GRPO prompts: the arithmetic ones are graded, the tool prompt is not.
    await Deno.writeTextFile(
      `${root}/grpo_heldout.jsonl`,
      toJsonl([
        {
          messages: [{ role: "user", content: "Karo has 2 apples and buys 3. How many?" }],
          answer: "5",
          lang: "en",
          kind: "arithmetic",
        },
        { prompt: "What is 2 + 3?", answer: 5 },
        {
          messages: [{ role: "user", content: "What is 2 + 3?" }],
          tools: [{ type: "function", function: { name: "calculator" } }],
          tool_call: { name: "calculator", arguments: { expression: "2 + 3" } },
          kind: "tool",
        },
      ]),
    );
    const evalArgs = [
      ...["--model", `${root}/pre`, `${root}/sft`, `${root}/dpo`, "--out", `${root}/eval`],
      ...["--data", `${root}/data`, "--questions", `${root}/eval.jsonl`],
      ...["--tool-calls", `${root}/tools.jsonl`, "--pairs", `${root}/dpo_val.jsonl`],
      ...["--grpo-eval", `${root}/grpo_heldout.jsonl`, "--reasoning-max-tokens", "8"],
      ...["--seq-len", "32", "--tool-max-tokens", "8"],
    ];
    const rows = await runEval((await resolveOptions(EVAL_OPTIONS, evalArgs)).values, { log });
    assert.deepEqual(rows.map((r) => r.name), ["pretrain", "sft", "dpo"]);
    for (const r of rows) {
      assert.ok(Number.isFinite(r.eval.valLoss), `${r.name} val loss`);
      assert.equal(r.eval.qa?.total, 1);
      assert.equal(r.eval.recall?.total, 1, "the knowledge probe asks the same questions");
      assert.equal(r.eval.tools?.total, 1);
      assert.equal(r.eval.preference?.total, 2);
      assert.equal(r.eval.arithmetic?.total, 2, "the arithmetic prompts, not the tool one");
      const format = r.eval.arithmetic!.reasoningFormat!;
      assert.ok(format >= 0 && format <= 1, `reasoning format ${format}`);
    }
    const md = await Deno.readTextFile(`${root}/eval/report.md`);
    // The main table and the tool-call detail table: a row per model in each.
    assert.equal(md.split("\n").filter((l) => /^\| (pretrain|sft|dpo) \|/.test(l)).length, 6);
    for (const r of rows) {
      const p = r.eval.tools!.parts!;
      assert.ok(p.wellFormed >= p.rightFunction && p.rightFunction >= r.eval.tools!.accuracy);
    }
    const json = JSON.parse(await Deno.readTextFile(`${root}/eval/report.json`));
    assert.equal(json.rows.length, 3);

    // --skip-bad goes past a malformed line and says which one it skipped.
    const questions = await Deno.readTextFile(`${root}/eval.jsonl`);
    await Deno.writeTextFile(`${root}/bad.jsonl`, `${questions.trimEnd()}\n{"question": 3}\n`);
    const lines: string[] = [];
    const skipArgs = ["--model", `${root}/sft`, "--questions", `${root}/bad.jsonl`];
    const skipped = await runEval(
      (await resolveOptions(EVAL_OPTIONS, [...skipArgs, "--out", `${root}/eval2`, "--skip-bad"]))
        .values,
      { log: (l) => lines.push(l) },
    );
    assert.equal(skipped[0].eval.qa?.total, 1);
    assert.ok(
      lines.some((l) => l.startsWith(`skipped ${root}/bad.jsonl:2: `)),
      `a line naming bad.jsonl:2 in ${JSON.stringify(lines)}`,
    );
    await assert.rejects(
      async () =>
        await runEval(
          (await resolveOptions(EVAL_OPTIONS, [...skipArgs, "--out", `${root}/e3`]))
            .values,
          { log },
        ),
      new RegExp(`bad\\.jsonl:2: `),
    );
    await Deno.remove(root, { recursive: true });
  },
);
