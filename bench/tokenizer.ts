/**
 * Tokenizer benchmark: BPE training time (vocabulary 6400 on ~20 MB of mixed Chinese / English
 * text) and encoding throughput beside `js-tiktoken` (cl100k_base, o200k_base) and
 * `@huggingface/tokenizers` (loading our own `tokenizer.json`, so the ids are the same).
 *
 * Two corpora, both deterministic: the demo corpus of `data/` (`benchmarkText`) and a synthetic
 * Zipf mix generated below. js-tiktoken needs ~10 s per MB of Chinese, so the side-by-side encode
 * runs on a slice (`--compare-mb`, default 1); our encoder also runs on the whole text.
 *
 * ```sh
 * deno run -A bench/tokenizer.ts              # 20 MB, vocab 6400
 * deno run -A bench/tokenizer.ts --mb 5 --compare-mb 0.5
 * ```
 *
 * Targets (issue 4): training <= 30 s on 2 cores; encoding at least as fast as js-tiktoken.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { mulberry32 } from "../random/rng.ts";
import { getEncoding } from "js-tiktoken";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { benchmarkText } from "../data/mod.ts";
import {
  ChunkCounter,
  Tokenizer,
  tokenizerFromJson,
  toTokenizerConfig,
  toTokenizerJson,
  trainBpeFromCounts,
} from "../tokenizer/mod.ts";

const ENGLISH_COMMON = (
  "the of and to a in is that for it as was with be by on not he this are or his from at which " +
  "but have an they you were her she there been one all we their has would when if so no will " +
  "can more about up out them what some time could into only other new like then than these two " +
  "may first any my now such over also its after most made many before must through back years " +
  "where much your way well down should because each just those people how too little state good " +
  "very make world still own see men work long get here between both life being under never day " +
  "same another know while last might us great old year off come since against go came right used " +
  "take three model training data token layer attention network learning gradient loss batch " +
  "memory kernel tensor compute server request response function value result number system " +
  "language text example question answer problem method research paper results performance"
).split(" ");
const SYLLABLES = (
  "ka ri to na mo se lu vi an el or us in ter con pre pro ment tion able ing ed er ly st tr bl " +
  "ch sh th qu ph gr cl dr fl pl sp wr"
).split(" ");
const HAN =
  "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局突专费号尽另周较注语仅考落青随选列武红响虽推势参希古众构房半节土投某案黑维革划敌致陈律足态护七兴派孩验责营星够章音跟志底站严巴例防族供效续施留讲型料终答紧黄绝奇察母京段依批群项故按河米围江织害斗双境客纪采举杀攻父苏密低朝友诉止细愿千值仍男钱破网热助倒育属坐帝限船脸职速刻乐否刚威毛状率甚独球般普怕弹校苦创假久错承印晚兰试股拿脑预谁益阳若哪微尼继送急血惊伤素药适波夜省初喜卫源食险待述陆习置居劳财环排福纳欢雷警获模充负云停木游龙树疑层冷洲冲射略范竟句室异激汉村哈策演简卡罪判担州静退既衣您宗积余痛检差富灵协角占配征修皮挥胜降阶审沉坚善妈刘读啊超免压银买皇养伊怀执副乱抗犯追帮宣佛岁航优怪香著田铁控税左右份穿艺背阵草脚概恶块顿敢守酒岛托央户烈洋哥索胡款靠评版宝座释景顾弟登货互付伯慢欧换闻危忙核暗姐介坏讨丽良序升监临亮露永呼味野架域沙掉括舰鱼杂误湾吉减编楚肯测败屋跑梦散温困剑渐封救贵枪缺楼县尚毫移娘朋画班智亦耳恩短掌恐遗固席松秘谢鲁遇康虑幸均销钟诗藏赶剧票损忽巨炮旧端探湖录叶春乡附吸予礼港雨呀板庭妇归睛饭额含顺输摇招婚脱补谓督毒油疗旅泽材灭逐莫笔亡鲜词圣择寻厂睡博勒烟授诺伦岸奥唐卖俄炸载洛健堂旁宫喝借君禁阴园谋宋避抓荣姑孙逃牙束跳顶玉镇雪午练迫爷篇肉嘴馆遍凡础洞卷坦牛宁纸诸训私庄祖丝翻暴森塔默握戏隐熟骨访弱蒙歌店鬼软典欲萨伙遭盘爸扩盖弄雄稳忘亿刺拥徒姆杨齐赛趣曲刀床迎冰虚玩析窗醒妻透购替塞努休虎扬途侵刑绿兄迅套贸毕唯谷轮库迹尤竞街促延震弃甲伟麻川申缓潜闪售灯针哲络抵朱埃抱鼓植纯夏忍页杰筑折郑贝尊吴秀混臣雅振染盛怒舞圆搞狂措姓残秋培迷诚宽宇猛摆梅毁伸摩盟末乃悲拍丁赵";

/** Zipf sampler over n items (rank 1 most frequent), by inverse CDF on a precomputed table. */
function zipf(n: number, rand: () => number, s = 1.05): () => number {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let i = 0; i < n; i++) cdf[i] = acc += 1 / Math.pow(i + 1, s);
  for (let i = 0; i < n; i++) cdf[i] /= acc;
  return () => {
    const u = rand();
    let lo = 0, hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

/**
 * Synthetic mixed text: words drawn from Zipf distributions over fixed lexicons (English common
 * words plus syllable-built ones; Chinese words of 1-3 characters from ~1500 common Han
 * characters), Chinese clauses with full-width punctuation, code snippets, numbers and emoji. More
 * varied than the demo corpus (which is templated), so caches help less.
 */
function generateMixedCorpus(targetBytes: number, seed = 1234): string[] {
  const rand = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const english = [...ENGLISH_COMMON];
  for (let i = 0; i < 6000; i++) {
    let w = "";
    const n = 1 + Math.floor(rand() * 3);
    for (let j = 0; j < n; j++) w += pick(SYLLABLES);
    english.push(w);
  }
  const hanChars = [...HAN];
  const chinese: string[] = [];
  for (let i = 0; i < 8000; i++) {
    const n = rand() < 0.25 ? 1 : rand() < 0.85 ? 2 : 3;
    let w = "";
    for (let j = 0; j < n; j++) w += hanChars[Math.floor(Math.pow(rand(), 1.6) * hanChars.length)];
    chinese.push(w);
  }
  const enWord = zipf(english.length, rand);
  const zhWord = zipf(chinese.length, rand);
  const emoji = ["😀", "👍", "🚀", "🎉", "❤️", "👍🏽", "🤖", "✅"];

  const englishSentence = (): string => {
    const n = 5 + Math.floor(rand() * 15);
    const words: string[] = [];
    for (let i = 0; i < n; i++) {
      let w = english[enWord()];
      if (i === 0) w = w[0].toUpperCase() + w.slice(1);
      if (rand() < 0.03) w = String(Math.floor(rand() * 100000));
      words.push(w);
      if (i < n - 1 && rand() < 0.08) words[words.length - 1] += ",";
    }
    return words.join(" ") + pick([".", ".", ".", "?", "!"]) +
      (rand() < 0.02 ? " " + pick(emoji) : "");
  };
  const chineseSentence = (): string => {
    let s = "";
    const clauses = 1 + Math.floor(rand() * 3);
    for (let c = 0; c < clauses; c++) {
      const n = 2 + Math.floor(rand() * 6);
      for (let i = 0; i < n; i++) s += chinese[zhWord()];
      if (rand() < 0.1) s += " " + english[enWord()] + " ";
      if (rand() < 0.05) s += String(Math.floor(rand() * 2030));
      s += c < clauses - 1 ? pick(["，", "，", "、", "；"]) : pick(["。", "。", "！", "？"]);
    }
    return s;
  };
  const codeSnippet = (): string => {
    const name = english[enWord()] + "_" + english[enWord()];
    const arg = english[enWord()];
    const body = [
      `def ${name}(${arg}, n=${Math.floor(rand() * 100)}):\n`,
      `    """${englishSentence()}"""\n`,
      `    result = []\n`,
      `    for i in range(n):\n`,
      `        if ${arg}[i] % 2 == 0:\n`,
      `            result.append(${arg}[i] * ${Math.floor(rand() * 10)})\n`,
      `    return result\n`,
    ];
    if (rand() < 0.5) {
      return `function ${name.replace(/_(\w)/g, (_, c: string) => c.toUpperCase())}(${arg}) {\n` +
        `  const out = ${arg}.map((x) => x + ${Math.floor(rand() * 10)});\n` +
        `  // ${englishSentence()}\n  return out.filter(Boolean);\n}\n`;
    }
    return body.join("");
  };

  const docs: string[] = [];
  let bytes = 0;
  while (bytes < targetBytes) {
    const kind = rand();
    let doc = "";
    const sentences = 3 + Math.floor(rand() * 8);
    if (kind < 0.42) {
      for (let i = 0; i < sentences; i++) doc += (i ? " " : "") + englishSentence();
    } else if (kind < 0.84) {
      for (let i = 0; i < sentences; i++) doc += chineseSentence();
    } else if (kind < 0.92) {
      for (let i = 0; i < sentences; i++) {
        doc += rand() < 0.5 ? chineseSentence() : " " + englishSentence() + " ";
      }
    } else {
      doc = codeSnippet();
    }
    docs.push(doc);
    // UTF-8 size without encoding: ASCII 1 byte, BMP CJK 3 bytes (surrogate pairs 2 x 2).
    for (let i = 0; i < doc.length; i++) {
      const c = doc.charCodeAt(i);
      bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c < 0xe000 ? 2 : 3;
    }
  }
  return docs;
}

const utf8 = new TextEncoder();
const mb = (s: string) => utf8.encode(s).length / 1e6;

/** Runs `f` and returns its result with the elapsed seconds. */
function timed<T>(f: () => T): [T, number] {
  const t0 = performance.now();
  const out = f();
  return [out, (performance.now() - t0) / 1000];
}

/** Cuts `text` to about `megabytes` of UTF-8 at a paragraph boundary. */
function slice(text: string, megabytes: number): string {
  let end = 0, bytes = 0;
  while (end < text.length && bytes < megabytes * 1e6) {
    const next = text.indexOf("\n\n", end + 1);
    const stop = next < 0 ? text.length : next;
    bytes += utf8.encode(text.slice(end, stop)).length;
    end = stop;
  }
  return text.slice(0, end);
}

interface Row {
  name: string;
  mbps: number;
  tokens: number;
  bytesPerToken: number;
}

function table(rows: Row[], base: number): string {
  const lines = [
    "| encoder | MB/s | tokens | bytes/token | speed vs ours (cold) |",
    "|---|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.name} | ${r.mbps.toFixed(2)} | ${r.tokens} | ${r.bytesPerToken.toFixed(2)} | ` +
        `${(r.mbps / base).toFixed(3)}x |`,
    );
  }
  return lines.join("\n");
}

