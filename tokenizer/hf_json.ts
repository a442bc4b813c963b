/**
 * Hugging Face `tokenizer.json` and `tokenizer_config.json`, as JSON objects (no file I/O here;
 * see `io.ts`).
 *
 * `tokenizer.json` holds a BPE model (vocab + merges as `"left right"` strings, readable by every
 * version of `tokenizers`), the pre-tokenizer as a `Sequence` of a `Split` with our regex
 * (behavior `Isolated`) and a `ByteLevel` with `use_regex: false`, a `ByteLevel` decoder, no
 * normalizer and no post-processor (BOS/EOS are added by the chat template or the data pipeline,
 * never silently). Special tokens are `added_tokens` with `special: true` and also sit in the model
 * vocab at the same ids.
 *
 * `tokenizer_config.json` names the bos/eos/pad tokens, carries the Jinja `chat_template`, sets
 * `model_max_length`, and turns off `clean_up_tokenization_spaces` (that option rewrites `" ."` to
 * `"."` on decode, which would break round trips).
 *
 * References: huggingface/tokenizers `tokenizers/src/tokenizer/serialization.rs`,
 * transformers `tokenization_utils_base.py`.
 *
 * @module
 */

import { byteLevelToBytes } from "./byte_level.ts";
import { CHAT_TEMPLATE } from "./chat_template.ts";
import { BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, type SpecialToken } from "./special_tokens.ts";
import { Tokenizer } from "./tokenizer.ts";

/** An entry of `added_tokens` in `tokenizer.json`. */
export interface HfAddedToken {
  /** Token id. */
  id: number;
  /** The token's text, e.g. `<|im_end|>`. */
  content: string;
  /** Match only as a whole word (always false here). */
  single_word: boolean;
  /** Swallow white space on the left (always false here: the template controls spacing). */
  lstrip: boolean;
  /** Swallow white space on the right (always false here). */
  rstrip: boolean;
  /** Match after normalization (false: there is no normalizer). */
  normalized: boolean;
  /** Special: skipped by `decode(..., skip_special_tokens=True)` (true for all of ours). */
  special: boolean;
}

/** The `tokenizer.json` object this module writes. */
export interface HfTokenizerJson {
  /** Format version, `"1.0"`. */
  version: string;
  /** No truncation: the data pipeline packs sequences itself. */
  truncation: null;
  /** No padding: batches are built by the training loop. */
  padding: null;
  /** The special tokens. */
  added_tokens: HfAddedToken[];
  /** No normalizer: text is encoded exactly as given. */
  normalizer: null;
  /** `Sequence` of `Split` (our regex, `Isolated`) and `ByteLevel` (`use_regex: false`). */
  pre_tokenizer: Record<string, unknown>;
  /** No post-processor: BOS/EOS come from the template or the data pipeline. */
  post_processor: null;
  /** `ByteLevel` decoder. */
  decoder: Record<string, unknown>;
  /** The BPE model: vocab (token string -> id) and merges (`"left right"`, rank order). */
  model: {
    type: "BPE";
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: string[];
  };
}

/** The `tokenizer_config.json` fields this project reads and writes. */
export interface TokenizerConfig {
  /** `<|bos|>`. */
  bos_token: string;
  /** `<|eos|>` (chat turns end with `<|im_end|>`; a server stops on both). */
  eos_token: string;
  /** `<|pad|>`. */
  pad_token: string;
  /** None: byte-level BPE can encode any input. */
  unk_token: null;
  /** The other special tokens, in id order. */
  additional_special_tokens: string[];
  /** Special tokens by id (as strings), as transformers writes them. */
  added_tokens_decoder: Record<string, Omit<HfAddedToken, "id">>;
  /** False: the tokenizer never adds BOS by itself (the chat template writes it). */
  add_bos_token: boolean;
  /** False: the tokenizer never adds EOS by itself. */
  add_eos_token: boolean;
  /** The Jinja chat template (`CHAT_TEMPLATE`). */
  chat_template: string;
  /** False: cleaning spaces on decode (`" ."` -> `"."`) would break round trips. */
  clean_up_tokenization_spaces: boolean;
  /** Longest sequence the model is meant for. */
  model_max_length: number;
  /** `PreTrainedTokenizerFast`, so `AutoTokenizer` needs no custom code. */
  tokenizer_class: string;
}

/** Default `model_max_length`: the longest context the small presets train with. */
export const DEFAULT_MODEL_MAX_LENGTH = 2048;

