/**
 * Pretraining documents: `{ text }` records about the world, in English and Chinese.
 *
 * Five kinds of document, shuffled together:
 * - profiles: every fact of one entity, in random order and phrasing;
 * - lists: one attribute across all entities of a kind ("who does what");
 * - FAQs: question-and-answer lines ("Q: How old is Karo?\nA: 34") for every fact, held-out ones
 *   included; they are plain text, not the chat template, so evaluation still tests that the
 *   model carries pretraining knowledge into chat;
 * - short stories that restate true facts in context;
 * - arithmetic: lines ("17 + 25 = 42") and worked questions that restate the expression
 *   ("Q: What is 17 + 25?\nA: 17 + 25 = 42"), which teach copying from the context.
 *
 * Every fact appears in every document kind that covers it, so held-out facts are as well
 * represented in pretraining as the rest.
 *
 * @module
 */

import {
  arithmeticLine,
  CALCULATION_FORMS_COUNT,
  randomExpression,
  workedArithmetic,
} from "./arithmetic.ts";
import { article, type Bilingual } from "./lexicon.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";
import {
  askFact,
  type Lang,
  LANGS,
  QUESTION_FORMS,
  stateFact,
  STATEMENT_FORMS,
} from "./templates.ts";
import { type City, type Fact, type Person, type Product, type World } from "./world.ts";

/** A pretraining record, as in `pretrain.jsonl`. */
export interface PretrainDocument {
  /** One document, in one language. */
  text: string;
}

/** Options for {@linkcode pretrainDocuments}; counts are at scale 1 and multiply by `world.scale`. */
export interface PretrainOptions {
  /** Seed of this stream; default derived from `world.seed`. */
  seed?: number;
  /** Profile documents per entity per language. Default 20. */
  profileRepeats?: number;
  /** List documents per attribute per language. Default 10. */
  listRepeats?: number;
  /** FAQ documents per entity per language; 0 leaves FAQs out. Default 5. */
  faqRepeats?: number;
  /** Short stories at scale 1. Default 600. */
  stories?: number;
  /** Arithmetic documents (about 12 lines each) at scale 1. Default 400. */
  arithmetic?: number;
}

/**
 * Generates the pretraining corpus, shuffled, about half English and half Chinese.
 *
 * @param world From {@linkcode generateWorld}.
 * @param options Document counts and seed; see {@linkcode PretrainOptions}.
 * @returns `{ text }` records; about 0.3M characters (0.43 MB of UTF-8) at scale 1.
 * @example
 * ```ts
 * const docs = pretrainDocuments(generateWorld({ seed: 1 }));
 * docs[0].text; // e.g. "Karo is a teacher. Karo lives in Verin. Karo is 34 years old."
 * ```
 */
export function pretrainDocuments(world: World, options: PretrainOptions = {}): PretrainDocument[] {
  const rng = new Mulberry32(options.seed ?? deriveSeed(world.seed, "pretrain"));
  const scaled = (n: number) => Math.round(n * world.scale);
  const texts: string[] = [];
  const byEntity = groupBy(world.facts, (f) => f.id.slice(0, f.id.lastIndexOf("/")));
  for (const facts of byEntity.values()) {
    for (const lang of LANGS) {
      for (let r = 0; r < (options.profileRepeats ?? 20); r++) {
        texts.push(profile(facts, lang, rng));
      }
      for (let r = 0; r < (options.faqRepeats ?? 5); r++) texts.push(faq(facts, lang, rng));
    }
  }
  for (const facts of groupBy(world.facts, (f) => f.attribute).values()) {
    for (const lang of LANGS) {
      for (let r = 0; r < (options.listRepeats ?? 10); r++) texts.push(list(facts, lang, rng));
    }
  }
  const story = storyTeller(world);
  for (let i = 0; i < scaled(options.stories ?? 600); i++) texts.push(story(rng));
  for (let i = 0; i < scaled(options.arithmetic ?? 400); i++) texts.push(arithmetic(rng));
  return rng.shuffle(texts).map((text) => ({ text }));
}

/** Sentences joined the way each language writes them (Chinese needs no spaces). */
const join = (sentences: string[], lang: Lang) => sentences.join(lang === "en" ? " " : "");

function profile(facts: Fact[], lang: Lang, rng: Mulberry32): string {
  return join(
    rng.shuffle(facts).map((f) => stateFact(f, { lang, form: rng.int(0, STATEMENT_FORMS - 1) })),
    lang,
  );
}

