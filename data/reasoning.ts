/**
 * Verifiable prompts for reinforcement learning with rule-based rewards (GRPO, as DeepSeek-R1
 * trains): multi-step arithmetic word problems in English and Chinese with integer answers, and
 * tool requests whose expected call is known; plus SFT conversations that show the reasoning
 * format (`reasoning_content` "7 + 5 = 12. 12 - 3 = 9.", content "The answer is 9.") on train
 * problems, so RL starts from a policy that sometimes succeeds.
 *
 * Word problems come from templates (2-3 steps, small numbers) filled with people, cities and
 * items of the demo world. The held-out split shares no template with the train split, and its
 * number tuples are the ones {@linkcode isHeldOutNumbers} reserves, which train problems never
 * use: a held-out problem is new in its wording and in its numbers.
 *
 * Only people and cities with no `"eval"` fact appear, so no problem ever sits beside a
 * held-out fact's value (a person's age next to a number).
 *
 * @module
 */

import { isEvalExpression, randomExpression } from "./arithmetic.ts";
import type { Bilingual } from "./lexicon.ts";
import { PRODUCT_KINDS } from "./lexicon.ts";
import type { Message, SftRecord, ToolSchema } from "./messages.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";
import { SftGenerator } from "./sft.ts";
import { type Lang, SYSTEM_PROMPTS } from "./templates.ts";
import { toolSchemas } from "./tools.ts";
import { factsOf, type World } from "./world.ts";

/** Which split a word-problem template belongs to. */
export type ProblemSplit = "train" | "heldOut";

/** A countable item: English singular and plural, Chinese noun and its measure word. */
interface Item {
  en: string;
  plural: string;
  zh: string;
  cl: string;
}

/** Small things people have, buy and share. */
const THINGS: readonly Item[] = [
  { en: "apple", plural: "apples", zh: "苹果", cl: "个" },
  { en: "pear", plural: "pears", zh: "梨", cl: "个" },
  { en: "egg", plural: "eggs", zh: "鸡蛋", cl: "个" },
  { en: "book", plural: "books", zh: "书", cl: "本" },
  { en: "pencil", plural: "pencils", zh: "铅笔", cl: "支" },
  { en: "cup", plural: "cups", zh: "杯子", cl: "个" },
];

/** Measure words of the demo's product kinds (`data/lexicon.ts`), keyed by the English kind. */
const PRODUCT_MEASURE: Readonly<Record<string, string>> = {
  lamp: "盏",
  kettle: "个",
  bicycle: "辆",
  radio: "台",
  umbrella: "把",
  backpack: "个",
  teapot: "个",
  clock: "个",
  camera: "台",
  guitar: "把",
  scarf: "条",
  chair: "把",
};

/** The product kinds as items (what shops sell). */
const PRODUCTS: readonly Item[] = PRODUCT_KINDS.map((k) => ({
  en: k.en,
  plural: k.en === "scarf" ? "scarves" : `${k.en}s`,
  zh: k.zh,
  cl: PRODUCT_MEASURE[k.en] ?? "个",
}));

/** What a template is filled with besides its numbers. */
interface Slots {
  /** A person's name. */
  n: Bilingual;
  /** Another person's name. */
  m: Bilingual;
  /** A city's name. */
  city: Bilingual;
  /** The item counted. */
  item: Item;
}

/** One arithmetic step `a op b = c`. */
type Step = [number, "+" | "-" | "*" | "/", number];

/** A word-problem template: how to draw its numbers, solve them and state the problem. */
interface ProblemTemplate {
  /** Stable id, e.g. `"buy_give"`. */
  id: string;
  /** Which split uses it. */
  split: ProblemSplit;
  /** Whether the item is a product (a shop's goods) rather than a small thing. */
  products?: boolean;
  /** Draws the numbers (every intermediate and final value a non-negative integer). */
  draw(rng: Mulberry32): number[];
  /** The steps in order; each step's left operand may be the previous result (`NaN` = it). */
  steps(x: number[]): Step[];
  /** The problem text per language. */
  text: Record<Lang, (x: number[], s: Slots) => string>;
}

