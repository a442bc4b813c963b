/**
 * The GRPO rewards on hand examples: numbers in every form the answer reward reads, wrong and
 * missing answers, worked steps right, wrong and ungrounded, tool calls right and wrong, the
 * think-block format, DAPO's overlong shaping, and the weight spec's errors.
 *
 * @module
 */
import assert from "node:assert/strict";
import { DEMO_CORPUS, generateWorld } from "../data/mod.ts";
import {
  answerPart,
  answerReward,
  finalAnswer,
  formatReward,
  lastNumber,
  lengthPenalty,
  makeLengthPenalty,
  numberValue,
  parseRewardWeights,
  type RewardInfo,
  REWARDS,
  scoreReply,
  stepsReward,
  toolCallReward,
  toolCallRewardFor,
} from "../train/rewards.ts";

const info: RewardInfo = { tokens: 20, maxTokens: 96, truncated: false };
const think = (reasoning: string, answer: string) =>
  `<think>\n${reasoning}\n</think>\n\n${answer}<|im_end|>`;

Deno.test("numberValue() reads digits, Chinese numerals and English words", () => {
  const cases: [string, number | null][] = [
    ["17", 17],
    ["-3", -3],
    ["1,234", 1234],
    ["９", 9],
    ["１７。", 17],
    ["9.0", 9],
    ["2.5", 2.5],
    ["300万", 3_000_000],
    ["九", 9],
    ["十七", 17],
    ["二十", 20],
    ["一百零五", 105],
    ["两千三百", 2300],
    ["负三", -3],
    ["三点五", 3.5],
    ["nine", 9],
    ["Seventeen", 17],
    ["twenty-one", 21],
    ["one hundred and five", 105],
    ["two thousand three hundred", 2300],
    ["minus three", -3],
    ["17 apples", null],
    ["Dalmor", null],
    ["", null],
  ];
  for (const [text, value] of cases) assert.equal(numberValue(text), value, text);
});

Deno.test("lastNumber() finds the final number, not subtraction signs or filler words", () => {
  assert.equal(lastNumber("12 - 3 = 9"), 9);
  assert.equal(lastNumber("5-3"), 3, "a minus after a digit is subtraction");
  assert.equal(lastNumber("The answer is -4."), -4);
  assert.equal(lastNumber("7 + 5 = 12, so the answer is nine."), 9);
  assert.equal(lastNumber("答案是 9。"), 9);
  assert.equal(lastNumber("小林现在有十七个苹果。"), 17);
  assert.equal(lastNumber("答案是 9，一共如此"), 9, "一共 is not the number one");
  assert.equal(lastNumber("three four"), 4, "two numbers, not seven");
  assert.equal(lastNumber("no numbers here"), null);
});

Deno.test("answerReward() compares the final answer after </think> by value", () => {
  const target = { answer: "9" };
  assert.equal(answerReward(think("7 + 5 = 12. 12 - 3 = 9.", "The answer is 9."), target, info), 1);
  assert.equal(answerReward(think("7 + 5 = 12. 12 - 3 = 9.", "答案是 9。"), target, info), 1);
  assert.equal(answerReward(think("...", "答案是九。"), target, info), 1);
  assert.equal(answerReward(think("...", "The answer is nine."), target, info), 1);
  assert.equal(answerReward(think("...", "The answer is ９."), target, info), 1);
  assert.equal(answerReward(think("...", "The answer is 9.0"), target, info), 1);
  assert.equal(answerReward("The answer is 9.", target, info), 1, "no think block: whole reply");
  assert.equal(answerReward("9", target, info), 1);
  // wrong answers
  assert.equal(answerReward(think("12 - 3 = 9.", "The answer is 8."), target, info), 0);
  assert.equal(
    answerReward(think("The answer is 9.", "So 10."), target, info),
    0,
    "the reasoning's numbers do not count",
  );
  assert.equal(answerReward("<think>\n12 - 3 = 9.", target, info), 0, "unclosed think: no answer");
  assert.equal(answerReward(think("...", "I do not know."), target, info), 0);
  assert.equal(answerReward("", target, info), 0);
  // big numbers and other forms of the target
  assert.equal(answerReward("It costs 1,050 dollars.", { answer: "1050" }, info), 1);
  assert.equal(answerReward("一百零五", { answer: "105" }, info), 1);
  assert.equal(answerReward("one hundred and five", { answer: "105" }, info), 1);
  assert.equal(answerReward("负三", { answer: "-3" }, info), 1);
  // text targets match exactly (normalized)
  assert.equal(answerReward("Dalmor.", { answer: "Dalmor" }, info), 1);
  assert.equal(answerReward("Verin", { answer: "Dalmor" }, info), 0);
  // not applicable
  assert.equal(answerReward("9", {}, info), null);
  assert.equal(
    answerReward("9", { toolCall: { name: "calculator", arguments: {} } }, info),
    null,
  );
});

