/**
 * `dpo` as a function: the option table and {@linkcode runDpo}, which loads the policy from the
 * SFT checkpoint, computes the frozen reference's log-probabilities once (cached in memory and in
 * `<out>/reference_logps.json`, so no reference model stays on the GPU and a resumed run skips
 * the pass), and runs the shared loop on {@linkcode DpoTask}.
 *
 * When the reference is the policy's own starting checkpoint (the default), the reference pass
 * runs on the policy before its first step: there is never a second model.
 *
 * @module
 */
import { hash32 } from "../random/rng.ts";
import { atomicWriteFile } from "./_fs.ts";
import { resolveCheckpoint } from "./checkpoint.ts";
import {
  DpoTask,
  pairSequences,
  readPreferencePairs,
  sequenceLogps,
  tokenizePairs,
} from "./dpo.ts";
import type { PairExample } from "./dpo.ts";
import { type LoopResult, trainLoop } from "./loop.ts";
import { chooseDevice } from "../kernels/backend.ts";
import { declareOptions, defineOptions, type OptionTable } from "./options.ts";
import {
  checkVocab,
  COMMON_TRAIN_OPTIONS,
  type CommonTrainValues,
  countTruncated,
  loadModelForTraining,
  loadReplay,
  loopOptionsFrom,
  padIdOf,
  REPLAY_OPTIONS,
  type ReplayValues,
  resolveTokenizer,
  SKIP_BAD_OPTION,
  withDefaults,
} from "./stage.ts";
import { splitHeldOut } from "./sft.ts";

/** The `dpo` options. */
export const DPO_OPTIONS: OptionTable<DpoValues> = declareOptions<DpoValues>()(defineOptions(
  [
    {
      name: "data",
      type: "string",
      default: null,
      help:
        'pairs JSONL: {"chosen": [...], "rejected": [...], "tools"?} or {"prompt", "chosen", "rejected"}',
    },
    {
      name: "valData",
      type: "string",
      default: null,
      help: "held-out pairs JSONL (default: every k-th pair of --data, see --val-fraction)",
    },
    {
      name: "valFraction",
      type: "number",
      default: 0.05,
      min: 0,
      max: 0.5,
      help: "share of --data held out for validation when --val-data is not given",
    },
    {
      name: "init",
      type: "string",
      default: null,
      help: "the SFT checkpoint (or run directory, or Hugging Face DeepSeek-V3 directory) the " +
        "policy starts from",
    },
    {
      name: "ref",
      type: "string",
      default: null,
      help: "the frozen reference checkpoint (default: --init)",
      why: "DPO's KL anchor is the SFT model the policy starts from",
    },
    {
      name: "beta",
      type: "number",
      default: 0.1,
      min: 0,
      max: 1000,
      help: "DPO temperature: how far the policy may move from the reference",
      why: "the DPO paper's and TRL's default",
    },
    {
      name: "rpoAlpha",
      type: "number",
      default: 0,
      min: 0,
      max: 1000,
      help: "weight of the chosen replies' token NLL added to the DPO loss (TRL's rpo_alpha); " +
        "0: plain DPO",
      why: "plain DPO by default, as the DPO paper and TRL",
    },
    {
      name: "tokenizer",
      type: "string",
      default: null,
      help: "tokenizer directory (default: the one the --init run recorded)",
    },
    SKIP_BAD_OPTION,
    ...REPLAY_OPTIONS,
    ...withDefaults(COMMON_TRAIN_OPTIONS, {
      out: { default: "runs/dpo" },
      steps: { default: 60 },
      batchSize: { default: 8, help: "preference pairs per micro-batch (2x sequences)" },
      seqLen: {
        default: 512,
        help: "positions per packed row (<= max_seq_len); longer pairs lose prompt from the left",
      },
      lr: { default: 1e-4, why: "DPO moves little from the reference; a tenth of SFT's" },
      warmupSteps: { default: 5 },
      weightDecay: { default: 0, why: "stay near the reference: no pull toward zero" },
      evalEvery: { default: 0 },
      checkpointEvery: { default: 0 },
    }),
  ] as const,
));

