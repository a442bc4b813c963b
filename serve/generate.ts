/**
 * One prompt in, one streamed completion out: the work of `cli.ts generate`, without the command
 * line, so scripts and tests can call it with any {@linkcode CompletionService}.
 *
 * The prompt goes to the model as raw text (a text completion) or, with `chat`, as a user message
 * through the chat template (a chat completion whose content is streamed; reasoning and tool calls
 * are not printed). Every sampling setting is passed through.
 *
 * @module
 */

import type { CompletionService } from "./completions.ts";
import type { ChatRequest, CompletionRequest } from "./protocol.ts";
import type { SamplingParams } from "../model/sampling.ts";

/**
 * The sampling settings of one generation with every field given: what the command line's
 * sampling flags parse to (`cli.ts generate` and `cli.ts chat`).
 */
export interface SamplingSettings {
  /** Softmax temperature; 0 is greedy. */
  temperature: number;
  /** Nucleus sampling mass; 1 is off. */
  topP: number;
  /** Keep the k most likely tokens; 0 is off. */
  topK: number;
  /** Drop tokens below p x the best one; 0 is off. */
  minP: number;
  /** CTRL penalty on tokens already seen; 1 is off. */
  repetitionPenalty: number;
  /** OpenAI presence penalty. */
  presencePenalty: number;
  /** OpenAI frequency penalty. */
  frequencyPenalty: number;
  /** Sampling seed (absent: random). */
  seed?: number;
  /** Most tokens to generate. */
  maxTokens: number;
  /** Stop strings, not part of the text. */
  stop: string[];
}

/**
 * The sampler's part of some sampling settings (without `maxTokens` and `stop`).
 *
 * @param settings The settings; absent fields stay absent (the engine's defaults).
 * @returns Sampling parameters.
 * @example
 * ```ts
 * import { samplingParams } from "./generate.ts";
 * samplingParams({ temperature: 0, maxTokens: 8 }).temperature; // 0
 * ```
 */
export function samplingParams(settings: Partial<SamplingSettings>): Partial<SamplingParams> {
  return {
    temperature: settings.temperature,
    topP: settings.topP,
    topK: settings.topK,
    minP: settings.minP,
    repetitionPenalty: settings.repetitionPenalty,
    presencePenalty: settings.presencePenalty,
    frequencyPenalty: settings.frequencyPenalty,
    seed: settings.seed,
  };
}

/** Options of {@linkcode runGenerate}. */
export interface RunGenerateOptions extends SamplingSettings {
  /** The prompt text. */
  prompt: string;
  /** Treat the prompt as a user message in the chat template (default false: raw completion). */
  chat?: boolean;
  /** System prompt, with `chat`. */
  system?: string;
  /** Receives the text as it is decoded. */
  write: (text: string) => void | Promise<void>;
  /** Cancels the generation. */
  signal?: AbortSignal;
}

/** What {@linkcode runGenerate} returns. */
export interface RunGenerateResult {
  /** The whole completion. */
  text: string;
  /** `stop`, `length` or `tool_calls`. */
  finishReason: string;
  /** Prompt and completion token counts. */
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  /** Wall time in seconds. */
  seconds: number;
}

/**
 * Generates one completion and streams it to `write`.
 *
 * @param service The completion service (engine, tokenizer).
 * @param options Prompt, mode, sampling settings, writer.
 * @returns Text, finish reason, usage, time.
 * @throws {Error} If the prompt does not fit the context, or the model fails.
 * @example
 * ```ts ignore
 * const r = await runGenerate(service, { prompt: "Once", write: (t) => out.push(t), ...settings });
 * ```
 */
export async function runGenerate(
  service: CompletionService,
  options: RunGenerateOptions,
): Promise<RunGenerateResult> {
  const t0 = performance.now();
  const common = {
    model: undefined,
    stream: true,
    includeUsage: true,
    maxTokens: options.maxTokens,
    sampling: samplingParams(options),
    stop: options.stop,
  };
  let text = "";
  let finishReason = "stop";
  let usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  if (options.chat) {
    const req: ChatRequest = {
      ...common,
      messages: [
        ...(options.system ? [{ role: "system", content: options.system }] : []),
        { role: "user", content: options.prompt },
      ],
      tools: null,
      toolChoice: "none",
    };
    for await (const chunk of service.startChat(req, options.signal).chunks()) {
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (c?.delta.content) {
        text += c.delta.content;
        await options.write(c.delta.content);
      }
      if (c?.finish_reason) finishReason = c.finish_reason;
    }
  } else {
    const req: CompletionRequest = { ...common, prompt: options.prompt, echo: false };
    for await (const chunk of service.startCompletion(req, options.signal).chunks()) {
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (c?.text) {
        text += c.text;
        await options.write(c.text);
      }
      if (c?.finish_reason) finishReason = c.finish_reason;
    }
  }
  return { text, finishReason, usage, seconds: (performance.now() - t0) / 1000 };
}
