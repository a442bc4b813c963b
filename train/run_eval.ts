/**
 * `eval` as a function: the option table and {@linkcode runEval}, which evaluates one or more
 * checkpoints on the same data and writes a side-by-side report (`report.md`, `report.json`).
 *
 * @module
 */
import { DEMO_CORPUS, type EvalQuestion, type EvalToolCall, generateWorld } from "../data/mod.ts";
import { chooseDevice } from "../kernels/backend.ts";
import { readJsonl } from "./jsonl.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import { readPreferencePairs, tokenizePairs } from "./dpo.ts";
import type { ReadChatOptions } from "./sft.ts";
import {
  type EvalSets,
  evaluateModel,
  isArithmeticPrompt,
  renderEvalReport,
  type ReportRow,
} from "./eval.ts";
import { readGrpoPrompts } from "./grpo_prompts.ts";
import { readShard } from "./shards.ts";
import {
  DEVICE_OPTION,
  loadModelForTraining,
  padIdOf,
  resolveTokenizer,
  SKIP_BAD_OPTION,
} from "./stage.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";

/** The `eval` options. */
export const EVAL_OPTIONS: OptionTable<EvalValues> = declareOptions<EvalValues>()(defineOptions(
  [
    DEVICE_OPTION,
    {
      name: "model",
      type: "string[]",
      default: [],
      help: "checkpoints (or run directories) to evaluate side by side; repeat or list several",
    },
    {
      name: "name",
      type: "string[]",
      default: [],
      help: "a label per --model (default: the stage its run recorded, else the directory)",
    },
    {
      name: "data",
      type: "string",
      default: null,
      help: "prepared data directory: its val.bin gives the validation loss",
    },
    {
      name: "questions",
      type: "string",
      default: null,
      help: 'held-out questions JSONL: {"question", "answer", "lang"} (QA accuracy)',
    },
    {
      name: "toolCalls",
      type: "string",
      default: null,
      help: 'tool-call prompts JSONL: {"messages", "tools", "expected"} (tool-call accuracy)',
    },
    {
      name: "pairs",
      type: "string",
      default: null,
      help: "held-out DPO pairs JSONL (preference accuracy)",
    },
    {
      name: "grpoEval",
      type: "string",
      default: null,
      help: "held-out GRPO prompts JSONL (grpo_heldout.jsonl): arithmetic accuracy and " +
        "reasoning format of greedy replies to its arithmetic prompts, no tools offered",
    },
    {
      name: "worldSeed",
      type: "integer",
      default: DEMO_CORPUS.seed,
      help: "seed of the world the tool calls were generated from (grades city names)",
      why: "the demo corpus",
    },
    {
      name: "worldScale",
      type: "number",
      default: DEMO_CORPUS.scale,
      min: 0,
      help: "scale of that world",
      why: "the demo corpus",
    },
    {
      name: "tokenizer",
      type: "string",
      default: null,
      help: "tokenizer directory (default: the one the first --model's run recorded)",
    },
    {
      name: "out",
      type: "string",
      default: "runs/eval",
      help: "directory for report.md and report.json",
    },
    { name: "batchSize", type: "integer", default: 8, min: 1, help: "rows per forward" },
    {
      name: "seqLen",
      type: "integer",
      default: 256,
      min: 2,
      help: "positions per row of the validation loss (pairs use the model's max_seq_len)",
      why: "the demo pretrains on 128-token windows",
    },
    {
      name: "evalBatches",
      type: "integer",
      default: 0,
      min: 0,
      help: "validation batches (0: the whole val shard)",
    },
    {
      name: "qaMaxTokens",
      type: "integer",
      default: 16,
      min: 1,
      help: "most tokens of a QA reply",
      why: "answers are a word or a number",
    },
    {
      name: "toolMaxTokens",
      type: "integer",
      default: 48,
      min: 1,
      help: "most tokens of a tool-call reply",
      why: "a call is ~20-30 tokens",
    },
    {
      name: "reasoningMaxTokens",
      type: "integer",
      default: 96,
      min: 1,
      help: "most tokens of a reply to an arithmetic problem, think block included",
      why: "worked steps are ~20-40 tokens, the answer sentence ~8",
    },
    {
      name: "maxBatch",
      type: "integer",
      default: 128,
      min: 1,
      help: "prompts decoded together",
    },
    SKIP_BAD_OPTION,
  ] as const,
));

/** Resolved `eval` options. */
export interface EvalValues {
  /** Backend: gpu (WebGPU), cpu (host memory and BLAS) or auto. */
  device: string;
  /** Checkpoints (or run directories) to evaluate side by side; repeat or list several. */
  model: string[];
  /** A label per --model (default: the stage its run recorded, else the directory). */
  name: string[];
  /** Prepared data directory: its val.bin gives the validation loss. */
  data: string | null;
  /** Held-out questions JSONL: {"question", "answer", "lang"} (QA accuracy). */
  questions: string | null;
  /** Tool-call prompts JSONL: {"messages", "tools", "expected"} (tool-call accuracy). */
  toolCalls: string | null;
  /** Held-out DPO pairs JSONL (preference accuracy). */
  pairs: string | null;
  /**
   * Held-out GRPO prompts JSONL (grpo_heldout.jsonl): arithmetic accuracy and reasoning format
   * of greedy replies to its arithmetic prompts, no tools offered.
   */
  grpoEval: string | null;
  /** Seed of the world the tool calls were generated from (grades city names). */
  worldSeed: number;
  /** Scale of that world. */
  worldScale: number;
  /** Tokenizer directory (default: the one the first --model's run recorded). */
  tokenizer: string | null;
  /** Directory for report.md and report.json. */
  out: string;
  /** Rows per forward. */
  batchSize: number;
  /** Positions per row of the validation loss (pairs use the model's max_seq_len). */
  seqLen: number;
  /** Validation batches (0: the whole val shard). */
  evalBatches: number;
  /** Most tokens of a QA reply. */
  qaMaxTokens: number;
  /** Most tokens of a tool-call reply. */
  toolMaxTokens: number;
  /** Most tokens of a reply to an arithmetic problem, think block included. */
  reasoningMaxTokens: number;
  /** Prompts decoded together. */
  maxBatch: number;
  /** Skip malformed JSONL lines instead of stopping. */
  skipBad: boolean;
}

