/**
 * The OpenAI-compatible HTTP server on `Deno.serve`, and the web chat page.
 *
 * | route | method | what |
 * |---|---|---|
 * | `/` | GET | the web chat page (`/app.js`, `/style.css`, `/favicon.svg` are its assets) |
 * | `/health` | GET | `{status: "ok", model, queued, active, ...}` |
 * | `/v1/models`, `/v1/models/{id}` | GET | the served model |
 * | `/v1/chat/completions` | POST | chat, streaming (SSE) or not, with `tools` |
 * | `/v1/completions` | POST | text completion, streaming or not, with `logprobs` and `echo` |
 * | `/v1/embeddings` | POST | vectors from the model's hidden states (`embeddings.ts`) |
 * | `/api/tools` | GET | the demo tools the page may offer (`[]` when none) |
 * | `/api/tools/run` | POST | runs one demo tool: `{name, arguments}` -> `{content}` |
 *
 * Errors use OpenAI's body `{error: {message, type, param, code}}`: 400 for a body that is not
 * JSON or a field of the wrong type or range (the field is named in `param` and the message), 401
 * without the right `Authorization: Bearer <key>` when an API key is set (the page and `/health`
 * stay open), 404 for an unknown path or model, 405 for a wrong method (with `Allow`), 413 for a
 * body over `maxBodyBytes`, 503 when the queue is full, 500 for anything unexpected.
 *
 * Requests run concurrently through one {@linkcode Engine}, which batches them. A client that
 * disconnects (Deno cancels the response body: completions, streamed or not, answer with a body
 * stream) cancels its generation and frees its sequence. So a non-streaming reply commits status
 * 200 before generating; a model failure in mid-generation comes back as an error body with 200. The server listens on loopback unless told otherwise; it sends no CORS
 * headers, so other web sites cannot drive a local model from a visitor's browser.
 *
 * @example
 * ```ts ignore
 * const server = createServer({ model, tokenizer, port: 8000 });
 * console.log(`listening on ${server.url}`);
 * await server.finished;
 * ```
 *
 * @module
 */

import type { ToolSpec } from "../tokenizer/chat_template.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { CompletionService } from "./completions.ts";
import { createEmbeddings, parseEmbeddingRequest, type TiktokenEncoding } from "./embeddings.ts";
import { Engine, type EngineOptions } from "./engine.ts";
import type { LanguageModel } from "./model_api.ts";
import { ApiError, parseChatRequest, parseCompletionRequest, requireObject } from "./protocol.ts";
import { APP_JS, FAVICON_SVG, INDEX_HTML, STYLE_CSS } from "./web/page.ts";

/** Tools the web page can offer and the server runs for it (e.g. the demo world's). */
export interface ServerTools {
  /** Tool schemas in OpenAI form, sent by the page as `tools`. */
  schemas: readonly ToolSpec[];
  /**
   * Runs a tool.
   *
   * @param name The function name.
   * @param args The arguments as a JSON string.
   * @returns The result text given back to the model.
   */
  run(name: string, args: string): string | Promise<string>;
}

/** Options of {@linkcode createHandler}. */
export interface HandlerOptions {
  /** The model. */
  model: LanguageModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** The model name clients use (default `model.id`). */
  modelId?: string;
  /** Require `Authorization: Bearer <apiKey>` on `/v1/*` and `/api/*` (default: none). */
  apiKey?: string;
  /** Largest request body in bytes (default 4 MiB). */
  maxBodyBytes?: number;
  /** Batching and queue limits. */
  engine?: EngineOptions;
  /** Tools for the web page (default none). */
  tools?: ServerTools;
  /** Called with one line per request (default: nothing). */
  log?: (line: string) => void;
  /**
   * `/v1/embeddings` reads token-id inputs as ids of this tiktoken encoding (GraphRAG's query side
   * sends cl100k_base ids) instead of the model's own (default).
   */
  embeddingTokenIds?: TiktokenEncoding;
}

/** Options of {@linkcode createServer}. */
export interface ServerOptions extends HandlerOptions {
  /** Interface to listen on (default `127.0.0.1`: this machine only). */
  host?: string;
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Shuts the server down when aborted. */
  signal?: AbortSignal;
}

