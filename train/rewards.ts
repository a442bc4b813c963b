/**
 * Rule-based rewards for GRPO (DeepSeek-R1's recipe: verifiable answers and a format check, no
 * learned reward model), plus DAPO's overlong shaping. Each reward is a small pure function of
 * the decoded reply (special tokens kept: `<think>`, `</think>`, `<tool_call>`, a trailing
 * `<|im_end|>`), the prompt's target and the reply's length; `null` means "not applicable to
 * this prompt" (an answer reward on a tool prompt), which a trainer leaves out of the sum.
 *
 * Answers are compared BY VALUE: the final answer is the last number of the reply's answer part
 * (after `</think>`), written in Arabic digits (`1,234`, `９`, `9.0`, `-3`), Chinese numerals
 * (`十七`, `一百零五`, `两千三百`, `负三`, `300万`) or English words (`seventeen`,
 * `one hundred and five`, `minus three`). Tool calls are read by `tokenizer/tool_calls.ts` and
 * graded by `data/`'s {@linkcode toolArgumentsMatch}, the rule evaluation uses.
 *
 * @module
 */
import { isCorrect, toolArgumentsMatch, type World } from "../data/mod.ts";
import {
  EOS_TOKEN,
  IM_END_TOKEN,
  parseFirstToolCall,
  parseToolCallBody,
  THINK_END_TOKEN,
  THINK_START_TOKEN,
  TOOL_CALL_END_TOKEN,
  TOOL_CALL_START_TOKEN,
} from "../tokenizer/mod.ts";

/** What a reply is graded against; either part may be missing. */
export interface RewardTarget {
  /** The expected final answer (a number as text, e.g. `"17"`; other text is matched exactly). */
  answer?: string;
  /** The call the reply must make. */
  toolCall?: { name: string; arguments: Record<string, unknown> };
  /** The problem's text (the user's turn): the numbers a worked step may start from. */
  question?: string;
}

/** The reply's length: generated tokens, the generation budget, and whether it was cut. */
export interface RewardInfo {
  /** Tokens generated (the stop token included when one came). */
  tokens: number;
  /** The most tokens the reply could have. */
  maxTokens: number;
  /** Whether generation stopped at `maxTokens` rather than at a stop token. */
  truncated: boolean;
}

/** A reward: a number, or null when it does not apply to the prompt. */
export type RewardFn = (reply: string, target: RewardTarget, info: RewardInfo) => number | null;

// ---------------------------------------------------------------------------------------------
// Numbers

const CN_DIGITS: Readonly<Record<string, number>> = {
  零: 0,
  〇: 0,
  一: 1,
  二: 2,
  两: 2,
  三: 3,
  四: 4,
  五: 5,
  六: 6,
  七: 7,
  八: 8,
  九: 9,
};
const CN_UNITS: Readonly<Record<string, number>> = { 十: 10, 百: 100, 千: 1000 };

/** "一" in these words is not the number one (一共 "in all", 一起 "together", ...). */
const CN_NOT_ONE = new Set([..."共起下样些直定般切边会旦同致点"]);

const EN_ONES: Readonly<Record<string, number>> = {
  zero: 0,
  one: 1,
  two: 2,
  three: 3,
  four: 4,
  five: 5,
  six: 6,
  seven: 7,
  eight: 8,
  nine: 9,
  ten: 10,
  eleven: 11,
  twelve: 12,
  thirteen: 13,
  fourteen: 14,
  fifteen: 15,
  sixteen: 16,
  seventeen: 17,
  eighteen: 18,
  nineteen: 19,
};
const EN_TENS: Readonly<Record<string, number>> = {
  twenty: 20,
  thirty: 30,
  forty: 40,
  fifty: 50,
  sixty: 60,
  seventy: 70,
  eighty: 80,
  ninety: 90,
};
const EN_SCALES: Readonly<Record<string, number>> = {
  hundred: 100,
  thousand: 1e3,
  million: 1e6,
  billion: 1e9,
};

/** A number found in a text: where it is and its value. */
interface Found {
  start: number;
  end: number;
  value: number;
}

