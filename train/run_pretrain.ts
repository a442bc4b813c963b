/**
 * `pretrain` as a function: the option table (shared by the CLI's flags, its JSON config file
 * and `--help`) and {@linkcode runPretrain}, which loads shards, builds the model (fresh, from
 * `--init`'s checkpoint or Hugging Face directory, or resumed) and runs the shared loop.
 *
 * @module
 */
import { chooseDevice, DEVICE_CHOICES, getDevice } from "../kernels/backend.ts";
import { memoryNeeds, type ModelConfig, type PresetName, resolveConfig } from "../model/config.ts";
import { checkPrecision, parsePrecision } from "../model/precision.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { loadCheckpoint, resolveCheckpoint } from "./checkpoint.ts";
import { type LoopOptions, type LoopResult, trainLoop } from "./loop.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import type { PrepareMeta } from "./prepare.ts";
import { PretrainTask } from "./pretrain.ts";
import { readModelDir } from "./model_dir.ts";
import { readShard } from "./shards.ts";

/** `--device`, shared by every stage that runs the model. */
export const DEVICE_OPTION = {
  name: "device",
  type: "string",
  default: "auto",
  choices: DEVICE_CHOICES,
  help: "backend: gpu (WebGPU), cpu (host memory and BLAS) or auto",
  why: "auto takes a hardware GPU, else the CPU backend, else a software WebGPU adapter",
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
      default: 1,
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
      default: 0.5,
      min: 0,
      max: 1,
      help: "fraction of the run at constant LR before the cosine decay",
    },
    {
      name: "minLrRatio",
      type: "number",
      default: 0.1,
      min: 0,
      max: 1,
      help: "final LR as a fraction of the peak",
      why: "V3 decays to 10%",
    },
    {
      name: "weightDecay",
      type: "number",
      default: 0.1,
      min: 0,
      max: 100,
      help: "AdamW decoupled weight decay on matrices",
      why: "V3",
    },
    {
      name: "beta1",
      type: "number",
      default: 0.9,
      min: 0,
      // 1 would divide by 1 - beta^t = 0 in the bias correction.
      max: 0.999999,
      help: "AdamW beta1",
      why: "V3",
    },
    {
      name: "beta2",
      type: "number",
      default: 0.95,
      min: 0,
      max: 0.999999,
      help: "AdamW beta2",
      why: "V3",
    },
    {
      name: "maxGradNorm",
      type: "number",
      default: 1.0,
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
    { name: "logEvery", type: "integer", default: 10, min: 1, help: "steps between metric lines" },
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
    { name: "keep", type: "integer", default: 2, min: 0, help: "checkpoints kept (0: all)" },
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

/** The `pretrain` options. */
export const PRETRAIN_OPTIONS: OptionTable<PretrainValues> = declareOptions<PretrainValues>()(
  defineOptions(
    [
      {
        name: "data",
        type: "string",
        default: "runs/data",
        help: "directory written by `cli.ts prepare` (train.bin, val.bin, meta.json)",
      },
      {
        name: "preset",
        type: "string",
        default: "nano",
        choices: ["tiny", "nano", "mini", "small"],
        help: "model size preset",
      },
      {
        name: "precision",
        type: "string",
        default: "f32",
        choices: ["f32", "f16", "fp8"],
        help:
          "GEMM inputs of the projections: f32, f16 (needs shader-f16) or fp8 (V3's recipe, emulated)",
      },
      {
        name: "model",
        type: "string",
        default: "{}",
        help: "JSON overrides of model config fields, e.g. '{\"n_layers\": 4}'",
      },
      {
        name: "init",
        type: "string",
        default: null,
        help: "continue pretraining from this checkpoint, run directory or Hugging Face " +
          "DeepSeek-V3 directory (its config replaces --preset / --model; optimizer state starts fresh)",
      },
      ...COMMON_TRAIN_OPTIONS,
    ] as const,
  ),
);

/** Resolved `pretrain` options. */
export interface PretrainValues extends CommonTrainValues {
  /** Directory written by `cli.ts prepare` (train.bin, val.bin, meta.json). */
  data: string;
  /** Model size preset. */
  preset: string;
  /** GEMM inputs of the projections: f32, f16 (needs shader-f16) or fp8 (V3's recipe, emulated). */
  precision: string;
  /** JSON overrides of model config fields, e.g. '{"n_layers": 4}'. */
  model: string;
  /**
   * Continue pretraining from this checkpoint, run directory or Hugging Face DeepSeek-V3 directory
   * (its config replaces --preset / --model; optimizer state starts fresh).
   */
  init: string | null;
}

/**
 * Parses the `--model` JSON overrides and resolves the preset, with the vocabulary taken from
 * the prepared data.
 * @throws naming the field when the JSON or a field is invalid.
 */
export function modelConfigFrom(
  preset: string,
  overridesJson: string,
  vocabSize: number,
): ModelConfig {
  let overrides: Record<string, unknown>;
  try {
    overrides = JSON.parse(overridesJson);
  } catch (e) {
    throw new Error(`--model: not valid JSON (${(e as Error).message}): ${overridesJson}`);
  }
  if (typeof overrides !== "object" || overrides === null || Array.isArray(overrides)) {
    throw new Error(`--model: expected a JSON object of config fields, got ${overridesJson}`);
  }
  try {
    return resolveConfig(preset as PresetName, { vocab_size: vocabSize, ...overrides });
  } catch (e) {
    throw new RangeError(`--model: ${(e as Error).message}`);
  }
}

/**
 * Throws, before anything is allocated, when training `cfg` needs more memory than the machine
 * has: 16 bytes per parameter (weights, gradients, two AdamW moments) live on the device, and a
 * checkpoint reads weights and moments back into host memory, so host memory bounds both.
 *
 * @param cfg The resolved config.
 * @param opts `flag` to name (default `--model`), `memoryBytes` (default: this machine's).
 * @throws {RangeError} stating the parameters and the memory needed and available.
 */
export function checkTrainingMemory(
  cfg: ModelConfig,
  opts: { flag?: string; memoryBytes?: number } = {},
): void {
  const need = memoryNeeds(cfg);
  const have = opts.memoryBytes ?? Deno.systemMemoryInfo().total;
  if (need.trainBytes > have) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(b < 2 ** 30 ? 3 : 1)} GiB`;
    throw new RangeError(
      `${opts.flag ?? "--model"}: this config has ${need.params.toExponential(3)} parameters; ` +
        `training it needs ${gib(need.trainBytes)} before activations (16 bytes per parameter: ` +
        `weights, gradients and two AdamW moments), and this machine has ${gib(have)} of ` +
        `memory. Use fewer or smaller layers (n_layers, dim, inter_dim, n_routed_experts)`,
    );
  }
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
 * Runs pretraining.
 * @returns the loop's result; the model's last checkpoint is in `values.out`.
 */
export async function runPretrain(
  values: PretrainValues,
  opts: { log?: (line: string) => void } = {},
): Promise<LoopResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  chooseDevice(values.device);
  const meta = await readPrepareMeta(values.data);
  const train = (await readShard(`${values.data}/train.bin`)).tokens;
  const val = (await readShard(`${values.data}/val.bin`)).tokens;
  let cfg = modelConfigFrom(values.preset, values.model, meta.vocabSize);
  // --init: the model directory's config and weights (a resumed run below still wins).
  const init = values.init ? await readModelDir(values.init, { missingMtp: "init" }) : null;
  if (init) {
    cfg = init.cfg;
    for (const n of init.notes) log(`${values.init}: ${n}`);
    if (meta.vocabSize > cfg.vocab_size) {
      throw new Error(
        `--init ${values.init}: its vocab_size ${cfg.vocab_size} is smaller than the prepared ` +
          `data's ${meta.vocabSize} ids; prepare --data with the model's tokenizer`,
      );
    }
  }
  if (values.resume) {
    // The checkpoint's own config wins over flags, so a resumed run is the same model.
    const dir = await resolveCheckpoint(values.out);
    if (dir) {
      const ck = await loadCheckpoint(dir);
      const run = ck.state.run as { model?: ModelConfig } | undefined;
      if (run?.model) cfg = resolveConfig(run.model);
    }
  }
  if (values.seqLen > cfg.max_seq_len) {
    throw new Error(
      `--seq-len ${values.seqLen} exceeds the model's max_seq_len ${cfg.max_seq_len}`,
    );
  }
  checkTrainingMemory(cfg);
  const device = await getDevice();
  const model = DeepSeekV3.create(device, cfg, { seed: values.seed });
  if (init && init.cfg === cfg) model.load(init.params);
  const precision = parsePrecision(values.precision);
  checkPrecision(device, precision);
  model.precision = precision;
  const task = new PretrainTask(train, val, {
    B: values.batchSize,
    T: values.seqLen,
    seed: values.seed,
    evalBatches: values.evalBatches,
  });
  log(
    `pretrain: ${cfg.n_layers} layers, dim ${cfg.dim}, ${model.arena.numParams} parameters; ` +
      `${train.length} train / ${val.length} val tokens; ${task.batchesPerEpoch} batches per epoch; ` +
      `device ${device.info.description}`,
  );
  try {
    return await trainLoop(model, task, {
      ...loopOptionsFrom(values),
      // The tokenizer is recorded so that later stages and `export` find it.
      runInfo: {
        ...values,
        model: cfg,
        tokenizer: meta.tokenizer,
        ...(init ? { initCheckpoint: init.dir } : {}),
      },
      log,
    });
  } finally {
    model.arena.destroy();
    model.device.trimPool();
  }
}

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
