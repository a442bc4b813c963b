/**
 * Loading a trained model directory for serving: the tokenizer (`tokenizer.json`) and the model
 * (`config.json` + `model.safetensors`) behind the {@linkcode LanguageModel} interface.
 *
 * The tokenizer loads today. The model does not yet: serving needs the GPU incremental decoder
 * (`model/decode.ts`: latent KV cache, absorbed MLA, batched steps), which has not landed.
 * {@linkcode loadModel} is the one place to change when it does; the server, the engine, the CLI
 * commands and their tests already run against the interface (with the CPU models of
 * `_test_model.ts`).
 *
 * @module
 */

import { loadTokenizer } from "../tokenizer/io.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
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

/** Thrown by {@linkcode loadModel} until the GPU decoder exists. */
export class NotImplementedError extends Error {
  /**
   * Makes the error.
   *
   * @param message What is missing.
   */
  constructor(message: string) {
    super(message);
    this.name = "NotImplementedError";
  }
}

/**
 * Loads a trained model for batched incremental decoding.
 *
 * @param dir A model directory (`config.json`, `model.safetensors`).
 * @param _options Cache sizes (unused until the decoder lands).
 * @returns The model.
 * @throws {NotImplementedError} Always, for now: the GPU decoder has not landed.
 * @example
 * ```ts ignore
 * const model = await loadModel("runs/sft/step-001000");
 * ```
 */
export function loadModel(dir: string, _options: LoadModelOptions = {}): Promise<LanguageModel> {
  return Promise.reject(
    new NotImplementedError(
      `cannot load the model in ${dir}: serving a trained model is not implemented until the GPU ` +
        "decoder lands (model/decode.ts, batched incremental decoding with a KV cache); the " +
        "server, web page and CLI work today with the CPU test models in serve/_test_model.ts",
    ),
  );
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
 * @throws {NotImplementedError} From {@linkcode loadModel}, for now.
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
  const tokenizer = await loadTokenizer(options.tokenizerDir ?? dir);
  const model = await loadModel(dir, options);
  const modelId = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || "minideepseek";
  return { model, tokenizer, modelId };
}