/** Fullwidth digits, point and minus to ASCII, one code unit each (positions are kept). */
function asciiDigits(text: string): string {
  return text.replace(/[\uFF10-\uFF19]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0))
    .replace(/\uFF0E/g, ".").replace(/[\uFF0D\u2212]/g, "-");
}

/** Numbers in Arabic digits: `1,234`, `9.0`, `-3`, `300万`. */
function arabicNumbers(text: string): Found[] {
  const out: Found[] = [];
  // A "-" is a sign only where it cannot be subtraction (not after a digit or a bracket).
  const re = /(?<![\w)\].])(?:(?<![\d)\]]\s*)(-)\s*)?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?([万亿])?/g;
  for (const m of text.matchAll(re)) {
    let value = Number(m[2].replaceAll(",", "") + (m[3] ?? ""));
    if (m[4]) value *= m[4] === "万" ? 1e4 : 1e8;
    out.push({ start: m.index!, end: m.index! + m[0].length, value: m[1] ? -value : value });
  }
  return out;
}

/** The value of a run of Chinese numeral characters (`一百零五`, `两千三百`, `二〇二六`). */
function chineseInt(s: string): number {
  if ([...s].every((c) => c in CN_DIGITS) && s.length > 1) {
    return Number([...s].map((c) => CN_DIGITS[c]).join(""));
  }
  let total = 0, section = 0, digit = 0;
  for (const c of s) {
    if (c in CN_DIGITS) digit = CN_DIGITS[c];
    else if (c in CN_UNITS) {
      section += (digit || 1) * CN_UNITS[c];
      digit = 0;
    } else if (c === "万") {
      total += (section + digit) * 1e4;
      section = digit = 0;
    } else if (c === "亿") {
      total = (total + section + digit) * 1e8;
      section = digit = 0;
    }
  }
  return total + section + digit;
}

/** Numbers in Chinese numerals: `九`, `十七`, `一百零五`, `负三`, `三点五`. */
function chineseNumbers(text: string): Found[] {
  const out: Found[] = [];
  const re = /(负)?([零〇一二两三四五六七八九十百千万亿]+)(?:点([零〇一二三四五六七八九]+))?/g;
  for (const m of text.matchAll(re)) {
    const end = m.index! + m[0].length;
    if (!/[零〇一二两三四五六七八九十]/.test(m[2])) continue; // 万, 千万: not a number alone
    if (m[2] === "一" && !m[1] && !m[3] && CN_NOT_ONE.has(text[end] ?? "")) continue;
    let value = chineseInt(m[2]);
    if (m[3]) value += Number(`0.${[...m[3]].map((c) => CN_DIGITS[c]).join("")}`);
    out.push({ start: m.index!, end, value: m[1] ? -value : value });
  }
  return out;
}

/** Numbers in English words: `nine`, `twenty-one`, `one hundred and five`, `minus three`. */
function englishNumbers(text: string): Found[] {
  const out: Found[] = [];
  const words = [...text.matchAll(/[A-Za-z]+/g)].map((m) => ({
    w: m[0].toLowerCase(),
    start: m.index!,
    end: m.index! + m[0].length,
  }));
  const kind = (w: string) =>
    w in EN_ONES ? "one" : w in EN_TENS ? "ten" : w in EN_SCALES ? "scale" : null;
  // Only white space or one hyphen may join the words of one number.
  const joined = (a: number, b: number) => /^(\s+|\s*-\s*)$/.test(text.slice(a, b));
  let i = 0;
  while (i < words.length) {
    if (kind(words[i].w) === null || kind(words[i].w) === "scale") {
      i++;
      continue;
    }
    const negative = i > 0 && /^(minus|negative)$/.test(words[i - 1].w) &&
      joined(words[i - 1].end, words[i].start);
    const start = negative ? words[i - 1].start : words[i].start;
    let total = 0, current = 0, last = "", end = words[i].end;
    let j = i;
    for (; j < words.length; j++) {
      let w = words[j];
      if (j > i) {
        // "and" only inside a number: "one hundred and five".
        if (
          w.w === "and" && last === "scale" && j + 1 < words.length &&
          /^(one|ten)$/.test(kind(words[j + 1].w) ?? "") && joined(words[j - 1].end, w.start) &&
          joined(w.end, words[j + 1].start)
        ) {
          j++;
          w = words[j];
        } else if (!joined(words[j - 1].end, w.start)) break;
      }
      const k = kind(w.w);
      if (k === null) break;
      // A word that cannot continue the number ends it: "three four" is two numbers.
      if (j > i && (k === "one" && last === "one" || k === "ten" && last !== "scale")) break;
      if (k === "one") current += EN_ONES[w.w];
      else if (k === "ten") current += EN_TENS[w.w];
      else if (w.w === "hundred") current = (current || 1) * 100;
      else {
        total += (current || 1) * EN_SCALES[w.w];
        current = 0;
      }
      last = k;
      end = w.end;
    }
    const value = total + current;
    out.push({ start, end, value: negative ? -value : value });
    i = Math.max(j, i + 1);
  }
  return out;
}

