/**
 * A training progress display: on a terminal, one self-redrawing line
 *
 *     [#########-----------]  450/1000 45% | loss 3.412 | lr 3.00e-4 | 12.3k tok/s | ETA 4m10s
 *
 * and, when stdout is not a terminal (CI logs, `> file`), plain lines every `plainEveryMs`
 * (plus the first and the last step) so logs stay readable and small. Hand-written ANSI (carriage
 * return + erase line); no dependency. ETA comes from the mean step time since the bar started,
 * so a resumed run's ETA counts only the steps left.
 *
 * @module
 */

/** What the line shows besides the step. */
export interface ProgressStats {
  /** Latest training loss. */
  loss?: number;
  /** Current learning rate. */
  lr?: number;
  /** Throughput over the last interval. */
  tokensPerSec?: number;
  /** Extra `key value` pairs shown after the rest (e.g. `{ "val": 3.1 }`). */
  extra?: Record<string, number | string>;
}

/** Options of {@linkcode ProgressBar}. */
export interface ProgressOptions {
  /** Step count at completion. */
  total: number;
  /** Step the run starts (or resumes) at (default 0). */
  start?: number;
  /** Draw the redrawing bar (default: whether stdout is a terminal). */
  tty?: boolean;
  /** Output sink (default: stdout, synchronous). */
  write?: (text: string) => void;
  /** Plain mode: least time between lines (default 10 s). */
  plainEveryMs?: number;
  /** Terminal mode: least time between redraws (default 100 ms). */
  redrawEveryMs?: number;
  /** Bar width in characters (default 24). */
  width?: number;
  /** Clock in ms (default `performance.now`); for tests. */
  now?: () => number;
}

/**
 * A duration as a short human string.
 *
 * @param seconds The duration.
 * @returns `"42s"`, `"4m10s"`, `"2h05m"`, or `"?"` for a non-finite value.
 * @example
 * ```ts
 * formatDuration(250); // "4m10s"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * A count with a k/M suffix.
 *
 * @param n The number.
 * @returns E.g. `"950"`, `"12.3k"`, `"1.05M"`.
 * @example
 * ```ts
 * formatCount(12345); // "12.3k"
 * ```
 */
export function formatCount(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e3) return `${(n / 1e3).toPrecision(3)}k`;
  return String(Math.round(n));
}

const encoder = new TextEncoder();

/**
 * The progress display of a training run.
 *
 * @example
 * ```ts
 * const bar = new ProgressBar({ total: 1000, start: resumedStep });
 * for (let step = resumedStep + 1; step <= 1000; step++) {
 *   // ... train ...
 *   bar.update(step, { loss, lr, tokensPerSec });
 *   if (step % 100 === 0) bar.log(`step ${step}: val loss ${val}`);
 * }
 * bar.finish();
 * ```
 */
export class ProgressBar {
  readonly #o: Required<Omit<ProgressOptions, "start">> & { start: number };
  readonly #t0: number;
  #last = -Infinity;
  #line = "";
  #drawn = false;
  #drawnStep = -1;
  #step: number;
  #stats: ProgressStats = {};

  /**
   * Starts the display; nothing is printed until the first update.
   *
   * @param options See {@linkcode ProgressOptions}; only `total` is required.
   */
  constructor(options: ProgressOptions) {
    this.#o = {
      start: 0,
      tty: Deno.stdout.isTerminal(),
      write: (t) => {
        const b = encoder.encode(t);
        for (let n = 0; n < b.length;) n += Deno.stdout.writeSync(b.subarray(n));
      },
      plainEveryMs: 10_000,
      redrawEveryMs: 100,
      width: 24,
      now: () => performance.now(),
      ...options,
    };
    this.#step = this.#o.start;
    this.#t0 = this.#o.now();
  }

  /**
   * The current status line (no ANSI codes).
   *
   * @returns E.g. `"450/1000 45% | loss 3.412 | lr 3.00e-4 | 12.3k tok/s | ETA 4m10s"`.
   * @example
   * ```ts
   * bar.text();
   * ```
   */
  text(): string {
    const { total, start } = this.#o;
    const step = this.#step, s = this.#stats;
    const pct = total > 0 ? Math.floor((100 * step) / total) : 100;
    const parts = [`${String(step).padStart(String(total).length)}/${total} ${pct}%`];
    if (s.loss !== undefined) parts.push(`loss ${s.loss.toFixed(3)}`);
    if (s.lr !== undefined) parts.push(`lr ${s.lr.toExponential(2)}`);
    if (s.tokensPerSec !== undefined) parts.push(`${formatCount(s.tokensPerSec)} tok/s`);
    for (const [k, v] of Object.entries(s.extra ?? {})) {
      parts.push(`${k} ${typeof v === "number" ? Number(v.toPrecision(4)) : v}`);
    }
    const done = step - start, elapsed = (this.#o.now() - this.#t0) / 1000;
    const eta = done > 0 ? ((total - step) * elapsed) / done : NaN;
    parts.push(step >= total ? `took ${formatDuration(elapsed)}` : `ETA ${formatDuration(eta)}`);
    return parts.join(" | ");
  }

  #bar(): string {
    const { width, total } = this.#o;
    const filled = total > 0 ? Math.min(width, Math.round((width * this.#step) / total)) : width;
    return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] `;
  }

  /**
   * Records progress and redraws (terminal) or prints a line when due (plain).
   *
   * @param step Steps done.
   * @param stats Loss, lr, throughput, extras; fields not given keep their last value.
   * @example
   * ```ts
   * bar.update(450, { loss: 3.412, lr: 3e-4, tokensPerSec: 12300 });
   * ```
   */
  update(step: number, stats: ProgressStats = {}): void {
    this.#step = step;
    this.#stats = { ...this.#stats, ...stats };
    const now = this.#o.now();
    const first = this.#last === -Infinity;
    const every = this.#o.tty ? this.#o.redrawEveryMs : this.#o.plainEveryMs;
    if (!first && now - this.#last < every && step < this.#o.total) return;
    this.#last = now;
    this.#draw();
  }

  #draw(): void {
    this.#drawnStep = this.#step;
    if (this.#o.tty) {
      this.#line = this.#bar() + this.text();
      this.#o.write(`\r\x1b[2K${this.#line}`);
      this.#drawn = true;
    } else {
      this.#o.write(`step ${this.text()}\n`);
    }
  }

  /**
   * Prints a line (e.g. a val loss or a checkpoint notice) without breaking the bar: in a
   * terminal the bar is erased, the line printed, and the bar redrawn below it.
   *
   * @param line The text.
   * @example
   * ```ts
   * bar.log("saved runs/demo/step-000500");
   * ```
   */
  log(line: string): void {
    if (this.#o.tty && this.#drawn) this.#o.write(`\r\x1b[2K${line}\n${this.#line}`);
    else this.#o.write(`${line}\n`);
  }

  /**
   * Draws the final state and ends the line.
   *
   * @example
   * ```ts
   * bar.finish();
   * ```
   */
  finish(): void {
    if (this.#o.tty || this.#drawnStep !== this.#step) this.#draw();
    if (this.#o.tty) this.#o.write("\n");
    this.#drawn = false;
  }
}
