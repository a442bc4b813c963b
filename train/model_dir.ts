/**
 * The one reader of model directories: whatever `--init`, `--model`, `export` and serving are
 * given, read into a config and f32 parameters by HF name.
 *
 * Accepted:
 * - a training checkpoint (`step-NNNNNN/`: `config.json`, `model.safetensors`, `state.json`) or a
 *   run directory (its `latest.json` checkpoint); the config is the run's own (`state.json`'s
 *   `run.model`), else `config.json`;
 * - a Hugging Face model directory (`config.json` with `model_type: "deepseek_v3"` and
 *   `model.safetensors`, or shards named by `model.safetensors.index.json`): one written by
 *   `cli.ts export`, or by transformers' `save_pretrained` at our shapes. F32, BF16, F16 and F64
 *   tensors are widened to f32; transformers' fused expert tensors
 *   (`mlp.experts.gate_up_proj` [E, 2I, D], `mlp.experts.down_proj` [E, D, I]) are split back
 *   into per-expert `gate_proj` / `up_proj` / `down_proj`. transformers' DeepseekV3 has no MTP
 *   module and saves none: a directory without the MTP layer (`model.layers.{n_layers}.*`) reads
 *   as a model with `mtp_depth` 0, or, with `missingMtp: "init"` (training), keeps the config's
 *   MTP depth with freshly initialized MTP weights.
 *
 * Also where a model's tokenizer is found ({@linkcode findModelTokenizer}).
 *
 * @example
 * ```ts ignore
 * import { readModelDir } from "./model_dir.ts";
 * const { cfg, params, notes } = await readModelDir("exported/");
 * ```
 *
 * @module
 */
import { f16ToF32 } from "../kernels/tensor.ts";
import { type ModelConfig, resolveConfig } from "../model/config.ts";
import { fromHfConfig } from "../model/hf_config.ts";
import { initParameters, parameterTable } from "../model/params.ts";
import {
  checkTensors,
  decodeSafetensors,
  f32FromBf16,
  type SafeTensor,
} from "../model/safetensors.ts";
import { loadTokenizer } from "../tokenizer/io.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { assertFinite, CheckpointError, resolveCheckpoint, type TrainState } from "./checkpoint.ts";
import { exists, join } from "./_fs.ts";

/** A model directory read by {@linkcode readModelDir}. */
export interface ModelDir {
  /** The directory the files came from (a run directory resolves to its checkpoint). */
  dir: string;
  /** `"checkpoint"` (has `state.json`) or `"huggingface"`. */
  kind: "checkpoint" | "huggingface";
  /** The model's config. */
  cfg: ModelConfig;
  /** Parameters by HF name, exactly `parameterTable(cfg)`'s, f32. */
  params: Map<string, Float32Array>;
  /** The parsed `config.json`. */
  hfConfig: Record<string, unknown>;
  /** The checkpoint's `state.json`; null for a Hugging Face directory. */
  state: TrainState | null;
  /** What was converted on the way (dtype widening, fused experts, MTP), one line each. */
  notes: string[];
}

/** Options of {@linkcode readModelDir}. */
export interface ReadModelDirOptions {
  /**
   * A directory without MTP weights but with `num_nextn_predict_layers` > 0: `"drop"` (default)
   * reads it as `mtp_depth` 0; `"init"` keeps the depth and initializes the MTP weights (seeded by
   * `seed`), for training to continue with MTP.
   */
  missingMtp?: "drop" | "init";
  /** Seed of freshly initialized MTP weights (default 1234). */
  seed?: number;
}

async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(
        `${path}: missing; ${what} needs config.json and model.safetensors (a training ` +
          "checkpoint, a run directory, or a Hugging Face DeepSeek-V3 directory)",
      );
    }
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

