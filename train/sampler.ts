/**
 * Batch sampling over a split's token stream for next-token prediction.
 *
 * The stream of N tokens is cut into W = ceil((N - 1) / T) windows of T + 1 tokens; window k
 * starts at token kT, so consecutive windows overlap by exactly one token (the last target of one
 * is the first input of the next). Inputs are window[0..T), targets window[1..T+1). Every token
 * but the first is therefore a target exactly once per epoch; the last window is padded where the
 * stream ends, with a zero loss mask. Each epoch visits the windows in a fresh order, a
 * Fisher-Yates shuffle seeded by (seed, epoch), B windows per batch; the last batch of an epoch
 * is filled up with fully masked rows so every batch has the same (B, T) shape.
 *
 * The position (epoch, batch index) plus the settings it depends on is the whole state: saving
 * it in a checkpoint and restoring it continues with the identical batches.
 *
 * Shape legend: B batch rows, T sequence length.
 *
 * Left out: document-aware masking (attention crosses the eos between documents, as in GPT-style
 * packed pretraining), multiple shards per split.
 *
 * @module
 */
import { Rng } from "../random/rng.ts";

/** A batch of B windows. */
export interface Batch {
  /** (B, T) input ids. */
  inputs: Uint32Array;
  /** (B, T) target ids: the next token of each input. */
  targets: Uint32Array;
  /** (B, T) 1 where the target counts in the loss, 0 on padding. */
  mask: Float32Array;
  /** Rows that hold a real window (the rest are padding, only in an epoch's last batch). */
  rows: number;
  /** Positions with mask 1. */
  targetTokens: number;
  /** The epoch this batch belongs to (0-based). */
  epoch: number;
  /** Its index within the epoch (0-based). */
  index: number;
}

/** Settings of a {@linkcode BatchSampler}. */
export interface SamplerOptions {
  /** Rows per batch. */
  B: number;
  /** Sequence length (inputs per row). */
  T: number;
  /** Seed of the per-epoch shuffles. */
  seed: number;
  /** Id written at padded positions (masked out; default 0). */
  padId?: number;
}

/** The sampler's serializable position, with the settings it is only valid for. */
export interface SamplerState {
  /** Format version (1). */
  format: 1;
  /** Shuffle seed. */
  seed: number;
  /** Rows per batch. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Tokens in the split. */
  tokens: number;
  /** Epoch of the next batch. */
  epoch: number;
  /** Index of the next batch within its epoch. */
  index: number;
}

/** Thrown for bad sampler settings or a state that does not fit this sampler. */
export class SamplerError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do.
   */
  constructor(message: string) {
    super(message);
    this.name = "SamplerError";
  }
}

/**
 * How many windows of T + 1 tokens (overlapping by one) cover a stream of n tokens.
 *
 * @param n Tokens in the stream.
 * @param T Sequence length.
 * @returns ceil((n - 1) / T), or 0 when n < 2.
 * @example
 * ```ts
 * windowCount(9, 4); // 2: tokens [0..4] and [4..8]
 * windowCount(10, 4); // 3: the last window holds one target and three padded positions
 * ```
 */
export function windowCount(n: number, T: number): number {
  return n < 2 ? 0 : Math.ceil((n - 1) / T);
}

function checkPositiveInt(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new SamplerError(`sampler: ${name} must be a positive integer, got ${value}`);
  }
}

/**
 * Fills row `r` of a batch with window `w` of `tokens` (w < 0: a padding row); returns the
 * number of real targets.
 */
function fillRow(
  batch: Batch,
  r: number,
  tokens: ArrayLike<number>,
  w: number,
  T: number,
  padId: number,
): number {
  const start = w * T;
  const L = w < 0 ? 0 : Math.min(T, tokens.length - 1 - start); // real targets in this window
  const o = r * T;
  for (let t = 0; t < L; t++) {
    batch.inputs[o + t] = tokens[start + t];
    batch.targets[o + t] = tokens[start + t + 1];
    batch.mask[o + t] = 1;
  }
  for (let t = L; t < T; t++) {
    batch.inputs[o + t] = padId;
    batch.targets[o + t] = padId;
  }
  return L;
}

