/**
 * Training-step benchmark: tokens/s of a full step (forward, backward, AdamW) for a preset,
 * the step's GEMM-bound efficiency, and (with --profile) GPU time per kernel.
 *
 *     deno run -A bench/train.ts [--preset nano] [--batch B] [--seq T] [--steps 5] [--profile]
 *                                [--peer-n N] [--json FILE] [--config-only] [--device auto|gpu|cpu]
 *
 * Default batch and sequence per preset (B x T tokens per step), chosen so a step is long enough
 * to time and small enough to finish: on a GPU nano 8 x 128, mini 16 x 512, small 8 x 1024; on a
 * software adapter (lavapipe) nano 8 x 128, mini 2 x 64, small 1 x 64.
 *
 * Efficiency = (GEMM FLOPs of the step) / measured matmul rate, divided by the measured step
 * time: 1.0 means the step runs as fast as its GEMMs could. GEMM FLOPs = 6 x GEMM parameters x
 * tokens + causal attention; GEMM parameters = active parameters - the embedding (a gather, not
 * a GEMM) + mtp_depth x the head (the shared head runs once more per MTP depth). The matmul rate
 * is our own GEMM on a random square N^3 product (N = --peer-n: 512 on a software adapter, 2048
 * on a GPU), best of 3 rounds, same adapter, same run.
 *
 * `--json FILE` writes the preset's full config, B, T and the step count at once (so a peer can
 * train the same shapes even if this run fails) and every figure at the end; `--config-only`
 * stops after writing it, without touching the GPU (bench/torch_peer.py reads this file).
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { Tape } from "../kernels/autograd.ts";
import { type DeviceChoice, getDevice, isSoftwareAdapter } from "../kernels/backend.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { countParameters, type PresetName, resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { AdamW } from "../train/optimizer.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "nano" },
    batch: { type: "string" },
    seq: { type: "string" },
    steps: { type: "string", default: "5" },
    profile: { type: "boolean", default: false },
    "peer-n": { type: "string" },
    json: { type: "string" },
    "config-only": { type: "boolean", default: false },
    device: { type: "string", default: "auto" },
  },
});

/** Default [B, T] per preset: [on a GPU, on a software adapter]. */
const DEFAULT_SHAPES: Record<PresetName, [[number, number], [number, number]]> = {
  tiny: [[8, 64], [8, 64]],
  nano: [[8, 128], [8, 128]],
  mini: [[16, 512], [2, 64]],
  small: [[8, 1024], [1, 64]],
};
const cfg = resolveConfig(a.preset as PresetName, { vocab_size: 6400 });
const gpu = a["config-only"] ? null : await getDevice(a.device as DeviceChoice);
// --config-only has no adapter to look at: it takes the GPU defaults (the torch peer's shapes).
const software = gpu !== null && gpu.kind === "webgpu" && isSoftwareAdapter(gpu.info);
const shape = DEFAULT_SHAPES[a.preset as PresetName][software ? 1 : 0];
const B = Number(a.batch ?? shape[0]), T = Number(a.seq ?? shape[1]), steps = Number(a.steps);
if (!(B >= 1 && T >= 1 && steps >= 1)) throw new Error("--batch, --seq, --steps must be >= 1");

const counts = countParameters(cfg);
const tokens = B * T;
// The causal half of QK^T and PV per (b, h): T^2 / 2 * (dqk + dv) multiply-adds, 2 FLOPs each;
// times 3 for forward + backward.
const attnFlops = 3 * B * T * T * cfg.n_heads *
  (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) *
  (cfg.n_layers + cfg.mtp_depth);
const vd = cfg.vocab_size * cfg.dim;
const gemmParams = counts.active - vd + cfg.mtp_depth * vd;
const stepFlops = 6 * gemmParams * tokens + attnFlops;
const report: Record<string, unknown> = {
  preset: a.preset,
  config: cfg,
  B,
  T,
  steps,
  active_params: counts.active,
  total_params: counts.total,
  gemm_params: gemmParams,
  flops_per_step: stepFlops,
  status: "started",
};
const writeJson = () =>
  a.json ? Deno.writeTextFile(a.json, JSON.stringify(report, null, 1)) : Promise.resolve();
await writeJson();
if (!gpu) Deno.exit(0);

const model = DeepSeekV3.create(gpu, cfg, { seed: 1 });
const opt = new AdamW(model.arena);
const rnd = (n: number) =>
  Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % cfg.vocab_size);
const batch = { tokens: rnd(B * T), targets: rnd(B * T).reverse(), B, T };

async function step(): Promise<void> {
  const scope = new Scope();
  model.arena.zeroGrads();
  const tape = new Tape().start();
  const out = model.forward(model.upload(batch));
  tape.backward(out.losses!.total);
  opt.update(1e-3);
  model.updateBiases(out.loads);
  await out.losses!.total.read();
  scope.dispose();
}

const tw = performance.now();
await step(); // warm-up: pipelines compile
const warmupMs = performance.now() - tw;
// WebGPU only: the CPU backend has no submits or dispatches to count.
const counts0 = gpu.kind === "webgpu" ? [gpu.totalSubmits, gpu.totalDispatches] : null;
const t0 = performance.now(), c0 = process.cpuUsage();
for (let i = 0; i < steps; i++) await step();
const stepMs = (performance.now() - t0) / steps;
const cpuSecs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1e6;
const stepCpu = cpuSecs(process.cpuUsage(c0)) / steps;
const submitsPerStep = counts0 && gpu.kind === "webgpu"
  ? (gpu.totalSubmits - counts0[0]) / steps
  : null;
