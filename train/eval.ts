/**
 * Evaluation of a checkpoint, every model prompted the same way (the chat template), so a
 * pretrained, an SFT and a DPO model compare side by side:
 *
 * - validation loss / perplexity on a pretraining val shard (next-token CE, as pretraining);
 * - QA accuracy: each held-out question as one user turn plus the generation prompt, greedy
 *   decoding of at most `qaMaxTokens` tokens up to `<|im_end|>`, graded by exact match
 *   (`isCorrect` of `data/`, after normalization);
 * - recall (knowledge probe): the same questions as plain text in the pretraining FAQ form, so
 *   a model that never saw the chat template is asked the way its data asked; tells "does not
 *   know the fact" apart from "cannot answer in chat form";
 * - tool-call accuracy: the prompt with its tools, greedy decoding, the first
 *   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block parsed; right function,
 *   valid JSON arguments and right values (`gradeToolCall`); no block counts as wrong;
 * - preference accuracy: on held-out DPO pairs, the share whose chosen response has the higher
 *   summed log-probability (over the final assistant turn's tokens) under the model;
 * - arithmetic accuracy: each held-out GRPO word problem (no tools offered), greedy decoding of
 *   at most `reasoningMaxTokens` tokens (room for a think block), graded by the GRPO answer
 *   reward (`answerReward`: the last number after `</think>`, by value); reasoning format: the
 *   share of those replies that `formatReward` counts well formed (one `<think>` block with
 *   reasoning, then an answer).
 *
 * Generation goes through {@linkcode generateTokens}, which uses the latent-KV-cache decoder of
 * `model/decode.ts` (greedy, batched); swap it there to change how text is produced.
 *
 * @module
 */
import { Decoder, generateGreedy } from "../model/decode.ts";
import type { DeepSeekV3 } from "../model/transformer.ts";
import {
  encodeChatPrompt,
  IM_END_TOKEN,
  parseFirstToolCall,
  type Tokenizer,
} from "../tokenizer/mod.ts";
import {
  type EvalQuestion,
  type EvalToolCall,
  faqPrompt,
  gradeToolCall,
  isCorrect,
  type World,
} from "../data/mod.ts";
import { evaluatePairs, type PairExample } from "./dpo.ts";
import type { GrpoPrompt } from "./grpo_prompts.ts";
import { answerReward, formatReward } from "./rewards.ts";
import { evaluateLoss } from "./pretrain.ts";

/** Options of {@linkcode generateTokens}. */
export interface GenerateTokensOptions {
  /** Most new tokens per prompt. */
  maxTokens: number;
  /** Token ids that end a reply (included in the output). */
  stop: readonly number[];
  /** Prompts decoded together (decoder cache slots); default 128. */
  maxBatch?: number;
}

/**
 * Greedy continuations of token prompts, batched through the latent-cache decoder. Prompts that
 * leave no room for a reply get an empty one.
 *
 * @returns The new tokens per prompt (a stop token included when one came).
 * @example const [reply] = await generateTokens(model, [promptIds], { maxTokens: 16, stop: [imEnd] });
 */
export async function generateTokens(
  model: DeepSeekV3,
  prompts: readonly (readonly number[])[],
  opts: GenerateTokensOptions,
): Promise<number[][]> {
  const out: number[][] = prompts.map(() => []);
  const fits = [...prompts.keys()].filter((i) =>
    prompts[i].length > 0 && prompts[i].length < model.cfg.max_seq_len
  );
  const maxBatch = Math.max(1, Math.min(opts.maxBatch ?? 128, fits.length));
  if (fits.length === 0) return out;
  const decoder = new Decoder(model, { maxBatch });
  try {
    for (let s = 0; s < fits.length; s += maxBatch) {
      const idx = fits.slice(s, s + maxBatch);
      const { tokens } = await generateGreedy(decoder, idx.map((i) => prompts[i]), {
        maxTokens: opts.maxTokens,
        stop: opts.stop,
      });
      idx.forEach((i, k) => (out[i] = tokens[k]));
    }
  } finally {
    decoder.dispose();
  }
  return out;
}