/** Every number of a text, in order of where it ends. */
function numbersIn(text: string): Found[] {
  const t = asciiDigits(text);
  return [...arabicNumbers(t), ...chineseNumbers(t), ...englishNumbers(t)]
    .sort((a, b) => a.end - b.end || a.start - b.start);
}

/**
 * The value of a text that is one number and nothing else (white space and a final `.`/`。`
 * aside), in any of the forms the answer reward reads.
 *
 * @returns The value, or null when the text is not exactly one number.
 * @example
 * ```ts
 * numberValue("17"); // 17
 * numberValue("一百零五"); // 105
 * numberValue("one hundred and five"); // 105
 * numberValue("1,234.0"); // 1234
 * numberValue("17 apples"); // null
 * ```
 */
export function numberValue(text: string): number | null {
  const t = text.trim().replace(/[.。!！]+$/u, "").trim();
  const found = numbersIn(t);
  if (found.length === 0) return null;
  const last = found.at(-1)!;
  const whole = found.find((f) => f.start === 0 && f.end === t.length);
  if (whole) return whole.value;
  return found.length === 1 && last.start === 0 && last.end === t.length ? last.value : null;
}

/**
 * The last number of a text (see {@linkcode numberValue} for the forms read).
 *
 * @example
 * ```ts
 * lastNumber("7 + 5 = 12, so the answer is nine."); // 9
 * lastNumber("no numbers"); // null
 * ```
 */
export function lastNumber(text: string): number | null {
  const found = numbersIn(text);
  if (found.length === 0) return null;
  // Of two readings ending at the same place (3 and 300万), the longer one.
  const end = found.at(-1)!.end;
  return found.filter((f) => f.end === end).sort((a, b) => a.start - b.start)[0].value;
}

/**
 * The reply without its end: everything from the first `<|im_end|>` (or `<|eos|>`) on.
 *
 * @example
 * ```ts
 * stripStop("The answer is 9.<|im_end|>"); // "The answer is 9."
 * ```
 */
export function stripStop(reply: string): string {
  let end = reply.length;
  for (const stop of [IM_END_TOKEN, EOS_TOKEN]) {
    const k = reply.indexOf(stop);
    if (k >= 0 && k < end) end = k;
  }
  return reply.slice(0, end);
}

/**
 * The answer part of a reply: what follows the last `</think>`, or the whole reply when it has
 * no think block; empty for a reply whose `<think>` is never closed (it gave no answer).
 *
 * @example
 * ```ts
 * answerPart("<think>\n7 + 5 = 12.\n</think>\n\nThe answer is 12.<|im_end|>"); // "\n\nThe answer is 12."
 * answerPart("<think>\n7 + 5 = 12."); // ""
 * ```
 */
export function answerPart(reply: string): string {
  const text = stripStop(reply);
  const close = text.lastIndexOf(THINK_END_TOKEN);
  if (close >= 0) return text.slice(close + THINK_END_TOKEN.length);
  return text.includes(THINK_START_TOKEN) ? "" : text;
}

