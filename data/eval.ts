/**
 * Held-out evaluation: exact-answer questions about the `"eval"` facts (stated in pretraining
 * text, never in SFT or DPO data), tool-call prompts with the expected call, and the graders.
 *
 * The question phrasings are the ones SFT uses for other entities, so a wrong answer means the
 * model did not recall the fact, not that it failed to parse an unseen question form.
 *
 * @module
 */

import { isEvalExpression, randomExpression } from "./arithmetic.ts";
import type { Message, ToolSchema } from "./messages.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";
import { SftGenerator } from "./sft.ts";
import { askFact, type Lang, LANGS, QUESTION_FORMS } from "./templates.ts";
import { calculate, toolSchemas } from "./tools.ts";
import { type Attribute, factsOf, findCity, type World } from "./world.ts";

/** One evaluation question with its exact answer. */
export interface EvalQuestion {
  /** The user message, e.g. `"How old is Karo?"`. */
  question: string;
  /** The exact answer in the question's language, e.g. `"34"` or `"34岁"`. */
  answer: string;
  /** The language of the question and the answer. */
  lang: Lang;
  /** The id of the fact asked about, e.g. `"person/Karo/age"`. */
  fact: string;
  /** The fact's attribute, for per-attribute scores. */
  attribute: Attribute;
}

/** One tool-call evaluation prompt and the call the model should make. */
export interface EvalToolCall {
  /** The conversation so far: an optional system prompt, then the user's request. */
  messages: Message[];
  /** Tools offered with the request. */
  tools: ToolSchema[];
  /** The expected call; grade with {@linkcode gradeToolCall}. */
  expected: { name: string; arguments: Record<string, string> };
}

/**
 * Questions about every `"eval"` fact, in both languages.
 *
 * @param world From {@linkcode generateWorld}.
 * @param options `formsPerLang`: phrasings asked per fact and language (default 2, at most 3).
 * @returns 27 facts x 2 languages x 2 phrasings = 108 questions at scale 1.
 * @example
 * ```ts
 * evalQuestions(world)[0];
 * // { question: "How old is Karo?", answer: "34", lang: "en", fact: "person/Karo/age", attribute: "age" }
 * ```
 */
export function evalQuestions(
  world: World,
  options: { formsPerLang?: number } = {},
): EvalQuestion[] {
  const rng = new Mulberry32(deriveSeed(world.seed, "eval"));
  const forms = Math.min(options.formsPerLang ?? 2, QUESTION_FORMS);
  const out: EvalQuestion[] = [];
  for (const fact of factsOf(world, "eval")) {
    for (const lang of LANGS) {
      const start = rng.int(0, QUESTION_FORMS - 1); // which phrasings vary from fact to fact
      for (let k = 0; k < forms; k++) {
        out.push({
          question: askFact(fact, { lang, form: start + k }),
          answer: fact.value[lang],
          lang,
          fact: fact.id,
          attribute: fact.attribute,
        });
      }
    }
  }
  return out;
}

/**
 * Tool-call prompts: half weather lookups (every city, both languages, in turn), half
 * arithmetic on expressions reserved for evaluation (never in SFT or DPO).
 *
 * @param world From {@linkcode generateWorld}.
 * @param options `count`: default 40 x `world.scale`.
 * @returns Prompts with the expected `{ name, arguments }`.
 * @example
 * ```ts
 * evalToolCalls(world)[0].expected; // { name: "get_weather", arguments: { city: "Verin" } }
 * ```
 */
export function evalToolCalls(world: World, options: { count?: number } = {}): EvalToolCall[] {
  const rng = new Mulberry32(deriveSeed(world.seed, "eval-tools"));
  const g = new SftGenerator(world, rng);
  const count = options.count ?? Math.round(40 * world.scale);
  const cities = rng.shuffle(world.cities.flatMap((c) => LANGS.map((lang) => ({ c, lang }))));
  const seen = new Set<string>();
  const out: EvalToolCall[] = [];
  for (let i = 0; i < count; i++) {
    const lang: Lang = i % 4 < 2 ? "en" : "zh";
    let request;
    if (i % 2 === 0) {
      const { c, lang: cityLang } = cities[(i / 2) % cities.length];
      request = g.weatherCall(cityLang, c);
    } else {
      let expression: string;
      do expression = randomExpression(rng).expression; while (
        !isEvalExpression(expression) || seen.has(expression)
      );
      seen.add(expression);
      request = g.calculatorCall(lang, expression);
    }
    out.push({
      messages: [...g.system(lang), request.user],
      tools: toolSchemas(),
      expected: {
        name: request.call.function.name,
        arguments: JSON.parse(request.call.function.arguments),
      },
    });
  }
  return out;
}

