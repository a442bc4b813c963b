/**
 * The fixed bilingual word lists the demo world is built from.
 *
 * Names are made of syllables that each have one fixed Chinese character, so every invented name
 * has exactly one transliteration ("Karo" is always 卡罗) and the model sees the same pairing in
 * every document. The lists are short on purpose: a 1-3M-parameter model must learn every value.
 *
 * @module
 */

/** A word or phrase in both languages of the corpus. */
export interface Bilingual {
  /** English form, as it appears mid-sentence (e.g. `"teacher"`, `"Silver Tower"`). */
  en: string;
  /** Chinese form (e.g. `"老师"`, `"银塔"`). */
  zh: string;
}

/**
 * Name syllables and their fixed Chinese characters. No syllable ends in a silent-looking "e",
 * so names rarely spell English words ("Line", "Love") that would blur facts.
 */
export const SYLLABLES: readonly (readonly [string, string])[] = [
  ["ka", "卡"],
  ["lo", "洛"],
  ["mi", "米"],
  ["ra", "拉"],
  ["rin", "林"],
  ["da", "达"],
  ["mor", "莫"],
  ["to", "托"],
  ["sa", "萨"],
  ["li", "利"],
  ["ba", "巴"],
  ["ko", "科"],
  ["ta", "塔"],
  ["na", "纳"],
  ["zu", "祖"],
  ["lu", "卢"],
  ["po", "波"],
  ["bo", "博"],
  ["ni", "尼"],
  ["ma", "玛"],
  ["ro", "罗"],
  ["ga", "加"],
  ["dor", "多"],
  ["vi", "薇"],
  ["no", "诺"],
  ["ki", "基"],
  ["su", "苏"],
  ["ha", "哈"],
  ["el", "埃"],
  ["an", "安"],
  ["or", "奥"],
  ["is", "伊"],
  ["ul", "乌"],
  ["go", "戈"],
  ["mu", "穆"],
  ["fa", "法"],
  ["ti", "蒂"],
  ["ru", "鲁"],
  ["ken", "肯"],
  ["mel", "梅"],
  ["del", "德"],
  ["ven", "文"],
  ["zor", "佐"],
  ["bri", "布"],
  ["tal", "泰"],
  ["kir", "奇"],
  ["vo", "沃"],
  ["yu", "尤"],
];

/** English words a generated name must not spell, compared in lower case. */
export const NAME_BLOCKLIST: ReadonlySet<string> = new Set([
  "anna",
  "elan",
  "roman",
  "koran",
  "tomato",
  "banana",
  "mama",
  "papa",
  "nono",
  "isis",
  "sumo",
  "soda",
  "toga",
  "tuna",
  "yoga",
  "lima",
  "mali",
  "rio",
  "kilo",
  "polo",
  "solo",
  "lulu",
  "mortal",
  "rumor",
  "humor",
  "tumor",
  "motor",
  "rotor",
  "tutor",
  "donor",
  "manor",
  "minor",
  "razor",
  "sofa",
  "data",
  "koala",
  "salami",
  "tamil",
  "sushi",
  "kimono",
  "karma",
  "mantra",
  "dorsal",
  "moral",
  "coral",
  "total",
  "vital",
  "lunar",
  "solar",
  "sonar",
  "radar",
  "tomb",
]);

/** Jobs a person can have. */
export const JOBS: readonly Bilingual[] = [
  { en: "teacher", zh: "老师" },
  { en: "doctor", zh: "医生" },
  { en: "baker", zh: "面包师" },
  { en: "pilot", zh: "飞行员" },
  { en: "farmer", zh: "农民" },
  { en: "painter", zh: "画家" },
  { en: "engineer", zh: "工程师" },
  { en: "singer", zh: "歌手" },
  { en: "fisher", zh: "渔民" },
  { en: "nurse", zh: "护士" },
  { en: "writer", zh: "作家" },
  { en: "chef", zh: "厨师" },
  { en: "driver", zh: "司机" },
  { en: "tailor", zh: "裁缝" },
  { en: "gardener", zh: "园丁" },
  { en: "lawyer", zh: "律师" },
];