/**
 * The final answer's number: the last number of {@linkcode answerPart}.
 *
 * @example
 * ```ts
 * finalAnswer("<think>\n7 + 5 = 12. 12 - 3 = 9.\n</think>\n\n答案是九。<|im_end|>"); // 9
 * ```
 */
export function finalAnswer(reply: string): number | null {
  return lastNumber(answerPart(reply));
}

/** Equal as numbers, up to float rounding. */
function sameNumber(a: number, b: number): boolean {
  return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
}

// ---------------------------------------------------------------------------------------------
// Rewards

/**
 * 1 when the reply's final answer ({@linkcode finalAnswer}) equals `target.answer` by value,
 * else 0; null without `target.answer`. A target that is not a number (`"Dalmor"`) is matched
 * against the whole answer part after normalization (`isCorrect` of `data/`).
 *
 * @example
 * ```ts
 * answerReward("<think>\n7 + 5 = 12.\n</think>\n\nThe answer is twelve.", { answer: "12" }, info); // 1
 * answerReward("The answer is 13.", { answer: "12" }, info); // 0
 * answerReward("ok", {}, info); // null
 * ```
 */
export function answerReward(
  reply: string,
  target: RewardTarget,
  _info?: RewardInfo,
): number | null {
  if (target.answer === undefined) return null;
  const want = numberValue(String(target.answer));
  if (want === null) return isCorrect(answerPart(reply), String(target.answer)) ? 1 : 0;
  const got = finalAnswer(reply);
  return got !== null && sameNumber(got, want) ? 1 : 0;
}

/** `a op b = c` in a reasoning text (`×`, `÷`, `x` also read as operators). */
const EQUATION = /(-?\d+(?:\.\d+)?)\s*([-+*/×÷x])\s*(-?\d+(?:\.\d+)?)\s*=\s*(-?\d+(?:\.\d+)?)/g;

/** The operators {@linkcode EQUATION} reads. */
const STEP_OPS: Readonly<Record<string, (a: number, b: number) => number>> = {
  "+": (a, b) => a + b,
  "-": (a, b) => a - b,
  "*": (a, b) => a * b,
  "×": (a, b) => a * b,
  "x": (a, b) => a * b,
  "/": (a, b) => a / b,
  "÷": (a, b) => a / b,
};

/**
 * Partial credit for the work, not only the result: the share of the equations `a op b = c` in
 * the reply's think block that are right AND start from numbers of the problem
 * (`target.question`) or from results of earlier right steps, so a step copied from nowhere
 * (`1 + 1 = 2.`) earns nothing. 0 for a reply with no equation in a think block; null without
 * `target.answer` or `target.question` (not a word problem).
 *
 * @example
 * ```ts
 * const target = { answer: "9", question: "Lin has 7 apples, buys 5 more and gives 3 away. ..." };
 * stepsReward("<think>\n7 + 5 = 12. 12 - 3 = 9.\n</think>\n\nThe answer is 9.", target); // 1
 * stepsReward("<think>\n7 + 5 = 13. 13 - 3 = 10.\n</think>\n\nThe answer is 10.", target); // 0
 * stepsReward("<think>\n7 + 5 = 12. 12 - 2 = 10.\n</think>\n\nThe answer is 10.", target); // 0.5
 * ```
 */
export function stepsReward(
  reply: string,
  target: RewardTarget,
  _info?: RewardInfo,
): number | null {
  if (target.answer === undefined || target.question === undefined) return null;
  const text = stripStop(reply);
  const open = text.indexOf(THINK_START_TOKEN), close = text.indexOf(THINK_END_TOKEN);
  if (open < 0 || close < open) return 0;
  const known = new Set(numbersIn(target.question).map((f) => f.value));
  let steps = 0, right = 0;
  for (const m of asciiDigits(text.slice(open, close)).matchAll(EQUATION)) {
    const [a, b, c] = [Number(m[1]), Number(m[3]), Number(m[4])];
    steps++;
    if (known.has(a) && known.has(b) && sameNumber(c, STEP_OPS[m[2]](a, b))) {
      right++;
      known.add(c);
    }
  }
  return steps === 0 ? 0 : right / steps;
}

