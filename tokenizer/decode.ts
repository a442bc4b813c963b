/**
 * Decoding: token ids to bytes to text, in one go or streaming.
 *
 * Bytes are decoded as UTF-8 with the WHATWG rules: an ill-formed or truncated sequence becomes
 * U+FFFD (one per maximal ill-formed subpart), as in `@huggingface/tokenizers` and Python's
 * `errors="replace"`. A byte-order mark is kept as text (`ignoreBOM: true`), so decoding never
 * drops a character the model produced.
 *
 * The {@linkcode StreamingDecoder} is for the server: a model emits tokens one at a time and a
 * token can end in the middle of a multi-byte character (a CJK character is 3 bytes, an emoji 4),
 * so the decoder holds partial bytes back and only returns complete characters. Concatenating
 * everything it returns, then `flush()`, equals the one-shot {@linkcode decodeIds}.
 *
 * @module
 */

/** What the decoders need from a tokenizer. */
export interface TokenBytesSource {
  /** Number of ids. */
  readonly vocabSize: number;
  /** The bytes of a token (the UTF-8 text of a special token). */
  tokenBytes(id: number): Uint8Array;
  /** Whether `id` is a special token. */
  isSpecial(id: number): boolean;
}

/** Options shared by the decoders. */
export interface DecodeOptions {
  /** Leave special tokens out of the text (default false: they appear as their text). */
  skipSpecialTokens?: boolean;
}

function checkId(source: TokenBytesSource, id: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= source.vocabSize) {
    throw new RangeError(
      `token id ${id} is out of range: valid ids are integers 0..${source.vocabSize - 1}; ` +
        `check that the model's vocab_size matches the tokenizer`,
    );
  }
}

/**
 * Concatenates the bytes of the given tokens.
 *
 * @param source The tokenizer.
 * @param ids Token ids.
 * @param options See {@linkcode DecodeOptions}.
 * @returns The raw bytes (possibly not valid UTF-8).
 * @throws {RangeError} If an id is outside the vocabulary.
 * @example
 * ```ts ignore
 * decodeBytes(tok, tok.encode("hé")); // Uint8Array [104, 195, 169]
 * ```
 */
export function decodeBytes(
  source: TokenBytesSource,
  ids: ArrayLike<number>,
  options: DecodeOptions = {},
): Uint8Array {
  const skip = options.skipSpecialTokens ?? false;
  let total = 0;
  for (let i = 0; i < ids.length; i++) {
    checkId(source, ids[i]);
    if (!(skip && source.isSpecial(ids[i]))) total += source.tokenBytes(ids[i]).length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < ids.length; i++) {
    if (skip && source.isSpecial(ids[i])) continue;
    const b = source.tokenBytes(ids[i]);
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Decodes token ids to text; broken UTF-8 becomes U+FFFD.
 *
 * @param source The tokenizer.
 * @param ids Token ids.
 * @param options See {@linkcode DecodeOptions}.
 * @returns The text.
 * @throws {RangeError} If an id is outside the vocabulary.
 * @example
 * ```ts ignore
 * decodeIds(tok, tok.encode("你好")); // "你好"
 * ```
 */
export function decodeIds(
  source: TokenBytesSource,
  ids: ArrayLike<number>,
  options: DecodeOptions = {},
): string {
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(decodeBytes(source, ids, options));
}

/**
 * Incremental decoder that returns only complete characters.
 *
 * @example
 * ```ts ignore
 * const dec = new StreamingDecoder(tok);
 * let text = "";
 * for (const id of tok.encode("😀 ok")) text += dec.push(id); // "" until the emoji is complete
 * text += dec.flush(); // "😀 ok"
 * ```
 */
export class StreamingDecoder {
  #source: TokenBytesSource;
  #skip: boolean;
  #decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  /**
   * Creates a decoder with no pending bytes.
   *
   * @param source The tokenizer.
   * @param options See {@linkcode DecodeOptions}.
   */
  constructor(source: TokenBytesSource, options: DecodeOptions = {}) {
    this.#source = source;
    this.#skip = options.skipSpecialTokens ?? false;
  }

  /**
   * Feeds one or more token ids.
   *
   * @param ids A token id or several.
   * @returns The text completed by these tokens (possibly empty).
   * @throws {RangeError} If an id is outside the vocabulary.
   */
  push(ids: number | ArrayLike<number>): string {
    if (typeof ids === "number") {
      checkId(this.#source, ids);
      if (this.#skip && this.#source.isSpecial(ids)) return "";
      return this.#decoder.decode(this.#source.tokenBytes(ids), { stream: true });
    }
    return this.#decoder.decode(decodeBytes(this.#source, ids, { skipSpecialTokens: this.#skip }), {
      stream: true,
    });
  }

  /**
   * Ends the stream: bytes of an unfinished character come out as U+FFFD. The decoder can be
   * reused afterwards.
   *
   * @returns The remaining text (empty when nothing was pending).
   */
  flush(): string {
    return this.#decoder.decode();
  }
}