/** The request handler and what it runs on. */
export interface Handler {
  /** Answers one HTTP request; `info` comes from `Deno.serve` (optional). */
  handle(req: Request, info?: ConnectionInfo): Promise<Response>;
  /** The engine behind it. */
  engine: Engine;
  /** The OpenAI logic behind it. */
  service: CompletionService;
}

/** A listening server. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:8000`. */
  readonly url: string;
  /** The interface it listens on. */
  readonly hostname: string;
  /** The port it listens on. */
  readonly port: number;
  /** The engine (for statistics). */
  readonly engine: Engine;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
  /** Cancels every generation and stops listening. */
  shutdown(): Promise<void>;
}

/** Default body limit: far above any chat a small model can read, far below a memory problem. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function errorResponse(e: ApiError, headers: Record<string, string> = {}): Response {
  return json(e.toBody(), e.status, headers);
}

async function readJsonBody(req: Request, limit: number): Promise<unknown> {
  const tooBig = () =>
    new ApiError(413, `the request body is larger than the limit of ${limit} bytes`, {
      code: "request_too_large",
    });
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooBig();
  if (req.body === null) throw new ApiError(400, "the request body is empty; send a JSON object");
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooBig();
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.byteLength;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, "the request body is not valid UTF-8");
  }
  if (text.trim() === "") throw new ApiError(400, "the request body is empty; send a JSON object");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, {
      code: "invalid_json",
    });
  }
}

function sse(chunks: AsyncGenerator<unknown, void, undefined>, abort: AbortController): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await chunks.next();
        if (done) {
          controller.enqueue(enc.encode("data: [DONE]\n\n"));
          controller.close();
          return;
        }
        controller.enqueue(enc.encode(`data: ${JSON.stringify(value)}\n\n`));
      } catch (e) {
        if (abort.signal.aborted) return;
        // Headers are gone already: report the failure in-band, as OpenAI does.
        const err = e instanceof ApiError
          ? e
          : new ApiError(500, `generation failed: ${(e as Error).message}`);
        try {
          controller.enqueue(enc.encode(`data: ${JSON.stringify(err.toBody())}\n\n`));
          controller.enqueue(enc.encode("data: [DONE]\n\n"));
          controller.close();
        } catch {
          // The client left meanwhile.
        }
      }
    },
    cancel() {
      // The client disconnected: stop generating for it.
      abort.abort();
      chunks.return(undefined).catch(() => {});
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    },
  });
}

/** Constant-time string comparison, so the key cannot be guessed byte by byte from timings. */
function sameKey(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** What `Deno.serve` tells a handler about the connection (optional, for tests). */
export interface ConnectionInfo {
  /** Settles when the response was delivered; rejects when the client went away first. */
  completed?: Promise<void>;
}

type Route = {
  methods: string[];
  auth: boolean;
  run: (req: Request, match: string, info: ConnectionInfo) => Promise<Response> | Response;
};

/**
 * A JSON response whose body is written when `result` settles. The status (200) and headers go out
 * at once so that the body stream exists: Deno cancels it when the client disconnects, which
 * cancels the generation (`abort`). The request's own signal would also tell, but reading it makes
 * Deno print a warning about its legacy abort-after-success behavior on every server start. The
 * price: a model failure in mid-generation arrives as an OpenAI error body with status 200.
 */
function deferredJson(result: Promise<unknown>, abort: AbortController): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let text: string;
      try {
        text = JSON.stringify(await result);
      } catch (e) {
        if (abort.signal.aborted) return;
        const err = e instanceof ApiError
          ? e
          : new ApiError(500, `generation failed: ${(e as Error).message}`);
        text = JSON.stringify(err.toBody());
      }
      try {
        controller.enqueue(enc.encode(text));
        controller.close();
      } catch {
        // The client left meanwhile.
      }
    },
    cancel() {
      abort.abort();
    },
  });
  return new Response(body, { headers: JSON_HEADERS });
}

/**
 * Builds the request handler without listening (for tests, or to mount it in another server).
 *
 * @param options Model, tokenizer, key, limits, tools, logger.
 * @returns The handler, its engine and its service.
 * @throws {RangeError} For bad engine options or a model/tokenizer mismatch.
 * @example
 * ```ts ignore
 * const { handle } = createHandler({ model, tokenizer });
 * const res = await handle(new Request("http://x/v1/models"));
 * ```
 */
