/**
 * The two demo tools, `get_weather(city)` and `calculator(expression)`: their OpenAI schemas and
 * deterministic implementations. SFT tool results are produced by {@linkcode runTool}, so the
 * server can answer a model's tool calls with exactly the data it was trained on.
 *
 * The calculator parses integers, `+ - * /`, unary minus and parentheses with a small
 * recursive-descent parser; it never calls `eval()`.
 *
 * @module
 */

import type { ToolSchema } from "./messages.ts";
import { findCity, type World } from "./world.ts";

/**
 * The tools in OpenAI `tools` form.
 *
 * @returns A fresh array each call, so callers may edit it.
 * @example
 * ```ts
 * toolSchemas().map((t) => t.function.name); // ["get_weather", "calculator"]
 * ```
 */
export function toolSchemas(): ToolSchema[] {
  return [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "Get the current weather in a city of this world.",
        parameters: {
          type: "object",
          properties: { city: { type: "string", description: "City name, in English or Chinese" } },
          required: ["city"],
        },
      },
    },
    {
      type: "function",
      function: {
        name: "calculator",
        description: "Evaluate an arithmetic expression with integers, + - * / and parentheses.",
        parameters: {
          type: "object",
          properties: { expression: { type: "string", description: "e.g. (17 + 25) * 3" } },
          required: ["expression"],
        },
      },
    },
  ];
}

/** Raised by {@linkcode calculate} for an expression it cannot evaluate. */
export class CalculatorError extends Error {
  /**
   * Makes the error.
   *
   * @param message What is wrong, where, and what is accepted.
   */
  constructor(message: string) {
    super(message);
    this.name = "CalculatorError";
  }
}

/** Longest expression accepted; the tool is for arithmetic, not for parsing stress tests. */
const MAX_EXPRESSION_LENGTH = 200;

/**
 * Evaluates an integer arithmetic expression: `+ - * /`, unary minus, parentheses, usual
 * precedence, left to right. Division is exact (`7 / 2` is `3.5`).
 *
 * @param expression For example `"(17 + 25) * 3"`.
 * @returns The value.
 * @throws {CalculatorError} On an unexpected character or token, unbalanced parentheses,
 *   division by zero, a result beyond ±2^53, or an expression over 200 characters; the message
 *   gives the position.
 * @example
 * ```ts
 * calculate("17 + 25"); // 42
 * calculate("2 + 3 * 4"); // 14
 * calculate("2 +"); // throws CalculatorError: expected a number at position 3 in "2 +"
 * ```
 */
export function calculate(expression: string): number {
  if (expression.length > MAX_EXPRESSION_LENGTH) {
    throw new CalculatorError(`expression is longer than ${MAX_EXPRESSION_LENGTH} characters`);
  }
  const tokens = tokenize(expression);
  let i = 0;
  const fail = (what: string): never => {
    const at = tokens[i]?.pos ?? expression.length;
    throw new CalculatorError(`${what} at position ${at} in ${JSON.stringify(expression)}`);
  };
  const checked = (v: number) =>
    Number.isFinite(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER ? v : fail("result too large");

  // expr := term (("+" | "-") term)* ; term := unary (("*" | "/") unary)* ;
  // unary := "-" unary | atom ; atom := integer | "(" expr ")"
  const expr = (): number => {
    let v = term();
    while (tokens[i]?.text === "+" || tokens[i]?.text === "-") {
      const op = tokens[i++].text;
      const r = term();
      v = checked(op === "+" ? v + r : v - r);
    }
    return v;
  };
  const term = (): number => {
    let v = unary();
    while (tokens[i]?.text === "*" || tokens[i]?.text === "/") {
      const op = tokens[i++];
      const r = unary();
      if (op.text === "/" && r === 0) {
        i--;
        fail("division by zero");
      }
      v = checked(op.text === "*" ? v * r : v / r);
    }
    return v;
  };
  const unary = (): number => {
    if (tokens[i]?.text === "-") {
      i++;
      return -unary();
    }
    return atom();
  };
  const atom = (): number => {
    const t = tokens[i];
    if (t === undefined) return fail("expected a number");
    if (t.text === "(") {
      i++;
      const v = expr();
      if (tokens[i]?.text !== ")") fail("expected ')'");
      i++;
      return v;
    }
    if (!/^\d+$/.test(t.text)) return fail(`expected a number but found '${t.text}'`);
    i++;
    return checked(Number(t.text));
  };

  if (tokens.length === 0) fail("empty expression");
  const value = expr();
  if (i < tokens.length) fail(`unexpected '${tokens[i].text}'`);
  return value === 0 ? 0 : value; // no -0 in JSON results
}

function tokenize(expression: string): { text: string; pos: number }[] {
  const tokens: { text: string; pos: number }[] = [];
  const re = /\s*(?:(\d+)|([-+*/()])|(\S))/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(expression)) !== null && m[0] !== "") {
    const pos = m.index + m[0].length - (m[1] ?? m[2] ?? m[3]).length;
    if (m[3] !== undefined) {
      throw new CalculatorError(
        `unexpected character '${m[3]}' at position ${pos} in ${JSON.stringify(expression)}; ` +
          "use integers, + - * / and parentheses",
      );
    }
    tokens.push({ text: m[1] ?? m[2], pos });
  }
  return tokens;
}

/**
 * Runs a tool call and returns the tool message's content: a JSON object as a string.
 *
 * - `get_weather({city})` answers `{"city","condition","temperature_c"}` from the world; a city
 *   given by its Chinese name gets the Chinese condition (`"多雨"`), so a Chinese conversation
 *   stays Chinese.
 * - `calculator({expression})` answers `{"result": number}`.
 * - Bad input (unknown tool or city, arguments that are not a JSON object, a bad expression)
 *   answers `{"error": "..."}` instead of throwing, because a server passes it to the model.
 *
 * @param world The world that holds the weather.
 * @param name The tool name.
 * @param args The arguments, as the JSON string from `tool_calls` or as an object.
 * @example
 * ```ts
 * runTool(world, "calculator", '{"expression": "6 * 7"}'); // '{"result":42}'
 * runTool(world, "get_weather", { city: "Karo" }); // '{"city":"Karo","condition":"rainy","temperature_c":14}'
 * ```
 */
export function runTool(
  world: World,
  name: string,
  args: string | Record<string, unknown>,
): string {
  let parsed: unknown = args;
  if (typeof args === "string") {
    try {
      parsed = JSON.parse(args);
    } catch {
      return JSON.stringify({ error: `arguments are not valid JSON: ${args}` });
    }
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return JSON.stringify({ error: "arguments must be a JSON object" });
  }
  const a = parsed as Record<string, unknown>;
  if (name === "get_weather") {
    if (typeof a.city !== "string") return JSON.stringify({ error: 'expected {"city": string}' });
    const found = findCity(world, a.city);
    if (!found) return JSON.stringify({ error: `unknown city '${a.city}'` });
    return JSON.stringify({
      city: found.city.name[found.lang],
      condition: found.city.weather[found.lang],
      temperature_c: found.city.temperatureC,
    });
  }
  if (name === "calculator") {
    if (typeof a.expression !== "string") {
      return JSON.stringify({ error: 'expected {"expression": string}' });
    }
    try {
      return JSON.stringify({ result: calculate(a.expression) });
    } catch (e) {
      return JSON.stringify({ error: (e as Error).message });
    }
  }
  return JSON.stringify({ error: `unknown tool '${name}'; available: get_weather, calculator` });
}
