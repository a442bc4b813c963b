/**
 * `pretrain` as a function: the option table (shared by the CLI's flags, its JSON config file
 * and `--help`) and {@linkcode runPretrain}, which loads shards, builds the model (fresh, from
 * `--init`'s checkpoint or Hugging Face directory, or resumed) and runs the shared loop.
 *
 * @module
 */
import { chooseDevice, getDevice } from "../kernels/backend.ts";
import { memoryNeeds, type ModelConfig, type PresetName, resolveConfig } from "../model/config.ts";
import { checkPrecision, parsePrecision } from "../model/precision.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { readCheckpointState, resolveCheckpoint } from "./checkpoint.ts";
import { type LoopResult, trainLoop } from "./loop.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import { PretrainTask } from "./pretrain.ts";
import { readModelDir } from "./model_dir.ts";
import { readShard } from "./shards.ts";
import {
  COMMON_TRAIN_OPTIONS,
  type CommonTrainValues,
  loopOptionsFrom,
  readPrepareMeta,
} from "./stage.ts";

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
      // state.json alone: the loop reads the tensors once, when it restores them.
      const run = (await readCheckpointState(dir)).run as { model?: ModelConfig } | undefined;
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
