/**
 * The ONE training loop that pretraining, SFT and DPO share.
 *
 * A stage is a {@linkcode TrainTask}: it encodes the forward of one micro-batch on the active
 * tape and returns the loss to minimize; the loop does everything else: gradient accumulation,
 * clipping and AdamW on the GPU, the aux-loss-free bias update, the learning-rate schedule
 * (warmup, constant, cosine to 10%), validation, metrics, the progress bar, atomic checkpoints
 * with optimizer and data state, bit-exact resume, the loss plot, and a clean stop on a
 * non-finite loss, gradient or updated weight that leaves the last good checkpoint as it was.
 *
 * One step = one command batch per micro-batch plus the optimizer, and ONE small readback (the
 * loss, the gradient norm and the non-finite flag, packed into one buffer) which is what lets the
 * loop refuse to checkpoint a NaN.
 *
 * @module
 */
import { noGrad, Tape } from "../kernels/autograd.ts";
import { scale } from "../kernels/elementwise.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { toHfConfig } from "../model/hf_config.ts";
import type { DeepSeekV3 } from "../model/transformer.ts";
import {
  CheckpointError,
  loadCheckpoint,
  NonFiniteCheckpointError,
  removeLeftovers,
  resolveCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { MetricsLog, type MetricsRecord, readMetrics } from "./metrics.ts";
import { AdamW, ADAMW_DEFAULTS, type AdamWConfig } from "./optimizer.ts";
import { writeLossPlot } from "./plot.ts";
import { ProgressBar } from "./progress.ts";
import { makeSchedule } from "./schedule.ts";

/** What a task's forward returns for one micro-batch. */
export interface TaskOutput {
  /** The [1] loss to minimize (mean over this micro-batch). */
  loss: Tensor;
  /** Named [1] terms to log (e.g. `ce`, `mtp`, `balance`, DPO rewards). */
  terms: Record<string, Tensor>;
  /** MoE loads of this micro-batch, one i32 [E] per MoE block, for the bias update. */
  loads: Tensor[];
  /** Target tokens in this micro-batch (throughput and `tokensSeen`). */
  tokens: number;
  /**
   * Host-side statistics to log (GRPO's rewards and completion lengths), averaged over the
   * micro-batches and steps of a log interval into the record's `stats`.
   */
  stats?: Record<string, number>;
}

/** One stage's data and loss. */
export interface TrainTask {
  /** Stage name: `pretrain`, `sft`, `dpo`, `grpo`. */
  readonly name: string;
  /**
   * Work before each optimizer step that must be awaited, with no tape active (GRPO samples its
   * completions here).
   */
  prepare?(model: DeepSeekV3): Promise<void>;
  /** Encodes the forward of the next micro-batch on the active tape. */
  forward(model: DeepSeekV3): TaskOutput;
  /** Validation metrics (run without a tape); `loss` is plotted. */
  validate(model: DeepSeekV3): Promise<Record<string, number>>;
  /** The data position, saved in checkpoints. */
  state(): unknown;
  /** Restores {@linkcode state}'s value. */
  restore(state: unknown): void;
}

/**
 * The defaults of {@linkcode LoopOptions}, which the CLI's options (`stage.ts`) start from too:
 * one accumulation step, a constant LR for half the run then a cosine decay to 10% (V3 decays
 * late and ends at 10%), a metric line every 10 steps, the last 2 checkpoints kept.
 */
export const LOOP_DEFAULTS: Readonly<{
  gradAccum: number;
  decayStartFraction: number;
  minLrRatio: number;
  logEvery: number;
  keep: number;
}> = Object.freeze({
  gradAccum: 1,
  decayStartFraction: 0.5,
  minLrRatio: 0.1,
  logEvery: 10,
  keep: 2,
});

/** Settings of a run. */
export interface LoopOptions {
  /** Run directory: checkpoints, `metrics.jsonl`, `loss.svg`. */
  runDir: string;
  /** Total optimizer steps. */
  steps: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  gradAccum?: number;
  /** Peak learning rate. */
  lr: number;
  /** Warmup steps. */
  warmupSteps?: number;
  /** Fraction of the run before the cosine decay starts (V3 decays late; default 0.5). */
  decayStartFraction?: number;
  /** Final LR as a fraction of the peak (V3: 0.1). */
  minLrRatio?: number;
  /** AdamW settings (defaults: V3's). */
  adamw?: Partial<AdamWConfig>;
  /** Log every N steps (default 10). */
  logEvery?: number;
  /** Validate every N steps and at the end (0: only at the end). */
  evalEvery?: number;
  /** Checkpoint every N steps and at the end (0: only at the end). */
  checkpointEvery?: number;
  /** Checkpoints to keep (default 2). */
  keep?: number;
  /** Resume from the run directory's latest checkpoint (true) or a given checkpoint path. */
  resume?: boolean | string;
  /** Show the progress bar (default true); plain lines when stdout is not a terminal. */
  progress?: boolean;
  /** The run's resolved options, saved in each checkpoint. */
  runInfo?: Record<string, unknown>;
  /** Where log lines go (default console.log). */
  log?: (line: string) => void;
}

/** What a finished run reports. */
export interface LoopResult {
  /** Steps done in total (resumed runs count earlier ones). */
  step: number;
  /** Target tokens consumed in total. */
  tokensSeen: number;
  /** Last logged training loss. */
  lastLoss: number;
  /** Last validation metrics. */
  val: Record<string, number>;
  /** Wall seconds of this invocation. */
  seconds: number;
  /** The final checkpoint directory. */
  checkpoint: string;
}

/** Thrown when a step's loss or gradient is not finite; the run stops without checkpointing. */
export class NonFiniteError extends Error {
  /**
   * Creates the error.
   *
   * @param step The step whose loss or gradient was not finite.
   * @param what What was not finite (`loss`, `gradient norm`).
   * @param lastGood The last checkpoint written, or null.
   */
  constructor(readonly step: number, what: string, lastGood: string | null) {
    super(
      `step ${step}: ${what} is not finite; stopped without writing a checkpoint. ` +
        (lastGood
          ? `The last good checkpoint is ${lastGood}: resume from it with a lower --lr.`
          : "No checkpoint was written before it; lower --lr or check the data."),
    );
    this.name = "NonFiniteError";
  }
}

/**
 * Trains `model` on `task`.
 *
 * @throws {NonFiniteError} on a NaN/inf loss or gradient (naming the step).
 * @example
 * const result = await trainLoop(model, pretrainTask, { runDir: "runs/x", steps: 100, lr: 3e-3 });
 */
export async function trainLoop(
  model: DeepSeekV3,
  task: TrainTask,
  opts: LoopOptions,
): Promise<LoopResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const accum = opts.gradAccum ?? LOOP_DEFAULTS.gradAccum;
  const logEvery = Math.max(1, opts.logEvery ?? LOOP_DEFAULTS.logEvery);
  const evalEvery = opts.evalEvery ?? 0, ckptEvery = opts.checkpointEvery ?? 0;
  const opt = new AdamW(model.arena, { ...ADAMW_DEFAULTS, ...opts.adamw });
  const lrAt = makeSchedule({
    peakLr: opts.lr,
    warmupSteps: Math.min(opts.warmupSteps ?? 0, opts.steps),
    totalSteps: opts.steps,
    decayStartFraction: opts.decayStartFraction ?? LOOP_DEFAULTS.decayStartFraction,
    minLrRatio: opts.minLrRatio ?? LOOP_DEFAULTS.minLrRatio,
  });
  await Deno.mkdir(opts.runDir, { recursive: true });
  const leftovers = await removeLeftovers(opts.runDir);
  if (leftovers.length > 0) {
    log(`removed ${leftovers.length} partial file(s) of an earlier failed write: ${leftovers}`);
  }
  const metricsPath = `${opts.runDir}/metrics.jsonl`;

  let step = 0, tokensSeen = 0, lastGood: string | null = null;
  let bestVal = Infinity;
  if (opts.resume) {
    const from = typeof opts.resume === "string" ? opts.resume : opts.runDir;
    const dir = await resolveCheckpoint(from, { onWarn: log });
    if (dir) {
      const ck = await loadCheckpoint(dir, { expect: model.arena.entries });
      const statePath = `${ck.dir}/state.json`;
      if (ck.state.stage !== undefined && ck.state.stage !== task.name) {
        throw new CheckpointError(
          `${statePath}: a ${ck.state.stage} checkpoint cannot resume ${task.name}; pass the ` +
            `${task.name} run's --out (or start ${task.name} from it with --init)`,
        );
      }
      if (ck.state.task === undefined) {
        throw new CheckpointError(
          `${statePath}: no "task" field (the data position), so a resumed run would replay ` +
            `data from the start; restore the field from the checkpoint's original state.json`,
        );
      }
      model.load(ck.params);
      for (const [name, m] of ck.m) model.arena.upload(name, m, "m");
      for (const [name, v] of ck.v) model.arena.upload(name, v, "v");
      step = ck.state.step;
      tokensSeen = ck.state.tokensSeen;
      opt.step = Number(ck.state.optimizerStep ?? step);
      task.restore(ck.state.task);
      bestVal = Number((ck.state.metrics as { bestVal?: number } | undefined)?.bestVal ?? bestVal);
      lastGood = ck.dir;
      log(`resumed ${task.name} from ${ck.dir} at step ${step}`);
    } else if (typeof opts.resume === "string") {
      throw new Error(`--resume ${opts.resume}: no checkpoint found there`);
    } else {
      // No checkpoint, but a log of steps: the run died before its first checkpoint, or its
      // checkpoints were deleted. Starting over would truncate that log without a word.
      const logged = (await readMetrics(metricsPath)).length;
      if (logged > 0) {
        throw new CheckpointError(
          `--resume: ${opts.runDir} has no checkpoint to continue, but its metrics.jsonl holds ` +
            `${logged} record(s) of an earlier run; to start over, move ${metricsPath} away (or ` +
            `pass another --out)`,
        );
      }
      log(`no checkpoint in ${opts.runDir}: starting ${task.name} from step 0`);
    }
  } else {
    const earlier = await resolveCheckpoint(opts.runDir).catch(() => null);
    const logged = earlier ? 0 : (await readMetrics(metricsPath)).length;
    if (earlier || logged > 0) {
      log(
        `warning: ${opts.runDir} holds an earlier run (${
          earlier ? `checkpoint ${earlier}` : `${logged} metrics records`
        }); this run starts from step 0 and replaces its metrics.jsonl and latest.json ` +
          `(--resume continues it instead)`,
      );
    }
  }
  const metrics = await MetricsLog.open(metricsPath, {
    resumeStep: step,
    fresh: step === 0,
  });
  const bar = new ProgressBar(
    opts.progress === false
      ? { total: opts.steps, start: step, tty: false, write: () => {} }
      : { total: opts.steps, start: step },
  );
  const device = model.device;
  const t0 = performance.now();
  let tLog = t0, tokLog = 0, lastLoss = NaN;
  // Sums of the tasks' host statistics since the last log line, and how many went in.
  let statSum: Record<string, number> = {}, statCount: Record<string, number> = {};
  let val: Record<string, number> = {};

  const save = async () => {
    const [params, m, v] = await Promise.all([
      model.arena.readAll("params"),
      model.arena.readAll("m"),
      model.arena.readAll("v"),
    ]);
    await metrics.sync();
    try {
      lastGood = await saveCheckpoint(opts.runDir, {
        table: model.arena.entries,
        params,
        m,
        v,
        hfConfig: toHfConfig(model.cfg),
        state: {
          step,
          tokensSeen,
          optimizerStep: opt.step,
          task: task.state(),
          stage: task.name,
          run: opts.runInfo,
          metrics: { lastLoss, bestVal, val },
        },
      }, { keep: opts.keep ?? LOOP_DEFAULTS.keep });
    } catch (e) {
      if (!(e instanceof NonFiniteCheckpointError)) throw e;
      // The loss and gradients were finite, the update was not (a huge --lr): the weights are
      // lost, and a checkpoint of them would fail at once after a resume.
      throw new NonFiniteError(
        step,
        `${e.which === "parameter" ? "the parameter" : `the AdamW ${e.which} of`} ` +
          `'${e.tensor}' after the update (${e.count} non-finite value(s) in all)`,
        lastGood,
      );
    }
    return lastGood!;
  };
  const validate = async () => {
    val = await noGrad(() => task.validate(model));
    if (val.loss !== undefined) bestVal = Math.min(bestVal, val.loss);
    await metrics.log({ step, kind: "val", loss: val.loss, losses: val });
    bar.log(`step ${step} val ${fmtRecord(val)}`);
  };

  try {
    while (step < opts.steps) {
      const lr = lrAt(step);
      if (task.prepare) await task.prepare(model);
      const scope = new Scope();
      model.arena.zeroGrads();
      const loads: Tensor[] = [];
      const terms: Record<string, Tensor[]> = {};
      const losses: Tensor[] = [];
      let stepTokens = 0;
      for (let micro = 0; micro < accum; micro++) {
        const tape = new Tape().start();
        const out = task.forward(model);
        const loss = accum > 1 ? scale(out.loss, 1 / accum) : out.loss;
        tape.backward(loss);
        losses.push(out.loss);
        loads.push(...out.loads);
        for (const [k, t] of Object.entries(out.terms)) (terms[k] ??= []).push(t);
        stepTokens += out.tokens;
        for (const [k, v] of Object.entries(out.stats ?? {})) {
          statSum[k] = (statSum[k] ?? 0) + v;
          statCount[k] = (statCount[k] ?? 0) + 1;
        }
      }
      const clip = opt.update(lr);
      // The bias update uses each micro-batch's loads (V3 updates once per batch it trains on).
      const perMicro = loads.length / accum;
      for (let i = 0; i < accum; i++) {
        model.updateBiases(loads.slice(i * perMicro, (i + 1) * perMicro));
      }
      // One readback: [loss per micro..., norm, nonfinite, terms at log steps].
      const logging = (step + 1) % logEvery === 0 || step + 1 === opts.steps;
      const termNames = logging ? Object.keys(terms) : [];
      const packed = [...losses, clip.norm, clip.nonfinite, ...termNames.flatMap((k) => terms[k])];
      const stats = Tensor.empty(device, [packed.length]);
      packed.forEach((t, i) =>
        device.copy(t.binding, { ...stats.binding, offset: stats.offset + 4 * i, size: 4 }, 4)
      );
      const s = await stats.readF32();
      let loss = 0;
      for (let i = 0; i < accum; i++) loss += s[i] / accum;
      const norm = s[accum], nonfinite = s[accum + 1];
      const loadSummary = logging ? await summarizeLoads(loads) : undefined;
      scope.dispose();
      step++;
      if (!Number.isFinite(loss)) throw new NonFiniteError(step, `the loss (${loss})`, lastGood);
      if (nonfinite !== 0 || !Number.isFinite(norm)) {
        throw new NonFiniteError(step, "a gradient", lastGood);
      }
      tokensSeen += stepTokens;
      tokLog += stepTokens;
      lastLoss = loss;
      if (logging) {
        const now = performance.now();
        const tps = tokLog / ((now - tLog) / 1000);
        const lossTerms: Record<string, number> = {};
        termNames.forEach((k, j) => {
          let sum = 0;
          for (let i = 0; i < accum; i++) sum += s[accum + 2 + j * accum + i];
          lossTerms[k] = sum / accum;
        });
        const rec: MetricsRecord = {
          step,
          kind: "train",
          loss,
          losses: lossTerms,
          lr,
          gradNorm: norm,
          tokensPerSec: tps,
          tokensSeen,
        };
        if (loadSummary) rec.expertLoad = loadSummary;
        if (Object.keys(statSum).length) {
          rec.stats = Object.fromEntries(
            Object.entries(statSum).map(([k, v]) => [k, v / statCount[k]]),
          );
          statSum = {};
          statCount = {};
        }
        await metrics.log(rec);
        const reward = rec.stats?.reward;
        bar.update(step, {
          loss,
          lr,
          tokensPerSec: tps,
          ...(reward === undefined ? {} : { extra: { reward } }),
        });
        tLog = now;
        tokLog = 0;
      }
      if (evalEvery > 0 && step % evalEvery === 0 && step < opts.steps) await validate();
      if (ckptEvery > 0 && step % ckptEvery === 0 && step < opts.steps) await save();
    }
    if (step === opts.steps) await validate();
    const checkpoint = await save();
    bar.finish();
    await metrics.close();
    await writeLossPlot(`${opts.runDir}/loss.svg`, await readMetrics(metricsPath), {
      title: `${task.name} loss`,
    });
    return {
      step,
      tokensSeen,
      lastLoss,
      val,
      seconds: (performance.now() - t0) / 1000,
      checkpoint,
    };
  } catch (e) {
    device.discard(); // the failed step's half-encoded work must not run
    bar.finish();
    await metrics.close().catch(() => {});
    throw e;
  }
}

/** Min and max share of routed tokens over experts, across MoE blocks. */
async function summarizeLoads(loads: Tensor[]): Promise<{ min: number; max: number } | undefined> {
  if (!loads.length) return undefined;
  let min = Infinity, max = 0;
  for (const t of loads) {
    const l = await t.read();
    let total = 0;
    for (const v of l) total += v;
    if (!total) continue;
    for (const v of l) {
      min = Math.min(min, v / total);
      max = Math.max(max, v / total);
    }
  }
  return Number.isFinite(min) ? { min, max } : undefined;
}

function fmtRecord(r: Record<string, number>): string {
  return Object.entries(r).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(4)}`).join(
    "  ",
  );
}
