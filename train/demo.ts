/**
 * The one-command demo: generate the built-in bilingual corpus, train the tokenizer, prepare
 * token shards, pretrain, supervised fine-tune, align with DPO, reinforce with GRPO, evaluate the checkpoints
 * side by side (every model prompted the same way, with the chat template), and print one
 * table. Every output lands in one run directory:
 *
 *     <out>/corpus/*.jsonl      the generated data (grpo.jsonl, grpo_heldout.jsonl: GRPO prompts)
 *     <out>/tokenizer/          tokenizer.json + tokenizer_config.json
 *     <out>/data/               train.bin, val.bin, meta.json
 *     <out>/pretrain/           checkpoints, metrics.jsonl, loss.svg
 *     <out>/sft/, <out>/dpo/    the same for the post-training stages (+ reference_logps.json)
 *     <out>/grpo/               GRPO from the DPO checkpoint (+ reward.svg)
 *     <out>/eval/               report.md|json of `cli.ts eval` (with sample replies)
 *     <out>/report.md|json      the final table
 *
 * @module
 */
import { chooseDevice } from "../kernels/backend.ts";
import { buildCorpus, describeCorpus, toJsonl } from "../data/mod.ts";
import {
  type ChatMessage,
  renderChat,
  saveTokenizer,
  trainTokenizerFromFiles,
} from "../tokenizer/mod.ts";
import { prepareShards } from "./prepare.ts";
import { PRETRAIN_OPTIONS, runPretrain } from "./run_pretrain.ts";
import { resolveOptions } from "./options.ts";
import { runSft, SFT_OPTIONS } from "./run_sft.ts";
import { loadModelForTraining } from "./stage.ts";
import { onPolicyPairs } from "./policy_pairs.ts";
import { DPO_OPTIONS, runDpo } from "./run_dpo.ts";
import { EVAL_OPTIONS, runEval } from "./run_eval.ts";
import { GRPO_OPTIONS, runGrpo } from "./run_grpo.ts";

/** Settings of {@linkcode runDemo}. */
export interface DemoOptions {
  /** Run directory. */
  out: string;
  /** Backend: "gpu", "cpu" or "auto" (default). */
  device?: string;
  /** Corpus scale (1 = the default small world). */
  scale: number;
  /** Model preset for pretraining. */
  preset: string;
  /** Pretraining steps. */
  pretrainSteps: number;
  /**
   * Train V3's MTP module in pretraining (default false in the demo: the 10-minute budget goes
   * further on more steps of the main model; `cli.ts pretrain` trains it by default).
   */
  mtp?: boolean;
  /** Replay pretraining text during SFT (default true; see `--replay-data` of `cli.ts sft`). */
  sftReplay?: boolean;
  /**
   * Replay pretraining text during DPO too (default true): without it DPO lowers the QA and
   * recall SFT reached (docs/DESIGN.md, "The demo world").
   */
  dpoReplay?: boolean;
  /** Pretraining sequences per batch. */
  batchSize: number;
  /** Pretraining sequence length. */
  seqLen: number;
  /** Seed of everything. */
  seed: number;
  /** Tokenizer vocabulary target (the small corpus may give fewer). */
  vocabSize: number;
  /** Show progress bars. */
  progress: boolean;
  /** SFT steps. */
  sftSteps: number;
  /** SFT rows per step (each row packs conversations). */
  sftBatchSize: number;
  /** SFT peak learning rate. */
  sftLr: number;
  /** DPO steps. */
  dpoSteps: number;
  /** DPO pairs per step. */
  dpoBatchSize: number;
  /** DPO peak learning rate. */
  dpoLr: number;
  /** DPO beta. */
  dpoBeta: number;
  /** Weight of the chosen replies' NLL in the DPO loss (RPO); default 0 (plain DPO). */
  dpoRpoAlpha?: number;
  /** GRPO steps after DPO (0: no GRPO stage). */
  grpoSteps?: number;
  /** GRPO prompts per step (each sampled `grpoGroup` times). */
  grpoBatchSize?: number;
  /** GRPO completions per prompt. */
  grpoGroup?: number;
  /** GRPO peak learning rate. */
  grpoLr?: number;
  /** GRPO KL weight beta (0: no reference model). */
  grpoBeta?: number;
  /** GRPO most tokens per completion. */
  grpoMaxTokens?: number;
  /**
   * Rebuild the DPO pairs (train and held-out) with the SFT model's own wrong greedy replies as
   * the rejected turns (`onPolicyPairs`); default true. False: the written pairs as they are.
   */
  dpoOnPolicy?: boolean;
}

