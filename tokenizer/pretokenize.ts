/**
 * The pre-tokenizer: splits text into chunks that BPE merges never cross.
 *
 * One regular expression, in the spirit of GPT-4's `cl100k_base` and DeepSeek-V3's pre-tokenizer:
 *
 * 1. runs of CJK characters (Han, Hiragana, Katakana, the prolonged sound mark `ー`, with any
 *    combining marks) form their own chunks, so Chinese and Japanese merges never glue onto Latin
 *    words, spaces or punctuation (DeepSeek-V3 isolates the same scripts);
 * 2. other letter runs (letters and combining marks), optionally led by one space or punctuation
 *    character (` world`, `'s`, `(x`);
 * 3. digits in groups of at most three (`12345` -> `123`, `45`), which keeps arithmetic regular;
 * 4. punctuation / symbol runs, optionally led by a space and followed by newlines (`):\n`);
 * 5. whitespace: newline runs with their leading spaces, then space runs that leave the last
 *    space to lead the next word.
 *
 * The pattern is written once, in the syntax both Oniguruma (the Rust `tokenizers` library) and
 * `@huggingface/tokenizers` (JavaScript) accept, and stored verbatim in `tokenizer.json`. It avoids
 * `\s`, `\d` and `\w`, whose meaning differs between Oniguruma, the JS loader's rewrite and plain
 * JS (JS `\s` matches U+FEFF, Unicode `White_Space` does not); it uses `\p{White_Space}` instead.
 * The only rewrite JavaScript needs is script names: `\p{Han}` -> `\p{Script=Han}`, which is exactly
 * what the Hugging Face JS loader does, so both sides compile the same expression.
 *
 * Lone UTF-16 surrogates cannot be encoded as UTF-8. {@linkcode wellFormed} replaces each with
 * U+FFFD before anything else, deterministically (this is what `TextEncoder` would do anyway).
 *
 * @module
 */

const CJK = String.raw`\p{Han}\p{Hiragana}\p{Katakana}ー`;
const WS = String.raw`\p{White_Space}`;

/**
 * The pre-tokenizer pattern in Oniguruma / `tokenizer.json` syntax.
 *
 * @example
 * ```ts
 * import { PRETOKENIZE_PATTERN } from "./pretokenize.ts";
 * PRETOKENIZE_PATTERN.startsWith("[\\p{Han}"); // true
 * ```
 */
export const PRETOKENIZE_PATTERN: string = [
  String.raw`[${CJK}][${CJK}\p{M}]*`,
  String.raw`[^\r\n\p{L}\p{N}]?(?:[^\P{L}${CJK}]|\p{M})+`,
  String.raw`\p{N}{1,3}`,
  String.raw` ?[^${WS}\p{L}\p{N}]+[\r\n]*`,
  String.raw`${WS}*[\r\n]+`,
  String.raw`${WS}+(?!\P{White_Space})`,
  String.raw`${WS}+`,
].join("|");

/**
 * Rewrites a `tokenizer.json` pattern into JavaScript regex source: bare script names in property
 * escapes (`\p{Han}`) become `\p{Script=Han}`. General categories and binary properties
 * (`\p{L}`, `\p{White_Space}`) are left alone.
 *
 * @param pattern Oniguruma-syntax pattern using only the constructs of {@linkcode PRETOKENIZE_PATTERN}.
 * @returns Source for `new RegExp(source, "gu")`.
 * @throws {SyntaxError} If the result is not a valid JS regular expression.
 * @example
 * ```ts
 * import { patternToJsSource } from "./pretokenize.ts";
 * patternToJsSource("[\\p{Han}\\p{L}]+"); // "[\\p{Script=Han}\\p{L}]+"
 * ```
 */
export function patternToJsSource(pattern: string): string {
  const source = pattern.replace(/(\\[pP])\{([A-Za-z_]+)\}/g, (text, p: string, name: string) => {
    try {
      new RegExp(`\\p{${name}}`, "u");
      return text;
    } catch {
      return `${p}{Script=${name}}`;
    }
  });
  new RegExp(source, "gu"); // throws a SyntaxError naming the problem
  return source;
}

/**
 * Compiles a pre-tokenizer pattern to a global Unicode JS regex.
 *
 * @param pattern Pattern in `tokenizer.json` syntax (default {@linkcode PRETOKENIZE_PATTERN}).
 * @returns A fresh `RegExp` with flags `gu`.
 * @throws {SyntaxError} If the pattern does not compile.
 * @example
 * ```ts
 * import { compilePattern } from "./pretokenize.ts";
 * "Hi there".match(compilePattern()); // ["Hi", " there"]
 * ```
 */
export function compilePattern(pattern: string = PRETOKENIZE_PATTERN): RegExp {
  return new RegExp(patternToJsSource(pattern), "gu");
}

const DEFAULT_REGEX = compilePattern();

/**
 * Replaces lone UTF-16 surrogates with U+FFFD, so that the text has a UTF-8 encoding and
 * `decode(encode(s)) === wellFormed(s)` for every JS string `s`.
 *
 * @param text Any JS string.
 * @returns The same string when it is already well formed.
 * @example
 * ```ts
 * import { wellFormed } from "./pretokenize.ts";
 * wellFormed("a\uD800b"); // "a\uFFFDb"
 * ```
 */
export function wellFormed(text: string): string {
  return text.isWellFormed() ? text : text.toWellFormed();
}

/**
 * Splits text into pre-tokenizer chunks. Concatenating the chunks gives back `wellFormed(text)`.
 *
 * @param text Text to split; lone surrogates are replaced by U+FFFD first.
 * @param options `regex`: a compiled pattern from {@linkcode compilePattern} to use instead of the
 *   default.
 * @returns The chunks in order.
 * @example
 * ```ts
 * import { pretokenize } from "./pretokenize.ts";
 * pretokenize("Hello world 12345 你好！");
 * // ["Hello", " world", " ", "123", "45", " ", "你好", "！"]
 * ```
 */
export function pretokenize(text: string, options: { regex?: RegExp } = {}): string[] {
  const regex = options.regex ?? DEFAULT_REGEX;
  const out: string[] = [];
  regex.lastIndex = 0;
  for (const m of wellFormed(text).matchAll(regex)) out.push(m[0]);
  return out;
}

/**
 * Finds the last safe cut point in `text` for streaming: a position right after a `\n` that is
 * followed by a character that is not white space. No chunk of {@linkcode PRETOKENIZE_PATTERN}
 * spans such a point, so splitting a long text there and pre-tokenizing the halves separately
 * gives the same chunks as pre-tokenizing the whole.
 *
 * @param text Buffered text.
 * @returns The cut index (0 < index < text.length), or -1 if there is none.
 * @example
 * ```ts
 * import { lastSafeCut } from "./pretokenize.ts";
 * lastSafeCut("a\nb\n\nc d"); // 5
 * ```
 */
export function lastSafeCut(text: string): number {
  if (text.length < 2) return -1;
  let i = text.lastIndexOf("\n", text.length - 2);
  while (i >= 0) {
    if (!isWhiteSpaceCode(text.charCodeAt(i + 1))) return i + 1;
    if (i === 0) break;
    i = text.lastIndexOf("\n", i - 1);
  }
  return -1;
}

const WHITE_SPACE_CHAR = /^\p{White_Space}$/u;

function isWhiteSpaceCode(code: number): boolean {
  if (code === 0x20 || (code >= 0x09 && code <= 0x0d)) return true;
  if (code < 0x80) return false;
  return WHITE_SPACE_CHAR.test(String.fromCharCode(code));
}
