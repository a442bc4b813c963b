/**
 * Random integer arithmetic for pretraining lines ("17 + 25 = 42") and calculator prompts.
 *
 * Expressions are split by a hash of their text: about one in eight is reserved for evaluation
 * ({@linkcode isEvalExpression}), so a tool-call evaluation prompt never repeats an SFT one.
 *
 * @module
 */

import { deriveSeed, type Mulberry32 } from "../random/rng.ts";
import { calculate } from "./tools.ts";

/**
 * A random expression with a non-negative integer value: one operation (`+ - * /`, division
 * exact) or, one time in four, two with parentheses or precedence.
 *
 * @param rng The stream to draw from.
 * @returns The expression and its value.
 * @example
 * ```ts
 * randomExpression(new Mulberry32(1)); // e.g. { expression: "17 + 25", value: 42 }
 * ```
 */
export function randomExpression(rng: Mulberry32): { expression: string; value: number } {
  const simple = (): string => {
    switch (rng.int(0, 3)) {
      case 0:
        return `${rng.int(1, 99)} + ${rng.int(1, 99)}`;
      case 1: {
        const a = rng.int(2, 99);
        return `${a} - ${rng.int(1, a)}`;
      }
      case 2:
        return `${rng.int(2, 19)} * ${rng.int(2, 19)}`;
      default: {
        const b = rng.int(2, 12);
        return `${b * rng.int(1, 12)} / ${b}`;
      }
    }
  };
  let expression = simple();
  if (rng.chance(0.25)) {
    const c = rng.int(2, 9);
    expression = rng.chance(0.5) ? `(${expression}) * ${c}` : `${c} + ${expression}`;
  }
  return { expression, value: calculate(expression) };
}

/**
 * Whether an expression is reserved for evaluation (about 1 in 8, by a hash of its text).
 *
 * @example
 * ```ts
 * isEvalExpression("17 + 25"); // the same answer on every run
 * ```
 */
export function isEvalExpression(expression: string): boolean {
  return deriveSeed(0, expression.replace(/\s+/g, "")) % 8 === 0;
}

/** Chinese words for the four operators, for arithmetic written out in Chinese. */
const ZH_OPS: Record<string, string> = { "+": "加", "-": "减", "*": "乘以", "/": "除以" };

/**
 * One arithmetic line: `"17 + 25 = 42"`, or in Chinese words for a simple Chinese line.
 *
 * @example
 * ```ts
 * arithmeticLine("17 + 25", { value: 42, lang: "zh" }); // "17加25等于42。"
 * ```
 */
export function arithmeticLine(
  expression: string,
  options: { value: number; lang: "en" | "zh" },
): string {
  const m = /^(\d+) ([-+*/]) (\d+)$/.exec(expression);
  if (options.lang === "zh" && m) return `${m[1]}${ZH_OPS[m[2]]}${m[3]}等于${options.value}。`;
  return `${expression} = ${options.value}`;
}

/** Ways a user asks for a calculation, per language (`{}` is the expression). */
const CALCULATION_FORMS: Record<"en" | "zh", readonly string[]> = {
  en: ["What is {}?", "Calculate {}.", "Please compute {}."],
  zh: ["{}等于多少？", "帮我算一下{}。", "请计算{}。"],
};

/** Number of phrasings {@linkcode calculationQuestion} has per language. */
export const CALCULATION_FORMS_COUNT = 3;

/**
 * A request to calculate `expression`, in one of {@linkcode CALCULATION_FORMS_COUNT} phrasings:
 * the user turn of calculator conversations and the question of worked arithmetic in
 * pretraining text.
 *
 * @example
 * ```ts
 * calculationQuestion("17 + 25", { lang: "en", form: 1 }); // "Calculate 17 + 25."
 * ```
 */
export function calculationQuestion(
  expression: string,
  options: { lang: "en" | "zh"; form: number },
): string {
  const forms = CALCULATION_FORMS[options.lang];
  return forms[options.form % forms.length].replace("{}", expression);
}

/**
 * A worked question for pretraining text: the question, then the answer restating the
 * expression (`"Q: What is 17 + 25?\nA: 17 + 25 = 42"`). Restating a fresh expression is
 * copying from the context: it grows the attention pattern that later copies a tool call's
 * arguments out of the user's message.
 *
 * @example
 * ```ts
 * workedArithmetic("17 + 25", { value: 42, lang: "zh", form: 0 }); // "问：17 + 25等于多少？\n答：17 + 25 = 42"
 * ```
 */
export function workedArithmetic(
  expression: string,
  options: { value: number; lang: "en" | "zh"; form: number },
): string {
  const [q, a] = options.lang === "en" ? ["Q: ", "A: "] : ["问：", "答："];
  return `${q}${calculationQuestion(expression, options)}\n${a}${expression} = ${options.value}`;
}