/** The context every post-training stage and the evaluation use: tool prompts are ~360 tokens. */
export const DEMO_MAX_SEQ_LEN = 512;

/** One row of the final table. */
export interface DemoRow {
  /** `pretrain`, `sft` or `dpo`. */
  stage: string;
  /** The stage's own validation loss: LM loss (pretrain), assistant CE (sft), DPO loss (dpo). */
  valLoss: number | null;
  /** LM loss of the model on the pretraining val shard (the same text for every stage). */
  textValLoss?: number | null;
  /** Share of held-out questions answered right through the chat template. */
  qaAccuracy: number | null;
  /** The held-out questions as plain-text FAQ prompts (does the model know the facts?). */
  recall?: number | null;
  /** Share of tool prompts answered with the right call and arguments. */
  toolAccuracy: number | null;
  /** Share of tool prompts answered with a well-formed call, and with the right function. */
  toolParts?: { wellFormed: number; rightFunction: number } | null;
  /** Share of held-out pairs whose chosen reply the model prefers (DPO's implicit reward). */
  preferenceAccuracy: number | null;
  /** Share of held-out word problems answered right (greedy, no tools; GRPO's answer reward). */
  arithmeticAccuracy?: number | null;
  /** Share of those replies with a well-formed `<think>` block and an answer. */
  reasoningFormat?: number | null;
  /** Wall seconds of the stage. */
  seconds: number;
}