/** Product colors. */
export const COLORS: readonly Bilingual[] = [
  { en: "red", zh: "红色" },
  { en: "blue", zh: "蓝色" },
  { en: "green", zh: "绿色" },
  { en: "yellow", zh: "黄色" },
  { en: "black", zh: "黑色" },
  { en: "white", zh: "白色" },
  { en: "purple", zh: "紫色" },
  { en: "orange", zh: "橙色" },
  { en: "pink", zh: "粉色" },
  { en: "gray", zh: "灰色" },
  { en: "brown", zh: "棕色" },
  { en: "silver", zh: "银色" },
];

/** A city's usual weather, with the base temperature the weather tool reports around. */
export interface Climate extends Bilingual {
  /** Typical temperature in °C; each city adds a small fixed offset. */
  baseC: number;
}

/** Usual weather of a city; the Chinese forms read naturally after 通常 ("usually"). */
export const CLIMATES: readonly Climate[] = [
  { en: "sunny", zh: "晴朗", baseC: 26 },
  { en: "rainy", zh: "多雨", baseC: 16 },
  { en: "snowy", zh: "多雪", baseC: -4 },
  { en: "windy", zh: "多风", baseC: 12 },
  { en: "foggy", zh: "多雾", baseC: 10 },
  { en: "cloudy", zh: "多云", baseC: 18 },
  { en: "hot", zh: "炎热", baseC: 34 },
  { en: "cold", zh: "寒冷", baseC: 2 },
];

/** First word of a landmark name. */
export const LANDMARK_ADJECTIVES: readonly Bilingual[] = [
  { en: "Silver", zh: "银" },
  { en: "Golden", zh: "金" },
  { en: "Jade", zh: "玉" },
  { en: "Red", zh: "红" },
  { en: "White", zh: "白" },
  { en: "Crystal", zh: "水晶" },
  { en: "Stone", zh: "石" },
  { en: "Moon", zh: "月" },
  { en: "Sun", zh: "日" },
  { en: "Star", zh: "星" },
  { en: "Iron", zh: "铁" },
  { en: "Cloud", zh: "云" },
  { en: "Pine", zh: "松" },
  { en: "Dragon", zh: "龙" },
  { en: "Lotus", zh: "莲" },
  { en: "Amber", zh: "琥珀" },
];

/** Second word of a landmark name. */
export const LANDMARK_NOUNS: readonly Bilingual[] = [
  { en: "Tower", zh: "塔" },
  { en: "Bridge", zh: "桥" },
  { en: "Gate", zh: "门" },
  { en: "Garden", zh: "花园" },
  { en: "Temple", zh: "寺" },
  { en: "Palace", zh: "宫" },
  { en: "Lake", zh: "湖" },
  { en: "Market", zh: "市场" },
  { en: "Library", zh: "图书馆" },
  { en: "Fountain", zh: "喷泉" },
  { en: "Castle", zh: "城堡" },
  { en: "Harbor", zh: "港" },
];

/** Kinds of product; a product is named `<Brand> <kind>` ("Zuma lamp", 祖玛灯). */
export const PRODUCT_KINDS: readonly Bilingual[] = [
  { en: "lamp", zh: "灯" },
  { en: "kettle", zh: "水壶" },
  { en: "bicycle", zh: "自行车" },
  { en: "radio", zh: "收音机" },
  { en: "umbrella", zh: "雨伞" },
  { en: "backpack", zh: "背包" },
  { en: "teapot", zh: "茶壶" },
  { en: "clock", zh: "时钟" },
  { en: "camera", zh: "相机" },
  { en: "guitar", zh: "吉他" },
  { en: "scarf", zh: "围巾" },
  { en: "chair", zh: "椅子" },
];

/**
 * "a" or "an" before an English word, by its first letter (enough for this lexicon).
 *
 * @example
 * ```ts
 * article("engineer"); // "an engineer"
 * ```
 */
export function article(word: string): string {
  return (/^[aeiou]/i.test(word) ? "an " : "a ") + word;
}

/**
 * The string with its first letter in upper case, for sentence starts.
 *
 * @example
 * ```ts
 * capitalize("the Zuma lamp"); // "The Zuma lamp"
 * ```
 */
export function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
