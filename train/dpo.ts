/**
 * Direct Preference Optimization (Rafailov et al. 2023) as a {@linkcode TrainTask}: preference
 * pairs, a frozen reference whose log-probabilities are computed ONCE before training (so no
 * second model stays on the GPU), and the DPO loss of `kernels/dpo.ts`.
 *
 * Legend: P pairs per micro-batch, S = 2P sequences, T positions per row, N = rows * T.
 *
 *     pair -> chosen / rejected conversations -> ids and a mask that is 1 only on the FINAL
 *             assistant turn (the response; TRL's "completion" tokens, <|im_end|> included)
 *     rows: the 2P sequences packed in order (chosen 2q, rejected 2q + 1), segment ids apart
 *     logits [N, V] -> tokenLogprobs -> [N] -> dpoLoss(seqIds, ref [S]) -> loss [1]
 *
 * The loss is DPO's: `-log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r)))`, plus, with
 * `rpoAlpha`, that times the chosen responses' mean token NLL (RPO; TRL's `rpo_alpha`). The forward
 * runs without its loss heads (`logitsOnly`), so the MTP module and the sequence-wise balance
 * loss are not part of it; the aux-loss-free router bias keeps balancing the main MoE blocks
 * from this stage's loads (the MTP block, which does not run, reports zero loads: no update).
 *
 * Records: `{"chosen": [messages], "rejected": [messages], "tools"?: [...]}` (the two share the
 * prompt and differ in the last assistant turn) or `{"prompt": "...", "chosen": "...",
 * "rejected": "..."}` strings, read as one user turn and one assistant reply.
 *
 * @module
 */
import { noGrad } from "../kernels/autograd.ts";
import { crossEntropy, tokenLogprobs } from "../kernels/cross_entropy.ts";
import { add, scale } from "../kernels/elementwise.ts";
import { DPO_METRICS, dpoLoss, dpoLossCpu } from "../kernels/dpo.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { type DeepSeekV3, targetRows } from "../model/transformer.ts";
import type { ChatMessage, Tokenizer, ToolSpec } from "../tokenizer/mod.ts";
import { renderChatForTraining } from "../tokenizer/mod.ts";
import { type JsonlCheck, JsonlError, readJsonl } from "./jsonl.ts";
import type { TaskOutput, TrainTask } from "./loop.ts";
import { Replay, type ReplaySpec } from "./replay.ts";
import { EpochOrder, type EpochPosition } from "./epoch_order.ts";
import type { SamplerState } from "./sampler.ts";
import {
  type ChatExample,
  checkMessages,
  checkTools,
  packSequences,
  type ReadChatOptions,
  withIdleLoads,
} from "./sft.ts";

/** One preference pair as read from a file. */
export interface PreferencePair {
  /** The prompt followed by the preferred assistant turn. */
  chosen: ChatMessage[];
  /** The same prompt followed by the worse assistant turn. */
  rejected: ChatMessage[];
  /** Tools shown to the model, if any. */
  tools?: ToolSpec[];
  /** The file it came from. */
  file: string;
  /** Its 1-based line there. */
  line: number;
}

/** A tokenized pair: each side's mask covers only its final assistant turn. */
export interface PairExample {
  /** The chosen sequence. */
  chosen: ChatExample;
  /** The rejected sequence. */
  rejected: ChatExample;
}