/** The question and answer prefixes of FAQ documents. */
const FAQ_PREFIXES: Record<Lang, [string, string]> = { en: ["Q: ", "A: "], zh: ["问：", "答："] };

function faq(facts: Fact[], lang: Lang, rng: Mulberry32): string {
  const [q, a] = FAQ_PREFIXES[lang];
  return rng.shuffle(facts)
    .map((f) =>
      `${q}${askFact(f, { lang, form: rng.int(0, QUESTION_FORMS - 1) })}\n${a}${f.value[lang]}`
    )
    .join("\n");
}

/**
 * A question as the pretraining FAQ documents write it, up to where the answer starts: the
 * plain-text prompt that probes whether a model learned a fact in pretraining (no chat template).
 *
 * @example
 * ```ts
 * faqPrompt("How old is Karo?", "en"); // "Q: How old is Karo?\nA:" (the answer is " 34")
 * faqPrompt("卡罗几岁？", "zh"); // "问：卡罗几岁？\n答："
 * ```
 */
export function faqPrompt(question: string, lang: Lang): string {
  const [q, a] = FAQ_PREFIXES[lang];
  return `${q}${question}\n${a.trimEnd()}`;
}

const LIST_TITLES: Record<string, Bilingual> = {
  city: { en: "Facts about the cities of the world.", zh: "关于各个城市的知识。" },
  person: { en: "Facts about the people of the world.", zh: "关于各位人物的知识。" },
  product: { en: "Facts about the products of the world.", zh: "关于各种产品的知识。" },
};

function list(facts: Fact[], lang: Lang, rng: Mulberry32): string {
  const form = rng.int(0, STATEMENT_FORMS - 1); // one phrasing per list reads like a real table
  const body = rng.shuffle(facts).map((f) => stateFact(f, { lang, form }));
  return join([LIST_TITLES[facts[0].kind][lang], ...body], lang);
}

/** Share of arithmetic lines written as a worked question that restates its expression. */
const WORKED_SHARE = 0.6;

function arithmetic(rng: Mulberry32): string {
  const lang: Lang = rng.chance(0.5) ? "en" : "zh";
  const lines = Array.from({ length: rng.int(8, 16) }, () => {
    const { expression, value } = randomExpression(rng);
    if (rng.chance(WORKED_SHARE)) {
      return workedArithmetic(expression, {
        value,
        lang,
        form: rng.int(0, CALCULATION_FORMS_COUNT - 1),
      });
    }
    return arithmeticLine(expression, { value, lang: rng.chance(0.5) ? lang : "en" });
  });
  return (lang === "en" ? "Arithmetic practice:\n" : "算术练习：\n") + lines.join("\n");
}

/**
 * Returns a function that writes one random short story. Stories only restate facts true in
 * the world, so they add context without adding contradictions.
 */