const dispatchesPerStep = counts0 && gpu.kind === "webgpu"
  ? (gpu.totalDispatches - counts0[1]) / steps
  : null;

// The peer: our matmul on a random square GEMM, same adapter, same run, best of 3 rounds.
const n = Number(a["peer-n"] ?? (software ? 512 : gpu.kind === "cpu" ? 1024 : 2048));
const rand = (len: number) =>
  Float32Array.from({ length: len }, (_, i) => (Math.imul(i + 1, 2654435761) >>> 0) / 2 ** 31 - 1);
const A = Tensor.from(gpu, rand(n * n), [n, n]),
  Bm = Tensor.from(gpu, rand(n * n).reverse(), [n, n]);
const C = Tensor.empty(gpu, [n, n]);
matmulForward(C, A, Bm);
await gpu.sync();
let reps = 1, best = Infinity, bestCpu = Infinity;
for (let round = 0; round < 3; round++) {
  const tm = performance.now(), cm = process.cpuUsage();
  for (let i = 0; i < reps; i++) matmulForward(C, A, Bm);
  await gpu.sync();
  const s = (performance.now() - tm) / 1000 / reps;
  best = Math.min(best, s);
  bestCpu = Math.min(bestCpu, cpuSecs(process.cpuUsage(cm)) / reps);
  // size later rounds to about a quarter second
  reps = Math.max(1, Math.min(200, Math.round(0.25 / s)));
}
const gflops = 2 * n ** 3 / best / 1e9;

const ideal = stepFlops / (gflops * 1e9);
const tokPerSec = tokens / (stepMs / 1000);
const efficiency = ideal / (stepMs / 1000);
const load = Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
console.log(`adapter ${gpu.info.description}; load average ${load}`);
console.log(
  `preset ${a.preset}: ${counts.active} active / ${counts.total} total parameters, B=${B} T=${T}`,
);
console.log(
  `step ${stepMs.toFixed(0)} ms (warm-up ${(warmupMs / 1000).toFixed(1)} s), ` +
    `${tokPerSec.toFixed(0)} tokens/s, ${(stepFlops / (stepMs / 1000) / 1e9).toFixed(1)} GFLOP/s`,
);
if (submitsPerStep !== null && dispatchesPerStep !== null) {
  console.log(
    `${submitsPerStep.toFixed(1)} submits and ${dispatchesPerStep.toFixed(0)} dispatches per step`,
  );
}
console.log(
  `matmul peer ${gflops.toFixed(2)} GFLOPS (${n}^3); GEMM-bound step ${
    (ideal * 1000).toFixed(0)
  } ms`,
);
// On a software adapter the GPU is this process's CPU threads: the same ratio in process
// CPU-seconds is steadier when other jobs share the cores.
const cpuEfficiency = software ? (stepFlops / (2 * n ** 3 / bestCpu)) / stepCpu : null;
console.log(
  `efficiency ${efficiency.toFixed(3)} (goal 0.6)` +
    (cpuEfficiency ? `; by process CPU time ${cpuEfficiency.toFixed(3)}` : ""),
);
Object.assign(report, {
  status: "done",
  adapter: gpu.info.description,
  load_average: Deno.loadavg(),
  warmup_ms: warmupMs,
  step_ms: stepMs,
  tokens_per_s: tokPerSec,
  achieved_gflops: stepFlops / (stepMs / 1000) / 1e9,
  matmul_peer_n: n,
  matmul_peer_gflops: gflops,
  gemm_bound_ms: ideal * 1000,
  efficiency,
  cpu_time_efficiency: cpuEfficiency,
  step_cpu_s: stepCpu,
  submits_per_step: submitsPerStep,
  dispatches_per_step: dispatchesPerStep,
});

if (a.profile && gpu.kind === "cpu") {
  // The CPU backend's time in BLAS: every sgemm call timed, over a few steps.
  const blas = gpu.blas, sgemm = blas.sgemm;
  let ms = 0, calls = 0;
  blas.sgemm = (...args: Parameters<typeof sgemm>) => {
    const t = performance.now();
    sgemm(...args);
    ms += performance.now() - t;
    calls++;
  };
  const tp = performance.now();
  for (let i = 0; i < 3; i++) await step();
  const total = (performance.now() - tp) / 3;
  blas.sgemm = sgemm;
  console.log(
    `\nper step: ${total.toFixed(0)} ms, of which BLAS ${(ms / 3).toFixed(0)} ms ` +
      `(${(100 * ms / 3 / total).toFixed(0)}%, ${calls / 3} sgemm calls); the rest is host loops`,
  );
  Object.assign(report, {
    cpu_profile: { step_ms: total, blas_ms: ms / 3, sgemm_calls: calls / 3 },
  });
}
if (a.profile && gpu.kind === "webgpu") {
  gpu.startProfiling();
  await step();
  const rows = await gpu.stopProfiling();
  const total = rows.reduce((s, r) => s + r.ms, 0);
  console.log(`\nGPU time per kernel (one step, ${total.toFixed(1)} ms total):`);
  for (const r of rows.slice(0, 25)) {
    console.log(
      `${r.kernel.padEnd(48)} ${r.ms.toFixed(2).padStart(9)} ms ${
        (100 * r.ms / total).toFixed(1).padStart(5)
      }%  x${r.count}`,
    );
  }
  report.profile = rows.slice(0, 40);
}
await writeJson();
