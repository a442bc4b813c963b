/**
 * The learning-rate schedule: linear warmup, a constant stretch at the peak, then cosine decay to
 * `minLrRatio` of the peak, reached at `totalSteps` and held after. This is the shape of
 * DeepSeek-V3's pretraining schedule (technical report section 4.2: warmup over 2K steps,
 * constant until 10T tokens, cosine decay to 0.1x over the next 4.3T), with the decay start given
 * as a step or as a fraction of the run.
 *
 * Left out: V3's final stepped stages after the cosine (they matter at 14.8T tokens, not here).
 *
 * @module
 */

/** Schedule settings. Steps are 0-based optimizer steps. */
export interface LrSchedule {
  /** The peak learning rate. */
  peakLr: number;
  /** Steps of linear warmup: step s < warmupSteps gets peakLr * (s + 1) / warmupSteps. */
  warmupSteps: number;
  /** Total optimizer steps of the run; the decay ends here. */
  totalSteps: number;
  /** Step where the cosine decay starts (default: `decayStartFraction` of totalSteps). */
  decayStartStep?: number;
  /** Decay start as a fraction of totalSteps when `decayStartStep` is not given (default: 0,
   * i.e. right after warmup). */
  decayStartFraction?: number;
  /** Final learning rate as a fraction of the peak (V3: 0.1). */
  minLrRatio?: number;
}

/** Thrown for inconsistent schedule settings; the message names the field. */
export class ScheduleError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "ScheduleError";
  }
}

/**
 * Checks a schedule and fills in the defaults.
 *
 * @param s The settings.
 * @returns The settings with `decayStartStep` and `minLrRatio` resolved.
 * @throws {ScheduleError} naming the bad field (negative or non-integer steps, a decay start
 *   before the end of warmup or after totalSteps, a ratio outside [0, 1]).
 * @example
 * ```ts
 * resolveSchedule({ peakLr: 1e-3, warmupSteps: 10, totalSteps: 100 }).decayStartStep; // 10
 * ```
 */
export function resolveSchedule(s: LrSchedule): Required<LrSchedule> {
  const minLrRatio = s.minLrRatio ?? 0.1;
  const frac = s.decayStartFraction ?? 0;
  const need = (ok: boolean, msg: string) => {
    if (!ok) throw new ScheduleError(`lr schedule: ${msg}`);
  };
  need(Number.isFinite(s.peakLr) && s.peakLr >= 0, `peakLr must be >= 0, got ${s.peakLr}`);
  need(
    Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0,
    `warmupSteps must be an integer >= 0, got ${s.warmupSteps}`,
  );
  need(
    Number.isInteger(s.totalSteps) && s.totalSteps >= 1,
    `totalSteps must be an integer >= 1, got ${s.totalSteps}`,
  );
  need(frac >= 0 && frac <= 1, `decayStartFraction must be in [0, 1], got ${frac}`);
  need(minLrRatio >= 0 && minLrRatio <= 1, `minLrRatio must be in [0, 1], got ${minLrRatio}`);
  const decayStartStep = s.decayStartStep ??
    Math.max(s.warmupSteps, Math.round(frac * s.totalSteps));
  need(
    Number.isInteger(decayStartStep) && decayStartStep >= s.warmupSteps &&
      decayStartStep <= s.totalSteps,
    `decayStartStep (${decayStartStep}) must be an integer in [warmupSteps (${s.warmupSteps}), ` +
      `totalSteps (${s.totalSteps})]`,
  );
  return { ...s, decayStartStep, decayStartFraction: frac, minLrRatio };
}

/**
 * The learning rate at an optimizer step.
 *
 * @param step 0-based step (steps past totalSteps get the final rate).
 * @param schedule The settings.
 * @returns The learning rate.
 * @throws {ScheduleError} for inconsistent settings (see {@linkcode resolveSchedule}).
 * @example
 * ```ts
 * const s = { peakLr: 1e-3, warmupSteps: 10, decayStartStep: 50, totalSteps: 100 };
 * learningRate(0, s); // 1e-4 (1/10 of the peak)
 * learningRate(9, s); // 1e-3
 * learningRate(50, s); // 1e-3 (the decay starts here)
 * learningRate(75, s); // 5.5e-4 (half way: (1 + 0.1) / 2 of the peak)
 * learningRate(100, s); // 1e-4
 * ```
 */
export function learningRate(step: number, schedule: LrSchedule): number {
  return makeSchedule(schedule)(step);
}

/**
 * Resolves the settings once and returns a pure `lr(step)` function.
 *
 * @param schedule The settings.
 * @returns `lr(step)`.
 * @throws {ScheduleError} for inconsistent settings.
 * @example
 * ```ts
 * const lr = makeSchedule({ peakLr: 3e-4, warmupSteps: 100, totalSteps: 10_000 });
 * lr(99); // 3e-4
 * ```
 */
export function makeSchedule(schedule: LrSchedule): (step: number) => number {
  const { peakLr, warmupSteps, decayStartStep, totalSteps, minLrRatio } = resolveSchedule(
    schedule,
  );
  const minLr = peakLr * minLrRatio;
  return (step: number): number => {
    if (step < warmupSteps) return (peakLr * (step + 1)) / warmupSteps;
    if (step < decayStartStep) return peakLr;
    if (step >= totalSteps) return minLr;
    const progress = (step - decayStartStep) / (totalSteps - decayStartStep);
    return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}
