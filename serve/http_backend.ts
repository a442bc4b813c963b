/**
 * A {@linkcode ChatBackend} that talks to an OpenAI-compatible server (this project's, or any
 * other) with `fetch` and server-sent events: what `cli.ts chat --url` chats through.
 *
 * Requests carry the sampling settings in OpenAI's names (plus `top_k`, `min_p` and
 * `repetition_penalty`, which this project's server reads), stream with usage, and retry once
 * without `max_tokens` when the server refuses it as more than the context leaves.
 *
 * @module
 */

import type { ChatBackend } from "./chat_session.ts";
import type { ChatCompletionChunk } from "./completions.ts";

/** Options of {@linkcode httpBackend}. */
export interface HttpBackendOptions {
  /** Bearer key the server wants (default none). */
  apiKey?: string;
  /** Model name to ask for (default: the first model the server lists). */
  modelId?: string;
}

/**
 * A backend that talks to an OpenAI-compatible server with `fetch` and server-sent events.
 *
 * @param url Base URL of the server (with or without `/v1`).
 * @param options `apiKey`, and `modelId` (default: the first model the server lists).
 * @returns The backend.
 * @throws {Error} If the server cannot be reached or refuses the key.
 * @example
 * ```ts ignore
 * const backend = await httpBackend("http://127.0.0.1:8000");
 * ```
 */
export async function httpBackend(
  url: string,
  options: HttpBackendOptions = {},
): Promise<ChatBackend> {
  const base = url.replace(/\/+$/, "").replace(/\/v1$/, "") + "/v1";
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  const failure = async (res: Response): Promise<Error> => {
    let detail = `${res.status} ${res.statusText}`;
    try {
      detail = (await res.json()).error?.message ?? detail;
    } catch { /* not JSON */ }
    return new Error(`${base}: ${detail}`);
  };
  let modelId = options.modelId;
  if (modelId === undefined) {
    let res: Response;
    try {
      res = await fetch(`${base}/models`, { headers });
    } catch (e) {
      throw new Error(`${url}: cannot reach the server (${(e as Error).message})`);
    }
    if (!res.ok) throw await failure(res);
    modelId = (await res.json()).data?.[0]?.id ?? "default";
  }
  return {
    modelId: modelId!,
    async *chat(req, signal) {
      const body = {
        model: modelId,
        messages: req.messages,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: req.maxTokens,
        stop: req.stop.length > 0 ? req.stop : undefined,
        temperature: req.sampling.temperature,
        top_p: req.sampling.topP,
        top_k: req.sampling.topK || undefined,
        min_p: req.sampling.minP || undefined,
        repetition_penalty: req.sampling.repetitionPenalty,
        presence_penalty: req.sampling.presencePenalty,
        frequency_penalty: req.sampling.frequencyPenalty,
        seed: req.sampling.seed,
        tools: req.tools ?? undefined,
      };
      const send = () =>
        fetch(`${base}/chat/completions`, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          signal,
        });
      let res = await send();
      if (res.status === 400 && body.max_tokens !== undefined) {
        // max_tokens is a cap: when it passes what the context leaves, the server refuses it (as
        // OpenAI does), and "until the context is full" is the same cap.
        const err = await res.clone().json().catch(() => null);
        if (err?.error?.code === "context_length_exceeded" && err.error.param === "max_tokens") {
          body.max_tokens = undefined;
          res = await send();
        }
      }
      if (!res.ok || res.body === null) throw await failure(res);
      let buf = "";
      for await (const piece of res.body.pipeThrough(new TextDecoderStream())) {
        buf += piece;
        let cut: number;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart()).join("\n");
          if (data === "") continue;
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(`${base}: ${chunk.error.message}`);
          yield chunk as ChatCompletionChunk;
        }
      }
    },
  };
}
