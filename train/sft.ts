/**
 * Supervised fine-tuning (SFT): chat conversations rendered with the chat template, trained with
 * the loss on assistant tokens only, several conversations packed per row with attention kept
 * inside each one (segment ids), as a {@linkcode TrainTask} for the shared loop.
 *
 * Legend: B rows per micro-batch, T positions per row, L tokens of one rendered conversation.
 *
 *     conversation -> renderChatForTraining -> ids [L], mask [L] (1 on assistant spans,
 *                                              tool-call text and <|im_end|> included)
 *     positions j = 0 .. L-2:  input ids[j], target ids[j+1] if mask[j+1] else -1 (ignored)
 *     rows [B, T]: whole conversations, first fit in order; seg = the conversation's slot in the
 *                  batch (pads get their own segment and target -1)
 *
 * RoPE makes attention scores depend on relative positions only, so a conversation's logits do
 * not depend on where in a row it was packed (up to float rounding); the segment ids keep it
 * from seeing its neighbours. A conversation longer than T + 1 tokens keeps its first T + 1.
 *
 * The records are OpenAI chat messages: `{"conversations": [...]}` or `{"messages": [...]}` with
 * roles system, user, assistant (optional `tool_calls`), tool, and an optional `tools` list.
 *
 * @module
 */
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import type { DeepSeekV3, HostBatch } from "../model/transformer.ts";
import type { ChatMessage, Tokenizer, ToolSpec } from "../tokenizer/mod.ts";
import { renderChatForTraining } from "../tokenizer/mod.ts";
import { type JsonlCheck, JsonlError, readJsonl } from "./jsonl.ts";
import type { TaskOutput, TrainTask } from "./loop.ts";
import { EpochOrder, type EpochPosition } from "./epoch_order.ts";
import { Replay, type ReplaySpec } from "./replay.ts";
import type { SamplerState } from "./sampler.ts";

/** One conversation as read from a file. */
export interface Conversation {
  /** The messages, first first. */
  messages: ChatMessage[];
  /** Tools shown to the model, if any. */
  tools?: ToolSpec[];
  /** The file it came from. */
  file: string;
  /** Its 1-based line there. */
  line: number;
}

/** A tokenized sequence and the mask of tokens the loss is taken on. */
export interface ChatExample {
  /** Token ids [L]. */
  ids: Int32Array;
  /** [L]: 1 where the token is a training target (assistant spans for SFT). */
  mask: Uint8Array;
  /** `file:line` or another label, for messages. */
  source: string;
}

const ROLES = ["system", "user", "assistant", "tool"];

/**
 * Checks a list of OpenAI chat messages; returns the reason it is malformed, naming the field.
 *
 * @param messages The value of `conversations` / `messages` (or a DPO side).
 * @param field Its name in the record, for the message.
 * @returns `undefined` when well formed.
 * @example
 * checkMessages([{ role: "bot", content: "hi" }], "messages");
 * // 'messages[0].role must be one of system, user, assistant, tool, got "bot"'
 */
