/**
 * The {@linkcode Tokenizer}: a byte-level BPE vocabulary with special tokens, and the methods the
 * training loop, the SFT renderer and the server call (encode, decode, streaming decode, ids of the
 * special tokens).
 *
 * Vocabulary layout of a tokenizer trained here (`trainBpe`): ids `0..S-1` are the special tokens
 * (see `special_tokens.ts`), `S..S+255` the byte tokens in byte order, then one id per merge in
 * the order it was learned. Tokenizers read from a `tokenizer.json` may use any layout.
 *
 * @module
 */

import { PairMap } from "./_pair_map.ts";
import { bytesToByteLevel } from "./byte_level.ts";
import { type AllowedSpecial, ChunkEncoder, splitOnSpecials } from "./encode.ts";
import { decodeBytes, decodeIds, type DecodeOptions, StreamingDecoder } from "./decode.ts";
import { compilePattern, PRETOKENIZE_PATTERN, wellFormed } from "./pretokenize.ts";
import {
  BOS_TOKEN,
  EOS_TOKEN,
  IM_END_TOKEN,
  IM_START_TOKEN,
  PAD_TOKEN,
  type SpecialToken,
} from "./special_tokens.ts";

/** Everything that defines a byte-level BPE tokenizer. */
export interface TokenizerData {
  /** Bytes of each ordinary token, indexed by id; `null` at the ids of special tokens. */
  tokenBytes: ReadonlyArray<Uint8Array | null>;
  /** Merges in priority order (rank 0 first), each a pair of token ids. */
  merges: ReadonlyArray<readonly [number, number]>;
  /** Special tokens and their ids. */
  specialTokens: readonly SpecialToken[];
  /** Pre-tokenizer pattern in `tokenizer.json` syntax (default: `PRETOKENIZE_PATTERN`). */
  pattern?: string;
}

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Special tokens recognized in the text: `"all"`, `"none"` (default) or a list. Text that spells
   * a special token that is not allowed is encoded as ordinary text, so user input can never inject
   * control tokens.
   */
  allowedSpecial?: AllowedSpecial;
}

/**
 * A byte-level BPE tokenizer.
 *
 * @example
 * ```ts ignore
 * import { loadTokenizer } from "./io.ts";
 * const tok = await loadTokenizer("runs/tokenizer");
 * const ids = tok.encode("Hello 世界");
 * tok.decode(ids); // "Hello 世界"
 * tok.encode("<|im_end|>", { allowedSpecial: "all" }); // [tok.imEndId]
 * ```
 */
export class Tokenizer {
  /** Number of token ids (largest id + 1). */
  readonly vocabSize: number;
  /** Merges in priority order, as pairs of ids. */
  readonly merges: ReadonlyArray<readonly [number, number]>;
  /** Special tokens and their ids, in id order. */
  readonly specialTokens: readonly SpecialToken[];
  /** Pre-tokenizer pattern in `tokenizer.json` syntax. */
  readonly pattern: string;
  /** The compiled pre-tokenizer (global, Unicode). Reset `lastIndex` before use. */
  readonly regex: RegExp;

  #bytes: Uint8Array[];
  #special: Uint8Array;
  #specialIds: Map<string, number>;
  #specialContents: string[];
  #encoder: ChunkEncoder;
  #strings: string[] | undefined;
  #stringToId: Map<string, number> | undefined;

