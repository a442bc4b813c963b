/**
 * Matmul benchmark: our GEMM (kernels/matmul.ts) against `@tensorflow/tfjs-backend-webgpu`'s,
 * both on the same WebGPU adapter in the same process, on the same inputs.
 *
 * Shapes (A [M, K] @ B [K, N]): 512^3, 1024^3, 2048^3, and a transformer linear layer of
 * 4096 tokens, 256 -> 1024 features, in the three GEMMs its training runs:
 *   x [4096, 256] @ W^T (W [1024, 256]),   dY [4096, 1024] @ W (dX),   dY^T @ x (dW [1024, 256])
 * plus the plain [4096 x 256]·[256 x 1024] and [4096 x 1024]·[1024 x 256] products.
 *
 * Each side is warmed up (pipeline compile), then timed in 3 alternating rounds of back-to-back
 * runs (about half a second each) ending in a queue sync; the best round counts, GFLOPS =
 * 2 M N K / seconds per run. The two outputs are compared once per shape (max |ours - tfjs|
 * relative to max |tfjs|).
 *
 * Usage: deno task bench [--quick] [--sizes LIST] [--no-tfjs] [--cpu-time]
 *   --sizes 1024,4096x256x1024:tb   n (n^3), or MxKxN; suffix :ta / :tb / :tab for transposes
 *
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-webgpu";
import { getGpu } from "../kernels/gpu.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";

/** One benchmarked product: op(A) [M, K] @ op(B) [K, N]. */
interface Case {
  label: string;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
}

const HELP = `deno task bench [--quick] [--sizes LIST] [--no-tfjs] [--cpu-time]
  --quick      512^3 and 1024^3 only
  --sizes L    comma-separated: n (n^3) or MxKxN (A [M,K] @ B [K,N]), each optionally
               suffixed :ta, :tb or :tab (A and/or B stored transposed)
  --no-tfjs    time ours only
  --cpu-time   GFLOPS per process CPU-second (per core) instead of per wall second: steadier
               when other work shares the CPUs with a software adapter such as lavapipe`;

function parseArgs(args: string[]): { cases: Case[]; tfjs: boolean; cpuTime: boolean } {
  let cases = defaultCases(), tfjs = true, cpuTime = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--quick") cases = [square(512), square(1024)];
    else if (a === "--no-tfjs") tfjs = false;
    else if (a === "--cpu-time") cpuTime = true;
    else if (a === "--sizes" || a.startsWith("--sizes=")) {
      const v = a.includes("=") ? a.slice(8) : args[++i];
      if (!v) throw new Error(`--sizes needs a value\n${HELP}`);
      cases = v.split(",").map(parseCase);
    } else if (a === "--help" || a === "-h") {
      console.log(HELP);
      Deno.exit(0);
    } else throw new Error(`unknown flag ${a}\n${HELP}`);
  }
  return { cases, tfjs, cpuTime };
}

function square(n: number): Case {
  return { label: `${n}^3`, M: n, N: n, K: n, transA: false, transB: false };
}

function parseCase(s: string): Case {
  const m = s.match(/^(\d+)(?:x(\d+)x(\d+))?(?::(ta|tb|tab))?$/);
  if (!m) throw new Error(`--sizes: cannot read "${s}" (expected n or MxKxN[:ta|:tb|:tab])`);
  const M = +m[1], K = m[2] ? +m[2] : M, N = m[3] ? +m[3] : M;
  const t = m[4] ?? "";
  return {
    label: `[${M}x${K}]·[${K}x${N}]${t ? ` ${t}` : ""}`,
    M,
    N,
    K,
    transA: t.includes("a"),
    transB: t.endsWith("b"),
  };
}

function defaultCases(): Case[] {
  const T = 4096, D = 256, F = 1024;
  return [
    square(512),
    square(1024),
    square(2048),
    { label: `[${T}x${D}]·[${D}x${F}]`, M: T, N: F, K: D, transA: false, transB: false },
    { label: `[${T}x${F}]·[${F}x${D}]`, M: T, N: D, K: F, transA: false, transB: false },
    { label: `fwd x·W^T ${T}x${D}->${F}`, M: T, N: F, K: D, transA: false, transB: true },
    { label: `dX dY·W ${T}x${F}->${D}`, M: T, N: D, K: F, transA: false, transB: false },
    { label: `dW dY^T·x ${F}x${D}, K=${T}`, M: F, N: D, K: T, transA: true, transB: false },
  ];
}

/** Seeded uniform values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** A side of the comparison: encode one product, and wait for the GPU. */
interface Side {
  run: () => void;
  sync: () => Promise<void>;
}

