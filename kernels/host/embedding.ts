/**
 * CPU-backend implementations of the embedding lookup and its deterministic backward
 * (`../embedding.ts`).
 *
 * Legend: V vocabulary rows, D embedding dim, N tokens.
 *
 *     forward:  out [N, D] = table [V, D] gathered at ids [N]   (zero rows for ids outside [0, V))
 *     backward: dTable [V, D] (+)= sum over tokens n with ids[n] = v of dout[n, :], in token order
 *
 * The backward mirrors the WGSL passes: a counting sort gives each id its tokens in token order
 * (counts, exclusive starts, the token list), then every row v sums its tokens' gradients into
 * an f32 row in that order, exactly the f32 sums the GPU kernel forms, and writes (or adds) it.
 * Every row of dTable is written, zeros for unused ids.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/** Scratch of the backward (grown, never shrunk): starts [V + 1], token list [N], a row [D]. */
let starts = new Int32Array(0), list = new Int32Array(0), row = new Float32Array(0);

/** `out[n, :] = table[ids[n], :]`, zeros where the id is outside [0, V). */
export function hostEmbedding(out: Tensor, table: Tensor, ids: Tensor, D: number): void {
  const o = f32(out), tb = f32(table), id = i32(ids), N = id.length, V = tb.length / D;
  for (let n = 0; n < N; n++) {
    const v = id[n], ob = n * D;
    if (v < 0 || v >= V) o.fill(0, ob, ob + D);
    else if (D >= 32) o.set(tb.subarray(v * D, v * D + D), ob);
    else for (let j = 0; j < D; j++) o[ob + j] = tb[v * D + j];
  }
}

/** `dTable[v, :] (+)= sum_{n: ids[n] = v} dout[n, :]`, in token order, in f32. */
export function hostEmbeddingBackward(
  dTable: Tensor,
  dout: Tensor,
  ids: Tensor,
  opts: { V: number; D: number; accumulate: boolean },
): void {
  const g = f32(dTable), d = f32(dout), id = i32(ids), N = id.length;
  const { V, D, accumulate: acc } = opts;
  if (starts.length < V + 1) starts = new Int32Array(V + 1);
  if (list.length < N) list = new Int32Array(N);
  if (row.length < D) row = new Float32Array(D);
  // counting sort: counts at starts[v + 1], then exclusive starts, then the token list
  starts.fill(0, 0, V + 1);
  for (let n = 0; n < N; n++) {
    const v = id[n];
    if (v >= 0 && v < V) starts[v + 1]++;
  }
  for (let v = 0; v < V; v++) starts[v + 1] += starts[v];
  for (let n = 0; n < N; n++) {
    const v = id[n];
    if (v >= 0 && v < V) list[starts[v]++] = n;
  }
  // starts[v] is now the end of v's tokens (the start of v + 1's)
  let k0 = 0;
  for (let v = 0; v < V; v++) {
    const k1 = starts[v], gb = v * D;
    if (k0 === k1) {
      if (!acc) g.fill(0, gb, gb + D);
      continue;
    }
    // the first token's row, then the others added in token order (f32 stores round each sum)
    const first = list[k0] * D;
    for (let j = 0; j < D; j++) row[j] = 0 + d[first + j]; // 0 + -0 is +0, as in a sum from 0
    for (let k = k0 + 1; k < k1; k++) {
      const b = list[k] * D;
      for (let j = 0; j < D; j++) row[j] += d[b + j];
    }
    if (acc) { for (let j = 0; j < D; j++) g[gb + j] = g[gb + j] + row[j]; }
    else for (let j = 0; j < D; j++) g[gb + j] = row[j];
    k0 = k1;
  }
}