/**
 * A reward for tool calls against a world: like {@linkcode toolCallReward}, but a city named in
 * either of the world's languages counts, as evaluation grades it.
 *
 * @param options `world`: resolves city names (without it, names are compared normalized).
 * @returns The reward function.
 * @example
 * ```ts
 * const reward = toolCallRewardFor({ world });
 * ```
 */
export function toolCallRewardFor(options: { world?: World } = {}): RewardFn {
  return (reply, target) => {
    if (!target.toolCall) return null;
    const call = parseFirstToolCall(answerPart(reply), { strict: true });
    if (call === null || call.name !== target.toolCall.name) return 0;
    const args = JSON.parse(call.arguments) as Record<string, unknown>;
    return toolArgumentsMatch(call.name, args, target.toolCall.arguments, options) ? 1 : 0;
  };
}

/**
 * 1 when the reply's first tool call (after any think block, read strictly by
 * `parseFirstToolCall`) names the expected function and carries the expected argument values
 * (`toolArgumentsMatch` of `data/`: numbers by value, strings trimmed and case-insensitive, a
 * calculator expression by its numbers and value), else 0; null without `target.toolCall`.
 *
 * @example
 * ```ts
 * const target = { toolCall: { name: "calculator", arguments: { expression: "3 + 4" } } };
 * toolCallReward('<tool_call>{"name": "calculator", "arguments": {"expression": "3+4"}}</tool_call>', target, info); // 1
 * ```
 */
export const toolCallReward: RewardFn = toolCallRewardFor();

/**
 * 1 when the reply is `<think>` + non-empty reasoning + `</think>` + a non-empty answer part
 * (text, or well-formed `<tool_call>` blocks), with nothing but white space before `<think>`,
 * exactly one think block, and not truncated; else 0. Always applicable.
 *
 * @example
 * ```ts
 * formatReward("<think>\n7 + 5 = 12.\n</think>\n\nThe answer is 12.<|im_end|>", {}, info); // 1
 * formatReward("The answer is 12.", {}, info); // 0
 * ```
 */
export function formatReward(reply: string, _target: RewardTarget, info: RewardInfo): number {
  if (info.truncated) return 0;
  const text = stripStop(reply).trimStart();
  if (!text.startsWith(THINK_START_TOKEN)) return 0;
  if (text.split(THINK_START_TOKEN).length !== 2 || text.split(THINK_END_TOKEN).length !== 2) {
    return 0;
  }
  const close = text.indexOf(THINK_END_TOKEN);
  if (text.slice(THINK_START_TOKEN.length, close).trim() === "") return 0;
  const answer = text.slice(close + THINK_END_TOKEN.length);
  if (answer.trim() === "") return 0;
  // Every tool-call block of the answer must be closed and parse.
  const parts = answer.split(TOOL_CALL_START_TOKEN);
  for (const part of parts.slice(1)) {
    const k = part.indexOf(TOOL_CALL_END_TOKEN);
    if (k < 0 || parseToolCallBody(part.slice(0, k), { strict: true }) === null) return 0;
  }
  return answer.split(TOOL_CALL_END_TOKEN).length === parts.length ? 1 : 0;
}

/**
 * DAPO's overlong shaping with an explicit cache: 0 up to `maxTokens - cache` tokens, then
 * linear down to -1 at `maxTokens`; -1 for a truncated reply.
 *
 * @param cache The width of the soft zone in tokens (at least 1).
 * @returns The reward function.
 * @example
 * ```ts
 * makeLengthPenalty(16)("", {}, { tokens: 56, maxTokens: 64, truncated: false }); // -0.5
 * ```
 */
export function makeLengthPenalty(cache: number): RewardFn {
  return (_reply, _target, info) => {
    if (info.truncated) return -1;
    const c = Math.max(1, Math.min(cache, info.maxTokens));
    const soft = info.maxTokens - c;
    if (info.tokens <= soft) return 0;
    return Math.max(-1, (soft - info.tokens) / c);
  };
}

/** The share of the budget {@linkcode lengthPenalty} uses as DAPO's soft zone ("cache"). */
export const LENGTH_CACHE_FRACTION = 0.25;