export function checkMessages(messages: unknown, field: string): string | undefined {
  if (!Array.isArray(messages)) return `"${field}" must be an array of messages`;
  if (messages.length === 0) return `"${field}" is empty`;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i], at = `${field}[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      return `${at} must be an object {"role", "content"}`;
    }
    const role = (m as Record<string, unknown>).role;
    if (typeof role !== "string" || !ROLES.includes(role)) {
      return `${at}.role must be one of ${ROLES.join(", ")}, got ${JSON.stringify(role)}`;
    }
    const content = (m as Record<string, unknown>).content;
    const text = contentText(content, `${at}.content`);
    if (typeof text !== "string") return text.error;
    const calls = (m as Record<string, unknown>).tool_calls;
    const hasCalls = Array.isArray(calls) && calls.length > 0;
    // An empty turn trains on nothing but the template: almost always a broken export.
    if (text.trim().length === 0 && role !== "tool" && !(role === "assistant" && hasCalls)) {
      return `${at}.content is ${content === null || content === undefined ? "missing" : "empty"}` +
        (role === "assistant"
          ? " and it has no tool_calls: an empty reply"
          : `: an empty ${role} turn`);
    }
    if (calls !== undefined && calls !== null) {
      if (role !== "assistant") return `${at}.tool_calls is only allowed on assistant messages`;
      if (!Array.isArray(calls)) return `${at}.tool_calls must be an array`;
      for (let j = 0; j < calls.length; j++) {
        const f = (calls[j] as { function?: { name?: unknown; arguments?: unknown } })?.function;
        if (typeof f !== "object" || f === null || typeof f.name !== "string") {
          return `${at}.tool_calls[${j}] must be {"type": "function", "function": {"name", "arguments"}}`;
        }
        // A string that is not JSON is allowed: it renders verbatim, and DPO's rejected side
        // may be exactly such a broken call.
        if (
          typeof f.arguments !== "string" &&
          (typeof f.arguments !== "object" || f.arguments === null)
        ) {
          return `${at}.tool_calls[${j}].function.arguments must be a JSON string or an object`;
        }
      }
    }
  }
  return undefined;
}

/**
 * The text of a message's content (a string or OpenAI text parts), or why it cannot be trained
 * on: a part that is not text (an image would be dropped silently by the template, leaving a
 * turn that no longer says what the reply answers).
 */
function contentText(content: unknown, at: string): string | { error: string } {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return { error: `${at} must be a string, null or text parts` };
  let text = "";
  for (let i = 0; i < content.length; i++) {
    const part = content[i] as Record<string, unknown> | null;
    if (typeof part === "string") {
      text += part;
    } else if (
      typeof part === "object" && part !== null && (part.type ?? "text") === "text" &&
      typeof part.text === "string"
    ) {
      text += part.text;
    } else {
      const type = typeof part === "object" && part !== null ? JSON.stringify(part.type) : "";
      return {
        error: `${at}[${i}] must be a text part {"type": "text", "text": "..."}` +
          (type && type !== '"text"' ? `, got a ${type} part (only text can be trained on)` : ""),
      };
    }
  }
  return text;
}

/**
 * Checks an optional `tools` field: OpenAI function specs, each with a function name (the
 * template renders them into the system prompt, so a malformed one is trained on as is).
 */
export function checkTools(tools: unknown): string | undefined {
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) return `"tools" must be an array of {"type": "function", ...}`;
  const form = `{"type": "function", "function": {"name": "...", "parameters": {...}}}`;
  for (let i = 0; i < tools.length; i++) {
    const t = tools[i] as Record<string, unknown> | null;
    if (typeof t !== "object" || t === null || Array.isArray(t)) {
      return `tools[${i}] must be an object ${form}`;
    }
    if (t.type !== undefined && t.type !== "function") {
      return `tools[${i}].type must be "function", got ${JSON.stringify(t.type)}`;
    }
    const f = t.function as Record<string, unknown> | null | undefined;
    if (typeof f !== "object" || f === null || Array.isArray(f)) {
      return `tools[${i}].function must be an object ${form.slice(form.indexOf('{"name'), -1)}`;
    }
    if (typeof f.name !== "string" || f.name.trim() === "") {
      return `tools[${i}].function.name must be a non-empty string`;
    }
    if (
      f.parameters !== undefined &&
      (typeof f.parameters !== "object" || f.parameters === null || Array.isArray(f.parameters))
    ) {
      return `tools[${i}].function.parameters must be a JSON Schema object`;
    }
  }
  return undefined;
}

/**
 * The schema check of an SFT record: `conversations` or `messages`, at least one assistant
 * turn (else nothing would be trained on), optional `tools`.
 */
export const conversationCheck: JsonlCheck = (value: unknown): string | undefined => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected a JSON object {"conversations": [...]} or {"messages": [...]}`;
  }
  const v = value as Record<string, unknown>;
  const field = "conversations" in v ? "conversations" : "messages" in v ? "messages" : null;
  if (!field) return `missing field "conversations" (or "messages"): a list of chat messages`;
  const bad = checkMessages(v[field], field) ?? checkTools(v.tools);
  if (bad) return bad;
  if (!(v[field] as { role: string }[]).some((m) => m.role === "assistant")) {
    return `"${field}" has no assistant message: nothing to train on`;
  }
  return undefined;
};

/** Options of the readers. */
export interface ReadChatOptions {
  /** Skip malformed lines (counting them) instead of stopping at the first. */
  skipBad?: boolean;
  /** Called with each skipped line's `file:line: reason`. */
  onBad?: (message: string) => void;
}

/**
 * Reads SFT conversations from a JSONL file.
 *
 * @param path The file.
 * @param opts `skipBad`, `onBad`.
 * @returns The conversations and the count of skipped lines.
 * @throws {JsonlError} `file:line: reason` for the first malformed line unless `skipBad`.
 * @example const { conversations } = await readConversations("sft.jsonl");
 */
