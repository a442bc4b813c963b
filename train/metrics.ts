/**
 * The metrics log of a run: `metrics.jsonl`, one JSON object per logged step (train) or
 * evaluation (val), append-only. Lines are buffered and written as they come; `sync()` (called at
 * each checkpoint) makes them durable. On resume, records newer than the checkpoint's step are
 * dropped (they describe steps that will be redone), and a line torn by a crash is dropped too,
 * so the log reads as one continuous run.
 *
 * @module
 */
import { atomicWriteFile, exists } from "./_fs.ts";
import { JsonlWriter, readJsonl } from "./jsonl.ts";

/** One log line. Fields beyond these are kept as given. */
export interface MetricsRecord {
  /** Optimizer steps done when logged. */
  step: number;
  /** `train` for a training-step line, `val` for an evaluation (default train). */
  kind?: "train" | "val";
  /** The total loss that was minimized (train) or the mean val loss (val). */
  loss?: number;
  /** Loss terms, e.g. `{ ce: 3.1, mtp: 3.4, balance: 0.01 }` or DPO's `{ dpo, margin }`. */
  losses?: Record<string, number>;
  /** Learning rate of the step. */
  lr?: number;
  /** Global gradient norm before clipping. */
  gradNorm?: number;
  /** Training throughput over the last log interval. */
  tokensPerSec?: number;
  /** Training tokens consumed so far. */
  tokensSeen?: number;
  /** Task statistics computed on the host, e.g. GRPO's `reward`, `rewards/answer/mean`. */
  stats?: Record<string, number>;
  /** Expert-load summary over MoE layers: fraction of tokens of the least/most loaded expert. */
  expertLoad?: { min: number; max: number; [k: string]: number };
  /** Unix time in seconds (filled in by {@linkcode MetricsLog.log} when absent). */
  time?: number;
  /** Anything else. */
  [extra: string]: unknown;
}

/**
 * Reads a metrics file. Malformed lines (a line torn by a crash) are skipped.
 *
 * @param path The `metrics.jsonl` file.
 * @returns The records in file order; empty when the file does not exist.
 * @example
 * ```ts
 * const records = await readMetrics("runs/demo/metrics.jsonl");
 * const last = records.at(-1)?.loss;
 * ```
 */
export async function readMetrics(path: string): Promise<MetricsRecord[]> {
  if (!(await exists(path))) return [];
  const out: MetricsRecord[] = [];
  const check = (v: unknown) =>
    typeof v === "object" && v !== null && typeof (v as MetricsRecord).step === "number"
      ? undefined
      : 'expected an object with a numeric "step"';
  for await (const { value } of readJsonl<MetricsRecord>(path, { check, skipBad: true })) {
    out.push(value);
  }
  return out;
}

/**
 * An append-only metrics log.
 *
 * @example
 * ```ts
 * const log = await MetricsLog.open("runs/demo/metrics.jsonl", { resumeStep: ck?.state.step });
 * await log.log({ step: 10, loss: 3.2, lr: 3e-4, gradNorm: 0.8, tokensPerSec: 12000 });
 * await log.sync(); // at a checkpoint
 * await log.close();
 * ```
 */
export class MetricsLog {
  readonly #w: JsonlWriter;

  private constructor(w: JsonlWriter, readonly path: string) {
    this.#w = w;
  }

  /**
   * Opens (or creates) the log for appending.
   *
   * @param path The `metrics.jsonl` file.
   * @param options `resumeStep`: keep only records with `step <= resumeStep` (rewritten
   *   atomically); omit for a fresh run or to keep everything. `fresh: true` empties the file.
   * @returns The log.
   * @throws When the file cannot be opened (the OS error names it).
   * @example
   * ```ts
   * const log = await MetricsLog.open("runs/demo/metrics.jsonl", { resumeStep: 500 });
   * ```
   */
  static async open(
    path: string,
    options: { resumeStep?: number; fresh?: boolean } = {},
  ): Promise<MetricsLog> {
    if (options.fresh) {
      await atomicWriteFile(path, new Uint8Array());
    } else if (options.resumeStep !== undefined && (await exists(path))) {
      const keep = (await readMetrics(path)).filter((r) => r.step <= options.resumeStep!);
      const text = keep.map((r) => JSON.stringify(r) + "\n").join("");
      await atomicWriteFile(path, new TextEncoder().encode(text));
    }
    return new MetricsLog(await JsonlWriter.open(path, { append: true }), path);
  }

  /**
   * Appends one record (written at once, fsynced by {@linkcode MetricsLog.sync}).
   *
   * @param record The metrics; `time` is set to now when absent.
   * @throws {TypeError} when the record is not JSON-serializable or the log is closed.
   * @example
   * ```ts
   * await log.log({ step: 100, kind: "val", loss: 3.05 });
   * ```
   */
  async log(record: MetricsRecord): Promise<void> {
    await this.#w.write({ ...record, time: record.time ?? Date.now() / 1000 });
    await this.#w.flush(); // visible to `tail -f` at once; durable only at sync()
  }

  /**
   * Writes buffered records and fsyncs the file.
   *
   * @example
   * ```ts
   * await log.sync();
   * ```
   */
  async sync(): Promise<void> {
    await this.#w.sync();
  }

  /**
   * Syncs and closes the log.
   *
   * @example
   * ```ts
   * await log.close();
   * ```
   */
  async close(): Promise<void> {
    await this.#w.close();
  }
}
