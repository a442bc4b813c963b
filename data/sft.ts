/**
 * SFT conversations in OpenAI message form: questions about the world's `"sft"` facts (single
 * and multi-turn, with and without a system prompt), weather and arithmetic answered through tool
 * calls, a few identity and "I don't know" turns, and one in ten arithmetic word problems worked
 * step by step in `reasoning_content` (`data/reasoning.ts`).
 *
 * Fact answers are the bare value ("Dalmor", "300万"): that is the answer form evaluation grades
 * by exact match. No conversation states or asks an `"eval"` fact, and weather tool calls only
 * go to cities whose weather is an `"sft"` fact, because the tool result would state it.
 *
 * @module
 */

import {
  CALCULATION_FORMS_COUNT,
  calculationQuestion,
  isEvalExpression,
  randomExpression,
} from "./arithmetic.ts";
import type { Bilingual } from "./lexicon.ts";
import type { Message, OpenAIToolCall, SftRecord } from "./messages.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";
import { reasoningConversations } from "./reasoning.ts";
import { askFact, type Lang, QUESTION_FORMS, SYSTEM_PROMPTS } from "./templates.ts";
import { runTool, toolSchemas } from "./tools.ts";
import {
  ATTRIBUTES,
  type City,
  type EntityKind,
  type Fact,
  factsOf,
  NameMaker,
  type World,
  worldNames,
} from "./world.ts";

/** Options for {@linkcode sftConversations}. */
export interface SftOptions {
  /** Seed of this stream; default derived from `world.seed`. */
  seed?: number;
  /** Number of conversations; default 2000 x `world.scale`. */
  count?: number;
  /**
   * Reasoning conversations (train word problems worked in `reasoning_content`, see
   * `reasoningConversations`) spread evenly among the others; default `count / 10`.
   */
  reasoning?: number;
}

/** Share of each conversation type; the rest are identity and "I don't know" turns. */
const MIX = { qa: 0.35, multiTurn: 0.25, weather: 0.15, calculator: 0.15, unknown: 0.05 };

/**
 * Generates SFT conversations.
 *
 * @param world From {@linkcode generateWorld}.
 * @param options `count` and `seed`.
 * @returns `count` + `reasoning` records `{ conversations, tools? }`; `tools` is set on every
 *   conversation that calls a tool and on some that do not, so the model learns when not to
 *   call one.
 * @example
 * ```ts
 * sftConversations(world, { count: 1 })[0].conversations;
 * // [{ role: "user", content: "How old is Karo?" }, { role: "assistant", content: "34" }]
 * ```
 */
export function sftConversations(world: World, options: SftOptions = {}): SftRecord[] {
  const rng = new Mulberry32(options.seed ?? deriveSeed(world.seed, "sft"));
  const count = options.count ?? Math.round(2000 * world.scale);
  const g = new SftGenerator(world, rng);
  const reasoning = reasoningConversations(world, {
    count: options.reasoning ?? Math.round(count / 10),
  });
  const records: SftRecord[] = [];
  let k = 0;
  for (let i = 0; i < count; i++) {
    // The reasoning conversations come from their own stream, so these draws stay as they were.
    while (k < reasoning.length && (k + 1) * count <= i * reasoning.length) {
      records.push(reasoning[k++]);
    }
    const lang: Lang = rng.chance(0.5) ? "en" : "zh";
    let r = rng.next();
    const pick = (share: number) => (r -= share) < 0;
    if (pick(MIX.qa)) records.push(g.qa(lang, 1));
    else if (pick(MIX.multiTurn)) records.push(g.qa(lang, rng.int(2, 3)));
    else if (pick(MIX.weather)) records.push(g.weather(lang));
    else if (pick(MIX.calculator)) records.push(g.calculator(lang));
    else if (pick(MIX.unknown)) records.push(g.unknown(lang));
    else records.push(g.identity(lang));
  }
  return [...records, ...reasoning.slice(k)];
}

/** Builds single conversations; shared with the DPO and evaluation generators. */
export class SftGenerator {
  readonly world: World;
  readonly rng: Mulberry32;
  /** Facts that training data may mention. */
  readonly facts: Fact[];
  /** Cities whose weather training data may reveal through the tool. */
  readonly weatherCities: City[];

  /** @param world The world. @param rng The stream to draw from. */
  constructor(world: World, rng: Mulberry32) {
    this.world = world;
    this.rng = rng;
    this.facts = factsOf(world, "sft");
    const sftWeather = new Set(
      this.facts.filter((f) => f.attribute === "weather").map((f) => f.entity.en),
    );
    this.weatherCities = world.cities.filter((c) => sftWeather.has(c.name.en));
  }

  /** A system prompt one time in three; none otherwise. */
  system(lang: Lang): Message[] {
    return this.rng.chance(1 / 3)
      ? [{ role: "system", content: this.rng.pick(SYSTEM_PROMPTS[lang]) }]
      : [];
  }

  /** A question about a fact, in a random phrasing. */
  ask(fact: Fact, lang: Lang): Message {
    return {
      role: "user",
      content: askFact(fact, { lang, form: this.rng.int(0, QUESTION_FORMS - 1) }),
    };
  }

