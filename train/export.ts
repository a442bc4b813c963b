/**
 * `export` as a function: a training checkpoint (or run directory) to a self-contained Hugging
 * Face model directory that `transformers`' `AutoModelForCausalLM` / `AutoTokenizer` load with
 * no other file, and that `--init` and serving read back:
 *
 *     out/
 *       config.json              DeepseekV3ForCausalLM; float fields as floats; bos/eos/pad ids
 *       generation_config.json   greedy, stops at <|im_end|> and <|eos|>, max_length = context
 *       model.safetensors        HF DeepSeek-V3 names, F32 (or BF16), the MTP layer included
 *       tokenizer.json           the run's tokenizer
 *       tokenizer_config.json    its special tokens and chat template (tools included)
 *
 * The weights keep the interleaved RoPE rows (`rope_interleave: true`; see `model/safetensors.ts`).
 * The MTP module is written as layer `num_hidden_layers`, as DeepSeek-V3's release does;
 * transformers' DeepseekV3 does not use it (it reports those keys as unused), engines that
 * draft with it do. `--no-mtp` leaves it out and writes `num_nextn_predict_layers: 0`.
 *
 * @example
 * ```ts ignore
 * import { exportHf } from "./export.ts";
 * const r = await exportHf("runs/demo/dpo", "exported/minideepseek");
 * console.log(r.files);
 * ```
 *
 * @module
 */
import { type ModelConfig, resolveConfig } from "../model/config.ts";
import {
  formatHfJson,
  type HfTokenIds,
  toGenerationConfig,
  toHfConfig,
} from "../model/hf_config.ts";
import { parameterTable } from "../model/params.ts";
import { bf16FromF32, encodeSafetensors, type SafeTensor } from "../model/safetensors.ts";
import { toTokenizerConfig, toTokenizerJson } from "../tokenizer/hf_json.ts";
import { loadTokenizerConfig } from "../tokenizer/io.ts";
import { BOS_TOKEN, EOS_TOKEN, IM_END_TOKEN, PAD_TOKEN } from "../tokenizer/special_tokens.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import { findModelTokenizer, readModelDir } from "./model_dir.ts";
import { join, writeFileSynced } from "./_fs.ts";

/** The `export` options (flags, JSON config file and `--help`). */
export const EXPORT_OPTIONS: OptionTable<ExportValues> = declareOptions<ExportValues>()(
  defineOptions(
    [
      {
        name: "model",
        type: "string",
        default: null,
        help: "the run directory or checkpoint to export (or a Hugging Face directory to rewrite)",
      },
      {
        name: "out",
        type: "string",
        default: null,
        help: "the Hugging Face model directory to write (created; its files are replaced)",
      },
      {
        name: "tokenizer",
        type: "string",
        default: null,
        help: "tokenizer directory (default: the one the run recorded, or found next to --model)",
      },
      {
        name: "dtype",
        type: "string",
        default: "float32",
        choices: ["float32", "bfloat16"],
        help: "dtype of model.safetensors",
        why: "training keeps f32 weights: f32 reproduces our logits exactly",
      },
      {
        name: "mtp",
        type: "boolean",
        default: true,
        help: "keep the MTP module (layer num_hidden_layers, as V3's release); --no-mtp drops it",
      },
    ] as const,
  ),
);

/** Resolved `export` options. */
export interface ExportValues {
  /** The run directory or checkpoint to export (or a Hugging Face directory to rewrite). */
  model: string | null;
  /** The Hugging Face model directory to write (created; its files are replaced). */
  out: string | null;
  /** Tokenizer directory (default: the one the run recorded, or found next to --model). */
  tokenizer: string | null;
  /** Dtype of model.safetensors. */
  dtype: string;
  /** Keep the MTP module (layer num_hidden_layers, as V3's release); --no-mtp drops it. */
  mtp: boolean;
}

/** Options of {@linkcode exportHf}. */
export interface ExportOptions {
  /** Tokenizer directory (default: found by `findModelTokenizer`). */
  tokenizer?: string | null;
  /** `model.safetensors` dtype (default `"float32"`). */
  dtype?: "float32" | "bfloat16";
  /** Keep the MTP module (default true). */
  mtp?: boolean;
}

/** What {@linkcode exportHf} wrote. */
export interface ExportResult {
  /** The output directory. */
  dir: string;
  /** The files written, in order. */
  files: string[];
  /** The exported model's config. */
  cfg: ModelConfig;
  /** The checkpoint read. */
  source: string;
  /** Where the tokenizer came from. */
  tokenizerDir: string;
  /** The special-token ids written to the configs. */
  tokenIds: HfTokenIds;
}

