/**
 * Internal: a binary max-heap of BPE pair candidates keyed by (count desc, tie key asc), on typed
 * arrays. Entries are never updated in place; the trainer pushes a fresh entry when a pair's count
 * grows and discards stale ones when they surface (lazy invalidation).
 *
 * @module
 */

/** Max-heap of `(count, tie, id)`: larger count first, then smaller tie key. */
export class PairHeap {
  #count = new Float64Array(1024);
  #tie = new Float64Array(1024);
  #id = new Int32Array(1024);
  #size = 0;

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /** Count of the top entry (undefined behaviour when empty). */
  get topCount(): number {
    return this.#count[0];
  }

  /** Id of the top entry (undefined behaviour when empty). */
  get topId(): number {
    return this.#id[0];
  }

  /**
   * Adds an entry.
   *
   * @param count Priority (larger first).
   * @param tie Tie-break key (smaller first among equal counts).
   * @param id Payload.
   */
  push(count: number, tie: number, id: number): void {
    if (this.#size === this.#id.length) this.#grow();
    const c = this.#count, t = this.#tie, ids = this.#id;
    let i = this.#size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (c[parent] > count || (c[parent] === count && t[parent] <= tie)) break;
      c[i] = c[parent];
      t[i] = t[parent];
      ids[i] = ids[parent];
      i = parent;
    }
    c[i] = count;
    t[i] = tie;
    ids[i] = id;
  }

  /** Removes the top entry. */
  pop(): void {
    const n = --this.#size;
    if (n <= 0) return;
    const c = this.#count, t = this.#tie, ids = this.#id;
    const count = c[n], tie = t[n], id = ids[n];
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && (c[right] > c[child] || (c[right] === c[child] && t[right] < t[child]))) {
        child = right;
      }
      if (count > c[child] || (count === c[child] && tie <= t[child])) break;
      c[i] = c[child];
      t[i] = t[child];
      ids[i] = ids[child];
      i = child;
    }
    c[i] = count;
    t[i] = tie;
    ids[i] = id;
  }

  #grow(): void {
    const cap = this.#id.length * 2;
    const c = new Float64Array(cap), t = new Float64Array(cap), ids = new Int32Array(cap);
    c.set(this.#count);
    t.set(this.#tie);
    ids.set(this.#id);
    this.#count = c;
    this.#tie = t;
    this.#id = ids;
  }
}
