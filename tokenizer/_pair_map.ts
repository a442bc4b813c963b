/**
 * Internal: a hash map from a pair of small non-negative integers `(a, b)` to a non-negative
 * integer, on typed arrays (open addressing, linear probing). BPE training and encoding look up
 * token pairs millions of times; a JS `Map` keyed by `a * V + b` stops being fast once keys leave
 * the small-integer range, this does not.
 *
 * @module
 */

const EMPTY = -1;

/** Map from `(a, b)` (each in [0, 2^31)) to a value in [0, 2^31). */
export class PairMap {
  #keyA: Int32Array;
  #keyB: Int32Array;
  #value: Int32Array;
  #mask: number;
  #size = 0;

  /**
   * @param capacityHint Expected number of entries; the table grows past it as needed.
   */
  constructor(capacityHint = 1024) {
    let cap = 16;
    while (cap < capacityHint * 2) cap *= 2;
    this.#keyA = new Int32Array(cap).fill(EMPTY);
    this.#keyB = new Int32Array(cap);
    this.#value = new Int32Array(cap);
    this.#mask = cap - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /**
   * Looks up a pair.
   *
   * @param a Left element.
   * @param b Right element.
   * @returns The value, or -1 when the pair is absent.
   */
  get(a: number, b: number): number {
    const keyA = this.#keyA, keyB = this.#keyB, mask = this.#mask;
    let i = hash(a, b) & mask;
    for (;;) {
      const k = keyA[i];
      if (k === EMPTY) return -1;
      if (k === a && keyB[i] === b) return this.#value[i];
      i = (i + 1) & mask;
    }
  }

  /**
   * Inserts or overwrites a pair.
   *
   * @param a Left element.
   * @param b Right element.
   * @param value Value to store.
   */
  set(a: number, b: number, value: number): void {
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#grow();
    const keyA = this.#keyA, keyB = this.#keyB, mask = this.#mask;
    let i = hash(a, b) & mask;
    for (;;) {
      const k = keyA[i];
      if (k === EMPTY) {
        keyA[i] = a;
        keyB[i] = b;
        this.#value[i] = value;
        this.#size++;
        return;
      }
      if (k === a && keyB[i] === b) {
        this.#value[i] = value;
        return;
      }
      i = (i + 1) & mask;
    }
  }

  #grow(): void {
    const oldA = this.#keyA, oldB = this.#keyB, oldV = this.#value;
    const cap = (this.#mask + 1) * 2;
    this.#keyA = new Int32Array(cap).fill(EMPTY);
    this.#keyB = new Int32Array(cap);
    this.#value = new Int32Array(cap);
    this.#mask = cap - 1;
    this.#size = 0;
    for (let i = 0; i < oldA.length; i++) {
      if (oldA[i] !== EMPTY) this.set(oldA[i], oldB[i], oldV[i]);
    }
  }
}

function hash(a: number, b: number): number {
  let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) >>> 0;
}
