/**
 * GEMM rate of the CPU backend (`matmulForward` on host tensors, i.e. cblas_sgemm through
 * Deno.dlopen) at square sizes and at the nano/mini training shapes, as a fraction of the
 * machine's fp32 peak.
 *
 *     deno run -A bench/cpu_gemm.ts [--sizes 512,1024,2048] [--peak-gflops X] [--json FILE]
 *
 * The peak, unless given: cores x GHz x 32 FLOP per cycle. 32 = 2 FMA pipes x 8 f32 lanes x 2:
 * AVX2 (256-bit) FMA on Zen 2/3/4 and Intel since Haswell; Zen 4 runs AVX-512 as two 256-bit
 * halves, so it is 32 there too. Intel cores with two 512-bit FMA units reach 64: pass
 * --peak-gflops there. GHz is the "cpu MHz" /proc/cpuinfo reports (the base clock on most
 * VMs), so boost clocks can put a rate slightly above 100%.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createCpu } from "../kernels/cpu.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "512,1024,2048" },
    "peak-gflops": { type: "string" },
    json: { type: "string" },
  },
});

/** cores x GHz x 32, from /proc/cpuinfo; null where it cannot be read. */
function peakGflops(threads: number): { gflops: number; how: string } | null {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1]);
    const model = /model name\s*:\s*(.+)/.exec(info)?.[1] ?? "?";
    if (!mhz) return null;
    const cores = Math.min(threads, navigator.hardwareConcurrency);
    return {
      gflops: cores * (mhz / 1000) * 32,
      how: `${cores} cores x ${(mhz / 1000).toFixed(2)} GHz x 32 FLOP/cycle (${model})`,
    };
  } catch {
    return null;
  }
}

const cpu = createCpu();
const peak = a["peak-gflops"]
  ? { gflops: Number(a["peak-gflops"]), how: "--peak-gflops" }
  : peakGflops(cpu.blas.threads);
console.log(`device: ${cpu.info.description}`);
if (peak) console.log(`fp32 peak ${peak.gflops.toFixed(0)} GFLOP/s = ${peak.how}`);

const rand = (n: number, s: number) =>
  Float32Array.from(
    { length: n },
    (_, i) => ((Math.imul(i + s, 2654435761) >>> 0) / 2 ** 32) - 0.5,
  );

/** Best-of-3 GFLOP/s of C [M, N] = A [M, K] @ op(B). */
function rate(M: number, N: number, K: number, transB: boolean): number {
  const A = Tensor.from(cpu, rand(M * K, 1), [M, K]);
  const B = Tensor.from(cpu, rand(K * N, 2), transB ? [N, K] : [K, N]);
  const C = Tensor.empty(cpu, [M, N]);
  matmulForward(C, A, B, { transB });
  let best = Infinity, reps = 1;
  for (let round = 0; round < 4; round++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) matmulForward(C, A, B, { transB });
    const s = (performance.now() - t) / 1000 / reps;
    if (round > 0) best = Math.min(best, s);
    reps = Math.max(1, Math.min(500, Math.round(0.3 / s)));
  }
  for (const t of [A, B, C]) t.dispose();
  return 2 * M * N * K / best / 1e9;
}

const rows: { shape: string; gflops: number; peak_fraction: number | null }[] = [];
const show = (shape: string, g: number) => {
  const f = peak ? g / peak.gflops : null;
  rows.push({ shape, gflops: g, peak_fraction: f });
  console.log(
    `${shape.padEnd(34)} ${g.toFixed(1).padStart(7)} GFLOP/s` +
      (f !== null ? `  ${(100 * f).toFixed(0)}% of peak` : ""),
  );
};
for (const n of a.sizes.split(",").map(Number)) show(`square ${n}^3`, rate(n, n, n, false));
// x [tokens, in] @ W^T [out, in]: nano and mini projections and heads at 1024 / 512 tokens.
for (
  const [name, M, N, K] of [
    ["nano head 1024x6400x128", 1024, 6400, 128],
    ["nano FFN up 1024x320x128", 1024, 320, 128],
    ["mini head 512x6400x512", 512, 6400, 512],
    ["mini FFN up 512x1408x512", 512, 1408, 512],
  ] as const
) show(name, rate(M, N, K, true));
if (a.json) {
  await Deno.writeTextFile(
    a.json,
    JSON.stringify({ device: cpu.info.description, peak, rows }, null, 1),
  );
}