/** Wall and CPU seconds of `n` back-to-back runs of `side`, to a sync. */
async function timeRuns(side: Side, n: number): Promise<{ wall: number; cpu: number }> {
  const t0 = performance.now(), c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) side.run();
  await side.sync();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/**
 * Seconds per run of each side: a warm-up (compiles), one run to size the batches (about half a
 * second each), then ROUNDS rounds alternating the sides; the best round of each counts, so a
 * burst of other work on the machine hurts both alike and is mostly filtered out.
 */
async function compare(sides: Side[]): Promise<{ wall: number; cpu: number }[]> {
  const counts: number[] = [];
  for (const s of sides) {
    await timeRuns(s, 1);
    const one = (await timeRuns(s, 1)).wall;
    counts.push(Math.max(1, Math.min(50, Math.round(0.5 / Math.max(one, 1e-4)))));
  }
  const best = sides.map(() => ({ wall: Infinity, cpu: Infinity }));
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < sides.length; i++) {
      const t = await timeRuns(sides[i], counts[i]);
      best[i].wall = Math.min(best[i].wall, t.wall / counts[i]);
      best[i].cpu = Math.min(best[i].cpu, t.cpu / counts[i]);
    }
  }
  return best;
}

/** Alternating rounds per shape. */
const ROUNDS = 3;

async function main() {
  const { cases, tfjs, cpuTime } = parseArgs(Deno.args);
  const gpu = await getGpu();
  if (tfjs) {
    tf.env().set("WEBGPU_CPU_FORWARD", false);
    if (!(await tf.setBackend("webgpu"))) {
      throw new Error("tfjs: the webgpu backend failed to start");
    }
    await tf.ready();
  }
  const cores = navigator.hardwareConcurrency;
  const load = () => Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
  console.log(`adapter: ${gpu.info.description}; ${cores} CPUs`);
  console.log(`load average before: ${load()}`);
  console.log(
    cpuTime
      ? `GFLOPS per CPU-time: 2MNK / (process CPU seconds / ${cores}), best of ${ROUNDS} rounds`
      : `GFLOPS: 2MNK / wall seconds, best of ${ROUNDS} alternating rounds`,
  );
  const rows: string[][] = [["shape", "ours GFLOPS", "tfjs GFLOPS", "ours/tfjs", "max rel diff"]];
  const t0 = performance.now();
  for (const c of cases) {
    const { M, N, K, transA, transB } = c;
    const aShape = transA ? [K, M] : [M, K], bShape = transB ? [N, K] : [K, N];
    const ha = values(M * K, 1), hb = values(K * N, 2);
    const a = Tensor.from(gpu, ha, aShape), b = Tensor.from(gpu, hb, bShape);
    const out = Tensor.empty(gpu, [M, N]);
    const sides: Side[] = [{
      run: () => matmulForward(out, a, b, { transA, transB }),
      sync: () => gpu.sync(),
    }];
    const ta = tfjs ? tf.tensor(ha, aShape) : null, tb = tfjs ? tf.tensor(hb, bShape) : null;
    let last: tf.Tensor | null = null;
    if (ta && tb) {
      // tfjs keeps its dispatches in an open pass until 15 accumulate or a read; close and
      // submit them the way its own flush does, then wait for the queue.
      const backend = tf.backend() as unknown as {
        commandEncoder: GPUCommandEncoder | null;
        endComputePassEncoder(): void;
        submitQueue(): void;
        device: GPUDevice;
      };
      sides.push({
        run: () => {
          last?.dispose();
          last = tf.matMul(ta, tb, transA, transB);
        },
        sync: async () => {
          if (backend.commandEncoder) {
            backend.endComputePassEncoder();
            backend.submitQueue();
          }
          await backend.device.queue.onSubmittedWorkDone();
        },
      });
    }
    const times = await compare(sides);
    const secs = times.map((t) => cpuTime ? t.cpu / cores : t.wall);
    let diff = NaN;
    if (last) {
      const want = (await (last as tf.Tensor).data()) as Float32Array, got = await out.readF32();
      let worst = 0, scale = 0;
      for (let i = 0; i < want.length; i++) {
        worst = Math.max(worst, Math.abs(got[i] - want[i]));
        scale = Math.max(scale, Math.abs(want[i]));
      }
      diff = worst / scale;
      (last as tf.Tensor).dispose();
    }
    ta?.dispose();
    tb?.dispose();
    a.dispose();
    b.dispose();
    out.dispose();
    const g = (s: number) => (2 * M * N * K / s / 1e9).toFixed(2);
    const row = [
      c.label,
      g(secs[0]),
      tfjs ? g(secs[1]) : "-",
      tfjs ? `${(secs[1] / secs[0]).toFixed(2)}x` : "-",
      tfjs ? diff.toExponential(1) : "-",
    ];
    rows.push(row);
    console.log(row.join("  "));
  }
  const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
  console.log("");
  for (const r of rows) {
    console.log(r.map((v, j) => j ? v.padStart(widths[j]) : v.padEnd(widths[j])).join("  "));
  }
  console.log(`\nload average after: ${load()}; ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

await main();
