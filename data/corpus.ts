/**
 * The whole demo corpus in one call, its size summary, and a large mixed text for tokenizer
 * benchmarks.
 *
 * @module
 */

import { dpoPairs } from "./dpo.ts";
import { type EvalQuestion, evalQuestions, type EvalToolCall, evalToolCalls } from "./eval.ts";
import type { DpoPair, SftRecord } from "./messages.ts";
import { type PretrainDocument, pretrainDocuments } from "./pretrain.ts";
import { type GrpoPromptRecord, grpoPrompts } from "./reasoning.ts";
import { sftConversations } from "./sft.ts";
import { DEFAULT_SEED, generateWorld, type World } from "./world.ts";

/**
 * The demo's corpus settings. Scale 1 is sized for the ~10-minute CPU demo: ~0.3M characters (0.43 MB) of
 * pretraining text (a few hundred thousand tokens), 2000 SFT conversations plus 200 worked word
 * problems, 500 + 50 DPO pairs, 108 evaluation questions, 40 tool-call prompts, and 440 + 110
 * GRPO prompts.
 */
export const DEMO_CORPUS: { readonly seed: number; readonly scale: number } = {
  seed: DEFAULT_SEED,
  scale: 1,
};

/** Every split of the corpus, as produced by {@linkcode buildCorpus}. */
export interface Corpus {
  /** The entities and facts everything else is generated from. */
  world: World;
  /** `pretrain.jsonl` records. */
  pretrain: PretrainDocument[];
  /** `sft.jsonl` records. */
  sft: SftRecord[];
  /** DPO pairs to train on and to measure preference accuracy on. */
  dpo: { train: DpoPair[]; heldOut: DpoPair[] };
  /** Exact-answer questions about held-out facts. */
  evalQuestions: EvalQuestion[];
  /** Tool-call prompts with the expected call. */
  evalToolCalls: EvalToolCall[];
  /**
   * GRPO prompts with verifiable targets (`grpo.jsonl`, `grpo_heldout.jsonl`): the held-out
   * word problems share neither templates nor number tuples with the train ones.
   */
  grpo: { train: GrpoPromptRecord[]; heldOut: GrpoPromptRecord[] };
}

/**
 * Builds the world and every data split from one seed and scale.
 *
 * @param options `seed` and `scale`; defaults are {@linkcode DEMO_CORPUS}.
 * @returns All splits; deterministic in `seed` and `scale`.
 * @throws {RangeError} If `scale` is not positive.
 * @example
 * ```ts
 * const corpus = buildCorpus({ seed: 7, scale: 0.5 });
 * toJsonl(corpus.sft); // the sft.jsonl text
 * ```
 */
export function buildCorpus(options: { seed?: number; scale?: number } = {}): Corpus {
  const world = generateWorld({
    seed: options.seed ?? DEMO_CORPUS.seed,
    scale: options.scale ?? DEMO_CORPUS.scale,
  });
  return {
    world,
    pretrain: pretrainDocuments(world),
    sft: sftConversations(world),
    dpo: dpoPairs(world),
    evalQuestions: evalQuestions(world),
    evalToolCalls: evalToolCalls(world),
    grpo: grpoPrompts(world),
  };
}

/** Counts and sizes of a corpus, from {@linkcode describeCorpus}. */
export interface CorpusDescription {
  /** The world seed. */
  seed: number;
  /** The world scale. */
  scale: number;
  /** Entity counts. */
  entities: { countries: number; cities: number; people: number; products: number };
  /** Fact counts, by split. */
  facts: { total: number; sft: number; eval: number };
  /** Pretraining size; `chineseShare` is the share of characters that are Han. */
  pretrain: { documents: number; chars: number; utf8Bytes: number; chineseShare: number };
  /** SFT size; `chars` counts message contents only. */
  sft: {
    conversations: number;
    messages: number;
    withToolCalls: number;
    withReasoning: number;
    chars: number;
  };
  /** DPO pair counts. */
  dpo: { train: number; heldOut: number };
  /** Evaluation item counts. */
  eval: { questions: number; toolCalls: number };
  /** GRPO prompt counts by split and kind. */
  grpo: { train: number; trainTools: number; heldOut: number; heldOutTools: number };
  /** The same, as one line for a log. */
  summary: string;
}

