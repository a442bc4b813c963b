/**
 * Training: the ONE loop that pretraining, SFT, DPO and GRPO share, the four tasks, AdamW over the
 * parameter arena, the stage runners the CLI calls, evaluation, and everything around them that
 * touches files and time: model directories (training checkpoints and Hugging Face directories,
 * read by one reader), the Hugging Face export, token shards, JSONL, corpus preparation, batch
 * sampling, the learning-rate schedule, atomic checkpoints, the metrics log, SVG plots, the
 * progress bar and the run options.
 *
 * - The loop: {@linkcode trainLoop} runs a {@linkcode TrainTask}; {@linkcode PretrainTask},
 *   {@linkcode SftTask}, {@linkcode DpoTask} and {@linkcode GrpoTask} are the stages;
 *   {@linkcode AdamW} the optimizer.
 * - Stage runners (what `cli.ts` calls, from resolved options): {@linkcode runPretrain},
 *   {@linkcode runSft}, {@linkcode runDpo}, {@linkcode runGrpo}, {@linkcode runEval}, {@linkcode runExport},
 *   {@linkcode runDemo}; their option tables (`PRETRAIN_OPTIONS`, ...) give flags, the JSON
 *   config file and `--help` through {@linkcode resolveOptions}.
 * - Model directories: {@linkcode readModelDir}, {@linkcode loadModelForTraining},
 *   {@linkcode findModelTokenizer}, {@linkcode exportHf}, {@linkcode saveCheckpoint},
 *   {@linkcode loadCheckpoint}.
 * - Evaluation: {@linkcode evaluateModel} (QA, recall, tool calls, preferences, held-out
 *   arithmetic and reasoning format), {@linkcode generateTokens}, {@linkcode evaluatePairs},
 *   {@linkcode renderEvalReport}.
 * - GRPO's inputs: {@linkcode readGrpoPrompts} (prompts with verifiable targets) and the
 *   rule-based rewards {@linkcode REWARDS} ({@linkcode answerReward},
 *   {@linkcode toolCallReward}, {@linkcode formatReward}, {@linkcode lengthPenalty}).
 *
 * Left out: multi-GPU data or model parallelism, sharded checkpoints on write.
 *
 * @example Pretrain a tiny model a few steps on a token stream, then generate greedily
 * ```ts
 * import { getDevice } from "@minideepseek/minideepseek";
 * import { DeepSeekV3, resolveConfig } from "@minideepseek/minideepseek/model";
 * import { generateTokens, PretrainTask, trainLoop } from "@minideepseek/minideepseek/train";
 *
 * const cfg = resolveConfig("tiny");
 * const model = DeepSeekV3.create(await getDevice(), cfg, { seed: 1 });
 * const tokens = Array.from({ length: 4096 }, (_, i) => (i * 7) % cfg.vocab_size);
 * const task = new PretrainTask(tokens, tokens.slice(0, 512), { B: 2, T: 32, seed: 1 });
 * const result = await trainLoop(model, task, {
 *   runDir: "runs/example",
 *   steps: 5,
 *   lr: 3e-3,
 *   progress: false,
 * });
 * console.log(result.lastLoss, result.checkpoint); // runs/example/step-000005
 * const [reply] = await generateTokens(model, [[1, 2, 3]], { maxTokens: 8, stop: [] });
 * console.log(reply); // 8 greedy token ids
 * ```
 *
 * @example Export a run for Hugging Face transformers
 * ```ts
 * import { exportHf } from "@minideepseek/minideepseek/train";
 * await exportHf("runs/demo/dpo", "hf/minideepseek");
 * // python: AutoModelForCausalLM.from_pretrained("hf/minideepseek")
 * ```
 *
 * @module
 */
export * from "./checkpoint.ts";
export * from "./jsonl.ts";
export * from "./metrics.ts";
// The options layer (its commander glue, `optionsCommand`, lives in cli/).
export {
  checkConfigObject,
  CONFIG_FLAG,
  declareOptions,
  defineOptions,
  type Difference,
  flagName,
  loadConfigFile,
  OptionsError,
  type OptionSource,
  type OptionSpec,
  type OptionTable,
  type OptionType,
  type OptionValues,
  parseFlags,
  renderOptionsHelp,
  type ResolvedOptions,
  resolveOptions,
  type SameValues,
  type SchemaValues,
  type ValueOf,
} from "./options.ts";
export * from "./plot.ts";
export * from "./prepare.ts";
export * from "./progress.ts";
export { hash32, Rng, type RngState } from "../random/rng.ts";
export * from "./sampler.ts";
export * from "./schedule.ts";
export * from "./shards.ts";