/** The reply text of generated tokens: up to (not including) the end-of-turn token. */
export function replyText(tok: Tokenizer, tokens: readonly number[]): string {
  const end = tok.specialId(IM_END_TOKEN);
  const k = tokens.indexOf(end);
  return tok.decode(k >= 0 ? tokens.slice(0, k) : tokens);
}

/** One graded generation, kept for the report. */
export interface GradedSample {
  /** The user's request. */
  prompt: string;
  /** What was expected (answer text, or the expected call as JSON). */
  expected: string;
  /** The model's reply text. */
  output: string;
  /** Whether it was graded correct. */
  correct: boolean;
}

/** An accuracy with its counts and graded samples. */
export interface AccuracyResult {
  /** correct / total. */
  accuracy: number;
  /** Correct answers. */
  correct: number;
  /** Items graded. */
  total: number;
  /** Accuracy per group (language for QA, tool name for tool calls). */
  byGroup: Record<string, number>;
  /**
   * Tool calls only: the share of replies with a well-formed call (a `<tool_call>` block whose
   * JSON has a string name and object arguments) and with the right function, so a report can
   * tell "no call" from "wrong function" from "wrong argument values".
   */
  parts?: { wellFormed: number; rightFunction: number };
  /**
   * Arithmetic only: the share of replies with a well-formed reasoning block (`formatReward`
   * 1: `<think>` + reasoning + `</think>` + an answer).
   */
  reasoningFormat?: number;
  /** Every graded item. */
  samples: GradedSample[];
}

function summarize(samples: GradedSample[], groups: string[]): AccuracyResult {
  const correct = samples.filter((s) => s.correct).length;
  const byGroup: Record<string, number> = {};
  for (const g of new Set(groups)) {
    const idx = groups.flatMap((x, i) => (x === g ? [i] : []));
    byGroup[g] = idx.filter((i) => samples[i].correct).length / idx.length;
  }
  return {
    accuracy: samples.length ? correct / samples.length : NaN,
    correct,
    total: samples.length,
    byGroup,
    samples,
  };
}

/** Options of the generation graders. */
export interface GradeOptions {
  /** The tokenizer: prompts are rendered with its chat template. */
  tok: Tokenizer;
  /** Most new tokens per reply. */
  maxTokens: number;
  /** Prompts decoded together. */
  maxBatch?: number;
}

/**
 * QA accuracy: each question as a single user turn, greedy reply, exact match.
 *
 * @example const qa = await evaluateQuestions(model, questions, { tok, maxTokens: 16 });
 */
export async function evaluateQuestions(
  model: DeepSeekV3,
  questions: readonly EvalQuestion[],
  opts: GradeOptions,
): Promise<AccuracyResult> {
  const tok = opts.tok;
  const prompts = questions.map((q) =>
    encodeChatPrompt(tok, [{ role: "user", content: q.question }])
  );
  const replies = await generateTokens(model, prompts, {
    ...opts,
    stop: [tok.specialId(IM_END_TOKEN)],
  });
  const samples = questions.map((q, i) => {
    const output = replyText(tok, replies[i]);
    return { prompt: q.question, expected: q.answer, output, correct: isCorrect(output, q.answer) };
  });
  return summarize(samples, questions.map((q) => q.lang));
}

/**
 * Knowledge probe: each held-out question in the plain-text FAQ form of the pretraining
 * documents (`"Q: ...\nA:"`, `"问：...\n答："`; no chat template), after an end-of-document token,
 * greedy up to the end of the line, exact match. It says whether a model holds a fact at all,
 * which QA accuracy alone cannot tell apart from not answering in chat form.
 *
 * @example const recall = await evaluateRecall(model, questions, { tok, maxTokens: 16 });
 */