/**
 * Summarizes a corpus: entity and fact counts, document and message counts, text sizes.
 *
 * @param corpus From {@linkcode buildCorpus}.
 * @example
 * ```ts
 * describeCorpus(buildCorpus()).summary;
 * // "world seed 1234 scale 1: 12 cities, 12 people, 8 products, 108 facts (27 held out); ..."
 * ```
 */
export function describeCorpus(corpus: Corpus): CorpusDescription {
  const { world } = corpus;
  const text = corpus.pretrain.map((d) => d.text).join("");
  const han = text.match(/\p{Script=Han}/gu)?.length ?? 0;
  const messages = corpus.sft.flatMap((r) => r.conversations);
  const evalFacts = world.facts.filter((f) => f.split === "eval").length;
  const d: Omit<CorpusDescription, "summary"> = {
    seed: world.seed,
    scale: world.scale,
    entities: {
      countries: world.countries.length,
      cities: world.cities.length,
      people: world.people.length,
      products: world.products.length,
    },
    facts: { total: world.facts.length, sft: world.facts.length - evalFacts, eval: evalFacts },
    pretrain: {
      documents: corpus.pretrain.length,
      chars: text.length,
      utf8Bytes: new TextEncoder().encode(text).length,
      chineseShare: Math.round((han / Math.max(1, text.length)) * 100) / 100,
    },
    sft: {
      conversations: corpus.sft.length,
      messages: messages.length,
      withToolCalls: corpus.sft.filter((r) => r.conversations.some((m) => m.tool_calls)).length,
      withReasoning: corpus.sft.filter((r) => r.conversations.some((m) => m.reasoning_content))
        .length,
      chars: messages.reduce((n, m) => n + (m.content?.length ?? 0), 0),
    },
    dpo: { train: corpus.dpo.train.length, heldOut: corpus.dpo.heldOut.length },
    eval: { questions: corpus.evalQuestions.length, toolCalls: corpus.evalToolCalls.length },
    grpo: {
      train: corpus.grpo.train.length,
      trainTools: corpus.grpo.train.filter((r) => r.kind === "tool").length,
      heldOut: corpus.grpo.heldOut.length,
      heldOutTools: corpus.grpo.heldOut.filter((r) => r.kind === "tool").length,
    },
  };
  const summary = `world seed ${d.seed} scale ${d.scale}: ${d.entities.cities} cities, ` +
    `${d.entities.people} people, ${d.entities.products} products, ${d.facts.total} facts ` +
    `(${d.facts.eval} held out); pretrain ${d.pretrain.documents} docs, ` +
    `${d.pretrain.chars} chars (${d.pretrain.utf8Bytes} bytes); sft ${d.sft.conversations} ` +
    `conversations (${d.sft.withToolCalls} with tool calls, ${d.sft.withReasoning} with ` +
    `reasoning); dpo ${d.dpo.train} + ${d.dpo.heldOut} held out; eval ${d.eval.questions} ` +
    `questions, ${d.eval.toolCalls} tool calls; grpo ${d.grpo.train} + ${d.grpo.heldOut} ` +
    `held out`;
  return { ...d, summary };
}

/**
 * Mixed English and Chinese text of about `chars` characters for tokenizer benchmarks: the
 * pretraining documents of successively seeded worlds, joined by blank lines until long enough.
 * 20M characters take about a second.
 *
 * @param options `chars` (default 20,000,000) and `seed` (default {@linkcode DEFAULT_SEED}).
 * @returns A string of exactly `chars` characters (cut at the end, possibly mid-document).
 * @example
 * ```ts
 * benchmarkText({ chars: 1_000_000 }).length; // 1000000
 * ```
 */
export function benchmarkText(options: { chars?: number; seed?: number } = {}): string {
  const target = options.chars ?? 20_000_000;
  const seed = options.seed ?? DEFAULT_SEED;
  const parts: string[] = [];
  let length = 0;
  // Scale 8 gives ~4M characters per world; new seeds add new names so the text is not one
  // block repeated, which would flatter a tokenizer's cache.
  for (let i = 0; length < target; i++) {
    for (const doc of pretrainDocuments(generateWorld({ seed: seed + i, scale: 8 }))) {
      parts.push(doc.text);
      length += doc.text.length + 2;
      if (length >= target) break;
    }
  }
  return parts.join("\n\n").slice(0, target);
}