function emptyBatch(B: number, T: number, epoch: number, index: number): Batch {
  return {
    inputs: new Uint32Array(B * T),
    targets: new Uint32Array(B * T),
    mask: new Float32Array(B * T),
    rows: 0,
    targetTokens: 0,
    epoch,
    index,
  };
}

/**
 * Yields training batches over a split in a seeded order, epoch after epoch, forever.
 *
 * @example
 * ```ts
 * const { tokens } = await readShard("data/train.bin");
 * const sampler = new BatchSampler(tokens, { B: 8, T: 256, seed: 1 });
 * const batch = sampler.next(); // batch.inputs: (8, 256)
 * const saved = sampler.state(); // into the checkpoint
 * const resumed = new BatchSampler(tokens, { B: 8, T: 256, seed: 1 });
 * resumed.restore(saved); // resumed.next() equals sampler.next()
 * ```
 */
export class BatchSampler {
  /** Windows per epoch. */
  readonly windows: number;
  /** Batches per epoch: ceil(windows / B). */
  readonly batchesPerEpoch: number;
  readonly #tokens: ArrayLike<number>;
  readonly #opts: Required<SamplerOptions>;
  #epoch = 0;
  #index = 0;
  #order: Uint32Array | null = null;
  #orderEpoch = -1;

  /**
   * Makes a sampler positioned at epoch 0, batch 0.
   *
   * @param tokens The split's token stream (e.g. a shard's ids); not copied, do not mutate.
   * @param options `B`, `T`, `seed`, optional `padId`.
   * @throws {SamplerError} for a non-positive B or T, or a stream with fewer than 2 tokens.
   */
  constructor(tokens: ArrayLike<number>, options: SamplerOptions) {
    checkPositiveInt(options.B, "B (batch size)");
    checkPositiveInt(options.T, "T (sequence length)");
    if (!Number.isInteger(options.seed)) {
      throw new SamplerError(`sampler: seed must be an integer, got ${options.seed}`);
    }
    if (tokens.length < 2) {
      throw new SamplerError(
        `sampler: the split has ${tokens.length} tokens; at least 2 are needed for one target ` +
          `(prepare more data or lower --val-fraction)`,
      );
    }
    this.#tokens = tokens;
    this.#opts = { padId: 0, ...options };
    this.windows = windowCount(tokens.length, options.T);
    this.batchesPerEpoch = Math.ceil(this.windows / options.B);
  }

  /** Epoch of the next batch. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Index of the next batch within its epoch. */
  get index(): number {
    return this.#index;
  }

