/**
 * `cli.ts serve`: the OpenAI-compatible server and the web chat page for a trained model.
 *
 * ```sh
 * deno run -A cli.ts serve --model runs/sft            # http://127.0.0.1:8000, page at /
 * deno run -A cli.ts serve --model runs/sft --host 0.0.0.0 --port 9000 --api-key s3cret
 * ```
 *
 * Any OpenAI client works against `http://HOST:PORT/v1`. The page at `/` offers the demo world's
 * tools (`get_weather`, `calculator`) unless `--no-demo-tools` is given. Ctrl-C stops the server:
 * running generations are cancelled and open streams end.
 *
 * {@linkcode startServe} does everything after loading the model, so tests (and scripts) can serve
 * any {@linkcode LanguageModel}.
 *
 * @module
 */

import { chooseDevice } from "../kernels/backend.ts";
import { addDeviceOption } from "./device.ts";
import { Command } from "commander";
import type { LanguageModel } from "../serve/model_api.ts";
import { loadForServing } from "../serve/load.ts";
import {
  createServer,
  DEFAULT_MAX_BODY_BYTES,
  type RunningServer,
  type ServerTools,
} from "../serve/server.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { TIKTOKEN_ENCODINGS, type TiktokenEncoding } from "../serve/embeddings.ts";
import { demoTools } from "./chat.ts";
import { numberArg } from "./generate.ts";

/** Options of {@linkcode startServe}. */
export interface StartServeOptions {
  /** The model. */
  model: LanguageModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** Name clients use (default `model.id`). */
  modelId?: string;
  /** Interface (default 127.0.0.1). */
  host?: string;
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Require this bearer key on the API. */
  apiKey?: string;
  /** Most sequences per batched step (default 32). */
  maxBatchSize?: number;
  /** Most requests decoding at once (default: the model's cache slots). */
  maxSequences?: number;
  /** Largest request body (default 4 MiB). */
  maxBodyBytes?: number;
  /** Tools the web page may offer (default none). */
  tools?: ServerTools;
  /** Log one line per request (default false). */
  logRequests?: boolean;
  /** Receives the banner and log lines (default stderr). */
  write?: (line: string) => void;
  /** Token-id inputs of `/v1/embeddings` are ids of this tiktoken encoding (default: the model's). */
  embeddingTokenIds?: TiktokenEncoding;
}

/**
 * Starts the server and prints where it listens.
 *
 * @param options Model, tokenizer, address, key, limits, tools.
 * @returns The running server.
 * @throws {Error} Naming `--port` if the port is taken, `--host` if the address is not local.
 * @example
 * ```ts ignore
 * const server = startServe({ model, tokenizer, port: 0 });
 * await fetch(`${server.url}/health`);
 * await server.shutdown();
 * ```
 */
export function startServe(options: StartServeOptions): RunningServer {
  const write = options.write ?? ((line: string) => console.error(line));
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 8000;
  let server: RunningServer;
  try {
    server = createServer({
      model: options.model,
      tokenizer: options.tokenizer,
      modelId: options.modelId,
      host,
      port,
      apiKey: options.apiKey,
      maxBodyBytes: options.maxBodyBytes,
      engine: { maxBatchSize: options.maxBatchSize, maxSequences: options.maxSequences },
      tools: options.tools,
      log: options.logRequests ? write : undefined,
      embeddingTokenIds: options.embeddingTokenIds,
    });
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      throw new Error(`--port ${port}: the port is in use on ${host}; pick another with --port`);
    }
    if (e instanceof Deno.errors.AddrNotAvailable) {
      throw new Error(`--host ${host}: this machine has no such address`);
    }
    throw e;
  }
  const loopback = /^(127\.|::1$|localhost$)/.test(host);
  write(`serving ${options.modelId ?? options.model.id} at ${server.url}`);
  write(`  web chat:        ${server.url}/`);
  write(`  OpenAI base URL: ${server.url}/v1${options.apiKey ? " (API key required)" : ""}`);
  if (!loopback && !options.apiKey) {
    write(`  warning: listening on ${host} without --api-key: anyone who can reach it can use it`);
  }
  return server;
}

