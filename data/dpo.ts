/**
 * DPO preference pairs: two full conversations that share every message but the last
 * assistant turn (see {@linkcode DpoPair}). The chosen turn is correct and concise; the rejected
 * one states a wrong fact, breaks the format (wrong language, malformed tool call, no tool call)
 * or rambles around the right answer.
 *
 * Pairs use only `"sft"` facts and training expressions, like SFT, so evaluation stays held out.
 *
 * @module
 */

import type { DpoFlaw, DpoPair, Message } from "./messages.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";
import { SftGenerator } from "./sft.ts";
import type { Lang } from "./templates.ts";
import { calculate, toolSchemas } from "./tools.ts";
import type { Fact, World } from "./world.ts";

/** Options for {@linkcode dpoPairs}. */
export interface DpoOptions {
  /** Seed of this stream; default derived from `world.seed`. */
  seed?: number;
  /** Number of pairs, train and held-out together; default 600 x `world.scale`. */
  count?: number;
  /** Share of pairs held out for measuring preference accuracy; default 1/6 (100 of 600). */
  heldOutFraction?: number;
}

/**
 * Generates DPO pairs and splits them into train and held-out sets (drawn from one
 * distribution; the held-out set is the last `heldOutFraction` of the stream).
 *
 * @param world From {@linkcode generateWorld}.
 * @param options `count`, `heldOutFraction` and `seed`.
 * @returns `{ train, heldOut }`, each a list of `{ chosen, rejected, tools?, flaw }`.
 * @example
 * ```ts
 * const { train } = dpoPairs(world);
 * train[0].chosen.at(-1); // { role: "assistant", content: "Dalmor" }
 * train[0].rejected.at(-1); // { role: "assistant", content: "Velmora" }
 * ```
 */
export function dpoPairs(
  world: World,
  options: DpoOptions = {},
): { train: DpoPair[]; heldOut: DpoPair[] } {
  const rng = new Mulberry32(options.seed ?? deriveSeed(world.seed, "dpo"));
  const count = options.count ?? Math.round(600 * world.scale);
  const g = new SftGenerator(world, rng);
  const pairs: DpoPair[] = [];
  for (let i = 0; i < count; i++) {
    const lang: Lang = rng.chance(0.5) ? "en" : "zh";
    const r = rng.next();
    if (r < 0.6) pairs.push(factPair(g, lang));
    else if (r < 0.85) pairs.push(toolCallPair(g, lang));
    else pairs.push(toolAnswerPair(g, lang));
  }
  const heldOut = Math.round(count * (options.heldOutFraction ?? 1 / 6));
  return { train: pairs.slice(0, count - heldOut), heldOut: pairs.slice(count - heldOut) };
}

const pair = (prompt: Message[], chosen: Message, rejected: Message, flaw: DpoFlaw) => ({
  chosen: [...prompt, chosen],
  rejected: [...prompt, rejected],
  flaw,
});

/** A fact question: the bare value against a wrong value, a bad format or a ramble. */
function factPair(g: SftGenerator, lang: Lang): DpoPair {
  const { rng } = g;
  const prompt = g.system(lang);
  if (rng.chance(0.25)) {
    prompt.push(...g.qa(lang, 1).conversations.filter((m) => m.role !== "system"));
  }
  const fact = rng.pick(g.facts);
  prompt.push(g.ask(fact, lang));
  const answer = fact.value[lang];
  const say = (content: string): Message => ({ role: "assistant", content });
  const r = rng.next();
  if (r < 0.45) return pair(prompt, say(answer), say(wrongValue(g, fact, lang)), "wrong_fact");
  if (r < 0.7) return pair(prompt, say(answer), say(ramble(fact, lang, rng)), "rambling");
  const other: Lang = lang === "en" ? "zh" : "en";
  const broken = rng.pick([
    fact.value[other] === answer ? `${answer} ${answer} ${answer}` : fact.value[other],
    `${answer} ${answer} ${answer}`,
    JSON.stringify({ answer }),
    `${answer.slice(0, Math.max(1, answer.length - 2))}...`,
  ]);
  return pair(prompt, say(answer), say(broken), "broken_format");
}