Deno.test("answerPart() and finalAnswer() ignore <|im_end|> and what follows", () => {
  assert.equal(answerPart("The answer is 9.<|im_end|>12"), "The answer is 9.");
  assert.equal(finalAnswer("<think>\n1 + 1 = 2.\n</think>\n\n2<|im_end|>"), 2);
  assert.equal(finalAnswer("<think>\nx\n</think>\n\nno number<|im_end|>"), null);
});

Deno.test("toolCallReward() needs the right function and argument values", () => {
  const calc = { toolCall: { name: "calculator", arguments: { expression: "3 + 4" } } };
  const call = (name: string, args: unknown) =>
    `<tool_call>${JSON.stringify({ name, arguments: args })}</tool_call><|im_end|>`;
  assert.equal(toolCallReward(call("calculator", { expression: "3 + 4" }), calc, info), 1);
  assert.equal(toolCallReward(call("calculator", { expression: "4+3" }), calc, info), 1);
  assert.equal(
    toolCallReward(
      think("I need the calculator.", call("calculator", { expression: "3+4" })),
      calc,
      info,
    ),
    1,
    "after a think block",
  );
  assert.equal(toolCallReward(call("get_weather", { expression: "3 + 4" }), calc, info), 0);
  assert.equal(toolCallReward(call("calculator", { expression: "3 + 5" }), calc, info), 0);
  assert.equal(toolCallReward(call("calculator", { expression: "7" }), calc, info), 0);
  assert.equal(toolCallReward(call("calculator", { expr: "3 + 4" }), calc, info), 0);
  assert.equal(toolCallReward("3 + 4 = 7", calc, info), 0, "no call");
  assert.equal(toolCallReward('<tool_call>{"name": "calculator"', calc, info), 0, "unclosed");
  assert.equal(
    toolCallReward(
      `<think>\n${call("calculator", { expression: "3 + 4" })}\n</think>\n\nok`,
      calc,
      info,
    ),
    0,
    "a call inside the reasoning is not made",
  );
  // Strings trimmed and case-insensitive; numbers by value.
  const weather = { toolCall: { name: "get_weather", arguments: { city: "Verin" } } };
  assert.equal(toolCallReward(call("get_weather", { city: " verin " }), weather, info), 1);
  assert.equal(toolCallReward(call("get_weather", { city: "Dalmor" }), weather, info), 0);
  const other = { toolCall: { name: "set_timer", arguments: { minutes: 5, label: "Tea" } } };
  assert.equal(toolCallReward(call("set_timer", { minutes: "5.0", label: "tea" }), other, info), 1);
  assert.equal(toolCallReward(call("set_timer", { minutes: 6, label: "tea" }), other, info), 0);
  assert.equal(toolCallReward(call("set_timer", { label: "tea" }), other, info), 0);
  assert.equal(toolCallReward(call("calculator", {}), { answer: "7" }, info), null);
  // With the world, either language's city name counts (as evaluation grades).
  const world = generateWorld({ seed: DEMO_CORPUS.seed, scale: DEMO_CORPUS.scale });
  const city = world.cities[0].name;
  const inWorld = toolCallRewardFor({ world });
  const target = { toolCall: { name: "get_weather", arguments: { city: city.en } } };
  assert.equal(inWorld(call("get_weather", { city: city.zh }), target, info), 1);
  assert.equal(toolCallReward(call("get_weather", { city: city.zh }), target, info), 0);
});

Deno.test("formatReward() wants exactly one leading think block and an answer", () => {
  assert.equal(formatReward(think("7 + 5 = 12.", "The answer is 12."), {}, info), 1);
  assert.equal(formatReward(think("7 + 5 = 12.", "答案是 12。"), {}, info), 1);
  assert.equal(formatReward("<think>\nx\n</think>\n\n12", {}, info), 1, "no stop token");
  assert.equal(
    formatReward(
      think("Use the tool.", '<tool_call>{"name": "f", "arguments": {}}</tool_call>'),
      {},
      info,
    ),
    1,
    "a tool call as the answer",
  );
  assert.equal(formatReward("The answer is 12.<|im_end|>", {}, info), 0, "no think block");
  assert.equal(formatReward("Sure. " + think("x", "12"), {}, info), 0, "text before <think>");
  assert.equal(formatReward(think("x", "12\n" + think("y", "13")), {}, info), 0, "two blocks");
  assert.equal(formatReward(think("a", "b <think> c"), {}, info), 0, "a stray <think>");
  assert.equal(formatReward(think("  ", "12"), {}, info), 0, "empty reasoning");
  assert.equal(formatReward(think("x", " "), {}, info), 0, "empty answer");
  assert.equal(formatReward("<think>\n7 + 5 = 12.", {}, info), 0, "unclosed");
  assert.equal(
    formatReward(think("x", "12"), {}, { ...info, truncated: true }),
    0,
    "a truncated reply is not well formed",
  );
  assert.equal(
    formatReward(think("x", '<tool_call>{"name": "f", "arguments": {}'), {}, info),
    0,
    "an unclosed tool call",
  );
  assert.equal(
    formatReward(think("x", "<tool_call>{bad}</tool_call>"), {}, info),
    0,
    "a malformed tool call",
  );
});