/**
 * Normalizes an answer for exact-match grading: Unicode NFKC, trimmed, lower case, inner
 * whitespace collapsed, a leading English "the " and trailing sentence punctuation dropped.
 *
 * @example
 * ```ts
 * normalizeAnswer("  The Silver Tower. "); // "silver tower"
 * ```
 */
export function normalizeAnswer(text: string): string {
  return text.normalize("NFKC").trim().toLowerCase().replace(/\s+/g, " ")
    .replace(/^the /, "").replace(/[.!?。！？]+$/u, "").trim();
}

/**
 * Whether a model's answer matches the expected one after {@linkcode normalizeAnswer}.
 *
 * @example
 * ```ts
 * isCorrect("Dalmor.", "Dalmor"); // true
 * isCorrect("It is Dalmor", "Dalmor"); // false: answers are graded exactly
 * ```
 */
export function isCorrect(prediction: string, answer: string): boolean {
  return normalizeAnswer(prediction) === normalizeAnswer(answer);
}

/**
 * Whether a model's tool call matches the expected one: same tool and
 * {@linkcode toolArgumentsMatch} on the arguments, with `world` resolving city names.
 *
 * @param world The world the prompt came from.
 * @param call The model's call; `arguments` as the JSON string a model emits, or an object.
 * @param expected From {@linkcode EvalToolCall}.
 * @returns False for unparseable arguments instead of throwing, since models emit those.
 * @example
 * ```ts
 * gradeToolCall(world, { name: "calculator", arguments: '{"expression":"25+17"}' },
 *   { name: "calculator", arguments: { expression: "17 + 25" } }); // true
 * ```
 */
export function gradeToolCall(
  world: World,
  call: { name: string; arguments: string | Record<string, unknown> },
  expected: { name: string; arguments: Record<string, unknown> },
): boolean {
  if (call.name !== expected.name) return false;
  let args: unknown = call.arguments;
  try {
    if (typeof args === "string") args = JSON.parse(args);
  } catch {
    return false;
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) return false;
  return toolArgumentsMatch(
    expected.name,
    args as Record<string, unknown>,
    expected.arguments,
    { world },
  );
}

/**
 * Whether a call's arguments carry the expected values; the one rule evaluation and the GRPO
 * rewards share. `get_weather`: the same city (with `world`, either language's name counts;
 * without, the names after {@linkcode normalizeAnswer}). `calculator`: an expression with the
 * same value and the same numbers (`"25+17"` passes for `"17 + 25"`, a bare `"42"` does not).
 * Any other tool: every expected argument present, numbers (or numeric strings) equal by value,
 * strings equal after {@linkcode normalizeAnswer} (trimmed, case-insensitive), other values
 * equal as JSON. Extra arguments are ignored.
 *
 * @param name The tool's name.
 * @param got The model's arguments, parsed.
 * @param want The expected arguments.
 * @param options `world`, to resolve city names in either language.
 * @example
 * ```ts
 * toolArgumentsMatch("calculator", { expression: "3+4" }, { expression: "3 + 4" }); // true
 * toolArgumentsMatch("get_weather", { city: " verin" }, { city: "Verin" }); // true
 * ```
 */
export function toolArgumentsMatch(
  name: string,
  got: Record<string, unknown>,
  want: Record<string, unknown>,
  options: { world?: World } = {},
): boolean {
  if (name === "get_weather" && typeof want.city === "string") {
    if (typeof got.city !== "string") return false;
    if (!options.world) return normalizeAnswer(got.city) === normalizeAnswer(want.city);
    const found = findCity(options.world, got.city);
    return found !== undefined && found.city === findCity(options.world, want.city)?.city;
  }
  if (name === "calculator" && typeof want.expression === "string") {
    if (typeof got.expression !== "string") return false;
    const numbers = (e: string) => (e.match(/\d+/g) ?? []).sort().join(",");
    try {
      return numbers(got.expression) === numbers(want.expression) &&
        calculate(got.expression) === calculate(want.expression);
    } catch {
      return false;
    }
  }
  return Object.entries(want).every(([k, w]) => k in got && sameValue(got[k], w));
}

/** One argument value against the expected one: numbers by value, strings normalized. */
function sameValue(got: unknown, want: unknown): boolean {
  const num = (v: unknown) =>
    typeof v === "number"
      ? v
      : typeof v === "string" && /^\s*-?\d+(\.\d+)?\s*$/.test(v)
      ? Number(v)
      : null;
  const a = num(got), b = num(want);
  if (a !== null && b !== null) return a === b;
  if (typeof got === "string" && typeof want === "string") {
    return normalizeAnswer(got) === normalizeAnswer(want);
  }
  return JSON.stringify(got) === JSON.stringify(want);
}
