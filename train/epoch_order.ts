/**
 * Shuffled passes over a fixed set of items: the order a fine-tuning task (SFT conversations, DPO
 * pairs, GRPO prompts) visits its data. The order of pass `e` is a function of (seed, e) alone, so
 * a run resumed from a saved {@linkcode EpochPosition} visits the same items in the same order.
 *
 * @module
 */
import { Rng } from "../random/rng.ts";

/** Where an {@linkcode EpochOrder} is; saved in checkpoints. */
export interface EpochPosition {
  /** Completed passes over the items. */
  epoch: number;
  /** Items of this pass's order already used. */
  cursor: number;
}

/**
 * Indices 0..size-1 in a new shuffled order every pass.
 *
 * @example
 * ```ts
 * const order = new EpochOrder(5, 7);
 * order.take(3); // three indices of pass 0
 * order.take(3); // the last two of pass 0, then the first of pass 1
 * ```
 */
export class EpochOrder {
  #order: Int32Array;
  #epoch = 0;
  #cursor = 0;

  /**
   * An order over `size` items.
   *
   * @param size How many items (at least 1).
   * @param seed The shuffle seed.
   * @throws {RangeError} When `size` is not a positive integer.
   */
  constructor(readonly size: number, readonly seed: number) {
    if (!Number.isInteger(size) || size < 1) {
      throw new RangeError(`EpochOrder: size must be a positive integer, got ${size}`);
    }
    this.#order = this.#shuffled(0);
  }

  /** The order of pass `epoch`. */
  #shuffled(epoch: number): Int32Array {
    return new Rng(this.seed, epoch).shuffle(Int32Array.from({ length: this.size }, (_, i) => i));
  }

  /** Starts the next pass when this one is used up. */
  #wrap(): void {
    if (this.#cursor < this.#order.length) return;
    this.#epoch++;
    this.#cursor = 0;
    this.#order = this.#shuffled(this.#epoch);
  }

  /** The next `k` indices, running into the next pass (and its new order) where one ends. */
  take(k: number): number[] {
    const out: number[] = [];
    while (out.length < k) {
      this.#wrap();
      out.push(this.#order[this.#cursor++]);
    }
    return out;
  }

  /**
   * The indices left in this pass, in order, starting a new pass first when this one is used up;
   * the position does not move ({@linkcode advance} moves it by what was used).
   */
  remaining(): Int32Array {
    this.#wrap();
    return this.#order.subarray(this.#cursor);
  }

  /** Moves past `k` indices of {@linkcode remaining} (at most to the end of this pass). */
  advance(k: number): void {
    this.#cursor = Math.min(this.#cursor + k, this.#order.length);
  }

  /** Where the order is. */
  position(): EpochPosition {
    return { epoch: this.#epoch, cursor: this.#cursor };
  }

  /** Goes back to a saved position. */
  seek(p: EpochPosition): void {
    this.#epoch = p.epoch;
    this.#cursor = p.cursor;
    this.#order = this.#shuffled(p.epoch);
  }
}