function addedToken(s: SpecialToken): HfAddedToken {
  return {
    id: s.id,
    content: s.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}

/**
 * Builds the `tokenizer.json` object of a tokenizer.
 *
 * @param tok The tokenizer.
 * @returns A JSON-serializable object (`JSON.stringify` it to write the file).
 * @example
 * ```ts ignore
 * const json = JSON.stringify(toTokenizerJson(tok));
 * ```
 */
export function toTokenizerJson(tok: Tokenizer): HfTokenizerJson {
  const vocab: Record<string, number> = {};
  for (let id = 0; id < tok.vocabSize; id++) vocab[tok.idToToken(id)] = id;
  const merges = tok.merges.map(([a, b]) => `${tok.idToToken(a)} ${tok.idToToken(b)}`);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: tok.specialTokens.map(addedToken),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: tok.pattern }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

function fail(source: string, what: string): never {
  throw new Error(`${source}: ${what}`);
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function findSplitPattern(pre: unknown, source: string): string {
  if (!isRecord(pre)) {
    fail(source, "pre_tokenizer is missing; expected a Split + ByteLevel sequence");
  }
  const steps = pre.type === "Sequence" && Array.isArray(pre.pretokenizers)
    ? pre.pretokenizers
    : [pre];
  let pattern: string | undefined;
  let byteLevel = false;
  for (const step of steps) {
    if (!isRecord(step)) continue;
    if (step.type === "Split" && isRecord(step.pattern) && typeof step.pattern.Regex === "string") {
      if (step.invert === true || (step.behavior !== undefined && step.behavior !== "Isolated")) {
        fail(source, "only Split with behavior Isolated and invert false is supported");
      }
      pattern = step.pattern.Regex;
    } else if (step.type === "ByteLevel") {
      if (step.use_regex !== false) {
        fail(source, "ByteLevel pre-tokenizer with use_regex true (GPT-2 style) is not supported");
      }
      if (step.add_prefix_space === true) fail(source, "add_prefix_space true is not supported");
      byteLevel = true;
    } else {
      fail(source, `unsupported pre-tokenizer step ${JSON.stringify(step.type)}`);
    }
  }
  if (pattern === undefined || !byteLevel) {
    fail(
      source,
      "expected a pre_tokenizer Sequence of Split (Regex) and ByteLevel (use_regex false)",
    );
  }
  return pattern;
}

/**
 * Reads a tokenizer from a parsed `tokenizer.json` (the format {@linkcode toTokenizerJson} writes,
 * or any byte-level BPE with a Split + ByteLevel pre-tokenizer and no normalizer).
 *
 * @param json The parsed file.
 * @param options `source`: name used in error messages (e.g. the file path).
 * @returns The tokenizer.
 * @throws {Error} Naming `source` and the field, if the file is not a supported byte-level BPE.
 * @example
 * ```ts ignore
 * const tok = tokenizerFromJson(JSON.parse(text), { source: "runs/tok/tokenizer.json" });
 * ```
 */
export function tokenizerFromJson(json: unknown, options: { source?: string } = {}): Tokenizer {
  const source = options.source ?? "tokenizer.json";
  if (!isRecord(json)) fail(source, "expected a JSON object");
  const model = json.model;
  if (!isRecord(model) || model.type !== "BPE") fail(source, 'model.type must be "BPE"');
  if (json.normalizer != null) fail(source, "a normalizer is not supported (expected null)");
  if (!isRecord(json.decoder) || json.decoder.type !== "ByteLevel") {
    fail(source, 'decoder.type must be "ByteLevel"');
  }
  const pattern = findSplitPattern(json.pre_tokenizer, source);
  if (!isRecord(model.vocab)) fail(source, "model.vocab must be an object of token -> id");
  if (!Array.isArray(model.merges)) fail(source, "model.merges must be an array");

  if (json.added_tokens != null && !Array.isArray(json.added_tokens)) {
    fail(source, "added_tokens must be an array of {id, content, special}");
  }
  const added: unknown[] = Array.isArray(json.added_tokens) ? json.added_tokens : [];
  // Ids index arrays sized by the largest one: they must be dense (0..N-1, N the tokens the file
  // defines), else one id of 2e9 would allocate for seconds and fail with "Invalid array length".
  const idLimit = Object.keys(model.vocab).length + added.length;
  const checkId = (id: unknown, what: string) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      fail(source, `${what} must be a non-negative integer id, got ${JSON.stringify(id)}`);
    }
    if (id >= idLimit) {
      fail(
        source,
        `${what} is ${id}, past the ${idLimit} tokens the file defines; ids must run 0..N-1`,
      );
    }
  };
  const specialTokens: SpecialToken[] = [];
  const specialContent = new Set<string>();
  for (const [i, t] of added.entries()) {
    if (!isRecord(t) || typeof t.content !== "string" || typeof t.id !== "number") {
      fail(source, "every added_tokens entry needs a string content and a number id");
    }
    checkId(t.id, `added_tokens[${i}].id`);
    if (t.special !== true) {
      fail(
        source,
        `added token ${
          JSON.stringify(t.content)
        } is not special; only special added tokens are supported`,
      );
    }
    specialTokens.push({ content: t.content, id: t.id });
    specialContent.add(t.content);
  }
  const specialIds = new Set(specialTokens.map((s) => s.id));

  const tokenBytes: Array<Uint8Array | null> = [];
  const idOf = new Map<string, number>();
  const tokenOf = new Map<number, string>();
  for (const [token, rawId] of Object.entries(model.vocab)) {
    checkId(rawId, `model.vocab[${JSON.stringify(token)}]`);
    const id = rawId as number;
    const other = tokenOf.get(id);
    if (other !== undefined) {
      fail(
        source,
        `model.vocab gives id ${id} to both ${JSON.stringify(other)} and ` +
          `${JSON.stringify(token)}`,
      );
    }
    tokenOf.set(id, token);
    idOf.set(token, id);
    while (tokenBytes.length <= id) tokenBytes.push(null);
    if (specialIds.has(id)) continue;
    if (specialContent.has(token)) {
      fail(source, `special token ${token} has a different id in model.vocab`);
    }
    tokenBytes[id] = byteLevelToBytes(token);
  }
  const merges: Array<[number, number]> = model.merges.map((m: unknown, r: number) => {
    const parts = typeof m === "string" ? m.split(" ") : m;
    if (!Array.isArray(parts) || parts.length !== 2) {
      fail(source, `model.merges[${r}] must be "left right" or [left, right]`);
    }
    const a = idOf.get(String(parts[0])), b = idOf.get(String(parts[1]));
    if (a === undefined || b === undefined) {
      fail(source, `model.merges[${r}] (${parts.join(" ")}) uses a token missing from model.vocab`);
    }
    return [a, b];
  });
  return new Tokenizer({ tokenBytes, merges, specialTokens, pattern });
}