Deno.test("stepsReward() credits right steps that start from the problem's numbers", () => {
  const question = "Lin has 7 apples, buys 5 more and gives 3 away. How many apples does Lin have?";
  const target = { answer: "9", question };
  const steps = (reasoning: string) => stepsReward(think(reasoning, "The answer is 9."), target);
  assert.equal(steps("7 + 5 = 12. 12 - 3 = 9."), 1);
  assert.equal(
    steps("7 + 5 = 13. 13 - 3 = 10."),
    0,
    "a wrong first step: the second starts from it",
  );
  assert.equal(steps("7 + 5 = 12. 12 - 2 = 10."), 0.5, "2 is not in the problem");
  assert.equal(steps("1 + 1 = 2. 2 + 7 = 9."), 0, "steps from nowhere earn nothing");
  assert.equal(steps("7 × 5 = 35. 35 ÷ 5 = 7."), 1, "× and ÷ read as * and /");
  assert.equal(steps("７ + ５ = １２."), 1, "fullwidth digits");
  assert.equal(steps("add them up"), 0, "no equation");
  assert.equal(stepsReward("7 + 5 = 12. The answer is 12.", target), 0, "no think block");
  assert.equal(
    stepsReward("<think>\n7 + 5 = 12.\n</think>\n\n12 - 3 = 9.", target),
    1,
    "only the think block counts",
  );
  assert.equal(stepsReward(think("7 + 5 = 12.", "12"), { answer: "12" }), null, "no question");
  assert.equal(stepsReward(think("7 + 5 = 12.", "12"), { question }), null, "no answer");
  assert.equal(REWARDS.steps, stepsReward);
});

Deno.test("lengthPenalty() is DAPO's overlong shaping", () => {
  const at = (tokens: number, truncated = false) =>
    lengthPenalty("", {}, { tokens, maxTokens: 96, truncated });
  assert.equal(at(10), 0);
  assert.equal(at(72), 0, "the soft limit: 96 - 24");
  assert.equal(at(84), -0.5);
  assert.equal(at(96), -1);
  assert.equal(at(96, true), -1, "truncated");
  assert.equal(at(30, true), -1, "truncated is -1 whatever the count");
  assert.ok(at(80)! > at(90)!, "grows with length");
  assert.equal(
    makeLengthPenalty(16)("", {}, { tokens: 56, maxTokens: 64, truncated: false }),
    -0.5,
  );
});

Deno.test("parseRewardWeights() reads name=weight lists and names bad entries", () => {
  assert.deepEqual(parseRewardWeights("answer=1,tool_call=1,format=0.2,length=0"), {
    answer: 1,
    tool_call: 1,
    format: 0.2,
    length: 0,
  });
  assert.deepEqual(parseRewardWeights(" answer = 1 , format=0.5 "), { answer: 1, format: 0.5 });
  assert.deepEqual(parseRewardWeights(""), {});
  assert.throws(() => parseRewardWeights("answer"), /"answer" has no "=weight"/);
  assert.throws(
    () => parseRewardWeights("answer=1,answr=2"),
    /unknown reward "answr" in "answr=2"; known: answer, steps, tool_call, format, length/,
  );
  assert.throws(() => parseRewardWeights("format=abc"), /"format=abc" must be a finite number/);
  assert.throws(() => parseRewardWeights("format="), /must be a finite number/);
  assert.throws(() => parseRewardWeights("answer=1,answer=2"), /"answer" is given twice/);
  assert.deepEqual(Object.keys(REWARDS), ["answer", "steps", "tool_call", "format", "length"]);
});

Deno.test("scoreReply() sums the weighted rewards that apply", () => {
  const reply = think("7 + 5 = 12. 12 - 3 = 9.", "The answer is 9.");
  const r = scoreReply(reply, { answer: "9" }, info, { answer: 1, tool_call: 1, format: 0.2 });
  assert.deepEqual(r.parts, { answer: 1, tool_call: null, format: 1 });
  assert.ok(Math.abs(r.total - 1.2) < 1e-12);
});