export async function evaluateRecall(
  model: DeepSeekV3,
  questions: readonly EvalQuestion[],
  opts: GradeOptions,
): Promise<AccuracyResult> {
  const tok = opts.tok;
  const prompts = questions.map((q) => [tok.eosId, ...tok.encode(faqPrompt(q.question, q.lang))]);
  const replies = await generateTokens(model, prompts, { ...opts, stop: lineEndIds(tok) });
  const samples = questions.map((q, i) => {
    const eos = replies[i].indexOf(tok.eosId);
    const output = tok.decode(eos >= 0 ? replies[i].slice(0, eos) : replies[i]).split("\n")[0]
      .trim();
    return { prompt: q.question, expected: q.answer, output, correct: isCorrect(output, q.answer) };
  });
  return summarize(samples, questions.map((q) => q.lang));
}

/** The ids whose text holds a line break, and the eos id: where a one-line answer ends. */
function lineEndIds(tok: Tokenizer): number[] {
  const ids = [tok.eosId];
  for (let id = 0; id < tok.vocabSize; id++) {
    if (id !== tok.eosId && tok.decode([id]).includes("\n")) ids.push(id);
  }
  return ids;
}

/**
 * Tool-call accuracy: the conversation with its tools, greedy reply, the first tool call graded
 * against the expected one (`world` resolves a city named in either language).
 *
 * @example const tools = await evaluateToolCalls(model, items, { tok, world, maxTokens: 48 });
 */
export async function evaluateToolCalls(
  model: DeepSeekV3,
  items: readonly EvalToolCall[],
  opts: GradeOptions & { world: World },
): Promise<AccuracyResult> {
  const tok = opts.tok;
  const prompts = items.map((it) => encodeChatPrompt(tok, it.messages, { tools: it.tools }));
  const replies = await generateTokens(model, prompts, {
    ...opts,
    stop: [tok.specialId(IM_END_TOKEN)],
  });
  let wellFormed = 0, rightFunction = 0;
  const samples = items.map((it, i) => {
    const output = replyText(tok, replies[i]);
    const call = parseFirstToolCall(output, { strict: true });
    if (call) wellFormed++;
    if (call?.name === it.expected.name) rightFunction++;
    return {
      prompt: String(it.messages.at(-1)?.content ?? ""),
      expected: JSON.stringify(it.expected),
      output,
      correct: call !== null && gradeToolCall(opts.world, call, it.expected),
    };
  });
  const n = Math.max(1, items.length);
  return {
    ...summarize(samples, items.map((it) => it.expected.name)),
    parts: { wellFormed: wellFormed / n, rightFunction: rightFunction / n },
  };
}

/**
 * Whether a GRPO prompt is an arithmetic one: `kind` `"arithmetic"`, or, without a kind, an
 * answer to check and no tool call to make.
 */
export function isArithmeticPrompt(p: GrpoPrompt): boolean {
  return p.kind !== undefined
    ? p.kind === "arithmetic"
    : p.target.answer !== undefined && p.target.toolCall === undefined;
}

/**
 * Arithmetic accuracy without tools: each word problem's conversation (its tools, if any, left
 * out), greedy reply of at most `maxTokens` tokens, graded by {@linkcode answerReward}; the
 * result's `reasoningFormat` is the share of replies {@linkcode formatReward} counts well formed.
 *
 * @example const r = await evaluateArithmetic(model, prompts, { tok, maxTokens: 96 });
 */
export async function evaluateArithmetic(
  model: DeepSeekV3,
  prompts: readonly GrpoPrompt[],
  opts: GradeOptions,
): Promise<AccuracyResult> {
  const tok = opts.tok;
  const end = tok.specialId(IM_END_TOKEN);
  const replies = await generateTokens(
    model,
    prompts.map((p) => encodeChatPrompt(tok, p.messages)),
    { ...opts, stop: [end] },
  );
  let wellFormed = 0;
  const samples = prompts.map((p, i) => {
    const tokens = replies[i];
    const reply = tok.decode(tokens);
    const info = {
      tokens: tokens.length,
      maxTokens: opts.maxTokens,
      truncated: !tokens.includes(end),
    };
    if (formatReward(reply, p.target, info) === 1) wellFormed++;
    return {
      prompt: String(p.messages.at(-1)?.content ?? ""),
      expected: p.target.answer ?? "",
      output: replyText(tok, tokens),
      correct: answerReward(reply, p.target, info) === 1,
    };
  });
  return {
    ...summarize(samples, prompts.map((p) => p.lang ?? "all")),
    reasoningFormat: wellFormed / Math.max(1, prompts.length),
  };
}