async function readSafetensorsFile(path: string): Promise<Map<string, SafeTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${path}: missing; the model directory is incomplete`);
    }
    throw e;
  }
  try {
    return decodeSafetensors(bytes).tensors;
  } catch (e) {
    throw new CheckpointError(`${path}: ${(e as Error).message}`);
  }
}

/** Every tensor of a directory: `model.safetensors`, or the shards its index names. */
async function readWeights(dir: string): Promise<Map<string, SafeTensor>> {
  const indexPath = join(dir, "model.safetensors.index.json");
  if (!(await exists(indexPath))) return await readSafetensorsFile(join(dir, "model.safetensors"));
  const index = await readJsonFile(indexPath, dir) as { weight_map?: Record<string, unknown> };
  const map = index?.weight_map;
  if (map === null || typeof map !== "object") {
    throw new CheckpointError(`${indexPath}: expected {"weight_map": {tensor: file}}`);
  }
  const files = [...new Set(Object.values(map))];
  const out = new Map<string, SafeTensor>();
  for (const f of files) {
    if (typeof f !== "string" || f.includes("/") || f.includes("\\")) {
      throw new CheckpointError(`${indexPath}: bad shard file name ${JSON.stringify(f)}`);
    }
    for (const [name, t] of await readSafetensorsFile(join(dir, f))) out.set(name, t);
  }
  return out;
}

function toF32(name: string, t: SafeTensor, path: string): Float32Array {
  switch (t.dtype) {
    case "F32":
      return t.data as Float32Array;
    case "BF16":
      return f32FromBf16(t.data as Uint16Array);
    case "F16":
      return f16ToF32(t.data as Uint16Array);
    case "F64":
      return Float32Array.from(t.data as Float64Array);
    default:
      throw new CheckpointError(
        `${path}: tensor '${name}' is ${t.dtype}; model weights must be F32, BF16, F16 or F64`,
      );
  }
}

const FUSED = /^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)(\.weight)?$/;

/**
 * Splits transformers' fused expert tensors into per-expert matrices, in place.
 * `gate_up_proj` [E, 2I, D] holds each expert's gate rows then its up rows; `down_proj`
 * [E, D, I] each expert's down matrix.
 */
function splitFusedExperts(tensors: Map<string, SafeTensor>, path: string): number {
  let split = 0;
  for (const [name, t] of [...tensors]) {
    const m = FUSED.exec(name);
    if (!m) continue;
    if (t.shape.length !== 3) {
      throw new CheckpointError(
        `${path}: fused tensor '${name}' has shape [${t.shape}], expected [experts, rows, cols]`,
      );
    }
    const [E, R, C] = t.shape;
    const per = R * C;
    const parts: [string, number, number][] = m[2] === "gate_up_proj"
      ? [["gate_proj", 0, R / 2], ["up_proj", R / 2, R]]
      : [["down_proj", 0, R]];
    if (m[2] === "gate_up_proj" && R % 2 !== 0) {
      throw new CheckpointError(`${path}: '${name}' has an odd row count ${R}`);
    }
    tensors.delete(name);
    for (let e = 0; e < E; e++) {
      for (const [part, r0, r1] of parts) {
        const data = t.data.slice(e * per + r0 * C, e * per + r1 * C);
        tensors.set(`${m[1]}.${e}.${part}.weight`, {
          dtype: t.dtype,
          shape: [r1 - r0, C],
          data,
        });
      }
    }
    split++;
  }
  return split;
}

/**
 * Reads a model directory: a training checkpoint, a run directory, or a Hugging Face
 * DeepSeek-V3 directory (see the module doc).
 *
 * @param path The directory.
 * @param options What to do about missing MTP weights.
 * @returns Config, f32 parameters, the parsed config.json and state.json, and conversion notes.
 * @throws {CheckpointError} Naming the file for a missing or malformed file, and naming the
 *   tensor when the weights do not match the config (a missing, unexpected or misshapen tensor).
 * @example
 * ```ts ignore
 * const md = await readModelDir("runs/demo/dpo");
 * console.log(md.kind, md.cfg.dim, md.params.size);
 * ```
 */
export async function readModelDir(
  path: string,
  options: ReadModelDirOptions = {},
): Promise<ModelDir> {
  if (!(await exists(path))) {
    throw new CheckpointError(`${path}: no such model, checkpoint or run directory`);
  }
  const dir = (await resolveCheckpoint(path)) ?? path;
  const statePath = join(dir, "state.json");
  const state = (await exists(statePath)) ? await readJsonFile(statePath, dir) as TrainState : null;
  const configPath = join(dir, "config.json");
  const hfConfig = await readJsonFile(configPath, `${path}`) as Record<string, unknown>;
  const run = state?.run as { model?: ModelConfig } | undefined;
  let cfg: ModelConfig;
  try {
    cfg = run?.model ? resolveConfig(run.model) : fromHfConfig(hfConfig);
  } catch (e) {
    throw new CheckpointError(`${run?.model ? statePath : configPath}: ${(e as Error).message}`);
  }
  const weightsPath = join(dir, "model.safetensors");
  const tensors = await readWeights(dir);
  const notes: string[] = [];
  const fused = splitFusedExperts(tensors, weightsPath);
  if (fused > 0) notes.push(`split ${fused} fused expert tensors into per-expert matrices`);
  const dtypes = new Set([...tensors.values()].map((t) => t.dtype));
  dtypes.delete("F32");
  if (dtypes.size > 0) notes.push(`widened ${[...dtypes].join(", ")} tensors to F32`);

  if (cfg.mtp_depth > 0 && !tensors.has(`model.layers.${cfg.n_layers}.eh_proj.weight`)) {
    if ((options.missingMtp ?? "drop") === "drop") {
      cfg = resolveConfig({ ...cfg, mtp_depth: 0 });
      notes.push(
        `no MTP weights (model.layers.${cfg.n_layers}.*): read as a model without MTP`,
      );
    } else {
      const fresh = initParameters(cfg, options.seed ?? 1234);
      for (const spec of parameterTable(cfg)) {
        if (spec.layer >= cfg.n_layers && !tensors.has(spec.name)) {
          tensors.set(spec.name, {
            dtype: "F32",
            shape: [...spec.shape],
            data: fresh.get(spec.name)!,
          });
        }
      }
      notes.push(
        `no MTP weights (model.layers.${cfg.n_layers}.*): initialized fresh for ` +
          `num_nextn_predict_layers ${cfg.mtp_depth}`,
      );
    }
  }
  const table = parameterTable(cfg);
  try {
    checkTensors(tensors, table);
  } catch (e) {
    throw new CheckpointError(
      `${weightsPath}: ${(e as Error).message.replace(/^safetensors: /, "")}; it does not ` +
        `match ${configPath}`,
    );
  }
  const params = new Map<string, Float32Array>();
  for (const spec of table) params.set(spec.name, toF32(spec.name, tensors.get(spec.name)!, dir));
  assertFinite(weightsPath, params, "");
  return {
    dir,
    kind: state ? "checkpoint" : "huggingface",
    cfg,
    params,
    hfConfig,
    state,
    notes,
  };
}

async function hasTokenizer(dir: string): Promise<boolean> {
  return await exists(join(dir, "tokenizer.json"));
}

/**
 * The first directory holding `tokenizer.json` among `dir`, its ancestors and their `tokenizer/`.
 */
export async function findTokenizerDir(dir: string): Promise<string | null> {
  let d = dir.replace(/[\\/]+$/, "");
  for (let up = 0; up < 4 && d; up++) {
    for (const c of [d, `${d}/tokenizer`]) {
      if (await hasTokenizer(c)) return c;
    }
    const parent = d.includes("/") ? d.slice(0, d.lastIndexOf("/")) : (d === "." ? "" : ".");
    if (parent === d) break;
    d = parent;
  }
  return null;
}

/**
 * The directory of a model's tokenizer, in this order: `flag` when given; the model directory
 * itself (an exported or Hugging Face directory holds `tokenizer.json`); the tokenizer its run
 * recorded (`run.tokenizer` in `state.json`, or the prepared data's `meta.json` for a
 * pretraining run); the model directory's ancestors and their `tokenizer/` subfolders (the
 * demo's `runs/demo/tokenizer` from `runs/demo/sft/step-000200`).
 *
 * @param md The model directory read.
 * @param flag An explicit `--tokenizer` directory, or null.
 * @returns The tokenizer and the directory it came from.
 * @throws {Error} Naming `--tokenizer` when none is found.
 * @example
 * ```ts ignore
 * const { tok, dir } = await findModelTokenizer(await readModelDir("runs/sft"), null);
 * ```
 */
export async function findModelTokenizer(
  md: Pick<ModelDir, "dir" | "state">,
  flag: string | null,
): Promise<{ tok: Tokenizer; dir: string }> {
  if (flag) return { tok: await loadTokenizer(flag), dir: flag };
  const candidates: string[] = [md.dir];
  const run = (md.state?.run ?? {}) as { tokenizer?: unknown; data?: unknown };
  if (typeof run.tokenizer === "string") candidates.push(run.tokenizer);
  if (typeof run.data === "string") {
    try {
      const meta = JSON.parse(await Deno.readTextFile(join(run.data, "meta.json")));
      if (typeof meta.tokenizer === "string") candidates.push(meta.tokenizer);
    } catch { /* the data directory moved: keep looking */ }
  }
  for (const c of candidates) {
    if (await hasTokenizer(c)) return { tok: await loadTokenizer(c), dir: c };
  }
  const found = await findTokenizerDir(md.dir);
  if (found) return { tok: await loadTokenizer(found), dir: found };
  throw new Error(
    `--tokenizer: not given, and no tokenizer.json in ${md.dir}, in the tokenizer its run ` +
      `recorded, or in its parent directories; pass --tokenizer DIR (the directory with ` +
      "tokenizer.json)",
  );
}