/** Runs the whole pipeline; returns the table rows. */
export async function runDemo(
  opts: DemoOptions,
  io: { log?: (s: string) => void } = {},
): Promise<DemoRow[]> {
  const log = io.log ?? ((s: string) => console.log(s));
  chooseDevice(opts.device ?? "auto");
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
    grpo: `${out}/corpus/grpo.jsonl`,
    grpoHeldOut: `${out}/corpus/grpo_heldout.jsonl`,
  };
  await Deno.writeTextFile(files.pretrain, toJsonl(corpus.pretrain));
  // The tokenizer also sees the SFT conversations as the chat template renders them (tool
  // schemas and tool-call JSON included), so the tool prompt gets merges too: it is ~200 tokens
  // instead of ~490, and a conversation with tools fits DEMO_MAX_SEQ_LEN. The worked word
  // problems stay out: their arithmetic is the pretraining text's, and the tokenizer (hence the
  // pretraining run) stays the one the demo had before they were added (docs/DESIGN.md).
  const chatText = corpus.sft
    .filter((c) => !c.conversations.some((m) => m.reasoning_content !== undefined))
    .map((c) => ({
      text: renderChat(c.conversations as ChatMessage[], { tools: c.tools, bosToken: "" }),
    }));
  await Deno.writeTextFile(files.tokenizerText, toJsonl([...corpus.pretrain, ...chatText]));
  await Deno.writeTextFile(files.sft, toJsonl(corpus.sft));
  await Deno.writeTextFile(files.dpo, toJsonl(corpus.dpo.train));
  await Deno.writeTextFile(files.dpoHeldOut, toJsonl(corpus.dpo.heldOut));
  await Deno.writeTextFile(files.eval, toJsonl(corpus.evalQuestions));
  await Deno.writeTextFile(files.evalTools, toJsonl(corpus.evalToolCalls));
  await Deno.writeTextFile(files.grpo, toJsonl(corpus.grpo.train));
  await Deno.writeTextFile(files.grpoHeldOut, toJsonl(corpus.grpo.heldOut));

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
    "--model",
    JSON.stringify({
      max_seq_len: DEMO_MAX_SEQ_LEN,
      original_seq_len: DEMO_MAX_SEQ_LEN,
      ...(opts.mtp ? {} : { mtp_depth: 0 }),
    }),
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
  const seconds: Record<string, number> = { pretrain: (performance.now() - t) / 1000 };
  const stageVal: Record<string, number | null> = { pretrain: pre.val.loss ?? null };
  const common = [
    "--seed",
    String(opts.seed),
    "--eval-every",
    "0",
    "--checkpoint-every",
    "0",
    "--log-every",
    "10",
    ...(opts.progress ? [] : ["--no-progress"]),
  ];

  // 5. SFT on the conversations, from the pretrained checkpoint.
  t = performance.now();
  const sft = await runSft(
    (await resolveOptions(SFT_OPTIONS, [
      ...["--init", `${out}/pretrain`, "--data", files.sft, "--out", `${out}/sft`],
      ...["--steps", String(opts.sftSteps), "--batch-size", String(opts.sftBatchSize)],
      ...["--lr", String(opts.sftLr), "--seq-len", String(DEMO_MAX_SEQ_LEN)],
      // The MTP block and its head would be most of a nano SFT step: the budget goes to more
      // SFT steps instead (a pretrained MTP module keeps its weights).
      "--no-mtp",
      // Pretraining text next to the conversations: chat format without forgetting the facts
      // the held-out questions ask about.
      ...(opts.sftReplay === false ? [] : ["--replay-data", `${out}/data`]),
      ...["--warmup-steps", String(Math.min(10, Math.floor(opts.sftSteps / 10)))],
      ...common,
    ])).values,
    { log },
  );
  seconds.sft = (performance.now() - t) / 1000;
  stageVal.sft = sft.val.loss ?? null;

  // 6. DPO on the train pairs, from (and with the reference) the SFT checkpoint. By default the
  // pairs' rejected turns are first replaced by what the SFT model itself answers, where that
  // differs from the chosen turn: DPO then corrects the model's real mistakes.
  t = performance.now();
  let pairFiles = { train: files.dpo, heldOut: files.dpoHeldOut };
  if (opts.dpoOnPolicy !== false) {
    pairFiles = {
      train: `${out}/corpus/dpo_policy.jsonl`,
      heldOut: `${out}/corpus/dpo_policy_heldout.jsonl`,
    };
    const { model } = await loadModelForTraining(`${out}/sft`);
    try {
      for (
        const [name, pairs, file] of [
          ["train", corpus.dpo.train, pairFiles.train],
          ["held-out", corpus.dpo.heldOut, pairFiles.heldOut],
        ] as const
      ) {
        const r = await onPolicyPairs(model, pairs, { tok });
        await Deno.writeTextFile(file, toJsonl(r.pairs));
        log(
          `dpo: ${r.replaced} of ${pairs.length} ${name} pairs take the SFT model's own reply ` +
            `as the rejected turn (${file})`,
        );
      }
    } finally {
      model.arena.destroy();
      model.device.trimPool();
    }
  }
  const dpo = await runDpo(
    (await resolveOptions(DPO_OPTIONS, [
      ...["--init", `${out}/sft`, "--data", pairFiles.train, "--val-data", pairFiles.heldOut],
      ...["--out", `${out}/dpo`, "--steps", String(opts.dpoSteps)],
      ...["--batch-size", String(opts.dpoBatchSize), "--lr", String(opts.dpoLr)],
      ...["--beta", String(opts.dpoBeta), "--seq-len", String(DEMO_MAX_SEQ_LEN)],
      ...(opts.dpoReplay === false ? [] : ["--replay-data", `${out}/data`]),
      ...["--rpo-alpha", String(opts.dpoRpoAlpha ?? 0)],
      ...["--warmup-steps", String(Math.min(5, Math.floor(opts.dpoSteps / 10)))],
      ...common,
    ])).values,
    { log },
  );
  seconds.dpo = (performance.now() - t) / 1000;
  stageVal.dpo = dpo.val.loss ?? null;

  // 7. GRPO from the DPO checkpoint on word problems and tool requests with verifiable answers:
  // sampled groups, rule-based rewards, the DPO model as the KL reference.
  const models = [`${out}/pretrain`, `${out}/sft`, `${out}/dpo`];
  if ((opts.grpoSteps ?? 0) > 0) {
    t = performance.now();
    const grpo = await runGrpo(
      (await resolveOptions(GRPO_OPTIONS, [
        ...["--init", `${out}/dpo`, "--prompts", files.grpo, "--out", `${out}/grpo`],
        ...["--val-prompts", files.grpoHeldOut, "--steps", String(opts.grpoSteps)],
        ...["--batch-size", String(opts.grpoBatchSize ?? 8)],
        ...["--group", String(opts.grpoGroup ?? 8), "--lr", String(opts.grpoLr ?? 5e-5)],
        ...["--beta", String(opts.grpoBeta ?? 0.04)],
        ...["--max-tokens", String(opts.grpoMaxTokens ?? 96)],
        ...["--seq-len", String(DEMO_MAX_SEQ_LEN), "--seed", String(opts.seed)],
        ...["--eval-every", "0", "--checkpoint-every", "0", "--log-every", "5"],
        ...(opts.progress ? [] : ["--no-progress"]),
      ])).values,
      { log },
    );
    seconds.grpo = (performance.now() - t) / 1000;
    stageVal.grpo = null;
    log(`grpo: held-out reward ${grpo.val.reward?.toFixed(3) ?? "-"} (reward.svg in ${out}/grpo)`);
    models.push(`${out}/grpo`);
  }

  // 8. The checkpoints evaluated side by side, every one prompted with the chat template.
  t = performance.now();
  const evals = await runEval(
    (await resolveOptions(EVAL_OPTIONS, [
      ...["--model", ...models, "--out", `${out}/eval`],
      ...["--data", `${out}/data`, "--questions", files.eval, "--tool-calls", files.evalTools],
      ...["--pairs", pairFiles.heldOut, "--grpo-eval", files.grpoHeldOut],
      ...["--world-seed", String(opts.seed)],
      ...["--world-scale", String(opts.scale), "--seq-len", String(opts.seqLen)],
    ])).values,
    { log: () => {} },
  );
  const evalSeconds = (performance.now() - t) / 1000;
  log(
    `eval: ${models.length} checkpoints in ${
      evalSeconds.toFixed(1)
    } s (replies in ${out}/eval/report.md)`,
  );
  const rows: DemoRow[] = evals.map((r) => ({
    stage: r.name,
    valLoss: stageVal[r.name] ?? null,
    textValLoss: r.eval.valLoss,
    qaAccuracy: r.eval.qa?.accuracy ?? null,
    recall: r.eval.recall?.accuracy ?? null,
    toolAccuracy: r.eval.tools?.accuracy ?? null,
    toolParts: r.eval.tools?.parts ?? null,
    preferenceAccuracy: r.eval.preference?.accuracy ?? null,
    arithmeticAccuracy: r.eval.arithmetic?.accuracy ?? null,
    reasoningFormat: r.eval.arithmetic?.reasoningFormat ?? null,
    seconds: (seconds[r.name] ?? 0) + r.eval.seconds,
  }));

  const total = (performance.now() - t0) / 1000;
  const table = renderTable(rows, { vocab: tok.vocabSize, seconds: total });
  log(table);
  await Deno.writeTextFile(`${out}/report.md`, table + "\n");
  await Deno.writeTextFile(`${out}/report.json`, JSON.stringify({ rows, seconds: total }, null, 2));
  return rows;
}

