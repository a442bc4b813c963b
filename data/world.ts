/**
 * The invented world: countries, cities, people and products, and the facts that tie them.
 *
 * Every entity has 3-4 attributes with short values (one name, word or number) so exact-match
 * grading works. Each fact is assigned once to a split: `"sft"` facts may be asked about in SFT
 * and DPO data, `"eval"` facts are stated only in pretraining text and asked only in
 * {@linkcode evalQuestions}. That separation measures whether the model learned facts from
 * pretraining and can retrieve them in chat form (the "knowledge extraction" setting of
 * Allen-Zhu & Li, Physics of Language Models 3.1, 2023), not whether it memorized SFT answers.
 *
 * Left out on purpose: relations between more than two entities, and any attribute whose value
 * would need a sentence to state.
 *
 * @module
 */

import {
  type Bilingual,
  CLIMATES,
  COLORS,
  JOBS,
  LANDMARK_ADJECTIVES,
  LANDMARK_NOUNS,
  NAME_BLOCKLIST,
  PRODUCT_KINDS,
  SYLLABLES,
} from "./lexicon.ts";
import { deriveSeed, Mulberry32 } from "../random/rng.ts";

/** The kinds of entity that carry facts. */
export type EntityKind = "city" | "person" | "product";

/** Every attribute a fact can be about; each belongs to one {@linkcode EntityKind}. */
export type Attribute =
  | "country"
  | "population"
  | "landmark"
  | "weather"
  | "home"
  | "job"
  | "age"
  | "maker"
  | "price"
  | "color";

/** Which attributes each kind of entity has, in the order documents usually state them. */
export const ATTRIBUTES: Readonly<Record<EntityKind, readonly Attribute[]>> = {
  city: ["country", "population", "landmark", "weather"],
  person: ["home", "job", "age"],
  product: ["maker", "price", "color"],
};

/** A city. */
export interface City {
  /** The city's name. */
  name: Bilingual;
  /** The country's name. */
  country: Bilingual;
  /** Population in millions (1-15): a small integer a tiny model can memorize. */
  populationMillions: number;
  /** Its most famous landmark, e.g. `{ en: "Silver Tower", zh: "银塔" }`. */
  landmark: Bilingual;
  /** Usual weather; the `get_weather` tool reports this condition. */
  weather: Bilingual;
  /** The temperature `get_weather` reports, fixed per city so tool results are deterministic. */
  temperatureC: number;
}

/** A person. */
export interface Person {
  /** The person's name. */
  name: Bilingual;
  /** The home city's name. */
  home: Bilingual;
  /** What the person does for a living. */
  job: Bilingual;
  /** Age in years (18-79). */
  age: number;
}

/** A product, named `<Brand> <kind>`. */
export interface Product {
  /** Full name, e.g. `{ en: "Zuma lamp", zh: "祖玛灯" }`. */
  name: Bilingual;
  /** What it is, e.g. `{ en: "lamp", zh: "灯" }`. */
  kind: Bilingual;
  /** The name of the person who makes it. */
  maker: Bilingual;
  /** Price in dollars (en `$35`) or yuan (zh `35元`): the same number in both languages. */
  price: number;
  /** Its one color. */
  color: Bilingual;
}

/** Which data may mention a fact: SFT and DPO (`"sft"`) or only evaluation (`"eval"`). */
export type Split = "sft" | "eval";

/** One (entity, attribute, value) triple. Pretraining text states every fact. */
export interface Fact {
  /** Stable id, `kind/EnglishName/attribute`, e.g. `"person/Karo/age"`. */
  id: string;
  /** The kind of entity the fact is about. */
  kind: EntityKind;
  /** The entity's name. */
  entity: Bilingual;
  /** What the fact says about the entity. */
  attribute: Attribute;
  /** The exact answer in each language, e.g. `{ en: "3 million", zh: "300万" }`. */
  value: Bilingual;
  /** Where the fact may appear besides pretraining. */
  split: Split;
}

/** The whole generated world: plain data, JSON-serializable. */
export interface World {
  /** The seed it was generated from. */
  seed: number;
  /** The scale it was generated at. */
  scale: number;
  /** Country names; countries have no attributes of their own. */
  countries: Bilingual[];
  /** Cities, each in one country. */
  cities: City[];
  /** People, each living in one city. */
  people: Person[];
  /** Products, each made by one person. */
  products: Product[];
  /** Every fact, grouped by entity in the order cities, people, products. */
  facts: Fact[];
}

/** Options for {@linkcode generateWorld}. */
export interface WorldOptions {
  /** Seed for every random choice; the same seed and scale give the identical world. */
  seed?: number;
  /** Multiplies entity counts (and, downstream, document counts). Default 1. */
  scale?: number;
}