/**
 * Builds the `tokenizer_config.json` object.
 *
 * @param tok The tokenizer (must have `<|bos|>`, `<|eos|>`, `<|pad|>`).
 * @param options `modelMaxLength` (default 2048), `chatTemplate` (default {@linkcode CHAT_TEMPLATE}).
 * @returns A JSON-serializable object.
 * @throws {Error} If the tokenizer lacks one of the named special tokens.
 * @example
 * ```ts ignore
 * toTokenizerConfig(tok).eos_token; // "<|eos|>"
 * ```
 */
export function toTokenizerConfig(
  tok: Tokenizer,
  options: { modelMaxLength?: number; chatTemplate?: string } = {},
): TokenizerConfig {
  for (const t of [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]) tok.specialId(t);
  const decoder: TokenizerConfig["added_tokens_decoder"] = {};
  for (const s of tok.specialTokens) {
    const { id, ...rest } = addedToken(s);
    decoder[String(id)] = rest;
  }
  const named = new Set([BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]);
  return {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: tok.specialTokens.map((s) => s.content).filter((c) => !named.has(c)),
    bos_token: BOS_TOKEN,
    eos_token: EOS_TOKEN,
    pad_token: PAD_TOKEN,
    unk_token: null,
    chat_template: options.chatTemplate ?? CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: options.modelMaxLength ?? DEFAULT_MODEL_MAX_LENGTH,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
}

/**
 * Validates a parsed `tokenizer_config.json`.
 *
 * @param json The parsed file.
 * @param options `source`: name used in error messages.
 * @returns The config (unknown extra fields are kept).
 * @throws {Error} Naming `source` and the field, if a required field is missing or mistyped.
 * @example
 * ```ts ignore
 * parseTokenizerConfig(JSON.parse(text)).chat_template;
 * ```
 */
export function parseTokenizerConfig(
  json: unknown,
  options: { source?: string } = {},
): TokenizerConfig {
  const source = options.source ?? "tokenizer_config.json";
  if (!isRecord(json)) fail(source, "expected a JSON object");
  for (const key of ["bos_token", "eos_token", "pad_token", "chat_template"]) {
    if (typeof json[key] !== "string") fail(source, `${key} must be a string`);
  }
  if (json.model_max_length !== undefined && typeof json.model_max_length !== "number") {
    fail(source, "model_max_length must be a number");
  }
  const defaults: Omit<TokenizerConfig, "bos_token" | "eos_token" | "pad_token" | "chat_template"> =
    {
      add_bos_token: false,
      add_eos_token: false,
      added_tokens_decoder: {},
      additional_special_tokens: [],
      unk_token: null,
      clean_up_tokenization_spaces: false,
      model_max_length: DEFAULT_MODEL_MAX_LENGTH,
      tokenizer_class: "PreTrainedTokenizerFast",
    };
  return { ...defaults, ...json } as unknown as TokenizerConfig;
}