export {
  LOOP_DEFAULTS,
  type LoopOptions,
  type LoopResult,
  NonFiniteError,
  type TaskOutput,
  trainLoop,
  type TrainTask,
} from "./loop.ts";
export { AdamW, ADAMW_DEFAULTS, type AdamWConfig } from "./optimizer.ts";
export { evaluateLoss, PretrainTask, type PretrainTaskOptions, toHostBatch } from "./pretrain.ts";
export {
  type ChatExample,
  checkMessages,
  checkTools,
  type Conversation,
  conversationCheck,
  evaluateChatLoss,
  type PackedBatch,
  packSequences,
  positionsOf,
  type ReadChatOptions,
  readConversations,
  SftSampler,
  type SftSamplerState,
  SftTask,
  type SftTaskOptions,
  type SftTaskState,
  splitHeldOut,
  tokenizeConversations,
  withIdleLoads,
} from "./sft.ts";
export { EpochOrder, type EpochPosition } from "./epoch_order.ts";
export {
  type DpoState,
  DpoTask,
  type DpoTaskOptions,
  evaluatePairs,
  pairCheck,
  type PairExample,
  pairSequences,
  type PreferencePair,
  readPreferencePairs,
  responseExample,
  sequenceLogps,
  tokenizePairs,
} from "./dpo.ts";
export { Replay, type ReplaySpec } from "./replay.ts";
export {
  answerPart,
  answerReward,
  finalAnswer,
  formatReward,
  lastNumber,
  LENGTH_CACHE_FRACTION,
  lengthPenalty,
  makeLengthPenalty,
  numberValue,
  parseRewardWeights,
  type RewardFn,
  type RewardInfo,
  type RewardName,
  REWARDS,
  type RewardTarget,
  scoreReply,
  stepsReward,
  stripStop,
  toolCallReward,
  toolCallRewardFor,
} from "./rewards.ts";
export { type GrpoPrompt, grpoPromptCheck, readGrpoPrompts } from "./grpo_prompts.ts";
export {
  type CompletionInfo,
  groupAdvantages,
  type GrpoBatch,
  type GrpoLossType,
  type GrpoPromptIds,
  type GrpoReward,
  type GrpoState,
  GrpoTask,
  type GrpoTaskOptions,
} from "./grpo.ts";
export {
  type OnPolicyOptions,
  onPolicyPairs,
  type PairRecord,
  sameAssistantTurn,
} from "./policy_pairs.ts";
export {
  type AccuracyResult,
  type EvalOptions,
  type EvalSets,
  evaluateArithmetic,
  evaluateModel,
  evaluateQuestions,
  evaluateRecall,
  evaluateToolCalls,
  generateTokens,
  type GenerateTokensOptions,
  type GradedSample,
  type GradeOptions,
  isArithmeticPrompt,
  type ModelEval,
  renderEvalReport,
  replyText,
  type ReportRow,
} from "./eval.ts";
export {
  findModelTokenizer,
  findTokenizerDir,
  type ModelDir,
  readModelDir,
  type ReadModelDirOptions,
} from "./model_dir.ts";
export {
  EXPORT_OPTIONS,
  exportHf,
  type ExportOptions,
  type ExportResult,
  type ExportValues,
  runExport,
  tokenIdsOf,
} from "./export.ts";
export {
  checkVocab,
  type CommonTrainValues,
  countTruncated,
  loadModelForTraining,
  loadReplay,
  loopOptionsFrom,
  padIdOf,
  readPrepareMeta,
  type ReplayValues,
  resolveTokenizer,
  type TrainingModel,
  withDefaults,
} from "./stage.ts";
export {
  modelConfigFrom,
  PRETRAIN_OPTIONS,
  type PretrainValues,
  runPretrain,
} from "./run_pretrain.ts";
export { runSft, SFT_OPTIONS, type SftValues } from "./run_sft.ts";
export {
  DPO_OPTIONS,
  type DpoValues,
  pairsFingerprint,
  type ReferenceCache,
  runDpo,
} from "./run_dpo.ts";
export { bindRewards, GRPO_OPTIONS, type GrpoValues, runGrpo } from "./run_grpo.ts";
export { EVAL_OPTIONS, type EvalValues, loadEvalSets, runEval } from "./run_eval.ts";
export {
  DEMO_MAX_SEQ_LEN,
  type DemoOptions,
  type DemoRow,
  renderTable as renderDemoTable,
  runDemo,
} from "./demo.ts";
