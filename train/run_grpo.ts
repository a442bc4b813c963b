/**
 * `grpo` as a function: the option table and {@linkcode runGrpo}, which loads the policy from
 * the SFT (or DPO) checkpoint and, when `--beta` > 0, the frozen reference from `--ref` (default
 * `--init`), reads prompts with verifiable targets, binds the rule-based rewards to them, and runs
 * the shared loop on {@linkcode GrpoTask}. Besides `loss.svg` it writes `reward.svg`: the
 * training batches' mean reward and the held-out prompts' greedy reward.
 *
 * @module
 */
import { chooseDevice } from "../kernels/backend.ts";
import { encodeChatPrompt, EOS_TOKEN, IM_END_TOKEN } from "../tokenizer/mod.ts";
import { resolveCheckpoint } from "./checkpoint.ts";
import { type GrpoLossType, type GrpoPromptIds, type GrpoReward, GrpoTask } from "./grpo.ts";
import { type GrpoPrompt, readGrpoPrompts } from "./grpo_prompts.ts";
import { type LoopResult, trainLoop } from "./loop.ts";
import { readMetrics } from "./metrics.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import { writeMetricPlot } from "./plot.ts";
import { parseRewardWeights, REWARDS } from "./rewards.ts";
import {
  checkVocab,
  COMMON_TRAIN_OPTIONS,
  type CommonTrainValues,
  loadModelForTraining,
  loopOptionsFrom,
  padIdOf,
  resolveTokenizer,
  SKIP_BAD_OPTION,
  withDefaults,
} from "./stage.ts";

/** The `grpo` options. */
export const GRPO_OPTIONS: OptionTable<GrpoValues> = declareOptions<GrpoValues>()(defineOptions(
  [
    {
      name: "prompts",
      type: "string",
      default: null,
      help: 'prompts JSONL: {"messages": [...], "answer"?, "tools"?, "tool_call"?} or ' +
        '{"prompt": "...", "answer": "..."}',
    },
    {
      name: "valPrompts",
      type: "string",
      default: null,
      help: "held-out prompts JSONL, answered greedily at each validation (default: none)",
    },
    {
      name: "valCount",
      type: "integer",
      default: 64,
      min: 0,
      max: 100_000,
      help: "held-out prompts scored per validation (0: all of --val-prompts)",
      why: "greedy replies to 64 prompts keep a validation to seconds on a CPU",
    },
    {
      name: "init",
      type: "string",
      default: null,
      help: "the SFT (or DPO) checkpoint, run directory or Hugging Face directory to start from",
    },
    {
      name: "ref",
      type: "string",
      default: null,
      help: "the frozen reference of the KL penalty (default: --init)",
      why: "GRPO's KL anchor is the model the policy starts from",
    },
    {
      name: "tokenizer",
      type: "string",
      default: null,
      help: "tokenizer directory (default: the one the --init run recorded)",
    },
    {
      name: "group",
      type: "integer",
      default: 8,
      min: 2,
      max: 1024,
      help: "G: completions sampled per prompt; advantages are normalized within the group",
      why: "TRL's num_generations",
    },
    {
      name: "maxTokens",
      type: "integer",
      default: 96,
      min: 1,
      max: 100_000,
      help: "most tokens per completion",
      why: "room for a short <think> block and the answer",
    },
    {
      name: "temperature",
      type: "number",
      default: 1,
      min: 0.01,
      max: 100,
      help: "sampling temperature; the loss's log-probabilities use it too",
      why: "TRL's default: sample from the policy itself",
    },
    {
      name: "topP",
      type: "number",
      default: 1,
      min: 0.01,
      max: 1,
      help: "nucleus sampling mass (1: off)",
    },
    {
      name: "iterations",
      type: "integer",
      default: 1,
      min: 1,
      max: 1000,
      help: "optimizer steps on each sampled batch (TRL's num_iterations, GRPO's mu)",
      why: "TRL's default; more reuse the samples and make the clipped ratio matter",
    },
    {
      name: "beta",
      type: "number",
      default: 0.04,
      min: 0,
      max: 1000,
      help: "weight of the k3 KL penalty to the frozen reference (0: no reference model)",
      why: "the GRPO paper's value (DeepSeekMath)",
    },
    {
      name: "epsilon",
      type: "number",
      default: 0.2,
      min: 0,
      max: 10,
      help: "clip range: the ratio may go down to 1 - epsilon",
      why: "PPO's and TRL's default",
    },
    {
      name: "epsilonHigh",
      type: "number",
      default: null,
      help: "upper clip range: the ratio may go up to 1 + epsilon-high (default: --epsilon; " +
        "DAPO's clip-higher uses 0.28)",
    },
    {
      name: "lossType",
      type: "string",
      default: "dapo",
      choices: ["grpo", "dapo", "dr_grpo"],
      help: "per-token loss averaging: grpo (per completion, then completions), dapo (all " +
        "tokens), dr_grpo (completions x max tokens)",
      why: "TRL's default: no bias toward short or long completions from the averaging",
    },
    {
      name: "scaleRewards",
      type: "string",
      default: "group",
      choices: ["group", "none"],
      help: "divide advantages by the group's reward std (group) or not (none, Dr. GRPO)",
      why: "the GRPO paper's normalization",
    },
    {
      name: "rewards",
      type: "string",
      default: "answer=1,tool_call=1,format=0.2,length=0",
      help:
        "reward weights: answer, steps (right worked steps from the problem's numbers), tool_call, " +
        "format, length (the overlong penalty)",
      why: "correctness first; a small bonus for the <think> format",
    },
    SKIP_BAD_OPTION,
    ...withDefaults(COMMON_TRAIN_OPTIONS, {
      out: { default: "runs/grpo" },
      steps: { default: 100 },
      batchSize: { default: 8, help: "P: prompts per sampled batch (x --group completions)" },
      seqLen: {
        default: 256,
        help: "positions per packed row: every prompt + --max-tokens must fit",
      },
      lr: { default: 5e-5, why: "RL moves little per step; half of DPO's" },
      warmupSteps: { default: 0 },
      weightDecay: { default: 0, why: "stay near the reference: no pull toward zero" },
      evalEvery: { default: 20 },
      logEvery: { default: 1, why: "each step is one sampled batch: its reward is the signal" },
      checkpointEvery: { default: 0 },
    }),
  ] as const,
));