/**
 * The special-token ids of a tokenizer, for config.json and generation_config.json.
 *
 * @throws {Error} When the tokenizer lacks `<|bos|>`, `<|eos|>`, `<|pad|>` or `<|im_end|>`.
 * @example
 * ```ts ignore
 * tokenIdsOf(tok); // { bos: 0, eos: 1, pad: 2, stop: [4, 1] }
 * ```
 */
export function tokenIdsOf(tok: Tokenizer): HfTokenIds {
  const eos = tok.specialId(EOS_TOKEN);
  return {
    bos: tok.specialId(BOS_TOKEN),
    eos,
    pad: tok.specialId(PAD_TOKEN),
    stop: [tok.specialId(IM_END_TOKEN), eos],
  };
}

/**
 * Writes a self-contained Hugging Face model directory (see the module doc).
 *
 * @param model A run directory, checkpoint, or Hugging Face directory.
 * @param out The directory to write (created if missing; the five files are replaced).
 * @param options Tokenizer, dtype, MTP.
 * @returns What was written.
 * @throws {Error} Naming the flag or file: no checkpoint, no tokenizer, a tokenizer larger than
 *   the model's vocabulary.
 * @example
 * ```ts ignore
 * await exportHf("runs/demo/dpo", "hf/minideepseek", { dtype: "bfloat16" });
 * ```
 */
export async function exportHf(
  model: string,
  out: string,
  options: ExportOptions = {},
): Promise<ExportResult> {
  const md = await readModelDir(model);
  const { tok, dir: tokenizerDir } = await findModelTokenizer(md, options.tokenizer ?? null);
  if (tok.vocabSize > md.cfg.vocab_size) {
    throw new Error(
      `--tokenizer ${tokenizerDir}: ${tok.vocabSize} tokens, but the model's vocab_size is ` +
        `${md.cfg.vocab_size}; pass the tokenizer the model was trained with`,
    );
  }
  const tokenIds = tokenIdsOf(tok);
  const cfg = options.mtp === false && md.cfg.mtp_depth > 0
    ? resolveConfig({ ...md.cfg, mtp_depth: 0 })
    : md.cfg;
  const dtype = options.dtype ?? "float32";
  const tensors = new Map<string, SafeTensor>();
  for (const spec of parameterTable(cfg)) {
    const data = md.params.get(spec.name)!;
    tensors.set(
      spec.name,
      dtype === "bfloat16"
        ? { dtype: "BF16", shape: [...spec.shape], data: bf16FromF32(data) }
        : { dtype: "F32", shape: [...spec.shape], data },
    );
  }
  let chatTemplate: string | undefined;
  try {
    chatTemplate = (await loadTokenizerConfig(tokenizerDir)).chat_template;
  } catch { /* no tokenizer_config.json: the default template */ }

  await Deno.mkdir(out, { recursive: true });
  const text = (s: string) => new TextEncoder().encode(s);
  const files: [string, Uint8Array][] = [
    ["config.json", text(formatHfJson(toHfConfig(cfg, { tokenIds, dtype })))],
    ["generation_config.json", text(formatHfJson(toGenerationConfig(cfg, { tokenIds })))],
    ["model.safetensors", encodeSafetensors(tensors, { metadata: { format: "pt" } })],
    ["tokenizer.json", text(JSON.stringify(toTokenizerJson(tok), null, 2) + "\n")],
    [
      "tokenizer_config.json",
      text(
        JSON.stringify(
          toTokenizerConfig(tok, { modelMaxLength: cfg.max_seq_len, chatTemplate }),
          null,
          2,
        ) + "\n",
      ),
    ],
  ];
  for (const [name, bytes] of files) await writeFileSynced(join(out, name), bytes);
  // A stale shard index would make readers look past the new model.safetensors.
  await Deno.remove(join(out, "model.safetensors.index.json")).catch(() => {});
  return {
    dir: out,
    files: files.map(([name]) => join(out, name)),
    cfg,
    source: md.dir,
    tokenizerDir,
    tokenIds,
  };
}

/**
 * Runs `export` from resolved options.
 *
 * @returns What was written.
 * @throws naming `--model` / `--out` when missing.
 * @example
 * ```ts ignore
 * await runExport({ ...defaults, model: "runs/demo/dpo", out: "hf/demo" });
 * ```
 */
export async function runExport(
  values: ExportValues,
  opts: { log?: (line: string) => void } = {},
): Promise<ExportResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (!values.model) throw new Error("--model is required: the run directory or checkpoint");
  if (!values.out) throw new Error("--out is required: the Hugging Face directory to write");
  const r = await exportHf(values.model, values.out, {
    tokenizer: values.tokenizer,
    dtype: values.dtype as "float32" | "bfloat16",
    mtp: values.mtp,
  });
  log(
    `export: ${r.source} (tokenizer ${r.tokenizerDir}) -> ${r.dir}: ` +
      r.files.map((f) => f.slice(r.dir.length + 1)).join(", "),
  );
  return r;
}
