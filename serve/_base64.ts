/**
 * Base64 of bytes (standard alphabet, padded), without a dependency: Deno's std is on JSR, which
 * this project cannot reach.
 *
 * @module
 */

/**
 * Encodes bytes as base64.
 *
 * @param bytes The bytes.
 * @returns The base64 text.
 * @example
 * ```ts
 * import { encodeBase64 } from "./_base64.ts";
 * encodeBase64(new Uint8Array([1, 2, 3])); // "AQID"
 * ```
 */
export function encodeBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}