/** What {@linkcode evaluateModel} can be given; each part is optional. */
export interface EvalSets {
  /** Pretraining val shard token ids, for the validation loss. */
  valTokens?: ArrayLike<number>;
  /** Held-out questions. */
  questions?: readonly EvalQuestion[];
  /** Tool-call prompts, with the world that grades them. */
  toolCalls?: { items: readonly EvalToolCall[]; world: World };
  /** Held-out preference pairs (tokenized, response-masked). */
  pairs?: readonly PairExample[];
  /** Held-out arithmetic GRPO prompts (see {@linkcode isArithmeticPrompt}). */
  arithmetic?: readonly GrpoPrompt[];
}

/** Settings of {@linkcode evaluateModel}. */
export interface EvalOptions {
  /** The tokenizer every model is prompted with. */
  tok: Tokenizer;
  /** Rows per forward (loss, pair scoring). */
  B: number;
  /** Positions per row of the validation loss (pairs are scored in rows of max_seq_len). */
  T: number;
  /** Validation batches (0: the whole shard). */
  evalBatches?: number;
  /** Most tokens of a QA reply (default 16). */
  qaMaxTokens?: number;
  /** Most tokens of a tool-call reply (default 48). */
  toolMaxTokens?: number;
  /** Most tokens of a reply to an arithmetic problem, think block included (default 96). */
  reasoningMaxTokens?: number;
  /** Prompts decoded together (default 128). */
  maxBatch?: number;
  /** Padding token id. */
  padId?: number;
}

/** One model's evaluation. */
export interface ModelEval {
  /** Validation loss (nats per token) on the val shard, or null. */
  valLoss: number | null;
  /** Its perplexity. */
  valPpl: number | null;
  /** QA accuracy, or null. */
  qa: AccuracyResult | null;
  /** The same questions as plain-text FAQ prompts ({@linkcode evaluateRecall}), or null. */
  recall: AccuracyResult | null;
  /** Tool-call accuracy, or null. */
  tools: AccuracyResult | null;
  /** Preference accuracy on held-out pairs, or null. */
  preference:
    | { accuracy: number; total: number; logpsChosen: number; logpsRejected: number }
    | null;
  /**
   * Held-out arithmetic accuracy without tools ({@linkcode evaluateArithmetic}; its
   * `reasoningFormat` is the share of well-formed reasoning replies), or null.
   */
  arithmetic?: AccuracyResult | null;
  /** Wall seconds. */
  seconds: number;
}

/**
 * Runs every evaluation that `sets` has data for.
 *
 * @example const r = await evaluateModel(model, { questions }, { tok, B: 8, T: 256 });
 */
