/**
 * Saving and loading a tokenizer directory: `tokenizer.json` + `tokenizer_config.json`, the two
 * files `transformers.AutoTokenizer.from_pretrained(dir)` and `@huggingface/tokenizers` read.
 *
 * The only file I/O besides `corpus.ts`; the JSON content comes from `hf_json.ts`.
 *
 * @module
 */

import {
  parseTokenizerConfig,
  type TokenizerConfig,
  tokenizerFromJson,
  toTokenizerConfig,
  toTokenizerJson,
} from "./hf_json.ts";
import { BOS_TOKEN, EOS_TOKEN, PAD_TOKEN } from "./special_tokens.ts";
import type { Tokenizer } from "./tokenizer.ts";

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(
      `cannot read ${path}: ${(e as Error).message}; pass a directory written by ` +
        "`tokenizer train` (it holds tokenizer.json and tokenizer_config.json)",
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if missing).
 *
 * @param tok The tokenizer.
 * @param dir Output directory.
 * @param options `modelMaxLength` for the config (default 2048).
 * @returns The paths written.
 * @throws {Error} If the directory cannot be created or written.
 * @example
 * ```ts ignore
 * await saveTokenizer(tok, "runs/tokenizer");
 * ```
 */
export async function saveTokenizer(
  tok: Tokenizer,
  dir: string,
  options: { modelMaxLength?: number } = {},
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const tokenizerPath = `${dir}/tokenizer.json`;
  const configPath = `${dir}/tokenizer_config.json`;
  await Deno.writeTextFile(tokenizerPath, JSON.stringify(toTokenizerJson(tok), null, 2) + "\n");
  await Deno.writeTextFile(
    configPath,
    JSON.stringify(toTokenizerConfig(tok, options), null, 2) + "\n",
  );
  return [tokenizerPath, configPath];
}

/**
 * Reads `dir/tokenizer.json`.
 *
 * @param dir A directory written by {@linkcode saveTokenizer}.
 * @returns The tokenizer.
 * @throws {Error} Naming the file, if it is missing, not JSON or not a supported byte-level BPE.
 * @example
 * ```ts ignore
 * const tok = await loadTokenizer("runs/tokenizer");
 * ```
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const path = `${dir}/tokenizer.json`;
  const tok = tokenizerFromJson(await readJson(path), { source: path });
  // Every stage needs these (documents end with eos, rows are padded, chats start with bos):
  // say so here, naming the file, not later as "no special token" from deep inside a stage.
  const have = new Set(tok.specialTokens.map((s) => s.content));
  const missing = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN].filter((t) => !have.has(t));
  if (missing.length > 0) {
    throw new Error(
      `${path}: no special token ${missing.join(", ")} in added_tokens (it has ${
        have.size ? [...have].join(", ") : "none"
      }); train a tokenizer with \`cli.ts tokenizer\`, or add them as special added_tokens`,
    );
  }
  return tok;
}

/**
 * Reads `dir/tokenizer_config.json`.
 *
 * @param dir A directory written by {@linkcode saveTokenizer}.
 * @returns The config (bos/eos/pad tokens, chat template, model_max_length).
 * @throws {Error} Naming the file, if it is missing, not JSON or lacks a required field.
 * @example
 * ```ts ignore
 * const { chat_template } = await loadTokenizerConfig("runs/tokenizer");
 * ```
 */
export async function loadTokenizerConfig(dir: string): Promise<TokenizerConfig> {
  const path = `${dir}/tokenizer_config.json`;
  return parseTokenizerConfig(await readJson(path), { source: path });
}