/** Resolved `grpo` options. */
export interface GrpoValues extends CommonTrainValues {
  /**
   * Prompts JSONL: {"messages": [...], "answer"?, "tools"?, "tool_call"?} or {"prompt": "...",
   * "answer": "..."}.
   */
  prompts: string | null;
  /** Held-out prompts JSONL, answered greedily at each validation (default: none). */
  valPrompts: string | null;
  /** Held-out prompts scored per validation (0: all of --val-prompts). */
  valCount: number;
  /** The SFT (or DPO) checkpoint, run directory or Hugging Face directory to start from. */
  init: string | null;
  /** The frozen reference of the KL penalty (default: --init). */
  ref: string | null;
  /** Tokenizer directory (default: the one the --init run recorded). */
  tokenizer: string | null;
  /** G: completions sampled per prompt; advantages are normalized within the group. */
  group: number;
  /** Most tokens per completion. */
  maxTokens: number;
  /** Sampling temperature; the loss's log-probabilities use it too. */
  temperature: number;
  /** Nucleus sampling mass (1: off). */
  topP: number;
  /** Optimizer steps on each sampled batch (TRL's num_iterations, GRPO's mu). */
  iterations: number;
  /** Weight of the k3 KL penalty to the frozen reference (0: no reference model). */
  beta: number;
  /** Clip range: the ratio may go down to 1 - epsilon. */
  epsilon: number;
  /**
   * Upper clip range: the ratio may go up to 1 + epsilon-high (default: --epsilon; DAPO's
   * clip-higher uses 0.28).
   */
  epsilonHigh: number | null;
  /**
   * Per-token loss averaging: grpo (per completion, then completions), dapo (all tokens), dr_grpo
   * (completions x max tokens).
   */
  lossType: string;
  /** Divide advantages by the group's reward std (group) or not (none, Dr. GRPO). */
  scaleRewards: string;
  /** Reward weights: answer, tool_call, format, length (the overlong penalty). */
  rewards: string;
  /** Skip malformed JSONL lines (reported as file:line) instead of stopping. */
  skipBad: boolean;
}

/** The reward functions with non-zero weight, bound to the prompts' targets. */
export function bindRewards(
  prompts: readonly GrpoPrompt[],
  weights: Record<string, number>,
): GrpoReward[] {
  return Object.entries(weights).filter(([, w]) => w !== 0).map(([name, weight]) => {
    const fn = REWARDS[name as keyof typeof REWARDS];
    return {
      name,
      weight,
      fn: (reply, i, info) => fn(reply, prompts[i].target, info),
    };
  });
}

/**
 * Runs GRPO.
 *
 * @returns The loop's result; the last checkpoint is in `values.out`.
 * @throws naming the flag for a missing `--prompts` / `--init`, `file:line` for a bad record.
 */