  /**
   * Builds a tokenizer from its data.
   *
   * @param data Vocabulary, merges, special tokens, pattern.
   * @throws {Error} If a byte value has no token, a merge refers to an unknown id, or the result
   *   of a merge is not in the vocabulary.
   */
  constructor(data: TokenizerData) {
    this.pattern = data.pattern ?? PRETOKENIZE_PATTERN;
    this.regex = compilePattern(this.pattern);
    this.specialTokens = [...data.specialTokens].sort((a, b) => a.id - b.id);
    this.merges = data.merges;
    let size = data.tokenBytes.length;
    for (const s of this.specialTokens) size = Math.max(size, s.id + 1);
    this.vocabSize = size;

    this.#bytes = new Array<Uint8Array>(size);
    this.#special = new Uint8Array(size);
    this.#specialIds = new Map();
    const utf8 = new TextEncoder();
    for (const s of this.specialTokens) {
      this.#bytes[s.id] = utf8.encode(s.content);
      this.#special[s.id] = 1;
      this.#specialIds.set(s.content, s.id);
    }
    this.#specialContents = this.specialTokens.map((s) => s.content);

    const byKey = new Map<string, number>();
    for (let id = 0; id < data.tokenBytes.length; id++) {
      const b = data.tokenBytes[id];
      if (b == null) continue;
      this.#bytes[id] = b;
      byKey.set(bytesToByteLevel(b), id);
    }
    for (let id = 0; id < size; id++) {
      if (this.#bytes[id] === undefined) this.#bytes[id] = new Uint8Array(0);
    }

    const byteToId = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      const id = byKey.get(bytesToByteLevel(Uint8Array.of(b)));
      if (id === undefined) {
        throw new Error(
          `the vocabulary has no token for byte 0x${b.toString(16).padStart(2, "0")}; ` +
            `a byte-level BPE vocabulary needs all 256 byte tokens`,
        );
      }
      byteToId[b] = id;
    }
    const ranks = new PairMap(this.merges.length);
    const mergeResult = new Int32Array(this.merges.length);
    for (let r = 0; r < this.merges.length; r++) {
      const [a, b] = this.merges[r];
      const ba = this.#bytes[a], bb = this.#bytes[b];
      if (a >= size || b >= size || this.#special[a] || this.#special[b] || !ba || !bb) {
        throw new Error(`merge ${r} (${a}, ${b}) refers to an id that is not an ordinary token`);
      }
      const joined = new Uint8Array(ba.length + bb.length);
      joined.set(ba);
      joined.set(bb, ba.length);
      const id = byKey.get(bytesToByteLevel(joined));
      if (id === undefined) {
        throw new Error(
          `merge ${r} (${bytesToByteLevel(ba)} ${bytesToByteLevel(bb)}) produces a token that is ` +
            `not in the vocabulary`,
        );
      }
      if (ranks.get(a, b) < 0) ranks.set(a, b, r);
      mergeResult[r] = id;
    }
    this.#encoder = new ChunkEncoder({ byteToId, ranks, mergeResult });
  }

  /**
   * Encodes text to token ids. Lone surrogates become U+FFFD first (see `wellFormed`).
   *
   * @param text Text to encode.
   * @param options See {@linkcode EncodeOptions}.
   * @returns The ids.
   * @throws {Error} If `allowedSpecial` names a string that is not a special token.
   * @example
   * ```ts ignore
   * tok.encode("Hi<|eos|>"); // the special's characters as ordinary text
   * tok.encode("Hi<|eos|>", { allowedSpecial: ["<|eos|>"] }); // [..., tok.eosId]
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const out: number[] = [];
    const allowed = this.#allowed(options.allowedSpecial ?? "none");
    const clean = wellFormed(text);
    if (allowed.length === 0) {
      this.#encodeOrdinary(clean, out);
      return out;
    }
    for (const piece of splitOnSpecials(clean, allowed)) {
      if ("special" in piece) out.push(this.#specialIds.get(piece.special)!);
      else this.#encodeOrdinary(piece.text, out);
    }
    return out;
  }

  /**
   * Encodes one pre-tokenizer chunk (no special tokens, no pre-tokenization) and appends the ids.
   * Low level: for callers that split text with {@linkcode Tokenizer.regex} themselves.
   *
   * @param chunk One match of the pre-tokenizer, well-formed.
   * @param out Array the ids are pushed onto.
   */
  encodeChunk(chunk: string, out: number[]): void {
    this.#encoder.encodeChunk(chunk, out);
  }

  /** Empties the cache of encoded chunks (it is bounded anyway; this frees the memory now). */
  clearCache(): void {
    this.#encoder.clearCache();
  }