export async function readConversations(
  path: string,
  opts: ReadChatOptions = {},
): Promise<{ conversations: Conversation[]; bad: number }> {
  const stream = readJsonl<Record<string, unknown>>(path, {
    check: conversationCheck,
    skipBad: opts.skipBad,
    onBad: (e) => opts.onBad?.(e.message),
  });
  const conversations: Conversation[] = [];
  for await (const { value, line } of stream) {
    const messages = (value.conversations ?? value.messages) as ChatMessage[];
    const tools = value.tools as ToolSpec[] | undefined;
    conversations.push({ messages, tools: tools ?? undefined, file: path, line });
  }
  return { conversations, bad: stream.bad };
}

/**
 * Tokenizes conversations with the chat template and the assistant mask; a conversation the
 * renderer refuses is an error naming its `file:line` (or skipped with `skipBad`).
 *
 * @param tok The tokenizer.
 * @param conversations From {@linkcode readConversations}.
 * @param opts `skipBad`, `onBad`.
 * @returns The examples and the count skipped.
 * @throws {JsonlError} for a conversation that cannot be rendered, unless `skipBad`.
 */
export function tokenizeConversations(
  tok: Tokenizer,
  conversations: readonly Conversation[],
  opts: ReadChatOptions = {},
): { examples: ChatExample[]; bad: number } {
  const examples: ChatExample[] = [];
  let bad = 0;
  for (const c of conversations) {
    try {
      const { ids, assistantMask } = renderChatForTraining(tok, c.messages, { tools: c.tools });
      examples.push({
        ids: Int32Array.from(ids),
        mask: Uint8Array.from(assistantMask),
        source: `${c.file}:${c.line}`,
      });
    } catch (e) {
      const err = new JsonlError(c.file, c.line, `cannot render: ${(e as Error).message}`);
      if (!opts.skipBad) throw err;
      bad++;
      opts.onBad?.(err.message);
    }
  }
  return { examples, bad };
}

/** Positions a sequence takes in a row: L - 1 inputs, at most T. */
export function positionsOf(ex: ChatExample, T: number): number {
  return Math.min(ex.ids.length - 1, T);
}

/** A packed host batch, with which example each position belongs to. */
export interface PackedBatch extends HostBatch {
  /** i32 [B*T] segment ids (always set: packed conversations never see each other). */
  seg: Int32Array;
  /** i32 [B*T]: index (into the packed list) of the example at each position, -1 for padding. */
  item: Int32Array;
  /** Examples packed, from the start of the list given. */
  count: number;
  /** Non-ignored targets. */
  targetTokens: number;
}

/**
 * Packs examples, in order, into rows of T positions (first fit over the open rows), with
 * segment ids that keep each example's attention to itself.
 *
 * @param examples Candidates in order; packing stops at the first that fits nowhere once
 *   `maxRows` rows are open (it goes first in the next batch).
 * @param opts `T`; `maxRows` (default: as many as needed); `rows` to always return exactly that
 *   many rows (padding whole rows; the SFT micro-batch keeps one shape); `padId` (default 0).
 * @returns The batch; `count` examples were packed.
 * @throws when an example has fewer than 2 tokens.
 * @example
 * const b = packSequences(examples, { T: 256, maxRows: 8, rows: 8 });
 * model.forward(model.upload(b, { logitRows: "targets" }));
 */
export function packSequences(
  examples: readonly ChatExample[],
  opts: { T: number; maxRows?: number; rows?: number; padId?: number },
): PackedBatch {
  const T = opts.T, maxRows = opts.rows ?? opts.maxRows ?? Infinity;
  const rowItems: number[][] = [];
  const free: number[] = [];
  let count = 0;
  for (; count < examples.length; count++) {
    const ex = examples[count];
    if (ex.ids.length < 2) throw new Error(`${ex.source}: a sequence needs at least 2 tokens`);
    const n = positionsOf(ex, T);
    let r = free.findIndex((f) => f >= n);
    if (r < 0) {
      if (rowItems.length >= maxRows) break;
      rowItems.push([]);
      free.push(T);
      r = rowItems.length - 1;
    }
    rowItems[r].push(count);
    free[r] -= n;
  }
  const B = Math.max(opts.rows ?? rowItems.length, 1);
  const N = B * T;
  const tokens = new Int32Array(N).fill(opts.padId ?? 0);
  const targets = new Int32Array(N).fill(-1);
  const seg = new Int32Array(N);
  const item = new Int32Array(N).fill(-1);
  let targetTokens = 0;
  for (let b = 0; b < B; b++) {
    let at = b * T, s = 0;
    for (const k of rowItems[b] ?? []) {
      const ex = examples[k], n = positionsOf(ex, T);
      for (let j = 0; j < n; j++) {
        tokens[at + j] = ex.ids[j];
        seg[at + j] = s;
        item[at + j] = k;
        if (ex.mask[j + 1]) {
          targets[at + j] = ex.ids[j + 1];
          targetTokens++;
        }
      }
      at += n;
      s++;
    }
    for (; at < (b + 1) * T; at++) seg[at] = s; // padding: a segment of its own
  }
  return { tokens, targets, B, T, seg, item, count, targetTokens };
}