export async function runGrpo(
  values: GrpoValues,
  opts: { log?: (line: string) => void } = {},
): Promise<LoopResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  chooseDevice(values.device);
  if (!values.prompts) throw new Error("--prompts is required: a GRPO prompts JSONL file");
  if (!values.init) throw new Error("--init is required: the SFT checkpoint (or run directory)");
  const weights = parseRewardWeights(values.rewards);
  const resuming = values.resume && (await resolveCheckpoint(values.out).catch(() => null));
  const start = await loadModelForTraining(resuming ? values.out : values.init, { log });
  const model = start.model;
  let reference: Awaited<ReturnType<typeof loadModelForTraining>> | null = null;
  let task: GrpoTask | null = null;
  try {
    const { tok, dir: tokDir } = await resolveTokenizer(values.tokenizer, start.checkpoint);
    checkVocab(tok, start.cfg, { dir: tokDir });
    const T = values.seqLen;
    if (T > start.cfg.max_seq_len) {
      throw new Error(`--seq-len ${T} exceeds the model's max_seq_len ${start.cfg.max_seq_len}`);
    }
    const onBad = (m: string) => log(`skipped ${m}`);
    const read = async (path: string) => {
      const prompts = await readGrpoPrompts(path, { skipBad: values.skipBad, onBad });
      const ids: GrpoPromptIds[] = [];
      const kept: GrpoPrompt[] = [];
      let long = 0;
      for (const p of prompts) {
        const x = encodeChatPrompt(tok, p.messages, { tools: p.tools });
        if (x.length + values.maxTokens > T + 1) {
          long++;
          continue;
        }
        ids.push({ ids: x, source: `${p.file}:${p.line}` });
        kept.push(p);
      }
      if (long) {
        log(`grpo: ${path}: ${long} prompt(s) leave no room for --max-tokens in ${T}: skipped`);
      }
      return { ids, prompts: kept };
    };
    const train = await read(values.prompts);
    const val = values.valPrompts ? await read(values.valPrompts) : { ids: [], prompts: [] };
    if (values.valCount > 0) {
      val.ids = val.ids.slice(0, values.valCount);
      val.prompts = val.prompts.slice(0, values.valCount);
    }
    if (values.beta > 0) {
      const refPath = values.ref ?? values.init;
      reference = await loadModelForTraining(refPath, { device: model.device, log });
    }
    const answers = train.prompts.filter((p) => p.target.answer !== undefined).length;
    const calls = train.prompts.filter((p) => p.target.toolCall !== undefined).length;
    log(
      `grpo: ${train.ids.length} train (${answers} with an answer, ${calls} with a tool call) / ` +
        `${val.ids.length} held-out prompts, ${values.batchSize} x ${values.group} completions ` +
        `per batch, beta ${values.beta}, rewards ` +
        Object.entries(weights).map(([k, w]) => `${k}=${w}`).join(","),
    );
    if (answers + calls === 0) {
      log(
        `grpo: warning: no prompt of ${values.prompts} has an "answer" or a "tool_call": only ` +
          `the rewards that always apply (format, length) can score the replies`,
      );
    }
    const stop = [tok.specialId(IM_END_TOKEN), tok.specialId(EOS_TOKEN)];
    task = new GrpoTask(
      train.ids,
      { prompts: val.ids, rewards: bindRewards(val.prompts, weights) },
      bindRewards(train.prompts, weights),
      reference?.model ?? null,
      {
        prompts: values.batchSize,
        group: values.group,
        micro: values.gradAccum,
        iterations: values.iterations,
        maxTokens: values.maxTokens,
        temperature: values.temperature,
        topP: values.topP,
        beta: values.beta,
        epsLow: values.epsilon,
        epsHigh: values.epsilonHigh ?? values.epsilon,
        lossType: values.lossType as GrpoLossType,
        scaleRewards: values.scaleRewards as "group" | "none",
        T,
        seed: values.seed,
        stop,
        padId: padIdOf(tok),
        vocabLimit: tok.vocabSize,
        decode: (ids) => tok.decode(ids),
      },
    );
    const result = await trainLoop(model, task, {
      ...loopOptionsFrom(values),
      runInfo: {
        ...values,
        model: start.cfg,
        tokenizer: tokDir,
        stage: "grpo",
        refCheckpoint: reference?.checkpoint.dir ?? null,
      },
      log,
    });
    await writeMetricPlot(
      `${values.out}/reward.svg`,
      await readMetrics(`${values.out}/metrics.jsonl`),
      { key: "reward", title: "grpo reward" },
    );
    return result;
  } finally {
    task?.dispose();
    reference?.model.arena.destroy();
    model.arena.destroy();
    model.device.trimPool();
  }
}