/** Resolved `dpo` options. */
export interface DpoValues extends CommonTrainValues, ReplayValues {
  /**
   * Pairs JSONL: {"chosen": [...], "rejected": [...], "tools"?} or {"prompt", "chosen",
   * "rejected"}.
   */
  data: string | null;
  /** Held-out pairs JSONL (default: every k-th pair of --data, see --val-fraction). */
  valData: string | null;
  /** Share of --data held out for validation when --val-data is not given. */
  valFraction: number;
  /**
   * The SFT checkpoint (or run directory, or Hugging Face DeepSeek-V3 directory) the policy starts
   * from.
   */
  init: string | null;
  /** The frozen reference checkpoint (default: --init). */
  ref: string | null;
  /** DPO temperature: how far the policy may move from the reference. */
  beta: number;
  /**
   * Weight of the chosen replies' token NLL added to the DPO loss (TRL's rpo_alpha); 0: plain DPO.
   */
  rpoAlpha: number;
  /** Tokenizer directory (default: the one the --init run recorded). */
  tokenizer: string | null;
  /** Skip malformed JSONL lines (reported as file:line) instead of stopping. */
  skipBad: boolean;
}

/** `<out>/reference_logps.json`: the reference's summed response log-probabilities. */
export interface ReferenceCache {
  /** Format version (2: keyed by the reference's weights too). */
  format: 2;
  /** The reference checkpoint directory. */
  ref: string;
  /** SHA-256 (hex) of the reference's `model.safetensors`: other weights recompute. */
  refDigest: string;
  /** Hash of the tokenized pairs and T: a different data set recomputes. */
  fingerprint: number;
  /** Per train pair [chosen, rejected], or null for a pair the run does not visit. */
  train: ([number, number] | null)[];
  /** Per held-out pair [chosen, rejected]. */
  val: ([number, number] | null)[];
}

/**
 * A hash of the tokenized pairs, T and the visited pairs, so a cache made for other data or
 * another plan is never reused.
 */
export function pairsFingerprint(
  pairs: readonly PairExample[],
  T: number,
  visited: readonly number[],
): number {
  let h = hash32(T, pairs.length, ...visited);
  for (const s of pairSequences(pairs)) {
    for (let i = 0; i < s.ids.length; i++) h = hash32(h, s.ids[i], s.mask[i]);
  }
  return h;
}