/** The data position of {@linkcode SftSampler}, saved in checkpoints. */
export type SftSamplerState = EpochPosition;

/**
 * Shuffled epochs of examples, packed into fixed [B, T] micro-batches. The order of an epoch is
 * a function of (seed, epoch), so a resumed run sees the same batches.
 */
export class SftSampler {
  private readonly order: EpochOrder;

  /**
   * A sampler over examples.
   *
   * @param examples The conversations.
   * @param opts Rows per batch, positions per row, shuffle seed, padding id.
   * @throws when there are no examples.
   */
  constructor(
    private readonly examples: readonly ChatExample[],
    private readonly opts: { B: number; T: number; seed: number; padId?: number },
  ) {
    if (examples.length === 0) throw new Error("SFT: no training conversations");
    this.order = new EpochOrder(examples.length, opts.seed);
  }

  /** The next micro-batch (wrapping into a new epoch with a new order). */
  next(): PackedBatch {
    const rest = Array.from(this.order.remaining(), (k) => this.examples[k]);
    const b = packSequences(rest, { T: this.opts.T, rows: this.opts.B, padId: this.opts.padId });
    this.order.advance(b.count);
    return b;
  }

  /** Where the sampler is. */
  state(): SftSamplerState {
    return this.order.position();
  }

  /** Goes back to a saved position. */
  restore(s: SftSamplerState): void {
    this.order.seek(s);
  }
}

/** Settings of {@linkcode SftTask}. */
export interface SftTaskOptions {
  /** Rows per micro-batch. */
  B: number;
  /** Positions per row. */
  T: number;
  /** Shuffle seed. */
  seed: number;
  /** Id of the padding token (never a target). */
  padId?: number;
  /**
   * Train the MTP module (and add the balance loss) as pretraining does (default true). False
   * trains the main model's CE alone and skips the MTP block and its head, which at the nano
   * size is ~40% of a step (the 3.5k-row head dominates such a small model).
   */
  mtp?: boolean;
  /**
   * Pretraining text replayed next to the conversations, so SFT adapts the model to the chat
   * format without wiping what pretraining taught it (knowledge learned only from pretraining
   * text is what held-out questions ask). Each micro-batch adds `B` windows of `T` tokens of
   * `tokens` (shuffled epochs, as pretraining samples them) and `weight` times their mean
   * next-token CE to the loss. Its routing does not move the router biases.
   */
  replay?: ReplaySpec;
}

/** The data position of an {@linkcode SftTask} with replay: both samplers. */
export interface SftTaskState {
  /** The conversations' sampler. */
  sft: SftSamplerState;
  /** The replayed text's sampler. */
  replay: SamplerState;
}

/**
 * The loads of a forward for {@linkcode DeepSeekV3.updateBiases}, padded with zero loads for the
 * MoE blocks that did not run (the MTP block of a `logitsOnly` forward): a zero load leaves its
 * router bias unchanged (`sign(0) = 0`).
 */
export function withIdleLoads(model: DeepSeekV3, loads: readonly Tensor[]): Tensor[] {
  const out = [...loads];
  while (out.length < model.moeLayers().length) {
    out.push(Tensor.zeros(model.device, [model.cfg.n_routed_experts], "i32"));
  }
  return out;
}

/**
 * SFT as a {@linkcode TrainTask}: CE on assistant tokens; with `mtp` (the default) the model's
 * full loss as in pretraining (MTP and balance terms on the same masked targets). Validated by
 * the assistant-token CE of held-out conversations.
 */
export class SftTask implements TrainTask {
  /** Stage name. */
  readonly name = "sft";
  private readonly sampler: SftSampler;
  private readonly replay: Replay | null;

