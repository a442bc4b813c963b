/**
 * `sft` as a function: the option table (flags, JSON config file, `--help`) and
 * {@linkcode runSft}, which loads a pretraining checkpoint (its config included), reads and
 * tokenizes the conversations, and runs the shared loop on {@linkcode SftTask}. Also the helpers
 * every post-training stage shares: loading a model (a checkpoint or a Hugging Face directory)
 * and finding its tokenizer.
 *
 * @module
 */
import { chooseDevice, type Device, getDevice } from "../kernels/backend.ts";
import type { ModelConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { PAD_TOKEN, type Tokenizer } from "../tokenizer/mod.ts";
import { resolveCheckpoint } from "./checkpoint.ts";
import { findModelTokenizer, type ModelDir, readModelDir } from "./model_dir.ts";
import { type LoopResult, trainLoop } from "./loop.ts";
import { declareOptions, defineOptions, type OptionSpec, type OptionTable } from "./options.ts";
import {
  COMMON_TRAIN_OPTIONS,
  type CommonTrainValues,
  loopOptionsFrom,
  readPrepareMeta,
} from "./run_pretrain.ts";
import type { ReplaySpec } from "./replay.ts";
import { readShard } from "./shards.ts";
import {
  type ChatExample,
  readConversations,
  SftTask,
  splitHeldOut,
  tokenizeConversations,
} from "./sft.ts";

/**
 * A copy of an option table with some defaults (and help lines) replaced: each stage keeps the
 * shared training options but starts from values that suit it.
 *
 * @example withDefaults(COMMON_TRAIN_OPTIONS, { out: { default: "runs/sft" } });
 */
export function withDefaults<const S extends readonly OptionSpec[]>(
  schema: S,
  changes: Record<string, Partial<Pick<OptionSpec, "default" | "help" | "why">>>,
): S {
  for (const name of Object.keys(changes)) {
    if (!schema.some((o) => o.name === name)) throw new Error(`withDefaults: no option "${name}"`);
  }
  return schema.map((o) => changes[o.name] ? { ...o, ...changes[o.name] } : o) as unknown as S;
}

/** Resolved `--replay-*` options of a post-training stage. */
export interface ReplayValues {
  /**
   * Prepared pretraining data directory (train.bin) to replay next to the stage's data, so post-
   * training does not wipe what pretraining taught (default: no replay).
   */
  replayData: string | null;
  /** Windows of pretraining text replayed per micro-batch (with --replay-data). */
  replayBatchSize: number;
  /** Tokens per replayed window (<= the model's max_seq_len). */
  replaySeqLen: number;
  /** Weight of the replayed text's next-token CE in the loss. */
  replayWeight: number;
}

/** The `--replay-*` flags of a post-training stage. */
export const REPLAY_OPTIONS = defineOptions([
  {
    name: "replayData",
    type: "string",
    default: null,
    help: "prepared pretraining data directory (train.bin) to replay next to the stage's data, " +
      "so post-training does not wipe what pretraining taught (default: no replay)",
  },
  {
    name: "replayBatchSize",
    type: "integer",
    default: 2,
    min: 1,
    max: 4096,
    help: "windows of pretraining text replayed per micro-batch (with --replay-data)",
  },
  {
    name: "replaySeqLen",
    type: "integer",
    default: 128,
    min: 2,
    max: 1 << 20,
    help: "tokens per replayed window (<= the model's max_seq_len)",
  },
  {
    name: "replayWeight",
    type: "number",
    default: 1,
    min: 0,
    max: 1000,
    help: "weight of the replayed text's next-token CE in the loss",
  },
]);

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
    {
      name: "skipBad",
      type: "boolean",
      default: false,
      help: "skip malformed JSONL lines (reported as file:line) instead of stopping",
    },
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

/** A model loaded for training, with where it came from. */
export interface TrainingModel {
  /** The model on the GPU. */
  model: DeepSeekV3;
  /** Its configuration (the checkpoint's or the Hugging Face directory's). */
  cfg: ModelConfig;
  /** The model directory read (`dir`, `state.json` when a checkpoint, notes). */
  checkpoint: ModelDir;
}

/**
 * Loads a training checkpoint, run directory or Hugging Face DeepSeek-V3 directory into a new
 * model with that directory's config. A Hugging Face directory without MTP weights keeps its
 * `num_nextn_predict_layers`, with fresh MTP weights (reported through `log`).
 *
 * @param path A checkpoint, run or Hugging Face directory (`--init`, `--model`).
 * @param opts `device` (default: the process's backend, {@linkcode getDevice}); `log` for
 *   conversion notes.
 * @throws {CheckpointError} naming the path when there is no model there.
 * @example
 * ```ts ignore
 * const { model, cfg } = await loadModelForTraining("runs/pretrain");
 * ```
 */
export async function loadModelForTraining(
  path: string,
  opts: { device?: Device; log?: (line: string) => void } = {},
): Promise<TrainingModel> {
  const checkpoint = await readModelDir(path, { missingMtp: "init" });
  for (const n of checkpoint.notes) opts.log?.(`${path}: ${n}`);
  const cfg = checkpoint.cfg;
  const model = new DeepSeekV3(opts.device ?? await getDevice(), cfg);
  model.load(checkpoint.params);
  return { model, cfg, checkpoint };
}

/**
 * The tokenizer of a model being trained further: `flag` when given, else the one found by
 * {@linkcode findModelTokenizer} (the directory itself, the tokenizer its run recorded, its
 * ancestors).
 *
 * @throws naming the flag when none is found.
 * @example
 * ```ts ignore
 * const { tok, dir } = await resolveTokenizer(null, start.checkpoint);
 * ```
 */
export async function resolveTokenizer(
  flag: string | null,
  ck: Pick<ModelDir, "dir" | "state">,
): Promise<{ tok: Tokenizer; dir: string }> {
  return await findModelTokenizer(ck, flag);
}

/**
 * Throws unless the tokenizer's ids fit the model's vocabulary.
 * @param opts `dir`: where the tokenizer came from, for the message.
 */
export function checkVocab(tok: Tokenizer, cfg: ModelConfig, opts: { dir: string }): void {
  if (tok.vocabSize > cfg.vocab_size) {
    throw new Error(
      `the tokenizer ${opts.dir} has ${tok.vocabSize} tokens but the model's vocab_size is ` +
        `${cfg.vocab_size}: use the tokenizer the model was pretrained with (--tokenizer)`,
    );
  }
}

/** The padding id: `<|pad|>` (never a target; its rows are masked out anyway). */
export function padIdOf(tok: Tokenizer): number {
  try {
    return tok.specialId(PAD_TOKEN);
  } catch {
    return 0;
  }
}

/** Counts examples longer than a row, which lose their tail (SFT) or head (DPO). */
export function countTruncated(examples: readonly ChatExample[], T: number): number {
  return examples.filter((e) => e.ids.length - 1 > T).length;
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

/**
 * Reads `--replay-data`'s shard and checks it against the model, or returns undefined without
 * `--replay-data`.
 *
 * @throws naming the flag when the shard's tokenizer is larger than the model's vocabulary or
 *   the window is longer than the model's max_seq_len (and as `readShard` for a bad file).
 */
export async function loadReplay(
  values: ReplayValues,
  cfg: ModelConfig,
  log: (line: string) => void,
  stage: string,
): Promise<ReplaySpec | undefined> {
  if (!values.replayData) return undefined;
  const meta = await readPrepareMeta(values.replayData, "--replay-data");
  if (meta.vocabSize > cfg.vocab_size) {
    throw new Error(
      `--replay-data ${values.replayData}: its tokenizer has ${meta.vocabSize} ids, the ` +
        `model ${cfg.vocab_size}; prepare it with the model's tokenizer`,
    );
  }
  if (values.replaySeqLen > cfg.max_seq_len) {
    throw new Error(
      `--replay-seq-len ${values.replaySeqLen} exceeds the model's max_seq_len ${cfg.max_seq_len}`,
    );
  }
  const tokens = (await readShard(`${values.replayData}/train.bin`)).tokens;
  log(
    `${stage}: replaying ${values.replayBatchSize} x ${values.replaySeqLen} tokens of ` +
      `${values.replayData}/train.bin (${tokens.length} tokens) per micro-batch, weight ` +
      `${values.replayWeight}`,
  );
  return {
    tokens,
    B: values.replayBatchSize,
    T: values.replaySeqLen,
    weight: values.replayWeight,
  };
}
