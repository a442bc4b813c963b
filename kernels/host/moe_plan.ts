/**
 * CPU-backend implementation of the MoE dispatch plan (`../moe_plan.ts`).
 *
 *     plan: indices [N * K] -> counts [E], offsets [E + 1], perm, inv [N * K]
 *
 * A counting sort in slot order: the same permutation as the kernel's, bit for bit.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { i32 } from "./_views.ts";

/**
 * The dispatch plan of `indices` for E experts: a stable counting sort of the slots by expert.
 * Entries outside [0, E) are not counted nor placed, as in the kernel.
 */
export function hostDispatchPlan(
  plan: { counts: Tensor; offsets: Tensor; perm: Tensor; inv: Tensor },
  indices: Tensor,
  E: number,
): void {
  const idx = i32(indices), counts = i32(plan.counts), offsets = i32(plan.offsets);
  const perm = i32(plan.perm), inv = i32(plan.inv), nk = idx.length;
  counts.fill(0);
  for (let x = 0; x < nk; x++) {
    const e = idx[x];
    if (e >= 0 && e < E) counts[e]++;
  }
  let off = 0;
  for (let e = 0; e < E; e++) {
    offsets[e] = off;
    off += counts[e];
  }
  offsets[E] = off;
  // the next free row of each expert: offsets[e] + placed so far, kept in a scratch copy
  const next = nextScratch(E);
  next.set(offsets.subarray(0, E));
  for (let x = 0; x < nk; x++) {
    const e = idx[x];
    if (!(e >= 0 && e < E)) continue;
    const pos = next[e]++;
    perm[pos] = x;
    inv[x] = pos;
  }
}

let nextRows = new Int32Array(0);
function nextScratch(E: number): Int32Array {
  if (nextRows.length < E) nextRows = new Int32Array(E);
  return nextRows;
}