export function createHandler(options: HandlerOptions): Handler {
  const { model, tokenizer } = options;
  const modelId = options.modelId ?? model.id;
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const apiKey = options.apiKey;
  const tools = options.tools;
  const log = options.log ?? (() => {});
  const engine = new Engine(model, tokenizer, options.engine);
  const service = new CompletionService(engine, tokenizer, { modelId });
  const created = Math.floor(Date.now() / 1000);
  const hiddenSize = model.hiddenSize;
  const modelCard = {
    id: modelId,
    object: "model",
    created,
    owned_by: "minideepseek",
    max_model_len: model.maxSeqLen,
  };

  const checkModel = (name: string | undefined): void => {
    if (name !== undefined && name !== modelId) {
      throw new ApiError(
        404,
        `The model '${name}' does not exist; this server serves '${modelId}'`,
        {
          param: "model",
          code: "model_not_found",
        },
      );
    }
  };

  const page = (body: string, type: string): Response =>
    new Response(body, {
      headers: {
        "content-type": type,
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
        // Everything the page needs is served from here; nothing may load from elsewhere.
        "content-security-policy":
          "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
      },
    });

  const routes = new Map<string, Route>([
    ["/", {
      methods: ["GET"],
      auth: false,
      run: () => page(INDEX_HTML, "text/html; charset=utf-8"),
    }],
    ["/app.js", {
      methods: ["GET"],
      auth: false,
      run: () => page(APP_JS, "text/javascript; charset=utf-8"),
    }],
    ["/style.css", {
      methods: ["GET"],
      auth: false,
      run: () => page(STYLE_CSS, "text/css; charset=utf-8"),
    }],
    ["/favicon.svg", {
      methods: ["GET"],
      auth: false,
      run: () => page(FAVICON_SVG, "image/svg+xml"),
    }],
    ["/health", {
      methods: ["GET"],
      auth: false,
      run: () =>
        json({ status: "ok", model: modelId, auth: apiKey !== undefined, ...engine.stats() }),
    }],
    ["/v1/models", {
      methods: ["GET"],
      auth: true,
      run: () => json({ object: "list", data: [modelCard] }),
    }],
    ["/v1/models/", {
      methods: ["GET"],
      auth: true,
      run: (_req, rest) => {
        checkModel(decodeURIComponent(rest));
        return json(modelCard);
      },
    }],
    ["/v1/chat/completions", {
      methods: ["POST"],
      auth: true,
      run: async (req, _rest, info) => {
        const body = parseChatRequest(await readJsonBody(req, maxBody));
        checkModel(body.model);
        const abort = new AbortController();
        info.completed?.catch(() => abort.abort());
        const run = service.startChat(body, abort.signal);
        return body.stream ? sse(run.chunks(), abort) : deferredJson(run.response(), abort);
      },
    }],
    ["/v1/completions", {
      methods: ["POST"],
      auth: true,
      run: async (req, _rest, info) => {
        const body = parseCompletionRequest(await readJsonBody(req, maxBody));
        checkModel(body.model);
        const abort = new AbortController();
        info.completed?.catch(() => abort.abort());
        const run = service.startCompletion(body, abort.signal);
        return body.stream ? sse(run.chunks(), abort) : deferredJson(run.response(), abort);
      },
    }],
    ["/v1/embeddings", {
      methods: ["POST"],
      auth: true,
      run: async (req) => {
        const body = parseEmbeddingRequest(await readJsonBody(req, maxBody), hiddenSize);
        checkModel(body.model);
        if (!model.stepHidden) {
          throw new ApiError(404, "this model does not expose hidden states for embeddings", {
            code: "not_found",
          });
        }
        return json(
          await createEmbeddings(body, {
            tokenizer,
            embed: (t) => engine.embed(t),
            modelId,
            maxSeqLen: model.maxSeqLen,
            foreignTokenIds: options.embeddingTokenIds,
          }),
        );
      },
    }],
    ["/api/tools", {
      methods: ["GET"],
      auth: true,
      run: () => json({ tools: tools?.schemas ?? [] }),
    }],
    ["/api/tools/run", {
      methods: ["POST"],
      auth: true,
      run: async (req) => {
        const body = requireObject(await readJsonBody(req, maxBody));
        if (typeof body.name !== "string") {
          throw new ApiError(400, "'name' must be a string", { param: "name" });
        }
        const args = typeof body.arguments === "string"
          ? body.arguments
          : JSON.stringify(body.arguments ?? {});
        const known = tools?.schemas.some((t) =>
          (t as { function?: { name?: string } }).function?.name === body.name
        );
        if (!tools || !known) {
          throw new ApiError(404, `no tool named '${body.name}' is available on this server`, {
            param: "name",
          });
        }
        return json({ content: await tools.run(body.name, args) });
      },
    }],
  ]);

  const find = (path: string): [Route, string] | undefined => {
    const exact = routes.get(path);
    if (exact) return [exact, ""];
    if (path.startsWith("/v1/models/") && path.length > "/v1/models/".length) {
      return [routes.get("/v1/models/")!, path.slice("/v1/models/".length)];
    }
    return undefined;
  };

  const dispatch = async (req: Request, info: ConnectionInfo): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const found = find(path);
    if (!found) {
      throw new ApiError(404, `Unknown path: ${req.method} ${url.pathname}`, { code: "not_found" });
    }
    const [route, rest] = found;
    const method = req.method === "HEAD" ? "GET" : req.method;
    if (!route.methods.includes(method)) {
      const allow = route.methods.includes("GET") ? [...route.methods, "HEAD"] : route.methods;
      return errorResponse(
        new ApiError(
          405,
          `${req.method} is not allowed on ${url.pathname}; use ${route.methods.join(" or ")}`,
          {
            code: "method_not_allowed",
          },
        ),
        { allow: allow.join(", ") },
      );
    }
    if (route.auth && apiKey !== undefined) {
      const header = req.headers.get("authorization") ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(header.trim());
      if (!m || !sameKey(m[1], apiKey)) {
        return errorResponse(
          new ApiError(
            401,
            m
              ? "Incorrect API key provided; pass the key the server was started with"
              : "Missing API key: send the header 'Authorization: Bearer <key>'",
            { code: "invalid_api_key" },
          ),
          { "www-authenticate": "Bearer" },
        );
      }
    }
    const res = await route.run(req, rest, info);
    if (req.method === "HEAD") {
      return new Response(null, { status: res.status, headers: res.headers });
    }
    return res;
  };

  const handle = async (req: Request, info: ConnectionInfo = {}): Promise<Response> => {
    const t0 = performance.now();
    let res: Response;
    try {
      res = await dispatch(req, info);
    } catch (e) {
      res = errorResponse(
        e instanceof ApiError
          ? e
          : new ApiError(500, `internal error: ${(e as Error)?.message ?? e}`),
      );
    }
    log(
      `${req.method} ${new URL(req.url).pathname} ${res.status} ${
        (performance.now() - t0).toFixed(0)
      }ms`,
    );
    return res;
  };

  return { handle, engine, service };
}

/**
 * Starts the server on `Deno.serve`.
 *
 * @param options Model, tokenizer, address, key, limits, tools.
 * @returns The running server; `shutdown()` stops it.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 * @throws {RangeError} For bad engine options or a model/tokenizer mismatch.
 * @example
 * ```ts ignore
 * const server = createServer({ model, tokenizer, port: 0 });
 * const res = await fetch(`${server.url}/v1/models`);
 * await server.shutdown();
 * ```
 */
export function createServer(options: ServerOptions): RunningServer {
  const { handle, engine } = createHandler(options);
  const hostname = options.host ?? "127.0.0.1";
  const http = Deno.serve(
    { hostname, port: options.port ?? 8000, onListen: () => {} },
    handle,
  );
  const addr = http.addr as Deno.NetAddr;
  const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      // Ending the generations first lets open streams finish, so the HTTP shutdown can complete.
      await engine.close();
      await http.shutdown();
    })();
    return stopping;
  };
  options.signal?.addEventListener("abort", () => void shutdown(), { once: true });
  return {
    url: `http://${shown}:${addr.port}`,
    hostname: addr.hostname,
    port: addr.port,
    engine,
    finished: http.finished,
    shutdown,
  };
}