  /**
   * An SFT task.
   *
   * @param train Training examples.
   * @param val Held-out examples (may be empty).
   * @param opts Batch shape, seed, padding id, MTP, replay.
   */
  constructor(
    train: readonly ChatExample[],
    private readonly val: readonly ChatExample[],
    private readonly opts: SftTaskOptions,
  ) {
    this.sampler = new SftSampler(train, opts);
    // Its own seed stream: the conversation order is the same with or without replay.
    this.replay = opts.replay ? new Replay(opts.replay, opts.seed + 1) : null;
  }

  /** Packs the next micro-batch (and the replayed text) and encodes its forward. */
  forward(model: DeepSeekV3): TaskOutput {
    const b = this.sampler.next();
    const dev = model.upload(b, { logitRows: "targets" });
    let out: TaskOutput;
    if (this.opts.mtp === false) {
      const fwd = model.forward(dev, { logitsOnly: true });
      const ce = crossEntropy(fwd.logits, dev.targets!).loss;
      out = {
        loss: ce,
        terms: { ce },
        loads: withIdleLoads(model, fwd.loads),
        tokens: b.targetTokens,
      };
    } else {
      const fwd = model.forward(dev);
      const l = fwd.losses!;
      const terms: Record<string, Tensor> = { ce: l.main };
      if (l.mtp) terms.mtp = l.mtp;
      if (l.balance) terms.balance = l.balance;
      out = { loss: l.total, terms, loads: fwd.loads, tokens: b.targetTokens };
    }
    this.replay?.addTo(model, out);
    return out;
  }

  /** Assistant-token CE and perplexity on the held-out conversations. */
  async validate(model: DeepSeekV3): Promise<Record<string, number>> {
    if (this.val.length === 0) return {};
    return { ...(await evaluateChatLoss(model, this.val, this.opts)) };
  }

  /** The sampler position (both samplers' with replay). */
  state(): SftSamplerState | SftTaskState {
    const sft = this.sampler.state();
    return this.replay ? { sft, replay: this.replay.state() } : sft;
  }

  /** Restores {@linkcode state}'s value. */
  restore(state: unknown): void {
    const s = state as Partial<SftTaskState>;
    if (this.replay) {
      if (!s.sft || !s.replay) {
        throw new Error("SFT resume: the checkpoint was written without replay; resume without it");
      }
      this.sampler.restore(s.sft);
      this.replay.restore(s.replay);
    } else {
      if (s.sft) {
        throw new Error("SFT resume: the checkpoint was written with replay; pass it again");
      }
      this.sampler.restore(state as SftSamplerState);
    }
  }
}

/**
 * Mean cross-entropy of the main model over the masked targets of `examples` (packed in order,
 * no gradient): the SFT validation loss.
 *
 * @returns `loss` (nats per target token), `ppl`, `tokens` counted.
 * @example const { loss } = await evaluateChatLoss(model, valExamples, { B: 8, T: 256 });
 */
export async function evaluateChatLoss(
  model: DeepSeekV3,
  examples: readonly ChatExample[],
  opts: { B: number; T: number; padId?: number },
): Promise<{ loss: number; ppl: number; tokens: number }> {
  let sum = 0, count = 0;
  for (let i = 0; i < examples.length;) {
    const b = packSequences(examples.slice(i), { T: opts.T, maxRows: opts.B, padId: opts.padId });
    i += b.count;
    if (b.targetTokens === 0) continue;
    const scope = new Scope();
    const dev = model.upload(b, { logitRows: "targets" });
    const { logits } = model.forward(dev, { logitsOnly: true }); // no MTP: only the main CE counts
    const ce = (await crossEntropy(logits, dev.targets!).loss.readF32())[0];
    scope.dispose();
    sum += ce * b.targetTokens;
    count += b.targetTokens;
  }
  const loss = count ? sum / count : NaN;
  return { loss, ppl: Math.exp(loss), tokens: count };
}

/**
 * Splits examples into train and held-out parts: every k-th example goes to validation so both
 * parts cover the whole file.
 *
 * @param examples All examples.
 * @param fraction Share held out (0 keeps everything for training).
 * @example splitHeldOut(examples, 0.05); // 1 in 20 held out
 */
export function splitHeldOut<E>(
  examples: readonly E[],
  fraction: number,
): { train: E[]; val: E[] } {
  if (!(fraction > 0)) return { train: [...examples], val: [] };
  const every = Math.max(2, Math.round(1 / fraction));
  const train: E[] = [], val: E[] = [];
  examples.forEach((e, i) => (i % every === every - 1 ? val : train).push(e));
  return { train, val };
}
