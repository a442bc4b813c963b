/**
 * Row-kernel benchmark: GPU time per call of the row-wise kernels (rmsnorm, cross-entropy,
 * softmax, row reductions) and the small passes around them (bias reduce, column copy, the
 * embedding gather and its backward, AdamW, the gradient sum of squares) at the shapes a nano training step runs (B x T = 1024 rows,
 * dim 128, latent 64, vocab 6400).
 *
 *     deno run -A bench/rows.ts [--reps 10] [--rounds 3] [--only NAME,...]
 *
 * Each case runs `reps` times back to back under kernel timestamps (`Gpu.startProfiling`), in
 * `rounds` rounds; the best round counts. The peer, measured in the same round, is one
 * elementwise pass (`ew_scale`: one read, one write) over the case's largest tensor: `x peer`
 * says how many such passes the case costs, so 1-3 is the memory-bound floor for most cases.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getGpu } from "../kernels/gpu.ts";
import { Tensor } from "../kernels/tensor.ts";
import { rmsnormBackward, rmsnormForward } from "../kernels/rmsnorm.ts";
import { crossEntropyBackward, crossEntropyForward } from "../kernels/cross_entropy.ts";
import { softmaxBackward, softmaxForward } from "../kernels/softmax.ts";
import { reduceForward } from "../kernels/reduce.ts";
import { ewForward, sumToBias } from "../kernels/elementwise.ts";
import { copyColumns } from "../kernels/copy.ts";
import { adamw, sumSquares } from "../kernels/optim.ts";
import { embeddingBackward, embeddingForward } from "../kernels/embedding.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    reps: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    only: { type: "string" },
  },
});
const reps = Number(a.reps), rounds = Number(a.rounds);
const only = a.only ? new Set(a.only.split(",")) : null;
const gpu = await getGpu();

const rand = (n: number, seed: number) =>
  Float32Array.from(
    { length: n },
    (_, i) => (Math.imul(i + seed, 2654435761) >>> 0) / 2 ** 32 * 2 - 1,
  );
const t = (shape: number[], seed = 1) =>
  Tensor.from(gpu, rand(shape.reduce((x, y) => x * y, 1), seed), shape);

/** One case: `run` encodes one call; `n` elements of its largest tensor (for the peer). */
interface Case {
  name: string;
  n: number;
  run: () => void;
}

const R = 1024, D = 128, L = 64, V = 6400;
const cases: Case[] = [];
for (const C of [D, L]) {
  const x = t([R, C]), w = t([C], 2), y = t([R, C]), rr = t([R]), dy = t([R, C], 3);
  const dx = t([R, C]), dw = t([C]);
  cases.push({ name: `rmsnorm ${R}x${C}`, n: R * C, run: () => rmsnormForward(y, rr, x, w) });
  cases.push({
    name: `rmsnorm_bwd ${R}x${C}`,
    n: R * C,
    run: () => rmsnormBackward(dx, dw, dy, x, w, rr, { accumulateX: true, accumulateW: true }),
  });
}
{
  const logits = t([R, V]), dl = t([R, V]);
  const tg = Tensor.from(gpu, Int32Array.from({ length: R }, (_, i) => (i * 37) % V), [R], "i32");
  const bufs = { rowLoss: t([R]), lse: t([R]), loss: t([1]), stats: t([2]) };
  const one = Tensor.from(gpu, new Float32Array([1]), [1]);
  cases.push({
    name: `ce_fwd ${R}x${V}`,
    n: R * V,
    run: () => crossEntropyForward(bufs, logits, tg),
  });
  cases.push({
    name: `ce_bwd ${R}x${V}`,
    n: R * V,
    run: () =>
      crossEntropyBackward(dl, one, { logits, targets: tg, lse: bufs.lse, stats: bufs.stats }),
  });
}
{
  const S = 4096, C = 128, x = t([S, C]), y = t([S, C]), dy = t([S, C], 2), dx = t([S, C]);
  cases.push({ name: `softmax ${S}x${C}`, n: S * C, run: () => softmaxForward(y, x) });
  cases.push({ name: `softmax_bwd ${S}x${C}`, n: S * C, run: () => softmaxBackward(dx, dy, y) });
  const out = t([S]);
  cases.push({
    name: `reduce_sum ${S}x${C}`,
    n: S * C,
    run: () => reduceForward(out, x, { op: "sum" }),
  });
}
{
  const g = t([R, D]), b = t([D]);
  cases.push({ name: `bias_reduce ${R}x${D}`, n: R * D, run: () => sumToBias(b, g, true) });
  const q = t([R, 96]), pe = t([R, 32]);
  cases.push({
    name: `copy_columns ${R}x96->32`,
    n: R * 32,
    run: () => copyColumns(pe, q, { xOffset: 64, len: 32 }),
  });
}
{
  const table = t([V, D]), h = t([R, D]), dTable = t([V, D]);
  const ids = Tensor.from(
    gpu,
    Int32Array.from({ length: R }, (_, i) => (i * 7919) % V),
    [R],
    "i32",
  );
  cases.push({
    name: `embedding ${R}x${D}`,
    n: R * D,
    run: () => embeddingForward(h, table, ids),
  });
  cases.push({
    name: `embedding_bwd ${V}x${D}`,
    n: V * D,
    run: () => embeddingBackward(dTable, h, ids, { accumulate: true }),
  });
}
{
  const P = 2_344_496, p = t([P]), grad = t([P], 2), m = t([P], 3), v = t([P], 4);
  for (const x of [m, v]) x.dispose();
  const mz = Tensor.zeros(gpu, [P]), vz = Tensor.zeros(gpu, [P]);
  cases.push({
    name: `adamw ${P}`,
    n: P,
    run: () => adamw(p, { grad, m: mz, v: vz }, { lr: 1e-9, step: 1, wd: 0.1 }),
  });
  const s = t([1]);
  cases.push({ name: `sumsq ${P}`, n: P, run: () => sumSquares(s, [{ t: grad }]) });
}

const peerBufs = new Map<number, [Tensor, Tensor]>();
function peer(n: number): () => void {
  let b = peerBufs.get(n);
  if (!b) peerBufs.set(n, b = [t([n]), t([n], 5)]);
  const [x, y] = b;
  return () => ewForward("scale", y, [x], { scalar: 0.5 });
}

async function timeIt(run: () => void): Promise<number> {
  run();
  await gpu.sync();
  gpu.startProfiling();
  for (let i = 0; i < reps; i++) run();
  const rows = await gpu.stopProfiling();
  return rows.reduce((s, r) => s + r.ms, 0) / reps;
}

const load = Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
console.log(
  `adapter ${gpu.info.description}; load average ${load}; ${reps} reps, best of ${rounds}`,
);
console.log(`${"case".padEnd(28)} ${"ms/call".padStart(9)} ${"peer ms".padStart(9)} x peer`);
for (const c of cases) {
  if (only && !only.has(c.name.split(" ")[0])) continue;
  const p = peer(c.n);
  let best = Infinity, bestPeer = Infinity;
  for (let r = 0; r < rounds; r++) {
    best = Math.min(best, await timeIt(c.run));
    bestPeer = Math.min(bestPeer, await timeIt(p));
  }
  console.log(
    `${c.name.padEnd(28)} ${best.toFixed(3).padStart(9)} ${bestPeer.toFixed(3).padStart(9)} ${
      (best / bestPeer).toFixed(2).padStart(6)
    }`,
  );
}
console.log(`load average after ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