  /**
   * The window order of an epoch: a permutation of [0, windows) seeded by (seed, epoch).
   *
   * @param epoch The epoch.
   * @returns The window indices in visiting order (a cached array: do not mutate).
   * @example
   * ```ts
   * sampler.order(0)[0]; // the first window of epoch 0
   * ```
   */
  order(epoch: number): Uint32Array {
    if (this.#orderEpoch !== epoch || this.#order === null) {
      const order = new Uint32Array(this.windows);
      for (let i = 0; i < order.length; i++) order[i] = i;
      new Rng(this.#opts.seed, epoch).shuffle(order);
      this.#order = order;
      this.#orderEpoch = epoch;
    }
    return this.#order;
  }

  /**
   * The next batch; moves to the next epoch (a new order) after the last batch of one.
   *
   * @returns A (B, T) batch with inputs, targets and loss mask.
   * @example
   * ```ts
   * const { inputs, targets, mask } = sampler.next();
   * ```
   */
  next(): Batch {
    const { B, T, padId } = this.#opts;
    const order = this.order(this.#epoch);
    const batch = emptyBatch(B, T, this.#epoch, this.#index);
    const first = this.#index * B;
    const rows = Math.min(B, this.windows - first);
    for (let r = 0; r < B; r++) {
      const w = r < rows ? order[first + r] : -1;
      batch.targetTokens += fillRow(batch, r, this.#tokens, w, T, padId);
    }
    batch.rows = rows;
    this.#index++;
    if (this.#index === this.batchesPerEpoch) {
      this.#index = 0;
      this.#epoch++;
    }
    return batch;
  }

  /**
   * The position and settings, to store in a checkpoint.
   *
   * @returns A JSON-serializable state.
   * @example
   * ```ts
   * JSON.stringify(sampler.state()); // {"format":1,"seed":1,"B":8,"T":256,...}
   * ```
   */
  state(): SamplerState {
    const { seed, B, T } = this.#opts;
    return {
      format: 1,
      seed,
      B,
      T,
      tokens: this.#tokens.length,
      epoch: this.#epoch,
      index: this.#index,
    };
  }

  /**
   * Moves to a saved position. The settings saved with it must match this sampler's.
   *
   * @param state A state from {@linkcode BatchSampler.state} (e.g. parsed from `state.json`).
   * @throws {SamplerError} naming the field that differs (a different seed, B, T or split size
   *   would not continue the same sequence) or that is malformed.
   * @example
   * ```ts
   * sampler.restore(checkpoint.state.sampler as SamplerState);
   * ```
   */
  restore(state: SamplerState): void {
    if (typeof state !== "object" || state === null || state.format !== 1) {
      throw new SamplerError(
        `sampler state: expected an object with format 1, got ${JSON.stringify(state)}`,
      );
    }
    const mine = this.state();
    const hints: Record<string, string> = {
      seed: "--seed",
      B: "the batch size",
      T: "the sequence length",
      tokens: "the same train.bin",
    };
    for (const key of ["seed", "B", "T", "tokens"] as const) {
      if (state[key] !== mine[key]) {
        throw new SamplerError(
          `sampler state: saved with ${key}=${state[key]} but this run has ${key}=${mine[key]}; ` +
            `resume with ${hints[key]} of the saved run, or start a fresh run`,
        );
      }
    }
    for (const key of ["epoch", "index"] as const) {
      const v = state[key];
      if (!Number.isInteger(v) || v < 0 || (key === "index" && v >= this.batchesPerEpoch)) {
        throw new SamplerError(`sampler state: bad ${key} ${JSON.stringify(v)}`);
      }
    }
    this.#epoch = state.epoch;
    this.#index = state.index;
  }
}

/**
 * Iterates a (validation) split once, in stream order, as (B, T) batches of the same windowing
 * as {@linkcode BatchSampler}; every token but the first is a target exactly once.
 *
 * @param tokens The split's token stream.
 * @param options `B`, `T`, optional `padId`, and `maxBatches` to stop early (a cheap estimate).
 * @returns A generator of batches (epoch 0).
 * @throws {SamplerError} for a non-positive B or T.
 * @example
 * ```ts
 * let sum = 0, n = 0;
 * for (const b of valBatches(val.tokens, { B: 8, T: 256 })) n += b.targetTokens;
 * ```
 */
export function* valBatches(
  tokens: ArrayLike<number>,
  options: { B: number; T: number; padId?: number; maxBatches?: number },
): Generator<Batch> {
  const { B, T } = options;
  checkPositiveInt(B, "B (batch size)");
  checkPositiveInt(T, "T (sequence length)");
  const padId = options.padId ?? 0;
  const W = windowCount(tokens.length, T);
  const total = Math.min(Math.ceil(W / B), options.maxBatches ?? Infinity);
  for (let b = 0; b < total; b++) {
    const batch = emptyBatch(B, T, 0, b);
    const rows = Math.min(B, W - b * B);
    for (let r = 0; r < B; r++) {
      batch.targetTokens += fillRow(batch, r, tokens, r < rows ? b * B + r : -1, T, padId);
    }
    batch.rows = rows;
    yield batch;
  }
}