/** Options `serve` parses. */
interface ServeFlags {
  model: string;
  device: string;
  tokenizer?: string;
  host: string;
  port: number;
  apiKey?: string;
  modelId?: string;
  maxBatchSize: number;
  maxSequences?: number;
  maxBodyBytes: number;
  demoTools: boolean;
  worldSeed?: number;
  quiet: boolean;
  embeddingTokenIds: string;
}

/**
 * Builds the `serve` subcommand.
 *
 * @returns The command.
 * @example
 * ```ts ignore
 * program.addCommand(serveCommand());
 * ```
 */
export function serveCommand(): Command {
  return addDeviceOption(new Command("serve"))
    .description("serve a model over an OpenAI-compatible HTTP API, with a web chat page at /")
    .requiredOption(
      "--model <dir>",
      "trained model directory (config.json, model.safetensors, tokenizer.json)",
    )
    .option("--tokenizer <dir>", "directory of tokenizer.json (default: the --model directory)")
    .option("--host <address>", "interface to listen on (loopback: this machine only)", "127.0.0.1")
    .option(
      "--port <n>",
      "port (0 picks a free one)",
      numberArg("--port", { min: 0, max: 65535, int: true }),
      8000,
    )
    .option(
      "--api-key <key>",
      "require 'Authorization: Bearer <key>' (default: $MINIDEEPSEEK_API_KEY, else none)",
    )
    .option("--model-id <name>", "model name clients use (default: the directory's name)")
    .option(
      "--max-batch-size <n>",
      "most sequences per batched decoding step",
      numberArg("--max-batch-size", { min: 1, int: true }),
      32,
    )
    .option(
      "--max-sequences <n>",
      "most requests decoding at once; the rest wait (default: the model's cache slots)",
      numberArg("--max-sequences", { min: 1, int: true }),
    )
    .option(
      "--max-body-bytes <n>",
      "largest request body; bigger ones get 413",
      numberArg("--max-body-bytes", { min: 1024, int: true }),
      DEFAULT_MAX_BODY_BYTES,
    )
    .option("--no-demo-tools", "do not offer the demo world's tools on the web page")
    .option(
      "--world-seed <n>",
      "seed of the demo world the tools answer from",
      numberArg("--world-seed", { int: true }),
    )
    .option("--quiet", "do not log requests", false)
    .option(
      "--embedding-token-ids <encoding>",
      `how /v1/embeddings reads token-id inputs: model (this model's ids) or a tiktoken encoding ` +
        `(${
          TIKTOKEN_ENCODINGS.join(", ")
        }), for clients such as GraphRAG that tokenize with tiktoken`,
      "model",
    )
    .action(async (flags: ServeFlags) => {
      chooseDevice(flags.device);
      const ids = flags.embeddingTokenIds;
      if (ids !== "model" && !(TIKTOKEN_ENCODINGS as readonly string[]).includes(ids)) {
        throw new Error(
          `--embedding-token-ids ${ids}: use model or one of ${TIKTOKEN_ENCODINGS.join(", ")}`,
        );
      }
      const { model, tokenizer, modelId } = await loadForServing(flags.model, {
        maxSequences: flags.maxSequences,
        tokenizerDir: flags.tokenizer,
      });
      const server = startServe({
        model,
        tokenizer,
        modelId: flags.modelId ?? modelId,
        host: flags.host,
        port: flags.port,
        apiKey: flags.apiKey ?? Deno.env.get("MINIDEEPSEEK_API_KEY"),
        maxBatchSize: flags.maxBatchSize,
        maxSequences: flags.maxSequences,
        maxBodyBytes: flags.maxBodyBytes,
        tools: flags.demoTools ? demoTools(flags.worldSeed) : undefined,
        logRequests: !flags.quiet,
        embeddingTokenIds: ids === "model" ? undefined : ids as TiktokenEncoding,
      });
      const stop = () => {
        console.error("shutting down");
        void server.shutdown();
      };
      Deno.addSignalListener("SIGINT", stop);
      try {
        await server.finished;
      } finally {
        Deno.removeSignalListener("SIGINT", stop);
        await model.dispose?.();
      }
    });
}