/**
 * Entity counts at scale 1. Small on purpose: with ~100 facts, each stated dozens of times in a
 * few hundred thousand tokens, a 1-3M-parameter model has a chance to learn them.
 */
export const BASE_COUNTS = { countries: 4, cities: 12, people: 12, products: 8 } as const;

/** Fraction of each attribute's facts held out for evaluation (at least one per attribute). */
export const EVAL_FRACTION = 0.25;

/** Default seed of the demo world. */
export const DEFAULT_SEED = 1234;

/**
 * Builds the world deterministically from a seed and a scale.
 *
 * @param options `seed` (default {@linkcode DEFAULT_SEED}) and `scale` (default 1, > 0).
 * @returns Countries, cities, people, products and their facts, each fact tagged with its split.
 * @throws {RangeError} If `scale` is not a positive finite number.
 * @example
 * ```ts
 * const world = generateWorld({ seed: 1, scale: 1 });
 * world.cities.length; // 12
 * world.facts.filter((f) => f.split === "eval").length; // 27
 * ```
 */
export function generateWorld(options: WorldOptions = {}): World {
  const seed = options.seed ?? DEFAULT_SEED;
  const scale = options.scale ?? 1;
  if (!(scale > 0) || !Number.isFinite(scale)) {
    throw new RangeError(`generateWorld(): scale must be a positive number, got ${scale}`);
  }
  const count = (base: number) => Math.max(2, Math.round(base * scale));
  const rng = new Mulberry32(deriveSeed(seed, "world"));
  const names = new NameMaker(rng);

  const countries = Array.from({ length: count(BASE_COUNTS.countries) }, () => names.make(3));
  const landmarks = rng.shuffle(
    LANDMARK_ADJECTIVES.flatMap((a) =>
      LANDMARK_NOUNS.map((n) => ({ en: `${a.en} ${n.en}`, zh: a.zh + n.zh }))
    ),
  );
  const cities: City[] = [];
  for (let i = 0; i < count(BASE_COUNTS.cities); i++) {
    const name = names.make(2);
    const weather = CLIMATES[i % CLIMATES.length]; // cycling keeps every climate represented
    // Past the adjective x noun pool (large scales only), name the landmark after its city.
    const noun = rng.pick(LANDMARK_NOUNS);
    const landmark = landmarks[i] ?? { en: `${name.en} ${noun.en}`, zh: name.zh + noun.zh };
    cities.push({
      name,
      country: countries[i < countries.length ? i : rng.int(0, countries.length - 1)],
      populationMillions: rng.int(1, 15),
      landmark,
      weather: { en: weather.en, zh: weather.zh },
      temperatureC: weather.baseC + rng.int(-3, 3),
    });
  }
  const people: Person[] = [];
  for (let i = 0; i < count(BASE_COUNTS.people); i++) {
    people.push({
      name: names.make(2),
      home: rng.pick(cities).name,
      job: JOBS[(i + rng.int(0, 1)) % JOBS.length],
      age: rng.int(18, 79),
    });
  }
  const products: Product[] = [];
  for (let i = 0; i < count(BASE_COUNTS.products); i++) {
    const brand = names.make(2);
    const kind = PRODUCT_KINDS[i % PRODUCT_KINDS.length];
    products.push({
      name: { en: `${brand.en} ${kind.en}`, zh: brand.zh + kind.zh },
      kind,
      maker: rng.pick(people).name,
      price: rng.int(5, 99),
      color: rng.pick(COLORS),
    });
  }
  const facts = assignSplits(listFacts(cities, people, products), rng);
  return { seed, scale, countries, cities, people, products, facts };
}

/**
 * Every fact in a world's entities, before splits are assigned.
 * Values are formatted here, once, so all generators agree on the exact answer strings.
 */
function listFacts(cities: City[], people: Person[], products: Product[]): Fact[] {
  const facts: Fact[] = [];
  const add = (kind: EntityKind, entity: Bilingual, attribute: Attribute, value: Bilingual) =>
    facts.push({
      id: `${kind}/${entity.en}/${attribute}`,
      kind,
      entity,
      attribute,
      value,
      split: "sft",
    });
  for (const c of cities) {
    add("city", c.name, "country", c.country);
    add("city", c.name, "population", {
      en: `${c.populationMillions} million`,
      zh: `${c.populationMillions * 100}万`,
    });
    add("city", c.name, "landmark", c.landmark);
    add("city", c.name, "weather", c.weather);
  }
  for (const p of people) {
    add("person", p.name, "home", p.home);
    add("person", p.name, "job", p.job);
    add("person", p.name, "age", { en: `${p.age}`, zh: `${p.age}岁` });
  }
  for (const p of products) {
    add("product", p.name, "maker", p.maker);
    add("product", p.name, "price", { en: `$${p.price}`, zh: `${p.price}元` });
    add("product", p.name, "color", p.color);
  }
  return facts;
}