  #encodeOrdinary(text: string, out: number[]): void {
    const regex = this.regex;
    const encoder = this.#encoder;
    regex.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = regex.exec(text)) !== null) encoder.encodeChunk(m[0], out);
  }

  #allowed(allowed: AllowedSpecial): readonly string[] {
    if (allowed === "none") return [];
    if (allowed === "all") return this.#specialContents;
    const list = [...allowed];
    for (const s of list) {
      if (!this.#specialIds.has(s)) {
        throw new Error(
          `allowedSpecial lists ${JSON.stringify(s)}, which is not a special token of this ` +
            `tokenizer; known: ${this.#specialContents.join(" ")}`,
        );
      }
    }
    return list;
  }

  /**
   * Decodes ids to text; broken UTF-8 becomes U+FFFD.
   *
   * @param ids Token ids.
   * @param options `skipSpecialTokens` (default false).
   * @returns The text.
   * @throws {RangeError} If an id is outside the vocabulary.
   * @example
   * ```ts ignore
   * tok.decode(tok.encode("naïve 😀")); // "naïve 😀"
   * ```
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return decodeIds(this, ids, options);
  }

  /**
   * Decodes ids to raw bytes.
   *
   * @param ids Token ids.
   * @param options `skipSpecialTokens` (default false).
   * @returns The concatenated bytes.
   * @throws {RangeError} If an id is outside the vocabulary.
   */
  decodeBytes(ids: ArrayLike<number>, options: DecodeOptions = {}): Uint8Array {
    return decodeBytes(this, ids, options);
  }

  /**
   * A decoder for token streams that returns only complete characters.
   *
   * @param options `skipSpecialTokens` (default false).
   * @returns A fresh {@linkcode StreamingDecoder}.
   * @example
   * ```ts ignore
   * const dec = tok.streamingDecoder();
   * for (const id of ids) send(dec.push(id));
   * send(dec.flush());
   * ```
   */
  streamingDecoder(options: DecodeOptions = {}): StreamingDecoder {
    return new StreamingDecoder(this, options);
  }

  /**
   * The bytes of one token (a special token's UTF-8 text).
   *
   * @param id Token id.
   * @returns The bytes; do not modify.
   */
  tokenBytes(id: number): Uint8Array {
    return this.#bytes[id];
  }

  /**
   * Whether `id` is a special token.
   *
   * @param id Token id.
   * @returns True for special tokens.
   */
  isSpecial(id: number): boolean {
    return this.#special[id] === 1;
  }

  /**
   * The id of a special token.
   *
   * @param content The special token's text, e.g. `"<|im_end|>"`.
   * @returns Its id.
   * @throws {Error} If the tokenizer has no such special token.
   */
  specialId(content: string): number {
    const id = this.#specialIds.get(content);
    if (id === undefined) {
      throw new Error(
        `this tokenizer has no special token ${JSON.stringify(content)}; known: ` +
          this.#specialContents.join(" "),
      );
    }
    return id;
  }

  /** Id of `<|bos|>`. */
  get bosId(): number {
    return this.specialId(BOS_TOKEN);
  }
  /** Id of `<|eos|>`. */
  get eosId(): number {
    return this.specialId(EOS_TOKEN);
  }
  /** Id of `<|pad|>`. */
  get padId(): number {
    return this.specialId(PAD_TOKEN);
  }
  /** Id of `<|im_start|>`. */
  get imStartId(): number {
    return this.specialId(IM_START_TOKEN);
  }
  /** Id of `<|im_end|>` (the assistant's stop token). */
  get imEndId(): number {
    return this.specialId(IM_END_TOKEN);
  }

  /**
   * The token as written in `tokenizer.json`: byte-level characters (`"Ġthe"`) for ordinary tokens,
   * the text for special tokens.
   *
   * @param id Token id.
   * @returns The token string.
   * @throws {RangeError} If the id is outside the vocabulary.
   */
  idToToken(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is out of range 0..${this.vocabSize - 1}`);
    }
    return this.#tokenStrings()[id];
  }

  /**
   * The id of a token string as written in `tokenizer.json`.
   *
   * @param token E.g. `"Ġthe"` or `"<|im_end|>"`.
   * @returns The id, or undefined.
   */
  tokenToId(token: string): number | undefined {
    if (this.#stringToId === undefined) {
      this.#stringToId = new Map(this.#tokenStrings().map((s, id) => [s, id]));
    }
    return this.#stringToId.get(token);
  }

  #tokenStrings(): string[] {
    if (this.#strings === undefined) {
      const dec = new TextDecoder();
      this.#strings = this.#bytes.map((b, id) =>
        this.#special[id] ? dec.decode(b) : bytesToByteLevel(b)
      );
    }
    return this.#strings;
  }

  /**
   * The data this tokenizer was built from (for saving).
   *
   * @returns Token bytes (`null` at special ids), merges, specials, pattern.
   */
  toData(): TokenizerData {
    return {
      tokenBytes: this.#bytes.map((b, id) => (this.#special[id] ? null : b)),
      merges: this.merges,
      specialTokens: this.specialTokens,
      pattern: this.pattern,
    };
  }
}
