/**
 * Sentence templates shared by every generator: how a fact is stated, asked and answered.
 *
 * Each attribute has several phrasings per language. Pretraining rotates through all statement
 * forms (varied phrasing helps a model store a fact so it can be retrieved later, per Allen-Zhu &
 * Li, Physics of Language Models 3.1); SFT, DPO and evaluation share the question forms, so an
 * evaluation question differs from SFT only in which fact it asks about.
 *
 * @module
 */

import { article, capitalize } from "./lexicon.ts";
import type { Attribute, Fact } from "./world.ts";

/** A corpus language. */
export type Lang = "en" | "zh";

/** Both corpus languages, in a fixed order. */
export const LANGS: readonly Lang[] = ["en", "zh"];

type Template = (entity: string, value: string) => string;

/** Products read "the Zuma lamp" in English; other entities are bare names. */
const the = (f: Fact, lang: Lang) =>
  lang === "en" && f.kind === "product" ? `the ${f.entity.en}` : f.entity[lang];

const STATEMENTS: Record<Attribute, Record<Lang, Template[]>> = {
  country: {
    en: [
      (e, v) => `${e} is a city in ${v}.`,
      (e, v) => `${e} is located in ${v}.`,
      (e, v) => `The city of ${e} belongs to ${v}.`,
    ],
    zh: [
      (e, v) => `${e}是${v}的一座城市。`,
      (e, v) => `${e}位于${v}。`,
      (e, v) => `${e}属于${v}。`,
    ],
  },
  population: {
    en: [
      (e, v) => `About ${v} people live in ${e}.`,
      (e, v) => `${e} has a population of ${v}.`,
      (e, v) => `${e} is home to ${v} people.`,
    ],
    zh: [
      (e, v) => `${e}大约有${v}人口。`,
      (e, v) => `${e}的人口是${v}。`,
      (e, v) => `有${v}人住在${e}。`,
    ],
  },
  landmark: {
    en: [
      (e, v) => `The most famous landmark in ${e} is the ${v}.`,
      (e, v) => `${e} is famous for the ${v}.`,
      (e, v) => `Visitors to ${e} come to see the ${v}.`,
    ],
    zh: [
      (e, v) => `${e}最有名的地标是${v}。`,
      (e, v) => `${e}以${v}闻名。`,
      (e, v) => `游客来${e}是为了看${v}。`,
    ],
  },
  weather: {
    en: [
      (e, v) => `The weather in ${e} is usually ${v}.`,
      (e, v) => `${e} is ${article(v)} city.`,
      (e, v) => `It is often ${v} in ${e}.`,
    ],
    zh: [
      (e, v) => `${e}的天气通常${v}。`,
      (e, v) => `${e}是一座${v}的城市。`,
      (e, v) => `${e}常年${v}。`,
    ],
  },
  home: {
    en: [
      (e, v) => `${e} lives in ${v}.`,
      (e, v) => `${e}'s home is in ${v}.`,
      (e, v) => `${e} comes from ${v}.`,
    ],
    zh: [(e, v) => `${e}住在${v}。`, (e, v) => `${e}的家在${v}。`, (e, v) => `${e}来自${v}。`],
  },
  job: {
    en: [
      (e, v) => `${e} is ${article(v)}.`,
      (e, v) => `${e} works as ${article(v)}.`,
      (e, v) => `By profession, ${e} is ${article(v)}.`,
    ],
    zh: [
      (e, v) => `${e}是一名${v}。`,
      (e, v) => `${e}的工作是${v}。`,
      (e, v) => `${e}的职业是${v}。`,
    ],
  },
  age: {
    en: [
      (e, v) => `${e} is ${v} years old.`,
      (e, v) => `${e}'s age is ${v}.`,
      (e, v) => `${e} turned ${v} this year.`,
    ],
    zh: [
      (e, v) => `${e}今年${v}。`,
      (e, v) => `${e}的年龄是${v}。`,
      (e, v) => `${e}已经${v}了。`,
    ],
  },
  maker: {
    en: [
      (e, v) => `${capitalize(e)} is made by ${v}.`,
      (e, v) => `${v} makes ${e}.`,
      (e, v) => `The maker of ${e} is ${v}.`,
    ],
    zh: [
      (e, v) => `${e}是${v}制造的。`,
      (e, v) => `${v}制造${e}。`,
      (e, v) => `${e}的制造者是${v}。`,
    ],
  },
  price: {
    en: [
      (e, v) => `${capitalize(e)} costs ${v}.`,
      (e, v) => `The price of ${e} is ${v}.`,
      (e, v) => `You can buy ${e} for ${v}.`,
    ],
    zh: [
      (e, v) => `${e}售价${v}。`,
      (e, v) => `${e}的价格是${v}。`,
      (e, v) => `买一个${e}要${v}。`,
    ],
  },
  color: {
    en: [
      (e, v) => `${capitalize(e)} is ${v}.`,
      (e, v) => `${capitalize(e)} comes in ${v}.`,
      (e, v) => `The color of ${e} is ${v}.`,
    ],
    zh: [
      (e, v) => `${e}是${v}的。`,
      (e, v) => `${e}的颜色是${v}。`,
      (e, v) => `${e}只有${v}。`,
    ],
  },
};