/** Checks one question record; returns the reason it is malformed. */
function questionCheck(v: unknown): string | undefined {
  const q = v as Partial<EvalQuestion>;
  if (typeof q?.question !== "string") return 'field "question" must be a string';
  if (typeof q.answer !== "string") return 'field "answer" must be a string';
  return undefined;
}

/** Checks one tool-call record. */
function toolCheck(v: unknown): string | undefined {
  const t = v as Partial<EvalToolCall>;
  if (!Array.isArray(t?.messages)) return 'field "messages" must be an array of messages';
  if (typeof t.expected?.name !== "string") return 'field "expected" must be {"name", "arguments"}';
  return undefined;
}

/**
 * Evaluates every `--model` on the data given and writes the report.
 *
 * @returns The rows (also in `<out>/report.json`).
 * @throws naming the flag when no `--model` or no data is given.
 */
export async function runEval(
  values: EvalValues,
  opts: { log?: (line: string) => void } = {},
): Promise<ReportRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  chooseDevice(values.device);
  if (values.model.length === 0) throw new Error("--model is required: one or more checkpoints");
  if (values.name.length > 0 && values.name.length !== values.model.length) {
    throw new Error(`--name: ${values.name.length} labels for ${values.model.length} --model`);
  }
  if (!values.data && !values.questions && !values.toolCalls && !values.pairs && !values.grpoEval) {
    throw new Error(
      "nothing to evaluate: give --data, --questions, --tool-calls, --pairs and/or --grpo-eval",
    );
  }
  const rows: ReportRow[] = [];
  let data: { sets: EvalSets; tok: Tokenizer; padId: number } | null = null;
  for (let i = 0; i < values.model.length; i++) {
    const { model, checkpoint } = await loadModelForTraining(values.model[i]);
    try {
      if (!data) {
        // One tokenizer for all: every model is prompted with the same ids.
        const { tok } = await resolveTokenizer(values.tokenizer, checkpoint);
        const T = model.cfg.max_seq_len;
        data = {
          sets: await loadEvalSets({ ...values, pairsT: T }, tok, (m) => log(`skipped ${m}`)),
          tok,
          padId: padIdOf(tok),
        };
      }
      const run = (checkpoint.state?.run ?? {}) as { stage?: string };
      const name = values.name[i] ?? run.stage ??
        String(checkpoint.state?.stage ?? values.model[i]);
      const e = await evaluateModel(model, data.sets, {
        tok: data.tok,
        B: values.batchSize,
        T: Math.min(values.seqLen, model.cfg.max_seq_len),
        evalBatches: values.evalBatches,
        qaMaxTokens: values.qaMaxTokens,
        toolMaxTokens: values.toolMaxTokens,
        reasoningMaxTokens: values.reasoningMaxTokens,
        maxBatch: values.maxBatch,
        padId: data.padId,
      });
      rows.push({ name, checkpoint: checkpoint.dir, eval: e });
      log(`eval ${name}: ${e.seconds.toFixed(1)} s`);
    } finally {
      model.arena.destroy();
      model.device.trimPool();
    }
  }
  const report = renderEvalReport(rows);
  await Deno.mkdir(values.out, { recursive: true });
  await Deno.writeTextFile(`${values.out}/report.md`, report + "\n");
  await Deno.writeTextFile(`${values.out}/report.json`, JSON.stringify({ rows }, null, 2));
  log(report);
  return rows;
}

/** The eval sets named by the options, tokenized where needed. */
export async function loadEvalSets(
  values:
    & Pick<
      EvalValues,
      "data" | "questions" | "toolCalls" | "pairs" | "worldSeed" | "worldScale" | "skipBad"
    >
    & Partial<Pick<EvalValues, "grpoEval">>
    & { pairsT: number },
  tok: Tokenizer,
  onBad?: (message: string) => void,
): Promise<EvalSets> {
  const sets: EvalSets = {};
  const skip = { skipBad: values.skipBad, onBad };
  if (values.data) sets.valTokens = (await readShard(`${values.data}/val.bin`)).tokens;
  if (values.questions) {
    sets.questions = await readChecked<EvalQuestion>(values.questions, questionCheck, skip);
  }
  if (values.toolCalls) {
    sets.toolCalls = {
      items: await readChecked<EvalToolCall>(values.toolCalls, toolCheck, skip),
      world: generateWorld({ seed: values.worldSeed, scale: values.worldScale }),
    };
  }
  if (values.pairs) {
    const { pairs } = await readPreferencePairs(values.pairs, skip);
    sets.pairs = tokenizePairs(tok, pairs, { T: values.pairsT, ...skip }).examples;
  }
  if (values.grpoEval) {
    const prompts = await readGrpoPrompts(values.grpoEval, skip);
    sets.arithmetic = prompts.filter(isArithmeticPrompt);
  }
  return sets;
}

async function readChecked<T>(
  path: string,
  check: (v: unknown) => string | undefined,
  opts: ReadChatOptions,
): Promise<T[]> {
  const out: T[] = [];
  const stream = readJsonl<T>(path, {
    check,
    skipBad: opts.skipBad,
    onBad: (e) => opts.onBad?.(e.message),
  });
  for await (const { value } of stream) out.push(value);
  return out;
}
