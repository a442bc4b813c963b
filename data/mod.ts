/**
 * The built-in demo corpus: a deterministic, bilingual (English and Chinese) invented world of
 * cities, people and products, and everything the pipeline trains and grades on.
 *
 * - {@linkcode generateWorld}: entities and facts, each fact in the `"sft"` or `"eval"` split.
 * - {@linkcode pretrainDocuments}: `{ text }` records.
 * - {@linkcode sftConversations}: `{ conversations, tools? }` records in OpenAI message form.
 * - {@linkcode dpoPairs}: `{ chosen, rejected, tools?, flaw }` full conversations, train and held out.
 * - {@linkcode evalQuestions} and {@linkcode evalToolCalls}: held-out questions and tool prompts.
 * - {@linkcode toolSchemas} and {@linkcode runTool}: the `get_weather` and `calculator` tools.
 * - {@linkcode grpoPrompts}: verifiable GRPO prompts (word problems, tool requests), train and
 *   held out; {@linkcode reasoningConversations}: worked word problems for SFT.
 * - {@linkcode buildCorpus}, {@linkcode describeCorpus}, {@linkcode toJsonl},
 *   {@linkcode benchmarkText}.
 *
 * Everything is a pure function of a seed and a scale: no file I/O, no GPU, no clock.
 *
 * @example
 * ```ts
 * import { buildCorpus, describeCorpus, toJsonl } from "@minideepseek/minideepseek/data";
 * const corpus = buildCorpus({ seed: 1234, scale: 1 });
 * console.log(describeCorpus(corpus).summary);
 * const sftJsonl = toJsonl(corpus.sft);
 * console.log(sftJsonl.split("\n")[0]);
 * ```
 *
 * @module
 */

export {
  arithmeticLine,
  calculationQuestion,
  isEvalExpression,
  randomExpression,
  workedArithmetic,
} from "./arithmetic.ts";
export {
  benchmarkText,
  buildCorpus,
  type Corpus,
  type CorpusDescription,
  DEMO_CORPUS,
  describeCorpus,
} from "./corpus.ts";
export { type DpoOptions, dpoPairs } from "./dpo.ts";
export {
  type EvalQuestion,
  evalQuestions,
  type EvalToolCall,
  evalToolCalls,
  gradeToolCall,
  isCorrect,
  normalizeAnswer,
  toolArgumentsMatch,
} from "./eval.ts";
export { type Bilingual } from "./lexicon.ts";
export {
  type DpoFlaw,
  type DpoPair,
  type Message,
  type OpenAIToolCall,
  type SftRecord,
  toJsonl,
  type ToolSchema,
} from "./messages.ts";
export {
  faqPrompt,
  type PretrainDocument,
  pretrainDocuments,
  type PretrainOptions,
} from "./pretrain.ts";
export { deriveSeed, Mulberry32 } from "../random/rng.ts";
export {
  answerSentence,
  type GrpoPromptKind,
  type GrpoPromptOptions,
  type GrpoPromptRecord,
  grpoPrompts,
  isHeldOutNumbers,
  PROBLEM_TEMPLATES,
  type ProblemSplit,
  reasoningConversations,
  type WordProblem,
  wordProblems,
} from "./reasoning.ts";
export { sftConversations, type SftOptions } from "./sft.ts";
export { askFact, type Lang, LANGS, stateFact, SYSTEM_PROMPTS } from "./templates.ts";
export { calculate, CalculatorError, runTool, toolSchemas } from "./tools.ts";
export {
  type Attribute,
  ATTRIBUTES,
  BASE_COUNTS,
  type City,
  DEFAULT_SEED,
  type EntityKind,
  EVAL_FRACTION,
  type Fact,
  factsOf,
  findCity,
  generateWorld,
  type Person,
  type Product,
  type Split,
  type World,
  type WorldOptions,
} from "./world.ts";