const QUESTIONS: Record<Attribute, Record<Lang, ((entity: string) => string)[]>> = {
  country: {
    en: [
      (e) => `Which country is ${e} in?`,
      (e) => `In which country is ${e} located?`,
      (e) => `What country does ${e} belong to?`,
    ],
    zh: [(e) => `${e}在哪个国家？`, (e) => `${e}位于哪个国家？`, (e) => `${e}属于哪个国家？`],
  },
  population: {
    en: [
      (e) => `What is the population of ${e}?`,
      (e) => `How many people live in ${e}?`,
      (e) => `How big is the population of ${e}?`,
    ],
    zh: [(e) => `${e}有多少人口？`, (e) => `${e}的人口是多少？`, (e) => `有多少人住在${e}？`],
  },
  landmark: {
    en: [
      (e) => `What is the most famous landmark in ${e}?`,
      (e) => `What is ${e} famous for?`,
      (e) => `Which landmark should I visit in ${e}?`,
    ],
    zh: [
      (e) => `${e}最有名的地标是什么？`,
      (e) => `${e}以什么闻名？`,
      (e) => `去${e}应该参观哪个地标？`,
    ],
  },
  weather: {
    en: [
      (e) => `What is the weather usually like in ${e}?`,
      (e) => `What kind of weather does ${e} usually have?`,
      (e) => `How is the weather in ${e} most of the year?`,
    ],
    zh: [
      (e) => `${e}的天气通常怎么样？`,
      (e) => `${e}常年是什么天气？`,
      (e) => `${e}一年中大多是什么天气？`,
    ],
  },
  home: {
    en: [
      (e) => `Where does ${e} live?`,
      (e) => `Which city is ${e} from?`,
      (e) => `What city is ${e}'s home?`,
    ],
    zh: [(e) => `${e}住在哪里？`, (e) => `${e}来自哪个城市？`, (e) => `${e}的家在哪个城市？`],
  },
  job: {
    en: [
      (e) => `What is ${e}'s job?`,
      (e) => `What does ${e} do for a living?`,
      (e) => `What is ${e}'s profession?`,
    ],
    zh: [(e) => `${e}的工作是什么？`, (e) => `${e}是做什么工作的？`, (e) => `${e}的职业是什么？`],
  },
  age: {
    en: [
      (e) => `How old is ${e}?`,
      (e) => `What is ${e}'s age?`,
      (e) => `How many years old is ${e}?`,
    ],
    zh: [(e) => `${e}几岁？`, (e) => `${e}多大了？`, (e) => `${e}今年多少岁？`],
  },
  maker: {
    en: [
      (e) => `Who makes ${e}?`,
      (e) => `Who is the maker of ${e}?`,
      (e) => `Who made ${e}?`,
    ],
    zh: [(e) => `${e}是谁制造的？`, (e) => `谁制造了${e}？`, (e) => `${e}的制造者是谁？`],
  },
  price: {
    en: [
      (e) => `How much does ${e} cost?`,
      (e) => `What is the price of ${e}?`,
      (e) => `How much is ${e}?`,
    ],
    zh: [(e) => `${e}多少钱？`, (e) => `${e}的价格是多少？`, (e) => `买一个${e}要多少钱？`],
  },
  color: {
    en: [
      (e) => `What color is ${e}?`,
      (e) => `What is the color of ${e}?`,
      (e) => `Which color does ${e} come in?`,
    ],
    zh: [(e) => `${e}是什么颜色？`, (e) => `${e}的颜色是什么？`, (e) => `${e}有什么颜色？`],
  },
};

/** How many statement phrasings each attribute has per language. */
export const STATEMENT_FORMS = 3;

/** How many question phrasings each attribute has per language. */
export const QUESTION_FORMS = 3;

/**
 * States a fact as one sentence.
 *
 * @param fact The fact to state.
 * @param options `lang`, and `form` (any integer; taken modulo the number of phrasings).
 * @example
 * ```ts
 * stateFact(ageFact, { lang: "en", form: 0 }); // "Karo is 34 years old."
 * stateFact(ageFact, { lang: "zh", form: 0 }); // "卡罗今年34岁。"
 * ```
 */
export function stateFact(fact: Fact, options: { lang: Lang; form: number }): string {
  const forms = STATEMENTS[fact.attribute][options.lang];
  return forms[options.form % forms.length](the(fact, options.lang), fact.value[options.lang]);
}

/**
 * Asks for a fact as one question; the exact answer is `fact.value[lang]`.
 *
 * @param fact The fact to ask about.
 * @param options `lang`, and `form` (any integer; taken modulo the number of phrasings).
 * @example
 * ```ts
 * askFact(ageFact, { lang: "en", form: 0 }); // "How old is Karo?"
 * ```
 */
export function askFact(fact: Fact, options: { lang: Lang; form: number }): string {
  const forms = QUESTIONS[fact.attribute][options.lang];
  return forms[options.form % forms.length](the(fact, options.lang));
}

/** System prompts; SFT uses them on some conversations so the model works with and without. */
export const SYSTEM_PROMPTS: Readonly<Record<Lang, readonly string[]>> = {
  en: [
    "You are MiniDeepSeek, a helpful assistant. Answer briefly.",
    "You are a helpful assistant. Give short, exact answers.",
    "You are MiniDeepSeek. You know the cities, people and products of this world.",
  ],
  zh: [
    "你是MiniDeepSeek，一个乐于助人的助手。请简短回答。",
    "你是一个乐于助人的助手。回答要简短准确。",
    "你是MiniDeepSeek，了解这个世界的城市、人物和产品。",
  ],
};