/** A value of the same attribute that is not this fact's value. */
function wrongValue(g: SftGenerator, fact: Fact, lang: Lang): string {
  const others = g.world.facts.filter((f) =>
    f.attribute === fact.attribute && f.value[lang] !== fact.value[lang]
  );
  return g.rng.pick(others).value[lang];
}

function ramble(fact: Fact, lang: Lang, rng: Mulberry32): string {
  const e = fact.kind === "product" && lang === "en" ? `the ${fact.entity.en}` : fact.entity[lang];
  const v = fact.value[lang];
  return rng.pick(
    lang === "en"
      ? [
        `Well, that is a good question. Let me think about it for a moment. Many people ask about ${e}, and there is a lot to say. After thinking carefully, I believe the answer is ${v}, but I could be wrong, so please check again.`,
        `Great question! There are many interesting things about ${e}. I have heard different stories over the years, and people do not always agree. If I had to choose, I would say ${v}. I hope this long answer helps you a little.`,
      ]
      : [
        `嗯，这是个好问题。让我想一想。很多人都问过关于${e}的事情，可以说的有很多。仔细想过之后，我认为答案是${v}，不过我也可能说错，请再确认一下。`,
        `好问题！关于${e}有很多有趣的事情。这些年我听过各种说法，大家的意见也不总是一样。如果一定要选的话，我会说是${v}。希望这个很长的回答对你有一点帮助。`,
      ],
  );
}

/** A weather or arithmetic request: the proper tool call against a broken call or a guess. */
function toolCallPair(g: SftGenerator, lang: Lang): DpoPair {
  const { rng } = g;
  const weather = rng.chance(0.5);
  const city = rng.pick(g.weatherCities);
  const { user, call } = weather
    ? g.weatherCall(lang, city)
    : g.calculatorCall(lang, g.trainExpression());
  const prompt = [...g.system(lang), user];
  const chosen: Message = { role: "assistant", content: null, tool_calls: [call] };
  const args = call.function.arguments;
  let rejected: Message;
  let flaw: DpoFlaw = "broken_format";
  const r = rng.next();
  if (r < 0.35) {
    // Malformed JSON arguments: the server cannot run this call.
    rejected = {
      ...chosen,
      tool_calls: [{ ...call, function: { ...call.function, arguments: args.slice(0, -1) } }],
    };
  } else if (r < 0.6) {
    // The call written as prose instead of a structured tool call.
    rejected = { role: "assistant", content: `${call.function.name}(${args})` };
  } else {
    // No call at all: a confident guess that is wrong.
    flaw = "wrong_fact";
    rejected = {
      role: "assistant",
      content: weather ? guessWeather(g, city.name[lang], lang) : guessSum(call.function.arguments),
    };
  }
  return { ...pair(prompt, chosen, rejected, flaw), tools: toolSchemas() };
}

function guessWeather(g: SftGenerator, city: string, lang: Lang): string {
  const found = g.world.cities.find((c) => c.name[lang] === city)!;
  const other = g.rng.pick(g.world.cities.filter((c) => c.weather.en !== found.weather.en));
  const t = found.temperatureC + 9;
  return lang === "en"
    ? `It is ${other.weather.en} in ${city} right now, ${t}°C.`
    : `${city}现在${other.weather.zh}，气温${t}°C。`;
}

function guessSum(args: string): string {
  const { expression } = JSON.parse(args) as { expression: string };
  // An off-by-a-bit result: the kind of error a model makes when it skips the calculator.
  return `${expression} = ${calculate(expression) + 10}`;
}

/** After the tool has answered: a faithful summary against one that contradicts the result. */
function toolAnswerPair(g: SftGenerator, lang: Lang): DpoPair {
  const { rng } = g;
  const weather = rng.chance(0.5);
  const city = rng.pick(g.weatherCities);
  const { user, call } = weather
    ? g.weatherCall(lang, city)
    : g.calculatorCall(lang, g.trainExpression());
  const turns = g.toolTurns(call, lang);
  const prompt = [...g.system(lang), user, ...turns.slice(0, 2)];
  const chosen = turns[2];
  const wrong = weather
    ? guessWeather(g, city.name[lang], lang)
    : guessSum(call.function.arguments);
  return {
    ...pair(prompt, chosen, { role: "assistant", content: wrong }, "wrong_fact"),
    tools: toolSchemas(),
  };
}
