/**
 * `sft` as a function: the option table (flags, JSON config file, `--help`) and
 * {@linkcode runSft}, which loads a pretraining checkpoint (its config included), reads and
 * tokenizes the conversations, and runs the shared loop on {@linkcode SftTask}.
 *
 * @module
 */
import { chooseDevice } from "../kernels/backend.ts";
import { resolveCheckpoint } from "./checkpoint.ts";
import { readModelDir } from "./model_dir.ts";
import { type LoopResult, trainLoop } from "./loop.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import {
  checkVocab,
  COMMON_TRAIN_OPTIONS,
  type CommonTrainValues,
  countTruncated,
  loadModelForTraining,
  loadReplay,
  loopOptionsFrom,
  padIdOf,
  REPLAY_OPTIONS,
  type ReplayValues,
  resolveTokenizer,
  SKIP_BAD_OPTION,
  withDefaults,
} from "./stage.ts";
import {
  type ChatExample,
  readConversations,
  SftTask,
  splitHeldOut,
  tokenizeConversations,
} from "./sft.ts";

/** Options of the post-training stages' model and data sources. */
const SOURCE_OPTIONS = defineOptions(
  [
    {
      name: "init",
      type: "string",
      default: null,
      help: "checkpoint, run directory or Hugging Face DeepSeek-V3 directory to start from; " +
        "its config is the model's config",
    },
    {
      name: "tokenizer",
      type: "string",
      default: null,
      help: "tokenizer directory (default: the one the --init run was trained with)",
    },
    SKIP_BAD_OPTION,
  ] as const,
);

/** The `sft` options. */
export const SFT_OPTIONS: OptionTable<SftValues> = declareOptions<SftValues>()(defineOptions(
  [
    {
      name: "data",
      type: "string",
      default: null,
      help: 'conversations JSONL: {"conversations" | "messages": [...], "tools"?: [...]}',
    },
    {
      name: "valData",
      type: "string",
      default: null,
      help:
        "held-out conversations JSONL (default: every k-th record of --data, see --val-fraction)",
    },
    {
      name: "valFraction",
      type: "number",
      default: 0.05,
      min: 0,
      max: 0.5,
      help: "share of --data held out for validation when --val-data is not given",
    },
    {
      name: "mtp",
      type: "boolean",
      default: true,
      help:
        "also train the MTP module and the balance loss, as pretraining (--no-mtp: main CE only)",
      why:
        "keeps MTP drafts (speculative decoding) in tune with chat; --no-mtp is ~40% faster on nano",
    },
    ...REPLAY_OPTIONS,
    ...SOURCE_OPTIONS,
    ...withDefaults(COMMON_TRAIN_OPTIONS, {
      out: { default: "runs/sft" },
      steps: { default: 150, why: "about one pass over the demo's 2000 conversations" },
      batchSize: {
        default: 4,
        help: "rows of --seq-len positions per micro-batch, each packing several conversations",
      },
      seqLen: { default: 512, help: "positions per packed row (<= the model's max_seq_len)" },
      lr: { default: 1e-3, why: "a third of the nano pretraining LR: adapt, do not forget" },
      warmupSteps: { default: 10 },
      evalEvery: { default: 50 },
      checkpointEvery: { default: 0 },
    }),
  ] as const,
));

/** Resolved `sft` options. */
export interface SftValues extends CommonTrainValues, ReplayValues {
  /** Conversations JSONL: {"conversations" | "messages": [...], "tools"?: [...]}. */
  data: string | null;
  /** Held-out conversations JSONL (default: every k-th record of --data, see --val-fraction). */
  valData: string | null;
  /** Share of --data held out for validation when --val-data is not given. */
  valFraction: number;
  /** Also train the MTP module and the balance loss, as pretraining (--no-mtp: main CE only). */
  mtp: boolean;
  /**
   * Checkpoint, run directory or Hugging Face DeepSeek-V3 directory to start from; its config is
   * the model's config.
   */
  init: string | null;
  /** Tokenizer directory (default: the one the --init run was trained with). */
  tokenizer: string | null;
  /** Skip malformed JSONL lines (reported as file:line) instead of stopping. */
  skipBad: boolean;
}

/**
 * Runs SFT.
 *
 * @returns The loop's result; the last checkpoint is in `values.out`.
 * @throws naming the flag for a missing `--data` / `--init`, `file:line` for a bad record.
 */
export async function runSft(
  values: SftValues,
  opts: { log?: (line: string) => void } = {},
): Promise<LoopResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  chooseDevice(values.device);
  if (!values.data) throw new Error("--data is required: a conversations JSONL file");
  if (!values.init) {
    throw new Error("--init is required: the pretraining checkpoint (or run directory)");
  }
  // A resumed run continues its own checkpoint; the config is the same as --init's.
  const from = values.resume && (await resolveCheckpoint(values.out).catch(() => null))
    ? values.out
    : values.init;
  const { model, cfg, checkpoint } = await loadModelForTraining(from, { log });
  try {
    const initCk = from === values.init ? checkpoint : await readModelDir(values.init);
    const { tok, dir: tokDir } = await resolveTokenizer(values.tokenizer, initCk);
    checkVocab(tok, cfg, { dir: tokDir });
    if (values.seqLen > cfg.max_seq_len) {
      throw new Error(
        `--seq-len ${values.seqLen} exceeds the model's max_seq_len ${cfg.max_seq_len}`,
      );
    }
    const onBad = (m: string) => log(`skipped ${m}`);
    const read = async (path: string) => {
      const { conversations, bad } = await readConversations(path, {
        skipBad: values.skipBad,
        onBad,
      });
      const t = tokenizeConversations(tok, conversations, { skipBad: values.skipBad, onBad });
      return { examples: t.examples, bad: bad + t.bad };
    };
    const all = await read(values.data);
    let train = all.examples, val: ChatExample[] = [];
    if (values.valData) val = (await read(values.valData)).examples;
    else ({ train, val } = splitHeldOut(all.examples, values.valFraction));
    const T = values.seqLen;
    const targets = train.reduce((a, e) => a + e.mask.reduce((x, y) => x + y, 0), 0);
    log(
      `sft: ${train.length} train / ${val.length} val conversations (${targets} assistant ` +
        `tokens)${all.bad ? `, ${all.bad} bad lines skipped` : ""}; ` +
        `${countTruncated(train, T)} longer than ${T} positions are truncated; ` +
        `from ${checkpoint.dir}`,
    );
    const replay = await loadReplay(values, cfg, log, "sft");
    const task = new SftTask(train, val, {
      B: values.batchSize,
      T,
      seed: values.seed,
      padId: padIdOf(tok),
      mtp: values.mtp,
      replay,
    });
    return await trainLoop(model, task, {
      ...loopOptionsFrom(values),
      // --resume is handled by the loop from values.out; the model starts from --init.
      runInfo: {
        ...values,
        model: cfg,
        tokenizer: tokDir,
        stage: "sft",
        initCheckpoint: initCk.dir,
      },
      log,
    });
  } finally {
    model.arena.destroy();
    model.device.trimPool();
  }
}