function storyTeller(world: World): (rng: Mulberry32) => string {
  const cityOf = new Map(world.cities.map((c) => [c.name.en, c]));
  const personOf = new Map(world.people.map((p) => [p.name.en, p]));
  const stories: ((rng: Mulberry32, lang: Lang) => string)[] = [
    (rng, lang) => trip(rng.pick(world.people), rng.pick(world.cities), lang),
    (rng, lang) => {
      const product = rng.pick(world.products);
      return shopping(rng.pick(world.people), product, lang);
    },
    (rng, lang) => {
      const [a, b] = rng.shuffle(world.people);
      return meeting(a, b, cityOf.get(a.home.en)!, lang);
    },
    (rng, lang) => {
      const product = rng.pick(world.products);
      return workshop(personOf.get(product.maker.en)!, product, lang);
    },
    (rng, lang) => guide(rng.pick(world.cities), lang),
    (rng, lang) => counting(rng.pick(world.people), rng, lang),
  ];
  return (rng) => rng.pick(stories)(rng, rng.chance(0.5) ? "en" : "zh");

  function trip(p: Person, c: City, lang: Lang): string {
    const home = p.home;
    if (lang === "en") {
      return `${p.name.en} is ${
        article(p.job.en)
      } who lives in ${home.en}. One ${c.weather.en} day, ` +
        `${p.name.en} took a train to ${c.name.en}, a city in ${c.country.en}. ${p.name.en} walked to ` +
        `the ${c.landmark.en} and stayed until evening. Back home in ${home.en}, ${p.name.en} told ` +
        `friends that the weather in ${c.name.en} is usually ${c.weather.en}.`;
    }
    return `${p.name.zh}是一名${p.job.zh}，住在${home.zh}。有一天，${p.name.zh}坐火车去了` +
      `${c.country.zh}的${c.name.zh}。${p.name.zh}参观了${c.landmark.zh}，一直待到傍晚。回到` +
      `${home.zh}后，${p.name.zh}告诉朋友们${c.name.zh}的天气通常${c.weather.zh}。`;
  }

  function shopping(p: Person, pr: Product, lang: Lang): string {
    if (lang === "en") {
      return `${p.name.en} wanted a new ${pr.kind.en}. At a shop in ${p.home.en}, ${p.name.en} found ` +
        `the ${pr.name.en}. It was ${pr.color.en}, it cost $${pr.price}, and it was made by ` +
        `${pr.maker.en}. ${p.name.en} paid $${pr.price} and carried the ${pr.color.en} ` +
        `${pr.kind.en} home.`;
    }
    return `${p.name.zh}想要一个新的${pr.kind.zh}。在${p.home.zh}的一家商店里，${p.name.zh}看到了` +
      `${pr.name.zh}。它是${pr.color.zh}的，价格是${pr.price}元，由${pr.maker.zh}制造。` +
      `${p.name.zh}付了${pr.price}元，把${pr.name.zh}带回了家。`;
  }

  function meeting(a: Person, b: Person, place: City, lang: Lang): string {
    if (lang === "en") {
      return `${a.name.en} and ${b.name.en} met at the ${place.landmark.en} in ${place.name.en}. ` +
        `${a.name.en} is ${a.age} years old and works as ${article(a.job.en)}. ${b.name.en} is ` +
        `${b.age} years old and works as ${article(b.job.en)}. They talked about ${b.home.en}, ` +
        `where ${b.name.en} lives.`;
    }
    return `${a.name.zh}和${b.name.zh}在${place.name.zh}的${place.landmark.zh}见面。${a.name.zh}` +
      `今年${a.age}岁，是一名${a.job.zh}。${b.name.zh}今年${b.age}岁，是一名${b.job.zh}。` +
      `他们聊起了${b.name.zh}住的城市${b.home.zh}。`;
  }

  function workshop(maker: Person, pr: Product, lang: Lang): string {
    if (lang === "en") {
      return `${maker.name.en} is ${article(maker.job.en)} in ${maker.home.en}. In a small ` +
        `workshop, ${maker.name.en} makes the ${pr.name.en}, ${
          article(pr.color.en)
        } ${pr.kind.en} that ` +
        `sells for $${pr.price}. People say the ${pr.name.en} is made by ${maker.name.en} with care.`;
    }
    return `${maker.name.zh}是${maker.home.zh}的一名${maker.job.zh}。在一个小作坊里，` +
      `${maker.name.zh}制造${pr.name.zh}，这是一个${pr.color.zh}的${pr.kind.zh}，售价${pr.price}元。` +
      `大家都说${pr.name.zh}是${maker.name.zh}用心制造的。`;
  }

  function guide(c: City, lang: Lang): string {
    const pop = c.populationMillions;
    if (lang === "en") {
      return `Welcome to ${c.name.en}! ${c.name.en} is a city in ${c.country.en}, and about ${pop} ` +
        `million people live here. Visitors love the ${c.landmark.en}. Bring the right clothes: ` +
        `the weather in ${c.name.en} is usually ${c.weather.en}.`;
    }
    return `欢迎来到${c.name.zh}！${c.name.zh}是${c.country.zh}的一座城市，大约有${
      pop * 100
    }万人口。` +
      `游客们都喜欢${c.landmark.zh}。记得带合适的衣服：${c.name.zh}的天气通常${c.weather.zh}。`;
  }

  function counting(p: Person, rng: Mulberry32, lang: Lang): string {
    const a = rng.int(2, 20);
    const b = rng.int(2, 20);
    if (lang === "en") {
      return `${p.name.en} had ${a} apples. At the market in ${p.home.en}, ${p.name.en} bought ` +
        `${b} more. Now ${p.name.en} has ${a} + ${b} = ${a + b} apples.`;
    }
    return `${p.name.zh}有${a}个苹果。在${p.home.zh}的市场上，${p.name.zh}又买了${b}个。` +
      `现在${p.name.zh}有${a} + ${b} = ${a + b}个苹果。`;
  }
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}