/**
 * Holds out {@linkcode EVAL_FRACTION} of the entities for each attribute. Splitting per attribute
 * (not per entity) means SFT still teaches the question form of every attribute, on other
 * entities, so evaluation tests recall of pretraining facts rather than an unseen question form.
 */
function assignSplits(facts: Fact[], rng: Mulberry32): Fact[] {
  const byAttribute = new Map<Attribute, Fact[]>();
  for (const f of facts) byAttribute.set(f.attribute, [...(byAttribute.get(f.attribute) ?? []), f]);
  for (const group of byAttribute.values()) {
    const held = Math.max(1, Math.round(group.length * EVAL_FRACTION));
    for (const f of rng.shuffle(group).slice(0, held)) f.split = "eval";
  }
  return facts;
}

/**
 * Makes unique invented names from {@linkcode SYLLABLES}. No name contains another (in either
 * language), so a name found in a text always means that entity.
 *
 * @example
 * ```ts
 * const names = new NameMaker(new Mulberry32(1));
 * names.make(2); // e.g. { en: "Karo", zh: "卡罗" }
 * ```
 */
export class NameMaker {
  #rng: Mulberry32;
  #taken: Bilingual[];

  /** @param rng The stream to draw from. @param taken Names to avoid (and not contain). */
  constructor(rng: Mulberry32, taken: readonly Bilingual[] = []) {
    this.#rng = rng;
    this.#taken = [...taken];
  }

  /**
   * A fresh name of `syllables` syllables, or more once that space is crowded.
   *
   * @throws {Error} If no unique name turns up in 10,000 tries.
   */
  make(syllables: number): Bilingual {
    for (let attempt = 0; attempt < 10_000; attempt++) {
      const n = syllables + Math.floor(attempt / 200);
      let en = "";
      let zh = "";
      for (let i = 0; i < n; i++) {
        const [s, c] = this.#rng.pick(SYLLABLES);
        // Two vowels across a syllable break ("Miis", "Voul") read badly and blur the split.
        if (/[aeiou]$/.test(en) && /^[aeiou]/.test(s)) {
          i--;
          continue;
        }
        en += s;
        zh += c;
      }
      en = en.charAt(0).toUpperCase() + en.slice(1);
      if (this.#clashes(en, zh)) continue;
      const name = { en, zh };
      this.#taken.push(name);
      return name;
    }
    throw new Error("NameMaker: ran out of unique names; lower the world scale");
  }

  #clashes(en: string, zh: string): boolean {
    const lower = en.toLowerCase();
    if (NAME_BLOCKLIST.has(lower) || /(.)\1\1/.test(lower)) return true;
    return this.#taken.some((t) => {
      const other = t.en.toLowerCase();
      return other.includes(lower) || lower.includes(other) || t.zh.includes(zh) ||
        zh.includes(t.zh);
    });
  }
}

/**
 * Every name in the world (countries, cities, people, product brands), for avoiding clashes.
 *
 * @example
 * ```ts
 * new NameMaker(rng, worldNames(world)).make(2); // a name no entity has
 * ```
 */
export function worldNames(world: World): Bilingual[] {
  return [
    ...world.countries,
    ...world.cities.map((c) => c.name),
    ...world.people.map((p) => p.name),
    ...world.products.map((p) => ({
      en: p.name.en.slice(0, -p.kind.en.length - 1),
      zh: p.name.zh.slice(0, -p.kind.zh.length),
    })),
  ];
}

/**
 * Looks a city up by its English or Chinese name (English case-insensitively).
 *
 * @returns The city and which language matched, or `undefined`.
 * @example
 * ```ts
 * findCity(world, world.cities[0].name.zh)?.lang; // "zh"
 * ```
 */
export function findCity(
  world: World,
  name: string,
): { city: City; lang: "en" | "zh" } | undefined {
  const key = name.trim();
  for (const city of world.cities) {
    if (city.name.zh === key) return { city, lang: "zh" };
    if (city.name.en.toLowerCase() === key.toLowerCase()) return { city, lang: "en" };
  }
  return undefined;
}

/**
 * The facts of one split.
 *
 * @example
 * ```ts
 * factsOf(world, "eval").every((f) => f.split === "eval"); // true
 * ```
 */
export function factsOf(world: World, split: Split): Fact[] {
  return world.facts.filter((f) => f.split === split);
}