  /** `turns` question-answer turns; later turns stay on the same entity half the time. */
  qa(lang: Lang, turns: number): SftRecord {
    const messages = this.system(lang);
    let fact = this.rng.pick(this.facts);
    for (let t = 0; t < turns; t++) {
      if (t > 0) {
        const same = this.facts.filter((f) => f.entity.en === fact.entity.en && f !== fact);
        fact = same.length > 0 && this.rng.chance(0.5)
          ? this.rng.pick(same)
          : this.rng.pick(this.facts);
      }
      messages.push(this.ask(fact, lang), { role: "assistant", content: fact.value[lang] });
    }
    return this.rng.chance(0.2)
      ? { conversations: messages, tools: toolSchemas() }
      : { conversations: messages };
  }

  /** The user's weather question, with the tool call that answers it. */
  weatherCall(lang: Lang, city: City): { user: Message; call: OpenAIToolCall } {
    const name = city.name[lang];
    const forms = lang === "en"
      ? [
        `What's the weather like in ${name} right now?`,
        `Can you check the weather in ${name}?`,
        `Is it warm in ${name} today?`,
        `Weather in ${name}?`,
      ]
      : [
        `${name}现在天气怎么样？`,
        `帮我查一下${name}的天气。`,
        `${name}今天暖和吗？`,
        `${name}天气？`,
      ];
    return {
      user: { role: "user", content: this.rng.pick(forms) },
      call: this.toolCall("get_weather", { city: name }),
    };
  }

  /** The user's arithmetic question, with the tool call that answers it. */
  calculatorCall(lang: Lang, expression: string): { user: Message; call: OpenAIToolCall } {
    const form = this.rng.int(0, CALCULATION_FORMS_COUNT - 1);
    return {
      user: { role: "user", content: calculationQuestion(expression, { lang, form }) },
      call: this.toolCall("calculator", { expression }),
    };
  }

  /** An OpenAI tool call with a fresh id. */
  toolCall(name: string, args: Record<string, string>): OpenAIToolCall {
    return {
      id: `call_${this.rng.hex8()}`,
      type: "function",
      function: { name, arguments: JSON.stringify(args) },
    };
  }

  /** The assistant turn that makes `call`, the tool's reply, and the final answer. */
  toolTurns(call: OpenAIToolCall, lang: Lang): Message[] {
    const result = runTool(this.world, call.function.name, call.function.arguments);
    const r = JSON.parse(result);
    let answer: string;
    if (call.function.name === "get_weather") {
      answer = lang === "en"
        ? `It is ${r.condition} in ${r.city} right now, ${r.temperature_c}°C.`
        : `${r.city}现在${r.condition}，气温${r.temperature_c}°C。`;
    } else {
      answer = `${JSON.parse(call.function.arguments).expression} = ${r.result}`;
    }
    return [
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, name: call.function.name, content: result },
      { role: "assistant", content: answer },
    ];
  }

  /** A weather lookup, sometimes after a fact question. */
  weather(lang: Lang): SftRecord {
    const messages = this.system(lang);
    if (this.rng.chance(0.3)) {
      messages.push(...this.qa(lang, 1).conversations.filter((m) => m.role !== "system"));
    }
    const { user, call } = this.weatherCall(lang, this.rng.pick(this.weatherCities));
    messages.push(user, ...this.toolTurns(call, lang));
    return { conversations: messages, tools: toolSchemas() };
  }

  /** An expression not reserved for evaluation. */
  trainExpression(): string {
    for (;;) {
      const { expression } = randomExpression(this.rng);
      if (!isEvalExpression(expression)) return expression;
    }
  }

  /** One or two calculator lookups. */
  calculator(lang: Lang): SftRecord {
    const messages = this.system(lang);
    for (let t = this.rng.chance(0.25) ? 2 : 1; t > 0; t--) {
      const { user, call } = this.calculatorCall(lang, this.trainExpression());
      messages.push(user, ...this.toolTurns(call, lang));
    }
    return { conversations: messages, tools: toolSchemas() };
  }

  /** A question about an entity that does not exist, answered "I don't know". */
  unknown(lang: Lang): SftRecord {
    const kind = this.rng.pick<EntityKind>(["city", "person", "product"]);
    const attribute = this.rng.pick(ATTRIBUTES[kind]);
    const name = this.inventedName();
    const entity = kind === "product" ? { en: `${name.en} lamp`, zh: `${name.zh}灯` } : name;
    const fake: Fact = { id: "", kind, entity, attribute, value: { en: "", zh: "" }, split: "sft" };
    return {
      conversations: [
        ...this.system(lang),
        this.ask(fake, lang),
        { role: "assistant", content: lang === "en" ? "I don't know." : "我不知道。" },
      ],
    };
  }

  /** A greeting or "who are you" turn. */
  identity(lang: Lang): SftRecord {
    const [q, a] = this.rng.pick(
      lang === "en"
        ? [
          ["Who are you?", "I am MiniDeepSeek, a small assistant that knows this world."],
          ["Hello!", "Hello! How can I help you?"],
          [
            "What can you do?",
            "I can answer questions about this world, check the weather and do arithmetic.",
          ],
        ]
        : [
          ["你是谁？", "我是MiniDeepSeek，一个了解这个世界的小助手。"],
          ["你好！", "你好！有什么可以帮你？"],
          ["你能做什么？", "我可以回答关于这个世界的问题，查询天气，还能做算术。"],
        ],
    );
    return { conversations: [{ role: "user", content: q }, { role: "assistant", content: a }] };
  }

  /** A two-syllable name that no entity in the world has, contains, or is contained in. */
  inventedName(): Bilingual {
    return new NameMaker(this.rng, worldNames(this.world)).make(2);
  }
}
