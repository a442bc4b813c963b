/**
 * Loading a trained model directory for serving: the tokenizer (`tokenizer.json`) and the model
 * (`config.json` + `model.safetensors`) behind the {@linkcode LanguageModel} interface, decoded
 * by the GPU incremental decoder (`model/decode.ts`: latent KV cache, absorbed MLA, batched
 * steps).
 *
 * A "model directory" is a checkpoint (`step-NNNNNN/`), a run directory (its `latest.json`
 * checkpoint is used) or a Hugging Face DeepSeek-V3 directory (`cli.ts export`'s). The tokenizer
 * is the given `tokenizerDir`, else the one `findModelTokenizer` finds: the directory itself, the
 * tokenizer its run recorded, or its ancestors and their `tokenizer/` subfolders (the demo's
 * `runs/demo/tokenizer` from `runs/demo/sft/step-000200`).
 *
 * @module
 */

import { getDevice } from "../kernels/backend.ts";
import { Decoder } from "../model/decode.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { loadTokenizer } from "../tokenizer/io.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { resolveCheckpoint } from "../train/checkpoint.ts";
import { findModelTokenizer, readModelDir } from "../train/model_dir.ts";
import type { LanguageModel } from "./model_api.ts";

/** Options of {@linkcode loadModel}. */
export interface LoadModelOptions {
  /** KV-cache slots to allocate: the most sequences decoded at once (default: the model's). */
  maxSequences?: number;
  /** Context length to allocate per sequence (default: the model's `max_seq_len`). */
  maxSeqLen?: number;
}

/** A model directory ready to serve. */
export interface LoadedModel {
  /** The model. */
  model: LanguageModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** The name to serve it under: the directory's last path segment. */
  modelId: string;
}

/**
 * Loads a trained model for batched incremental decoding on the GPU.
 *
 * @param dir A checkpoint directory, a run directory, or a Hugging Face DeepSeek-V3 directory
 *   (an export, or transformers' `save_pretrained`), read by `train/model_dir.ts`.
 * @param options KV-cache slots (`maxSequences`, default 8).
 * @returns The model as a {@linkcode LanguageModel}.
 * @throws {Error} Naming the file when the directory is missing or malformed.
 * @example
 * ```ts ignore
 * const model = await loadModel("runs/demo/dpo");
 * ```
 */
export async function loadModel(
  dir: string,
  options: LoadModelOptions = {},
): Promise<LanguageModel> {
  let md;
  try {
    md = await readModelDir(dir);
  } catch (e) {
    throw new Error(`--model ${dir}: ${(e as Error).message}`);
  }
  const model = new DeepSeekV3(await getDevice(), md.cfg);
  model.load(md.params);
  const id = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || "minideepseek";
  return new Decoder(model, { maxBatch: options.maxSequences ?? 8, id });
}

/** Options of {@linkcode loadForServing}. */
export interface LoadForServingOptions extends LoadModelOptions {
  /** Directory of `tokenizer.json` (default: the model directory). */
  tokenizerDir?: string;
}

/**
 * Loads a model directory's tokenizer and model.
 *
 * @param dir The model directory; the tokenizer is read first (from `tokenizerDir`, default
 *   `dir`), so a wrong path is reported as such.
 * @param options Tokenizer directory, cache sizes.
 * @returns Model, tokenizer and model id.
 * @throws {Error} Naming the file if the directory or its tokenizer is missing or malformed.
 * @example
 * ```ts ignore
 * const { model, tokenizer, modelId } = await loadForServing("runs/sft/step-001000");
 * ```
 */
export async function loadForServing(
  dir: string,
  options: LoadForServingOptions = {},
): Promise<LoadedModel> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch {
    throw new Error(`--model ${dir}: no such directory; pass a trained model's directory`);
  }
  if (!info.isDirectory) throw new Error(`--model ${dir}: not a directory`);
  let tokenizer: Tokenizer;
  if (options.tokenizerDir) tokenizer = await loadTokenizer(options.tokenizerDir);
  else {
    const ckpt = (await resolveCheckpoint(dir).catch(() => null)) ?? dir;
    const state = await Deno.readTextFile(`${ckpt}/state.json`).then(JSON.parse, () => null);
    try {
      tokenizer = (await findModelTokenizer({ dir: ckpt, state }, null)).tok;
    } catch {
      throw new Error(
        `--model ${dir}: no tokenizer.json in it, in the tokenizer its run recorded, or in its ` +
          "parent directories; pass --tokenizer DIR",
      );
    }
  }
  const model = await loadModel(dir, options);
  const modelId = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || "minideepseek";
  return { model, tokenizer, modelId };
}