/** The schema check of a DPO record (either form). */
export const pairCheck: JsonlCheck = (value: unknown): string | undefined => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected a JSON object {"chosen": [...], "rejected": [...]} or ` +
      `{"prompt": "...", "chosen": "...", "rejected": "..."}`;
  }
  const v = value as Record<string, unknown>;
  for (const k of ["chosen", "rejected"]) {
    if (!(k in v)) return `missing field "${k}"`;
  }
  if (typeof v.chosen === "string" || typeof v.rejected === "string") {
    for (const k of ["prompt", "chosen", "rejected"]) {
      if (typeof v[k] !== "string") {
        return `field "${k}" must be a string in the {"prompt", "chosen", "rejected"} form`;
      }
      if ((v[k] as string).trim() === "") return `field "${k}" is empty`;
    }
    if (v.chosen === v.rejected) return IDENTICAL;
    return undefined;
  }
  for (const k of ["chosen", "rejected"]) {
    const bad = checkMessages(v[k], k);
    if (bad) return bad;
    const last = (v[k] as { role: string }[]).at(-1)!;
    if (last.role !== "assistant") {
      return `"${k}" must end with the assistant turn being compared, got role "${last.role}"`;
    }
  }
  const chosen = v.chosen as unknown[], rejected = v.rejected as unknown[];
  // DPO compares two replies to ONE prompt: log-ratios of different prompts mean nothing.
  const prompt = (side: unknown[]) => JSON.stringify(side.slice(0, -1));
  if (prompt(chosen) !== prompt(rejected)) {
    return `"chosen" and "rejected" must share the prompt (every message before the last); ` +
      `they differ`;
  }
  if (chosen.length < 2) return `"chosen" has no prompt before the reply being compared`;
  if (JSON.stringify(chosen.at(-1)) === JSON.stringify(rejected.at(-1))) return IDENTICAL;
  return checkTools(v.tools);
};

const IDENTICAL = `"chosen" and "rejected" are identical: the pair has nothing to prefer`;

/**
 * Reads preference pairs from a JSONL file.
 *
 * @param path The file.
 * @param opts `skipBad`, `onBad`.
 * @returns The pairs and the count of skipped lines.
 * @throws {JsonlError} `file:line: reason` for the first malformed line unless `skipBad`.
 * @example const { pairs } = await readPreferencePairs("dpo.jsonl");
 */
export async function readPreferencePairs(
  path: string,
  opts: ReadChatOptions = {},
): Promise<{ pairs: PreferencePair[]; bad: number }> {
  const stream = readJsonl<Record<string, unknown>>(path, {
    check: pairCheck,
    skipBad: opts.skipBad,
    onBad: (e) => opts.onBad?.(e.message),
  });
  const pairs: PreferencePair[] = [];
  for await (const { value: v, line } of stream) {
    if (typeof v.chosen === "string") {
      const prompt: ChatMessage = { role: "user", content: v.prompt as string };
      pairs.push({
        chosen: [prompt, { role: "assistant", content: v.chosen }],
        rejected: [prompt, { role: "assistant", content: v.rejected as string }],
        file: path,
        line,
      });
    } else {
      pairs.push({
        chosen: v.chosen as ChatMessage[],
        rejected: v.rejected as ChatMessage[],
        tools: (v.tools as ToolSpec[] | undefined) ?? undefined,
        file: path,
        line,
      });
    }
  }
  return { pairs, bad: stream.bad };
}

/**
 * Renders one side of a pair: ids, and a mask of the final assistant turn only (the last run of
 * assistant tokens: earlier assistant turns belong to the prompt). Sequences longer than
 * `T + 1` tokens keep their last `T + 1` (the prompt is cut from the left, as TRL's keep_end).
 *
 * @example responseExample(tok, messages, { T: 256, source: "dpo.jsonl:3" }).mask; // 0..0 1..1
 */
export function responseExample(
  tok: Tokenizer,
  messages: readonly ChatMessage[],
  opts: { tools?: readonly ToolSpec[]; T: number; source: string },
): ChatExample {
  const { ids, assistantMask } = renderChatForTraining(tok, messages, { tools: opts.tools });
  const mask = Uint8Array.from(assistantMask);
  let end = mask.length;
  while (end > 0 && !mask[end - 1]) end--;
  let start = end;
  while (start > 0 && mask[start - 1]) start--;
  mask.fill(0, 0, start);
  const cut = Math.max(0, ids.length - (opts.T + 1));
  return { ids: Int32Array.from(ids.slice(cut)), mask: mask.slice(cut), source: opts.source };
}

/**
 * Tokenizes pairs; a pair the renderer refuses is an error naming its `file:line` (or skipped).
 *
 * @throws {JsonlError} unless `skipBad`.
 */
export function tokenizePairs(
  tok: Tokenizer,
  pairs: readonly PreferencePair[],
  opts: ReadChatOptions & { T: number },
): { examples: PairExample[]; bad: number } {
  const examples: PairExample[] = [];
  let bad = 0;
  for (const p of pairs) {
    const source = `${p.file}:${p.line}`;
    try {
      const side = (m: ChatMessage[], which: string) =>
        responseExample(tok, m, { tools: p.tools, T: opts.T, source: `${source} (${which})` });
      examples.push({ chosen: side(p.chosen, "chosen"), rejected: side(p.rejected, "rejected") });
    } catch (e) {
      const err = new JsonlError(p.file, p.line, `cannot render: ${(e as Error).message}`);
      if (!opts.skipBad) throw err;
      bad++;
      opts.onBad?.(err.message);
    }
  }
  return { examples, bad };
}

/**
 * Summed log-probabilities of each sequence's masked targets under `model` (no gradient; packed
 * in order, `B` rows of `T` at a time). The reference pass and the preference-accuracy metric.
 *
 * @returns f64 [examples.length].
 * @example const lp = await sequenceLogps(model, [ex1, ex2], { B: 8, T: 256 });
 */
export async function sequenceLogps(
  model: DeepSeekV3,
  examples: readonly ChatExample[],
  opts: { B: number; T: number; padId?: number },
): Promise<Float64Array> {
  const out = new Float64Array(examples.length);
  await noGrad(async () => {
    for (let i = 0; i < examples.length;) {
      const b = packSequences(examples.slice(i), { T: opts.T, maxRows: opts.B, padId: opts.padId });
      const scope = new Scope();
      // Logits only at the response targets (the head is most of a small model's work).
      const dev = model.upload(b, { logitRows: "targets" });
      const { logits } = model.forward(dev, { logitsOnly: true });
      const lp = await tokenLogprobs(logits, dev.targets!).readF32();
      scope.dispose();
      const rows = targetRows(b.targets);
      for (let j = 0; j < lp.length; j++) {
        if (b.targets[rows[j]] >= 0) out[i + b.item[rows[j]]] += lp[j];
      }
      i += b.count;
    }
  });
  return out;
}

/** Flattens pairs into the sequence order the kernels use: chosen 2q, rejected 2q + 1. */
export function pairSequences(pairs: readonly PairExample[]): ChatExample[] {
  return pairs.flatMap((p) => [p.chosen, p.rejected]);
}

/** Settings of {@linkcode DpoTask}. */
export interface DpoTaskOptions {
  /** Pairs per micro-batch. */
  pairs: number;
  /** Positions per packed row. */
  T: number;
  /** Rows per forward when computing log-probabilities without a gradient. */
  B: number;
  /** DPO temperature. */
  beta: number;
  /** Shuffle seed. */
  seed: number;
  /** Padding token id. */
  padId?: number;
  /**
   * Weight of the chosen responses' mean token NLL added to the DPO loss (TRL's `rpo_alpha`,
   * Pang et al. 2024); 0 (default) is plain DPO. DPO alone can lower the chosen replies'
   * likelihood while it widens the margin to the rejected ones, and greedy replies drift.
   */
  rpoAlpha?: number;
  /**
   * Pretraining text replayed next to the pairs (see {@linkcode Replay}): DPO only sees chat
   * replies, and without it the knowledge held-out questions ask drifts away.
   */
  replay?: ReplaySpec;
}

/** The data position of {@linkcode DpoTask}. */
export interface DpoState extends EpochPosition {
  /** The replay sampler's position (runs with replay only). */
  replay?: SamplerState;
}

/**
 * DPO on pairs whose reference sums are given (train and held-out, computed once beforehand:
 * see {@linkcode sequenceLogps}).
 */
export class DpoTask implements TrainTask {
  /** Stage name. */
  readonly name = "dpo";
  private readonly order: EpochOrder;
  private readonly replay: Replay | null;

  /**
   * A DPO task.
   *
   * @param train Training pairs and their reference sums [2 * pairs] (chosen, rejected); NaN
   *   for pairs the run never visits (see {@linkcode DpoTask.upcoming}). Read at each step, so
   *   they may be filled in after construction.
   * @param val Held-out pairs and their reference sums (may be empty).
   * @param opts Pairs per micro-batch, positions per row, beta, RPO weight, seed, replay.
   * @throws when there are no pairs, or the sums do not match the pairs.
   */
  constructor(
    private readonly train: { pairs: readonly PairExample[]; ref: Float64Array },
    private readonly val: { pairs: readonly PairExample[]; ref: Float64Array },
    private readonly opts: DpoTaskOptions,
  ) {
    if (train.pairs.length === 0) throw new Error("DPO: no training pairs");
    for (const [what, d] of [["train", train], ["val", val]] as const) {
      if (d.ref.length !== 2 * d.pairs.length) {
        throw new Error(`DPO: ${d.ref.length} reference sums for ${d.pairs.length} ${what} pairs`);
      }
    }
    this.order = new EpochOrder(train.pairs.length, opts.seed);
    // Its own seed stream: the pair order is the same with or without replay.
    this.replay = opts.replay ? new Replay(opts.replay, opts.seed + 1) : null;
  }

  /**
   * Indices of the train pairs the next `micro` micro-batches will use, sorted, without moving
   * the data position: the reference pass needs only these.
   */
  upcoming(micro: number): number[] {
    const saved = this.state();
    const used = new Set<number>();
    for (let i = 0; i < micro; i++) for (const k of this.order.take(this.opts.pairs)) used.add(k);
    this.restore(saved);
    return [...used].sort((a, b) => a - b);
  }

  /** Packs the next P pairs and encodes the policy forward and the DPO loss. */
  forward(model: DeepSeekV3): TaskOutput {
    const picked = this.order.take(this.opts.pairs);
    const seqs = pairSequences(picked.map((k) => this.train.pairs[k]));
    const b = packSequences(seqs, { T: this.opts.T, padId: this.opts.padId });
    const ref = new Float32Array(2 * picked.length);
    picked.forEach((k, q) => {
      ref[2 * q] = this.train.ref[2 * k];
      ref[2 * q + 1] = this.train.ref[2 * k + 1];
      if (Number.isNaN(ref[2 * q] + ref[2 * q + 1])) {
        throw new Error(
          `DPO: no reference log-probabilities for ${this.train.pairs[k].chosen.source}; ` +
            "compute them for every pair the run visits (see upcoming())",
        );
      }
    });
    // Sequence 2q / 2q+1 is packed item 2q / 2q+1; only response targets count, and only
    // they get logits.
    const rows = targetRows(b.targets);
    const seqIds = rows.map((r) => (b.targets[r] >= 0 ? b.item[r] : -1));
    const device = model.device;
    const dev = model.upload(b, { logitRows: "targets" });
    const out = model.forward(dev, { logitsOnly: true });
    const lp = tokenLogprobs(out.logits, dev.targets!);
    const { loss, metrics } = dpoLoss(lp, {
      seqIds: Tensor.from(device, seqIds, [rows.length], "i32"),
      refLogps: Tensor.from(device, ref, [ref.length]),
      pairs: picked.length,
      beta: this.opts.beta,
    });
    const terms: Record<string, Tensor> = { ...metrics };
    let total = loss;
    const alpha = this.opts.rpoAlpha ?? 0;
    if (alpha > 0) {
      // Mean NLL of the chosen responses' tokens (sequence 2q), rejected ones ignored.
      const chosen = rows.map((r) => b.targets[r] >= 0 && b.item[r] % 2 === 0 ? b.targets[r] : -1);
      const nll = crossEntropy(out.logits, Tensor.from(device, chosen, [rows.length], "i32")).loss;
      terms.nll_chosen = nll;
      total = add(loss, scale(nll, alpha));
    }
    // The MTP block did not run: zero loads leave its router bias as it is.
    const result: TaskOutput = {
      loss: total,
      terms,
      loads: withIdleLoads(model, out.loads),
      tokens: b.targetTokens,
    };
    this.replay?.addTo(model, result);
    return result;
  }

  /**
   * Held-out DPO loss, reward metrics, and preference accuracy (policy logp(chosen) >
   * logp(rejected)), from one no-gradient pass over the held-out pairs.
   */
  async validate(model: DeepSeekV3): Promise<Record<string, number>> {
    if (this.val.pairs.length === 0) return {};
    return await evaluatePairs(model, this.val.pairs, { ...this.opts, ref: this.val.ref });
  }

  /** The data position (and the replay sampler's, with replay). */
  state(): DpoState {
    const s: DpoState = this.order.position();
    if (this.replay) s.replay = this.replay.state();
    return s;
  }

  /**
   * Restores {@linkcode state}'s value.
   * @throws when the state was written with replay and this task has none, or the reverse.
   */
  restore(state: unknown): void {
    const s = state as DpoState;
    if (Boolean(this.replay) !== Boolean(s.replay)) {
      throw new Error(
        this.replay
          ? "DPO resume: the checkpoint was written without replay; resume without it"
          : "DPO resume: the checkpoint was written with replay; pass it again",
      );
    }
    if (this.replay) this.replay.restore(s.replay!);
    this.order.seek(s);
  }
}

/**
 * Scores pairs with the policy: preference accuracy (summed response logp of chosen above
 * rejected) and, given reference sums, the DPO loss and TRL metrics on them.
 *
 * @returns `preference_accuracy`, `logps/chosen`, `logps/rejected`, and with `ref` also `loss`
 *   and the `rewards/*` metrics.
 */
export async function evaluatePairs(
  model: DeepSeekV3,
  pairs: readonly PairExample[],
  opts: { B: number; T: number; beta: number; padId?: number; ref?: Float64Array },
): Promise<Record<string, number>> {
  const pi = await sequenceLogps(model, pairSequences(pairs), opts);
  let right = 0;
  for (let p = 0; p < pairs.length; p++) if (pi[2 * p] > pi[2 * p + 1]) right++;
  const out: Record<string, number> = {
    preference_accuracy: right / pairs.length,
  };
  if (opts.ref) {
    // The CPU twin sums per sequence; feed it one pseudo-token per sequence.
    const ids = Int32Array.from(pi.keys());
    const d = dpoLossCpu(pi, ids, opts.ref, { pairs: pairs.length, beta: opts.beta });
    out.loss = d.loss;
    for (const k of DPO_METRICS) out[k] = d.metrics[k];
  } else {
    let c = 0, r = 0;
    for (let p = 0; p < pairs.length; p++) {
      c += pi[2 * p];
      r += pi[2 * p + 1];
    }
    out["logps/chosen"] = c / pairs.length;
    out["logps/rejected"] = r / pairs.length;
  }
  return out;
}
