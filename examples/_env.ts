/**
 * What every example reads from the environment, so one script runs against this project's
 * server or DeepSeek's API by changing variables only:
 *
 * | variable | default | DeepSeek |
 * |---|---|---|
 * | `OPENAI_BASE_URL` | `http://127.0.0.1:8000/v1` (`cli.ts serve`) | `https://api.deepseek.com` |
 * | `OPENAI_API_KEY` | `not-needed` | your key |
 * | `OPENAI_MODEL` | the first model `/v1/models` lists | `deepseek-chat` |
 *
 * @module
 */

import OpenAI from "openai";

/** The API's base URL. */
export const BASE_URL: string = Deno.env.get("OPENAI_BASE_URL") ?? "http://127.0.0.1:8000/v1";
/** The API key (this project's server needs none unless started with `--api-key`). */
export const API_KEY: string = Deno.env.get("OPENAI_API_KEY") ?? "not-needed";

/**
 * A client for the configured API.
 *
 * @param options `baseURL` / `apiKey` overrides.
 * @returns The client.
 */
export function makeClient(options: { baseURL?: string; apiKey?: string } = {}): OpenAI {
  return new OpenAI({
    baseURL: options.baseURL ?? BASE_URL,
    apiKey: options.apiKey ?? API_KEY,
    maxRetries: 1,
    timeout: 600_000,
  });
}

/**
 * The model to use: `$OPENAI_MODEL`, else the first one the server lists.
 *
 * @param client The client.
 * @returns The model id.
 */
export async function modelName(client: OpenAI): Promise<string> {
  const named = Deno.env.get("OPENAI_MODEL");
  if (named) return named;
  const list = await client.models.list();
  if (list.data.length === 0) throw new Error(`${BASE_URL}/models lists no model`);
  return list.data[0].id;
}

/**
 * Prints a titled section.
 *
 * @param title The heading.
 */
export function section(title: string): void {
  console.log(`\n=== ${title} ===`);
}