function benchCorpus(
  label: string,
  docs: string[],
  options: { vocabSize: number; compareMb: number },
): void {
  const text = docs.join("\n\n");
  const size = mb(text);
  console.log(
    `\n## ${label}: ${size.toFixed(1)} MB, ${(text.length / 1e6).toFixed(1)} M UTF-16 units`,
  );

  const [counter, tCount] = timed(() => {
    const c = new ChunkCounter();
    for (const d of docs) c.add(d);
    return c;
  });
  const [data, tMerge] = timed(() =>
    trainBpeFromCounts(counter.counts, { vocabSize: options.vocabSize })
  );
  const [tok, tBuild] = timed(() => new Tokenizer(data));
  const total = tCount + tMerge + tBuild;
  console.log(
    `train vocab ${tok.vocabSize}: pre-tokenize + count ${tCount.toFixed(2)} s ` +
      `(${counter.counts.size} unique chunks), merges ${tMerge.toFixed(2)} s, ` +
      `total ${total.toFixed(2)} s (${(size / total).toFixed(2)} MB/s) ` +
      `${total <= 30 ? "[ok: <= 30 s]" : "[SLOW: > 30 s]"}`,
  );

  const json = JSON.parse(JSON.stringify(toTokenizerJson(tok)));
  const config = JSON.parse(JSON.stringify(toTokenizerConfig(tok)));
  const part = slice(text, options.compareMb);
  const partMb = mb(part);
  const warm = slice(text.slice(text.length - 200_000), 0.05); // warm-up text, not measured
  const row = (name: string, encode: (s: string) => ArrayLike<number>): Row => {
    encode(warm);
    const [ids, t] = timed(() => encode(part));
    return { name, mbps: partMb / t, tokens: ids.length, bytesPerToken: partMb * 1e6 / ids.length };
  };

  const ours = tokenizerFromJson(json); // fresh: empty chunk cache
  const rows: Row[] = [row("ours (cold cache)", (s) => ours.encode(s))];
  rows.push(row("ours (warm cache)", (s) => ours.encode(s)));
  const hf = new HfTokenizer(json, config);
  const hfRow = row("@huggingface/tokenizers 0.2.0 (same tokenizer.json)", (s) => hf.encode(s).ids);
  rows.push(hfRow);
  for (const name of ["cl100k_base", "o200k_base"] as const) {
    const enc = getEncoding(name);
    rows.push(row(`js-tiktoken 1.0.21 ${name}`, (s) => enc.encode(s)));
  }
  const same = JSON.stringify(ours.encode(part)) === JSON.stringify(hf.encode(part).ids);
  console.log(`\nencode ${partMb.toFixed(2)} MB slice (ids equal to HF: ${same}):\n`);
  console.log(table(rows, rows[0].mbps));

  const fresh = tokenizerFromJson(json);
  const [fullIds, tFull] = timed(() => fresh.encode(text));
  console.log(
    `\nours on the whole ${size.toFixed(1)} MB: ${(size / tFull).toFixed(2)} MB/s ` +
      `(${fullIds.length} tokens, ${(size * 1e6 / fullIds.length).toFixed(2)} bytes/token)`,
  );
  const tiktoken = Math.max(
    ...rows.filter((r) => r.name.startsWith("js-tiktoken")).map((r) => r.mbps),
  );
  console.log(
    `ours (cold) vs fastest js-tiktoken: ${(rows[0].mbps / tiktoken).toFixed(1)}x ` +
      `${rows[0].mbps >= tiktoken ? "[ok]" : "[SLOWER]"}; vs HF: ${
        (rows[0].mbps / hfRow.mbps).toFixed(1)
      }x`,
  );
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mb: { type: "string", default: "20" },
      vocab: { type: "string", default: "6400" },
      "compare-mb": { type: "string", default: "1" },
      corpus: { type: "string", default: "both" },
    },
    strict: true,
  });
  const targetMb = Number(values.mb);
  const options = { vocabSize: Number(values.vocab), compareMb: Number(values["compare-mb"]) };
  console.log(
    `# tokenizer bench (Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores)`,
  );
  if (values.corpus !== "synthetic") {
    // The demo corpus averages ~1.38 UTF-8 bytes per UTF-16 unit.
    const [text, t] = timed(() => benchmarkText({ chars: Math.round(targetMb * 1e6 / 1.38) }));
    console.log(`(generated demo text in ${t.toFixed(1)} s)`);
    benchCorpus("demo corpus (data/ benchmarkText)", text.split("\n\n"), options);
  }
  if (values.corpus !== "demo") {
    const [docs, t] = timed(() => generateMixedCorpus(targetMb * 1e6));
    console.log(`\n(generated synthetic text in ${t.toFixed(1)} s)`);
    benchCorpus("synthetic Zipf mix (Chinese, English, code)", docs, options);
  }
}