/**
 * DAPO's overlong reward shaping: 0 for replies within `maxTokens - cache` tokens (cache = a
 * quarter of `maxTokens`), linear down to -1 at `maxTokens`, -1 for a truncated reply. Always
 * applicable.
 *
 * @example
 * ```ts
 * lengthPenalty("...", {}, { tokens: 40, maxTokens: 96, truncated: false }); // 0
 * lengthPenalty("...", {}, { tokens: 84, maxTokens: 96, truncated: false }); // -0.5
 * lengthPenalty("...", {}, { tokens: 96, maxTokens: 96, truncated: true }); // -1
 * ```
 */
export function lengthPenalty(reply: string, target: RewardTarget, info: RewardInfo): number {
  return makeLengthPenalty(Math.ceil(info.maxTokens * LENGTH_CACHE_FRACTION))(reply, target, info)!;
}

/** The rewards by the names {@linkcode parseRewardWeights} accepts. */
export type RewardName = "answer" | "steps" | "tool_call" | "format" | "length";

/** Every reward by name. */
export const REWARDS: Readonly<Record<RewardName, RewardFn>> = {
  answer: answerReward,
  steps: stepsReward,
  tool_call: toolCallReward,
  format: formatReward,
  length: lengthPenalty,
};

/**
 * Parses reward weights: `"answer=1,tool_call=1,format=0.2,length=0"` (spaces allowed; an empty
 * spec gives no weights).
 *
 * @returns Reward name -> weight.
 * @throws {Error} naming the bad entry: no `=`, an unknown reward (listing the known ones), a
 *   weight that is not a finite number, or a name given twice.
 * @example
 * ```ts
 * parseRewardWeights("answer=1, format=0.2"); // { answer: 1, format: 0.2 }
 * parseRewardWeights("answr=1"); // throws: unknown reward "answr" in "answr=1"; known: answer, ...
 * ```
 */
export function parseRewardWeights(spec: string): Record<string, number> {
  const out: Record<string, number> = {};
  const known = Object.keys(REWARDS);
  for (const raw of spec.split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    const eq = entry.indexOf("=");
    if (eq < 0) {
      throw new Error(
        `reward weights: ${JSON.stringify(entry)} has no "=weight" (expected name=weight, ` +
          `e.g. "answer=1,format=0.2")`,
      );
    }
    const name = entry.slice(0, eq).trim(), value = entry.slice(eq + 1).trim();
    if (!known.includes(name)) {
      throw new Error(
        `reward weights: unknown reward ${JSON.stringify(name)} in ${JSON.stringify(entry)}; ` +
          `known: ${known.join(", ")}`,
      );
    }
    const w = value === "" ? NaN : Number(value);
    if (!Number.isFinite(w)) {
      throw new Error(
        `reward weights: the weight of ${JSON.stringify(entry)} must be a finite number, got ` +
          JSON.stringify(value),
      );
    }
    if (name in out) throw new Error(`reward weights: ${JSON.stringify(name)} is given twice`);
    out[name] = w;
  }
  return out;
}

/**
 * The weighted sum of the rewards named in `weights` (those that return null are left out),
 * and each reward's own value.
 *
 * @example
 * ```ts
 * scoreReply(reply, { answer: "9" }, info, { answer: 1, format: 0.2 });
 * // { total: 1.2, parts: { answer: 1, format: 1 } }
 * ```
 */
export function scoreReply(
  reply: string,
  target: RewardTarget,
  info: RewardInfo,
  weights: Readonly<Record<string, number>>,
  rewards: Readonly<Record<string, RewardFn>> = REWARDS,
): { total: number; parts: Record<string, number | null> } {
  let total = 0;
  const parts: Record<string, number | null> = {};
  for (const [name, w] of Object.entries(weights)) {
    const fn = rewards[name];
    if (!fn) throw new Error(`unknown reward ${JSON.stringify(name)}`);
    const r = fn(reply, target, info);
    parts[name] = r;
    if (r !== null) total += w * r;
  }
  return { total, parts };
}