/** The final table as Markdown. */
export function renderTable(rows: DemoRow[], info: { vocab: number; seconds: number }): string {
  const f = (v: number | null | undefined, digits = 3) =>
    v === null || v === undefined ? "-" : v.toFixed(digits);
  const lines = [
    "| stage | val loss | text val loss | QA accuracy | recall (text prompt) | tool-call accuracy | preference accuracy | arithmetic accuracy | reasoning format | time (s) |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.stage} | ${f(r.valLoss)} | ${f(r.textValLoss)} | ${f(r.qaAccuracy)} | ${
        f(r.recall)
      } | ${f(r.toolAccuracy)}${
        r.toolParts
          ? ` (format ${f(r.toolParts.wellFormed, 2)}, function ${f(r.toolParts.rightFunction, 2)})`
          : ""
      } | ${f(r.preferenceAccuracy)} | ${f(r.arithmeticAccuracy)} | ${f(r.reasoningFormat)} | ${
        r.seconds.toFixed(0)
      } |`
    ),
  ];
  return `${lines.join("\n")}\n\nval loss: each stage's own held-out objective (pretrain: LM ` +
    `loss on the val shard; sft: CE on the assistant tokens of held-out conversations; dpo: DPO ` +
    `loss on held-out pairs; grpo: none, its held-out reward is in grpo/metrics.jsonl). text val loss: every model's LM loss on the pretraining val shard. ` +
    `Accuracies: greedy chat replies to held-out questions and tool requests, and held-out ` +
    `pairs whose chosen reply has the higher log-probability; every model is prompted with the ` +
    `chat template. recall: the same held-out questions as plain text in the pretraining FAQ ` +
    `form ("Q: ...\\nA:"), i.e. whether the model holds the facts at all. tool-call accuracy ` +
    `needs the right function and argument values; in brackets the share of well-formed calls ` +
    `and of calls to the right function. arithmetic accuracy: greedy replies to held-out word ` +
    `problems (other templates and numbers than the train ones, no tools offered) whose last ` +
    `number after </think> is the answer; reasoning format: the share of those replies with one ` +
    `<think> block of reasoning and then an answer. time: training + evaluation of the stage.` +
    `\n\nln(vocab) = ` +
    `${Math.log(info.vocab).toFixed(3)}; whole demo ${info.seconds.toFixed(0)} s`;
}
