/**
 * The one-command demo: generate the built-in bilingual corpus, train the tokenizer, prepare
 * token shards, pretrain, then post-train and evaluate (as those stages exist), and print one
 * table. Every output lands in one run directory:
 *
 *     <out>/corpus/*.jsonl      the generated data
 *     <out>/tokenizer/          tokenizer.json + tokenizer_config.json
 *     <out>/data/               train.bin, val.bin, meta.json
 *     <out>/pretrain/           checkpoints, metrics.jsonl, loss.svg
 *     <out>/report.md|json      the final table
 *
 * @module
 */
import { buildCorpus, describeCorpus, toJsonl } from "../data/mod.ts";
import { saveTokenizer, trainTokenizerFromFiles } from "../tokenizer/mod.ts";
import { prepareShards } from "./prepare.ts";
import { PRETRAIN_OPTIONS, runPretrain } from "./run_pretrain.ts";
import { resolveOptions } from "./options.ts";

/** Settings of {@linkcode runDemo}. */
export interface DemoOptions {
  /** Run directory. */
  out: string;
  /** Corpus scale (1 = the default small world). */
  scale: number;
  /** Model preset for pretraining. */
  preset: string;
  /** Pretraining steps. */
  pretrainSteps: number;
  /** Sequences per batch and their length. */
  batchSize: number;
  seqLen: number;
  /** Seed of everything. */
  seed: number;
  /** Tokenizer vocabulary target (the small corpus may give fewer). */
  vocabSize: number;
  /** Show progress bars. */
  progress: boolean;
}

/** One row of the final table. */
export interface DemoRow {
  stage: string;
  valLoss: number | null;
  qaAccuracy: number | null;
  toolAccuracy: number | null;
  preferenceAccuracy: number | null;
  seconds: number;
}

/** Runs the whole pipeline; returns the table rows. */
export async function runDemo(
  opts: DemoOptions,
  io: { log?: (s: string) => void } = {},
): Promise<DemoRow[]> {
  const log = io.log ?? ((s: string) => console.log(s));
  const t0 = performance.now();
  const out = opts.out;
  await Deno.mkdir(`${out}/corpus`, { recursive: true });

  // 1. The corpus.
  const corpus = buildCorpus({ seed: opts.seed, scale: opts.scale });
  log(`corpus: ${describeCorpus(corpus).summary}`);
  const files = {
    pretrain: `${out}/corpus/pretrain.jsonl`,
    tokenizerText: `${out}/corpus/tokenizer_text.jsonl`,
    sft: `${out}/corpus/sft.jsonl`,
    dpo: `${out}/corpus/dpo.jsonl`,
    dpoHeldOut: `${out}/corpus/dpo_heldout.jsonl`,
    eval: `${out}/corpus/eval.jsonl`,
    evalTools: `${out}/corpus/eval_tools.jsonl`,
  };
  await Deno.writeTextFile(files.pretrain, toJsonl(corpus.pretrain));
  // The tokenizer also sees the chat turns, so chat words get merges too.
  const chatText = corpus.sft.flatMap((c) =>
    c.conversations.filter((m) => typeof m.content === "string" && m.content)
      .map((m) => ({ text: m.content as string }))
  );
  await Deno.writeTextFile(files.tokenizerText, toJsonl([...corpus.pretrain, ...chatText]));
  await Deno.writeTextFile(files.sft, toJsonl(corpus.sft));
  await Deno.writeTextFile(files.dpo, toJsonl(corpus.dpo.train));
  await Deno.writeTextFile(files.dpoHeldOut, toJsonl(corpus.dpo.heldOut));
  await Deno.writeTextFile(files.eval, toJsonl(corpus.evalQuestions));
  await Deno.writeTextFile(files.evalTools, toJsonl(corpus.evalToolCalls));

  // 2. The tokenizer.
  let t = performance.now();
  const tok = await trainTokenizerFromFiles([files.tokenizerText], {
    vocabSize: opts.vocabSize,
  });
  await saveTokenizer(tok, `${out}/tokenizer`);
  log(`tokenizer: ${tok.vocabSize} tokens in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  // 3. Token shards.
  t = performance.now();
  const meta = await prepareShards({
    inputs: [files.pretrain],
    tokenizer: tok,
    tokenizerPath: `${out}/tokenizer`,
    outDir: `${out}/data`,
    valFraction: 0.05,
    seed: opts.seed,
  });
  log(
    `prepare: ${meta.train.tokens} train / ${meta.val.tokens} val tokens in ` +
      `${((performance.now() - t) / 1000).toFixed(1)} s`,
  );

  // 4. Pretraining.
  t = performance.now();
  const { values } = await resolveOptions(PRETRAIN_OPTIONS, [
    "--data",
    `${out}/data`,
    "--out",
    `${out}/pretrain`,
    "--preset",
    opts.preset,
    "--steps",
    String(opts.pretrainSteps),
    "--batch-size",
    String(opts.batchSize),
    "--seq-len",
    String(opts.seqLen),
    "--seed",
    String(opts.seed),
    "--warmup-steps",
    String(Math.min(30, Math.floor(opts.pretrainSteps / 10))),
    "--eval-every",
    "0",
    "--checkpoint-every",
    "0",
    "--log-every",
    "10",
    ...(opts.progress ? [] : ["--no-progress"]),
  ]);
  const pre = await runPretrain(values, { log });
  const rows: DemoRow[] = [{
    stage: "pretrain",
    valLoss: pre.val.loss ?? null,
    qaAccuracy: null,
    toolAccuracy: null,
    preferenceAccuracy: null,
    seconds: (performance.now() - t) / 1000,
  }];

  const total = (performance.now() - t0) / 1000;
  const table = renderTable(rows, { vocab: tok.vocabSize, seconds: total });
  log(table);
  await Deno.writeTextFile(`${out}/report.md`, table + "\n");
  await Deno.writeTextFile(`${out}/report.json`, JSON.stringify({ rows, seconds: total }, null, 2));
  return rows;
}

/** The final table as Markdown. */
export function renderTable(rows: DemoRow[], info: { vocab: number; seconds: number }): string {
  const f = (v: number | null, digits = 3) => v === null ? "-" : v.toFixed(digits);
  const lines = [
    "| stage | val loss | QA accuracy | tool-call accuracy | preference accuracy | time (s) |",
    "|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.stage} | ${f(r.valLoss)} | ${f(r.qaAccuracy)} | ${f(r.toolAccuracy)} | ${
        f(r.preferenceAccuracy)
      } | ${r.seconds.toFixed(0)} |`
    ),
  ];
  return `${lines.join("\n")}\n\nln(vocab) = ${Math.log(info.vocab).toFixed(3)}; ` +
    `whole demo ${info.seconds.toFixed(0)} s`;
}
