/**
 * What the stage runners (`run_pretrain.ts`, `run_sft.ts`, `run_dpo.ts`, `run_eval.ts`) share, so
 * that no runner imports another: the options every training stage has and the loop settings
 * they give, `--device`, the `--replay-*` options and their loader, and loading a model and its
 * tokenizer for further training.
 *
 * @module
 */
import { type Device, DEVICE_CHOICES, getDevice } from "../kernels/backend.ts";
import type { ModelConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { PAD_TOKEN, type Tokenizer } from "../tokenizer/mod.ts";
import { LOOP_DEFAULTS, type LoopOptions } from "./loop.ts";
import { ADAMW_DEFAULTS } from "./optimizer.ts";
import { findModelTokenizer, type ModelDir, readModelDir } from "./model_dir.ts";
import { defineOptions, type OptionSpec } from "./options.ts";
import type { PrepareMeta } from "./prepare.ts";
import type { ReplaySpec } from "./replay.ts";
import { readShard } from "./shards.ts";
import type { ChatExample } from "./sft.ts";

/** `--device`, shared by every stage that runs the model. */
export const DEVICE_OPTION = {
  name: "device",
  type: "string",
  default: "auto",
  choices: DEVICE_CHOICES,
  help: "backend: gpu (WebGPU), cpu (host memory and BLAS) or auto",
  why: "auto takes a hardware GPU, else the CPU backend, else a software WebGPU adapter",
} as const;

/** `--skip-bad`, shared by every stage that reads JSONL records. */
export const SKIP_BAD_OPTION = {
  name: "skipBad",
  type: "boolean",
  default: false,
  help: "skip malformed JSONL lines (reported as file:line) instead of stopping",
} as const;

/** Options shared by every training stage (pretrain, SFT, DPO). */
export const COMMON_TRAIN_OPTIONS = defineOptions(
  [
    {
      name: "out",
      type: "string",
      default: "runs/pretrain",
      help: "run directory (checkpoints, metrics.jsonl, loss.svg)",
    },
    {
      name: "steps",
      type: "integer",
      default: 300,
      min: 1,
      max: 100_000_000,
      help: "optimizer steps",
      why: "the nano demo's budget on a CPU adapter",
    },
    DEVICE_OPTION,
    {
      name: "batchSize",
      type: "integer",
      default: 8,
      min: 1,
      max: 4096,
      help: "sequences per micro-batch",
    },
    {
      name: "seqLen",
      type: "integer",
      default: 128,
      min: 2,
      max: 1 << 20,
      help: "tokens per sequence (<= the model's max_seq_len)",
    },
    {
      name: "gradAccum",
      type: "integer",
      default: LOOP_DEFAULTS.gradAccum,
      min: 1,
      max: 4096,
      help: "micro-batches per optimizer step",
    },
    {
      name: "lr",
      type: "number",
      default: 3e-3,
      min: 0,
      // An AdamW step moves each weight by about lr: past 1 it is noise, and near the f32
      // maximum it turns every weight into inf.
      max: 1,
      help: "peak learning rate",
      why: "small models tolerate a high LR; V3 used 2.2e-4 at 671B",
    },
    { name: "warmupSteps", type: "integer", default: 20, min: 0, help: "linear warmup steps" },
    {
      name: "decayStartFraction",
      type: "number",
      default: LOOP_DEFAULTS.decayStartFraction,
      min: 0,
      max: 1,
      help: "fraction of the run at constant LR before the cosine decay",
    },
    {
      name: "minLrRatio",
      type: "number",
      default: LOOP_DEFAULTS.minLrRatio,
      min: 0,
      max: 1,
      help: "final LR as a fraction of the peak",
      why: "V3 decays to 10%",
    },
    {
      name: "weightDecay",
      type: "number",
      default: ADAMW_DEFAULTS.weightDecay,
      min: 0,
      max: 100,
      help: "AdamW decoupled weight decay on matrices",
      why: "V3",
    },
    {
      name: "beta1",
      type: "number",
      default: ADAMW_DEFAULTS.beta1,
      min: 0,
      // 1 would divide by 1 - beta^t = 0 in the bias correction.
      max: 0.999999,
      help: "AdamW beta1",
      why: "V3",
    },
    {
      name: "beta2",
      type: "number",
      default: ADAMW_DEFAULTS.beta2,
      min: 0,
      max: 0.999999,
      help: "AdamW beta2",
      why: "V3",
    },
    {
      name: "maxGradNorm",
      type: "number",
      default: ADAMW_DEFAULTS.maxGradNorm,
      min: 0,
      help: "global gradient-norm clip (0: off)",
      why: "V3",
    },
    {
      name: "seed",
      type: "integer",
      default: 1234,
      help: "seed of the initialization and the data order",
    },
    {
      name: "logEvery",
      type: "integer",
      default: LOOP_DEFAULTS.logEvery,
      min: 1,
      help: "steps between metric lines",
    },
    {
      name: "evalEvery",
      type: "integer",
      default: 100,
      min: 0,
      help: "steps between validations (0: only at the end)",
    },
    {
      name: "evalBatches",
      type: "integer",
      default: 8,
      min: 0,
      max: 1_000_000,
      help: "validation batches per evaluation (0: the whole split)",
    },
    {
      name: "checkpointEvery",
      type: "integer",
      default: 100,
      min: 0,
      help: "steps between checkpoints (0: only at the end)",
    },
    {
      name: "keep",
      type: "integer",
      default: LOOP_DEFAULTS.keep,
      min: 0,
      help: "checkpoints kept (0: all)",
    },
    {
      name: "resume",
      type: "boolean",
      default: false,
      help: "continue from the run directory's latest checkpoint",
    },
    {
      name: "progress",
      type: "boolean",
      default: true,
      help: "show the progress bar (--no-progress for none)",
    },
  ] as const,
);

/** Resolved options every training stage shares (`COMMON_TRAIN_OPTIONS`). */
export interface CommonTrainValues {
  /** Run directory (checkpoints, metrics.jsonl, loss.svg). */
  out: string;
  /** Backend: gpu (WebGPU), cpu (host memory and BLAS) or auto. */
  device: string;
  /** Optimizer steps. */
  steps: number;
  /** Sequences per micro-batch. */
  batchSize: number;
  /** Tokens per sequence (<= the model's max_seq_len). */
  seqLen: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Peak learning rate. */
  lr: number;
  /** Linear warmup steps. */
  warmupSteps: number;
  /** Fraction of the run at constant LR before the cosine decay. */
  decayStartFraction: number;
  /** Final LR as a fraction of the peak. */
  minLrRatio: number;
  /** AdamW decoupled weight decay on matrices. */
  weightDecay: number;
  /** AdamW beta1. */
  beta1: number;
  /** AdamW beta2. */
  beta2: number;
  /** Global gradient-norm clip (0: off). */
  maxGradNorm: number;
  /** Seed of the initialization and the data order. */
  seed: number;
  /** Steps between metric lines. */
  logEvery: number;
  /** Steps between validations (0: only at the end). */
  evalEvery: number;
  /** Validation batches per evaluation (0: the whole split). */
  evalBatches: number;
  /** Steps between checkpoints (0: only at the end). */
  checkpointEvery: number;
  /** Checkpoints kept (0: all). */
  keep: number;
  /** Continue from the run directory's latest checkpoint. */
  resume: boolean;
  /** Show the progress bar (--no-progress for none). */
  progress: boolean;
}

/** The loop settings a stage's common options give. */
export function loopOptionsFrom(values: CommonTrainValues): LoopOptions {
  return {
    runDir: values.out,
    steps: values.steps,
    gradAccum: values.gradAccum,
    lr: values.lr,
    warmupSteps: values.warmupSteps,
    decayStartFraction: values.decayStartFraction,
    minLrRatio: values.minLrRatio,
    adamw: {
      weightDecay: values.weightDecay,
      beta1: values.beta1,
      beta2: values.beta2,
      maxGradNorm: values.maxGradNorm,
    },
    logEvery: values.logEvery,
    evalEvery: values.evalEvery,
    checkpointEvery: values.checkpointEvery,
    keep: values.keep,
    resume: values.resume,
    progress: values.progress,
  };
}

/** Reads `meta.json` of a prepared data directory, with a clear error when it is missing. */
export async function readPrepareMeta(dir: string, flag = "--data"): Promise<PrepareMeta> {
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/meta.json`));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `${flag} ${dir}: no meta.json there; run \`cli.ts prepare --out ${dir}\` first`,
      );
    }
    throw new Error(`${flag} ${dir}/meta.json: ${(e as Error).message}`);
  }
}

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
