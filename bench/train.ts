/**
 * Training-step benchmark: tokens/s of a full step (forward, backward, AdamW) for a preset,
 * the step's GEMM-bound efficiency, and (with --profile) GPU time per kernel.
 *
 *     deno run -A bench/train.ts [--preset nano] [--batch 8] [--seq 128] [--steps 5] [--profile]
 *
 * Efficiency = (6 x active parameters x tokens + attention FLOPs) / measured matmul rate,
 * divided by the measured step time: 1.0 means the step runs as fast as its GEMMs could.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Tape } from "../kernels/autograd.ts";
import { getGpu } from "../kernels/gpu.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { countParameters, type PresetName, resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { AdamW } from "../train/optimizer.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "nano" },
    batch: { type: "string", default: "8" },
    seq: { type: "string", default: "128" },
    steps: { type: "string", default: "5" },
    profile: { type: "boolean", default: false },
  },
});
const B = Number(a.batch), T = Number(a.seq), steps = Number(a.steps);
const gpu = await getGpu();
const cfg = resolveConfig(a.preset as PresetName, { vocab_size: 6400 });
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

await step(); // warm-up: pipelines compile
const submits0 = gpu.totalSubmits, disp0 = gpu.totalDispatches;
const t0 = performance.now();
for (let i = 0; i < steps; i++) await step();
const stepMs = (performance.now() - t0) / steps;
const submitsPerStep = (gpu.totalSubmits - submits0) / steps;
const dispatchesPerStep = (gpu.totalDispatches - disp0) / steps;

// The peer: our matmul on a square GEMM of the model's width, same adapter, same run.
const n = 512;
const A = Tensor.zeros(gpu, [n, n]), Bm = Tensor.zeros(gpu, [n, n]), C = Tensor.empty(gpu, [n, n]);
matmulForward(C, A, Bm);
await gpu.sync();
const reps = 5;
const tm = performance.now();
for (let i = 0; i < reps; i++) matmulForward(C, A, Bm);
await gpu.sync();
const gflops = (2 * n ** 3 * reps) / ((performance.now() - tm) / 1000) / 1e9;

const counts = countParameters(cfg);
const tokens = B * T;
const attnFlops = 4 * B * T * T * cfg.n_heads *
  (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) / 2 * 3 *
  (cfg.n_layers + cfg.mtp_depth);
const ideal = (6 * counts.active * tokens + attnFlops) / (gflops * 1e9);
console.log(`adapter ${gpu.info.description}`);
console.log(
  `preset ${a.preset}: ${counts.active} active / ${counts.total} total parameters, B=${B} T=${T}`,
);
console.log(`step ${stepMs.toFixed(0)} ms, ${(tokens / (stepMs / 1000)).toFixed(0)} tokens/s`);
console.log(
  `${submitsPerStep.toFixed(1)} submits and ${dispatchesPerStep.toFixed(0)} dispatches per step`,
);
console.log(
  `matmul peer ${gflops.toFixed(2)} GFLOPS (${n}^3); GEMM-bound step ${
    (ideal * 1000).toFixed(0)
  } ms`,
);
console.log(`efficiency ${(ideal / (stepMs / 1000)).toFixed(3)} (goal 0.6)`);

if (a.profile) {
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
}