export async function evaluateModel(
  model: DeepSeekV3,
  sets: EvalSets,
  opts: EvalOptions,
): Promise<ModelEval> {
  const t0 = performance.now();
  const r: ModelEval = {
    valLoss: null,
    valPpl: null,
    qa: null,
    recall: null,
    tools: null,
    preference: null,
    arithmetic: null,
    seconds: 0,
  };
  if (sets.valTokens && sets.valTokens.length > opts.T) {
    const T = Math.min(opts.T, model.cfg.max_seq_len);
    const v = await evaluateLoss(model, sets.valTokens, {
      B: opts.B,
      T,
      evalBatches: opts.evalBatches,
    });
    r.valLoss = v.loss;
    r.valPpl = v.ppl;
  }
  const gen = { tok: opts.tok, maxBatch: opts.maxBatch };
  if (sets.questions?.length) {
    r.qa = await evaluateQuestions(model, sets.questions, {
      ...gen,
      maxTokens: opts.qaMaxTokens ?? 16,
    });
    r.recall = await evaluateRecall(model, sets.questions, {
      ...gen,
      maxTokens: opts.qaMaxTokens ?? 16,
    });
  }
  if (sets.toolCalls?.items.length) {
    r.tools = await evaluateToolCalls(model, sets.toolCalls.items, {
      ...gen,
      world: sets.toolCalls.world,
      maxTokens: opts.toolMaxTokens ?? 48,
    });
  }
  if (sets.arithmetic?.length) {
    r.arithmetic = await evaluateArithmetic(model, sets.arithmetic, {
      ...gen,
      maxTokens: opts.reasoningMaxTokens ?? 96,
    });
  }
  if (sets.pairs?.length) {
    const p = await evaluatePairs(model, sets.pairs, {
      B: opts.B,
      T: model.cfg.max_seq_len,
      beta: 0.1,
      padId: opts.padId,
    });
    r.preference = {
      accuracy: p.preference_accuracy,
      total: sets.pairs.length,
      logpsChosen: p["logps/chosen"],
      logpsRejected: p["logps/rejected"],
    };
  }
  r.seconds = (performance.now() - t0) / 1000;
  return r;
}

/** A named evaluation, one row of the report. */
export interface ReportRow {
  /** Label (stage or directory). */
  name: string;
  /** The checkpoint evaluated. */
  checkpoint: string;
  /** Its results. */
  eval: ModelEval;
}

/**
 * The side-by-side Markdown report: one row per checkpoint, then a few replies of each.
 *
 * @example console.log(renderEvalReport(rows));
 */
export function renderEvalReport(
  rows: readonly ReportRow[],
  opts: { samples?: number } = {},
): string {
  const f = (v: number | null | undefined, d = 3) =>
    v === null || v === undefined || Number.isNaN(v) ? "-" : v.toFixed(d);
  const acc = (a: AccuracyResult | null) => a ? `${f(a.accuracy)} (${a.correct}/${a.total})` : "-";
  const lines = [
    "| model | val loss | val ppl | QA accuracy | recall (text prompt) | tool-call accuracy | preference accuracy | arithmetic accuracy | reasoning format | checkpoint |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map(({ name, checkpoint, eval: e }) =>
      `| ${name} | ${f(e.valLoss)} | ${f(e.valPpl, 1)} | ${acc(e.qa)} | ${acc(e.recall)} | ${
        acc(e.tools)
      } | ${e.preference ? `${f(e.preference.accuracy)} (${e.preference.total} pairs)` : "-"} | ${
        acc(e.arithmetic ?? null)
      } | ${f(e.arithmetic?.reasoningFormat)} | ${checkpoint} |`
    ),
  ];
  const withParts = rows.filter((r) => r.eval.tools?.parts);
  if (withParts.length) {
    lines.push(
      "",
      "Tool calls in detail (share of prompts): a well-formed `<tool_call>`, the right function, " +
        "the right argument values (= tool-call accuracy).",
      "",
      "| model | well-formed call | right function | right values |",
      "|---|---|---|---|",
      ...withParts.map(({ name, eval: e }) =>
        `| ${name} | ${f(e.tools!.parts!.wellFormed)} | ${f(e.tools!.parts!.rightFunction)} | ${
          f(e.tools!.accuracy)
        } |`
      ),
    );
  }
  const k = opts.samples ?? 3;
  if (k > 0) {
    for (const { name, eval: e } of rows) {
      const shown = [
        ...(e.qa?.samples.slice(0, k) ?? []),
        ...(e.tools?.samples.slice(0, k) ?? []),
        ...(e.arithmetic?.samples.slice(0, k) ?? []),
      ];
      if (!shown.length) continue;
      lines.push("", `**${name}** sample replies:`, "");
      for (const s of shown) {
        lines.push(
          `- ${s.correct ? "ok" : "wrong"}: ${JSON.stringify(s.prompt)} -> ${
            JSON.stringify(s.output)
          } (want ${s.expected})`,
        );
      }
    }
  }
  return lines.join("\n");
}
