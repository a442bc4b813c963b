/**
 * GPT-2's byte-to-character table, used to write byte-level BPE tokens as printable strings in
 * `tokenizer.json` (a space byte becomes `Ġ`, a newline `Ċ`).
 *
 * Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order.
 * This is the table of Radford et al. 2019 (`bytes_to_unicode` in openai/gpt-2 `encoder.py`)
 * and the one Hugging Face's `ByteLevel` pre-tokenizer and decoder use.
 *
 * @module
 */

function buildTable(): string[] {
  const table = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
}

/** `BYTE_TO_CHAR[b]` is the one-character string that stands for byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = Object.freeze(buildTable());

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * Writes raw bytes as a byte-level token string.
 *
 * @param bytes The token's bytes.
 * @returns One character per byte.
 * @example
 * ```ts
 * import { bytesToByteLevel } from "./byte_level.ts";
 * bytesToByteLevel(new TextEncoder().encode(" the")); // "Ġthe"
 * ```
 */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/**
 * Reads a byte-level token string back into raw bytes.
 *
 * @param token A token as written in `tokenizer.json`, e.g. `"Ġthe"`.
 * @returns The token's bytes.
 * @throws {Error} If a character is not in the byte-level table (the string is not a byte-level
 *   token, e.g. a special token such as `<|im_end|>` written verbatim is fine, but `"€"` is not).
 * @example
 * ```ts
 * import { byteLevelToBytes } from "./byte_level.ts";
 * byteLevelToBytes("Ġhi"); // Uint8Array [32, 104, 105]
 * ```
 */
export function byteLevelToBytes(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE.get(token[i]);
    if (b === undefined) {
      throw new Error(
        `token ${JSON.stringify(token)} is not a byte-level token: character ` +
          `U+${token.charCodeAt(i).toString(16).toUpperCase().padStart(4, "0")} has no byte; ` +
          `a byte-level tokenizer.json writes every byte as one of the 256 GPT-2 characters`,
      );
    }
    out[i] = b;
  }
  return out;
}