const PREV = Number.NaN;

/** The templates; `split` says which of them the held-out problems use. */
const TEMPLATES: readonly ProblemTemplate[] = [
  {
    id: "buy_give",
    split: "train",
    draw: (r) => {
      const a = r.int(3, 15), b = r.int(2, 12);
      return [a, b, r.int(1, a + b - 1)];
    },
    steps: ([a, b, c]) => [[a, "+", b], [PREV, "-", c]],
    text: {
      en: ([a, b, c], { n, item }) =>
        `${n.en} has ${a} ${item.plural}, buys ${b} more and gives ${c} away. How many ` +
        `${item.plural} does ${n.en} have now?`,
      zh: ([a, b, c], { n, item }) =>
        `${n.zh}有 ${a} ${item.cl}${item.zh}，又买了 ${b} ${item.cl}，送出 ${c} ${item.cl}。` +
        `${n.zh}现在有几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "boxes_extra",
    split: "train",
    draw: (r) => [r.int(2, 6), r.int(2, 9), r.int(1, 9)],
    steps: ([a, b, c]) => [[a, "*", b], [PREV, "+", c]],
    text: {
      en: ([a, b, c], { n, item }) =>
        `${n.en} fills ${a} boxes with ${b} ${item.plural} each and has ${c} more ` +
        `${item.plural} on the table. How many ${item.plural} does ${n.en} have in all?`,
      zh: ([a, b, c], { n, item }) =>
        `${n.zh}装了 ${a} 个盒子，每个盒子里有 ${b} ${item.cl}${item.zh}，桌上还有 ${c} ` +
        `${item.cl}。${n.zh}总共有几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "shop_sells",
    split: "train",
    products: true,
    draw: (r) => {
      const a = r.int(10, 30), b = r.int(1, a - 1);
      return [a, b, r.int(1, a - b)];
    },
    steps: ([a, b, c]) => [[a, "-", b], [PREV, "-", c]],
    text: {
      en: ([a, b, c], { city, item }) =>
        `A shop in ${city.en} has ${a} ${item.plural}. It sells ${b} in the morning and ${c} ` +
        `in the afternoon. How many ${item.plural} are left?`,
      zh: ([a, b, c], { city, item }) =>
        `${city.zh}的一家商店有 ${a} ${item.cl}${item.zh}。上午卖出 ${b} ${item.cl}，` +
        `下午卖出 ${c} ${item.cl}。还剩几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "days_sold",
    split: "train",
    draw: (r) => {
      const a = r.int(2, 6), b = r.int(2, 7);
      return [a, b, r.int(1, a * b - 1)];
    },
    steps: ([a, b, c]) => [[a, "*", b], [PREV, "-", c]],
    text: {
      en: ([a, b, c], { n, item }) =>
        `${n.en} makes ${a} ${item.plural} a day for ${b} days, then sells ${c} of them. ` +
        `How many ${item.plural} does ${n.en} still have?`,
      zh: ([a, b, c], { n, item }) =>
        `${n.zh}每天做 ${a} ${item.cl}${item.zh}，做了 ${b} 天，然后卖出 ${c} ${item.cl}。` +
        `${n.zh}还有几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "buy_share",
    split: "train",
    draw: (r) => {
      const c = r.int(2, 5), total = c * r.int(2, 9), a = r.int(1, total - 1);
      return [a, total - a, c];
    },
    steps: ([a, b, c]) => [[a, "+", b], [PREV, "/", c]],
    text: {
      en: ([a, b, c], { n, item }) =>
        `${n.en} has ${a} ${item.plural} and buys ${b} more, then shares them equally among ` +
        `${c} friends. How many ${item.plural} does each friend get?`,
      zh: ([a, b, c], { n, item }) =>
        `${n.zh}有 ${a} ${item.cl}${item.zh}，又买了 ${b} ${item.cl}，然后平均分给 ${c} ` +
        `个朋友。每个朋友分到几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "gift_buy_give",
    split: "train",
    draw: (r) => {
      const a = r.int(2, 12), b = r.int(1, 9), c = r.int(1, 9);
      return [a, b, c, r.int(1, a + b + c - 1)];
    },
    steps: ([a, b, c, d]) => [[a, "+", b], [PREV, "+", c], [PREV, "-", d]],
    text: {
      en: ([a, b, c, d], { n, m, item }) =>
        `${n.en} has ${a} ${item.plural}. ${m.en} gives ${n.en} ${b} more, ${n.en} buys ${c} ` +
        `and then gives ${d} to a friend. How many ${item.plural} does ${n.en} have now?`,
      zh: ([a, b, c, d], { n, m, item }) =>
        `${n.zh}有 ${a} ${item.cl}${item.zh}。${m.zh}又给了${n.zh} ${b} ${item.cl}，${n.zh}` +
        `自己买了 ${c} ${item.cl}，然后送给朋友 ${d} ${item.cl}。${n.zh}现在有几${item.cl}` +
        `${item.zh}？`,
    },
  },
  // Held out: other wordings (and other number tuples) than any train problem.
  {
    id: "price_delivery",
    split: "heldOut",
    products: true,
    draw: (r) => [r.int(2, 6), r.int(3, 12), r.int(1, 9)],
    steps: ([a, b, c]) => [[a, "*", b], [PREV, "+", c]],
    text: {
      en: ([a, b, c], { n, item }) =>
        `${n.en} buys ${a} ${item.plural} at ${b} dollars each and pays ${c} dollars for ` +
        `delivery. How many dollars does ${n.en} pay in total?`,
      zh: ([a, b, c], { n, item }) =>
        `${n.zh}买了 ${a} ${item.cl}${item.zh}，每${item.cl} ${b} 元，另付运费 ${c} 元。` +
        `${n.zh}总共付了多少元？`,
    },
  },
  {
    id: "lost_found",
    split: "heldOut",
    draw: (r) => {
      const a = r.int(5, 20), b = r.int(1, a - 1);
      return [a, b, r.int(1, 9)];
    },
    steps: ([a, b, c]) => [[a, "-", b], [PREV, "+", c]],
    text: {
      en: ([a, b, c], { n, city, item }) =>
        `${n.en} had ${a} ${item.plural} but lost ${b} of them on the way to ${city.en}. ` +
        `Later ${n.en} found ${c} ${item.plural}. How many ${item.plural} does ${n.en} have?`,
      zh: ([a, b, c], { n, city, item }) =>
        `${n.zh}原来有 ${a} ${item.cl}${item.zh}，在去${city.zh}的路上丢了 ${b} ${item.cl}，` +
        `后来又找到 ${c} ${item.cl}。${n.zh}现在有几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "shelves",
    split: "heldOut",
    draw: (r) => [r.int(1, 9), r.int(1, 9), r.int(2, 5)],
    steps: ([a, b, c]) => [[a, "+", b], [PREV, "*", c]],
    text: {
      en: ([a, b, c], { item }) =>
        `Each shelf holds ${a} large ${item.plural} and ${b} small ones. How many ` +
        `${item.plural} are on ${c} shelves?`,
      zh: ([a, b, c], { item }) =>
        `每个架子上有 ${a} ${item.cl}大${item.zh}和 ${b} ${item.cl}小${item.zh}。${c} ` +
        `个架子上总共有几${item.cl}${item.zh}？`,
    },
  },
  {
    id: "trip_bags",
    split: "heldOut",
    draw: (r) => {
      const a = r.int(2, 5), b = r.int(2, 8), c = r.int(1, a * b - 2);
      return [a, b, c, r.int(1, a * b - c - 1)];
    },
    steps: ([a, b, c, d]) => [[a, "*", b], [PREV, "-", c], [PREV, "-", d]],
    text: {
      en: ([a, b, c, d], { n, m, city, item }) =>
        `For a trip to ${city.en}, ${n.en} packs ${a} bags with ${b} ${item.plural} in each, ` +
        `gives ${c} to ${m.en} and leaves ${d} at home. How many ${item.plural} does ${n.en} ` +
        `take along?`,
      zh: ([a, b, c, d], { n, m, city, item }) =>
        `${n.zh}去${city.zh}旅行，装了 ${a} 袋${item.zh}，每袋 ${b} ${item.cl}，给了${m.zh} ` +
        `${c} ${item.cl}，又留了 ${d} ${item.cl}在家。${n.zh}带走了几${item.cl}${item.zh}？`,
    },
  },
];

/**
 * The ids of the word-problem templates of each split; no id is in both.
 *
 * @example
 * ```ts
 * PROBLEM_TEMPLATES.heldOut; // ["price_delivery", "lost_found", "shelves", "trip_bags"]
 * ```
 */
export const PROBLEM_TEMPLATES: Readonly<Record<ProblemSplit, readonly string[]>> = {
  train: TEMPLATES.filter((t) => t.split === "train").map((t) => t.id),
  heldOut: TEMPLATES.filter((t) => t.split === "heldOut").map((t) => t.id),
};

/** One arithmetic word problem with its worked solution. */
export interface WordProblem {
  /** The problem text, ending with its question. */
  question: string;
  /** The steps, e.g. `"7 + 5 = 12. 12 - 3 = 9."`. */
  reasoning: string;
  /** The integer answer. */
  answer: number;
  /** The language of the text. */
  lang: Lang;
  /** The template's id (see {@linkcode PROBLEM_TEMPLATES}). */
  template: string;
  /** The numbers the template was filled with, in order. */
  numbers: number[];
}

/**
 * Whether a tuple of problem numbers is reserved for held-out problems (about 1 in 4, by a
 * hash of the tuple); train problems never use such a tuple.
 *
 * @example
 * ```ts
 * isHeldOutNumbers([7, 5, 3]); // the same answer on every run
 * ```
 */
export function isHeldOutNumbers(numbers: readonly number[]): boolean {
  return deriveSeed(0, `problem:${numbers.join(",")}`) % 4 === 0;
}

/**
 * Solves steps: the written work (`"7 + 5 = 12. 12 - 3 = 9."`) and the final value.
 *
 * @example
 * ```ts
 * solveSteps([[7, "+", 5], [NaN, "-", 3]]); // { reasoning: "7 + 5 = 12. 12 - 3 = 9.", answer: 9 }
 * ```
 */
function solveSteps(steps: readonly Step[]): { reasoning: string; answer: number } {
  let prev = 0;
  const lines: string[] = [];
  for (const [l, op, r] of steps) {
    const a = Number.isNaN(l) ? prev : l;
    const v = op === "+" ? a + r : op === "-" ? a - r : op === "*" ? a * r : a / r;
    lines.push(`${a} ${op} ${r} = ${v}.`);
    prev = v;
  }
  return { reasoning: lines.join(" "), answer: prev };
}

/** The people and cities a problem may name: those without any `"eval"` fact. */
function problemEntities(world: World): { people: Bilingual[]; cities: Bilingual[] } {
  const held = new Set(factsOf(world, "eval").map((f) => f.entity.en));
  const people = world.people.map((p) => p.name).filter((n) => !held.has(n.en));
  const cities = world.cities.map((c) => c.name).filter((n) => !held.has(n.en));
  return {
    people: people.length >= 2 ? people : world.people.map((p) => p.name),
    cities: cities.length >= 1 ? cities : world.cities.map((c) => c.name),
  };
}

/**
 * Draws word problems of one split: templates in turn, languages alternating, numbers redrawn
 * until the tuple belongs to the split, each question text at most once.
 *
 * @param world From {@linkcode generateWorld}: the names and cities problems use.
 * @param options `split`, `count`, and `seed` (default derived from `world.seed` and the split).
 * @returns `count` problems (fewer only if the templates run out of distinct questions).
 * @example
 * ```ts
 * wordProblems(world, { split: "train", count: 1 })[0];
 * // { question: "Lin has 7 apples, buys 5 more and gives 3 away. ...", reasoning: "7 + 5 = 12. 12 - 3 = 9.", answer: 9, ... }
 * ```
 */
export function wordProblems(
  world: World,
  options: { split: ProblemSplit; count: number; seed?: number },
): WordProblem[] {
  const rng = new Mulberry32(options.seed ?? deriveSeed(world.seed, `problems-${options.split}`));
  const templates = TEMPLATES.filter((t) => t.split === options.split);
  const { people, cities } = problemEntities(world);
  const heldOut = options.split === "heldOut";
  const seen = new Set<string>();
  const out: WordProblem[] = [];
  for (let i = 0, misses = 0; out.length < options.count && misses < 1000; i++) {
    const t = templates[i % templates.length];
    const lang: Lang = Math.floor(i / templates.length) % 2 === 0 ? "en" : "zh";
    let x: number[];
    do x = t.draw(rng); while (isHeldOutNumbers(x) !== heldOut);
    const n = rng.pick(people);
    let m = rng.pick(people);
    while (m.en === n.en) m = rng.pick(people);
    const slots = { n, m, city: rng.pick(cities), item: rng.pick(t.products ? PRODUCTS : THINGS) };
    const question = t.text[lang](x, slots);
    if (seen.has(question)) {
      misses++;
      continue;
    }
    seen.add(question);
    out.push({ question, ...solveSteps(t.steps(x)), lang, template: t.id, numbers: x });
  }
  return out;
}

/**
 * The answer sentence of a reasoning reply: `"The answer is 9."` / `"答案是 9。"`.
 *
 * @example
 * ```ts
 * answerSentence(9, "zh"); // "答案是 9。"
 * ```
 */
export function answerSentence(answer: number | string, lang: Lang): string {
  return lang === "en" ? `The answer is ${answer}.` : `答案是 ${answer}。`;
}

/** Which verifier grades a GRPO prompt. */
export type GrpoPromptKind = "arithmetic" | "tool";

/**
 * One GRPO prompt, one JSONL line: the conversation to reply to and what the reply is graded
 * against (`answer` for arithmetic, `tool_call` with the offered `tools` for tool requests).
 */
export interface GrpoPromptRecord {
  /** An optional system prompt, then the user's turn. */
  messages: Message[];
  /** The exact answer as a decimal integer string, e.g. `"17"`; arithmetic prompts. */
  answer?: string;
  /** Tools offered with the request; tool prompts. */
  tools?: ToolSchema[];
  /** The call the reply must make; tool prompts. */
  tool_call?: { name: string; arguments: Record<string, string> };
  /** The prompt's language. */
  lang: Lang;
  /** Which reward verifies it. */
  kind: GrpoPromptKind;
}

/** Options of {@linkcode grpoPrompts}. */
export interface GrpoPromptOptions {
  /** Train arithmetic prompts; default 360 x `world.scale`. */
  trainArithmetic?: number;
  /** Train tool prompts; default 80 x `world.scale`. */
  trainTools?: number;
  /** Held-out arithmetic prompts; default 100 x `world.scale`. */
  heldOutArithmetic?: number;
  /** Held-out tool prompts; default 10 x `world.scale`. */
  heldOutTools?: number;
}

/** A system prompt one time in three (from the `rng`), none otherwise. */
function maybeSystem(rng: Mulberry32, lang: Lang): Message[] {
  return rng.chance(1 / 3) ? [{ role: "system", content: rng.pick(SYSTEM_PROMPTS[lang]) }] : [];
}

/** The arithmetic prompt record of a problem. */
function arithmeticRecord(p: WordProblem, system: Message[]): GrpoPromptRecord {
  return {
    messages: [...system, { role: "user", content: p.question }],
    answer: String(p.answer),
    lang: p.lang,
    kind: "arithmetic",
  };
}

/** Tool prompts: weather and calculator requests in turn, languages in pairs. */
function toolRecords(world: World, count: number, heldOut: boolean): GrpoPromptRecord[] {
  const rng = new Mulberry32(deriveSeed(world.seed, heldOut ? "grpo-tools-heldout" : "grpo-tools"));
  const g = new SftGenerator(world, rng);
  // Train weather requests go to cities whose weather SFT may reveal, as SFT's do.
  const cities = heldOut ? world.cities : g.weatherCities;
  const out: GrpoPromptRecord[] = [];
  for (let i = 0; i < count; i++) {
    const lang: Lang = i % 4 < 2 ? "en" : "zh";
    let request;
    if (i % 2 === 0) {
      request = g.weatherCall(lang, rng.pick(cities));
    } else {
      let expression: string;
      do expression = randomExpression(rng).expression; while (
        isEvalExpression(expression) !== heldOut
      );
      request = g.calculatorCall(lang, expression);
    }
    out.push({
      messages: [...g.system(lang), request.user],
      tools: toolSchemas(),
      tool_call: {
        name: request.call.function.name,
        arguments: JSON.parse(request.call.function.arguments),
      },
      lang,
      kind: "tool",
    });
  }
  return out;
}

/**
 * GRPO prompts: train (arithmetic word problems and tool requests) and held out (word problems
 * of other templates and numbers, and a few tool requests on held-out expressions).
 *
 * @param world From {@linkcode generateWorld}.
 * @param options Counts (see {@linkcode GrpoPromptOptions}).
 * @returns 360 + 80 train and 100 + 10 held-out records at scale 1; deterministic in the seed.
 * @example
 * ```ts
 * grpoPrompts(world).heldOut[0];
 * // { messages: [{ role: "user", content: "Lin buys 3 lamps at 8 dollars each ..." }], answer: "29", lang: "en", kind: "arithmetic" }
 * ```
 */
export function grpoPrompts(
  world: World,
  options: GrpoPromptOptions = {},
): { train: GrpoPromptRecord[]; heldOut: GrpoPromptRecord[] } {
  const s = world.scale;
  const rng = new Mulberry32(deriveSeed(world.seed, "grpo"));
  const build = (split: ProblemSplit, arithmetic: number, tools: number) => {
    const problems = wordProblems(world, { split, count: arithmetic });
    const records = problems.map((p) => arithmeticRecord(p, maybeSystem(rng, p.lang)));
    const calls = toolRecords(world, tools, split === "heldOut");
    // Tool prompts spread evenly among the arithmetic ones.
    const out: GrpoPromptRecord[] = [];
    let k = 0;
    records.forEach((r, i) => {
      out.push(r);
      while (k < calls.length && (k + 1) * records.length <= (i + 1) * calls.length) {
        out.push(calls[k++]);
      }
    });
    return [...out, ...calls.slice(k)];
  };
  return {
    train: build(
      "train",
      options.trainArithmetic ?? Math.round(360 * s),
      options.trainTools ?? Math.round(80 * s),
    ),
    heldOut: build(
      "heldOut",
      options.heldOutArithmetic ?? Math.round(100 * s),
      options.heldOutTools ?? Math.round(10 * s),
    ),
  };
}

/**
 * SFT conversations that show the reasoning format on train word problems: the problem as the
 * user's turn, and an assistant turn whose `reasoning_content` holds the steps and whose
 * `content` is the answer sentence. The problems are the first `count` train problems of
 * {@linkcode grpoPrompts} (the same seed), so GRPO trains on these and on as many unseen ones.
 *
 * @param world From {@linkcode generateWorld}.
 * @param options `count`: default 200 x `world.scale`.
 * @returns The records; never a held-out problem.
 * @example
 * ```ts
 * reasoningConversations(world, { count: 1 })[0].conversations.at(-1);
 * // { role: "assistant", reasoning_content: "7 + 5 = 12. 12 - 3 = 9.", content: "The answer is 9." }
 * ```
 */
export function reasoningConversations(
  world: World,
  options: { count?: number } = {},
): SftRecord[] {
  const count = options.count ?? Math.round(200 * world.scale);
  const rng = new Mulberry32(deriveSeed(world.seed, "sft-reasoning"));
  return wordProblems(world, { split: "train", count }).map((p) => ({
    conversations: [
      ...maybeSystem(rng, p.lang),
      { role: "user", content: p.question },
      {
        role: "assistant",
        reasoning_content: p.reasoning,
        content: answerSentence(p.answer, p.lang),
      },
    ],
  }));
}