/** SHA-256 of a file, as hex. */
async function fileDigest(path: string): Promise<string> {
  // A sharded Hugging Face directory: its index names the shards.
  const index = path.replace(/model\.safetensors$/, "model.safetensors.index.json");
  const bytes = await Deno.readFile(path).catch(async (e) => {
    if (e instanceof Deno.errors.NotFound && index !== path) return await Deno.readFile(index);
    throw e;
  });
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

// JSON has no NaN: pairs the run never visits are stored as null.
const toPairs = (a: Float64Array) =>
  Array.from(
    { length: a.length / 2 },
    (_, p) => Number.isNaN(a[2 * p]) ? null : [a[2 * p], a[2 * p + 1]] as [number, number],
  );
const fill = (dst: Float64Array, src: ([number, number] | null)[]) =>
  src.forEach((v, p) => {
    dst[2 * p] = v ? v[0] : NaN;
    dst[2 * p + 1] = v ? v[1] : NaN;
  });

/**
 * Runs DPO.
 *
 * @returns The loop's result; the last checkpoint is in `values.out`.
 * @throws naming the flag for a missing `--data` / `--init`, `file:line` for a bad record.
 */
export async function runDpo(
  values: DpoValues,
  opts: { log?: (line: string) => void } = {},
): Promise<LoopResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  chooseDevice(values.device);
  if (!values.data) throw new Error("--data is required: a preference pairs JSONL file");
  if (!values.init) throw new Error("--init is required: the SFT checkpoint (or run directory)");
  const refPath = values.ref ?? values.init;
  const resuming = values.resume && (await resolveCheckpoint(values.out).catch(() => null));
  const start = await loadModelForTraining(resuming ? values.out : values.init, { log });
  const model = start.model;
  try {
    const { tok, dir: tokDir } = await resolveTokenizer(values.tokenizer, start.checkpoint);
    checkVocab(tok, start.cfg, { dir: tokDir });
    const T = values.seqLen;
    if (T > start.cfg.max_seq_len) {
      throw new Error(`--seq-len ${T} exceeds the model's max_seq_len ${start.cfg.max_seq_len}`);
    }
    const onBad = (m: string) => log(`skipped ${m}`);
    const read = async (path: string) => {
      const { pairs, bad } = await readPreferencePairs(path, { skipBad: values.skipBad, onBad });
      const t = tokenizePairs(tok, pairs, { T, skipBad: values.skipBad, onBad });
      return { examples: t.examples, bad: bad + t.bad };
    };
    const all = await read(values.data);
    let train = all.examples, val: PairExample[] = [];
    if (values.valData) val = (await read(values.valData)).examples;
    else ({ train, val } = splitHeldOut(all.examples, values.valFraction));
    const seqs = pairSequences(train);
    log(
      `dpo: ${train.length} train / ${val.length} val pairs, beta ${values.beta}` +
        `${values.rpoAlpha ? `, rpo alpha ${values.rpoAlpha}` : ""}` +
        `${all.bad ? `, ${all.bad} bad lines skipped` : ""}; ` +
        `${countTruncated(seqs, T)} sequences longer than ${T} positions lose prompt tokens`,
    );

    // The reference pass: once, for the pairs the run will visit, cached in memory and on disk.
    const padId = padIdOf(tok);
    const refs = {
      train: new Float64Array(2 * train.length).fill(NaN),
      val: new Float64Array(2 * val.length),
    };
    const replay = await loadReplay(values, start.cfg, log, "dpo");
    const task = new DpoTask({ pairs: train, ref: refs.train }, { pairs: val, ref: refs.val }, {
      pairs: values.batchSize,
      T,
      B: values.batchSize,
      beta: values.beta,
      rpoAlpha: values.rpoAlpha,
      seed: values.seed,
      padId,
      replay,
    });
    // From step 0: a resumed run visits a subset of these, and its cache is the same.
    const visited = task.upcoming(values.steps * values.gradAccum);
    const cachePath = `${values.out}/reference_logps.json`;
    const fingerprint = pairsFingerprint([...train, ...val], T, visited);
    // The same path may hold other weights later (a rerun into the same directories).
    const refDir = (await resolveCheckpoint(refPath)) ?? refPath;
    const refDigest = await fileDigest(`${refDir}/model.safetensors`);
    let cache: ReferenceCache | null = null;
    try {
      const c = JSON.parse(await Deno.readTextFile(cachePath)) as ReferenceCache;
      if (c.format === 2 && c.fingerprint === fingerprint && c.refDigest === refDigest) cache = c;
    } catch { /* no cache yet */ }
    if (cache) {
      fill(refs.train, cache.train);
      fill(refs.val, cache.val);
      log(`dpo: reference log-probabilities from ${cachePath}`);
    } else {
      const t0 = performance.now();
      const sameAsStart = !resuming && refPath === values.init;
      const refModel = sameAsStart
        ? start
        : await loadModelForTraining(refPath, { device: model.device, log });
      const o = { B: values.batchSize, T, padId };
      try {
        const lp = await sequenceLogps(
          refModel.model,
          pairSequences(visited.map((k) => train[k])),
          o,
        );
        visited.forEach((k, j) => {
          refs.train[2 * k] = lp[2 * j];
          refs.train[2 * k + 1] = lp[2 * j + 1];
        });
        refs.val.set(await sequenceLogps(refModel.model, pairSequences(val), o));
      } finally {
        if (!sameAsStart) refModel.model.arena.destroy();
      }
      cache = {
        format: 2,
        ref: refModel.checkpoint.dir,
        refDigest,
        fingerprint,
        train: toPairs(refs.train),
        val: toPairs(refs.val),
      };
      await Deno.mkdir(values.out, { recursive: true });
      await atomicWriteFile(cachePath, new TextEncoder().encode(JSON.stringify(cache)));
      log(
        `dpo: reference log-probabilities of ${2 * (visited.length + val.length)} sequences ` +
          `(the ${visited.length} train pairs ${values.steps} steps visit, and the held-out ones) ` +
          `from ${refModel.checkpoint.dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    }
    const result = await trainLoop(model, task, {
      ...loopOptionsFrom(values),
      runInfo: {
        ...values,
        model: start.cfg,
        tokenizer: tokDir,
        stage: "dpo",
        refCheckpoint: cache.ref,
      },
      log,
    });
    return result;
  } finally {
    model.arena.destroy();
    model.device.trimPool();
  }
}
