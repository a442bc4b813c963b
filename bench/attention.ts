/**
 * Attention benchmark: the fused, flash-style causal attention of `kernels/attention.ts` against
 * an unfused peer built in the same process from this project's own kernels, forward and
 * forward + backward, at MLA's head dims.
 *
 * Legend: B batch, T time, H heads, dqk query/key head dim (MLA: dn + dr), dv value head dim,
 * Z = B * H.
 *
 *     fused     attentionForward / attentionBackward on q, k [B, T, H, dqk], v [B, T, H, dv]
 *               (no T x T matrix in memory; the backward recomputes P from the saved lse)
 *     unfused   qh = transpose12(q) [B, H, T, dqk]       (also kh, vh; viewed as [Z, T, d])
 *               S  = qh @ kh^T                    [Z, T, T]   batched matmul (transB)
 *               S  = causal mask + scale (in place; a small WGSL kernel defined here)
 *               P  = softmax(S)                   [Z, T, T]
 *               oh = P @ vh                       [Z, T, dv]; out = transpose12(oh)
 *     backward  doh = transpose12(dout); dvh = P^T @ doh; dP = doh @ vh^T; dS = softmax'(dP, P);
 *               dS = mask + scale (masked -> 0); dqh = dS @ kh; dkh = dS^T @ qh;
 *               dq, dk, dv = transpose12 back to [B, T, H, d]
 *
 * Both sides get the same seeded inputs; their out, dq, dk, dv are compared (max abs diff, next
 * to the largest |value|). Timing: pipelines compile in a warm-up, then each side runs back to
 * back for about `--target` seconds, ending in a queue sync; 3 alternating rounds, the best
 * counts (other jobs share a software adapter's cores; a single sizing run that already outlasts
 * the target counts as the first round). The process CPU time of the same runs (best of the
 * rounds) gives `cpu ratio`: on a software adapter the driver's threads are this process's, so
 * it leaves out the time spent waiting for a core that another job holds. Where the adapter has timestamp queries,
 * the GPU time of the same work (the sum of its kernels, one timestamped pass each) is printed
 * too: it leaves out submit and sync overhead, which dominates small sizes on a real GPU.
 *
 * GFLOP/s count the causal half only, the same for both sides: forward 2 * Z * T^2 / 2 *
 * (dqk + dv), backward 2.5 times that (the five products of FA-2's backward, scores recomputed).
 *
 * Usage: deno run -A bench/attention.ts [--presets nano,mini] [--T 128,256,512]
 *        [--tokens N] [--quick] [--target 0.3] [--json FILE]
 *   --tokens   B * T per configuration (B = tokens / T, at least 1); default 1024 on a software
 *              adapter, 16384 on a GPU
 *   --quick    T = 128,256 and 2 rounds
 *   --json     also write every row as JSON to FILE
 *   --profile  print each side's GPU time per kernel (timestamp queries)
 *   --check    also run both sides at B = 1, H = 2 and compare out, dq, dk, dv with the CPU twins
 *              of kernels/attention.ts (f64): says which side is wrong when they disagree
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import {
  attentionBackward,
  attentionBackwardCpu,
  attentionCpu,
  attentionForward,
} from "../kernels/attention.ts";
import { transpose12Forward } from "../kernels/copy.ts";
import { getGpu, type Gpu } from "../kernels/gpu.ts";
import { launch1d } from "../kernels/_launch.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { softmaxBackward, softmaxForward } from "../kernels/softmax.ts";
import { Tensor } from "../kernels/tensor.ts";
import { type PresetName, PRESETS } from "../model/config.ts";

const HELP = `deno run -A bench/attention.ts [--presets nano,mini] [--T 128,256,512] [--tokens N]
  [--quick] [--rounds 3] [--target 0.3] [--json FILE] [--profile]
  [--check]`;

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    presets: { type: "string", default: "nano,mini" },
    T: { type: "string" },
    tokens: { type: "string" },
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    target: { type: "string", default: "0.3" },
    json: { type: "string" },
    profile: { type: "boolean", default: false },
    check: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (a.help) {
  console.log(HELP);
  Deno.exit(0);
}

/** Attention sizes of one configuration. */
interface Shape {
  B: number;
  T: number;
  H: number;
  dqk: number;
  dv: number;
}

const NEG_MAX = -3.4028234663852886e38;

/**
 * In place over s [Z, T, T]: `s[z, i, j] = j <= i ? s * scale : fill`. The forward fills -max
 * (exp gives 0 after the softmax's max subtraction); the backward fills 0.
 */
const MASK_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> s: array<f32>;
struct P { n: u32, T: u32, scale: f32, fill: f32 }
@group(0) @binding(1) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let col = i % p.T;
  let row = (i / p.T) % p.T;
  s[i] = select(p.fill, s[i] * p.scale, col <= row);
}`;

function causalMaskScale(s: Tensor, T: number, scale: number, fill: number): void {
  launch1d(
    s.device,
    "bench_causal_mask_scale",
    "",
    () => MASK_SRC,
    [s.binding],
    s.size,
    (p) => p.u32(s.size).u32(T).f32(scale).f32(fill),
  );
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

/** One configuration's tensors and the encoders of both sides. */
function setup(gpu: Gpu, sh: Shape) {
  const { B, T, H, dqk, dv } = sh, Z = B * H;
  const scale = 1 / Math.sqrt(dqk);
  const t = (shape: number[], seed?: number) =>
    seed === undefined ? Tensor.empty(gpu, shape) : Tensor.from(
      gpu,
      values(
        shape.reduce((x, y) => x * y, 1),
        seed,
      ),
      shape,
    );
  const q = t([B, T, H, dqk], 1), k = t([B, T, H, dqk], 2), v = t([B, T, H, dv], 3);
  const dout = t([B, T, H, dv], 4);
  // fused
  const fo = t([B, T, H, dv]), lse = t([B, H, T]);
  const fdq = t([B, T, H, dqk]), fdk = t([B, T, H, dqk]), fdv = t([B, T, H, dv]);
  // unfused
  const qh = t([B, H, T, dqk]), kh = t([B, H, T, dqk]), vh = t([B, H, T, dv]);
  const S = t([Z, T, T]), P = t([Z, T, T]), dP = t([Z, T, T]);
  const oh = t([B, H, T, dv]), uo = t([B, T, H, dv]), doh = t([B, H, T, dv]);
  const dqh = t([B, H, T, dqk]), dkh = t([B, H, T, dqk]), dvh = t([B, H, T, dv]);
  const udq = t([B, T, H, dqk]), udk = t([B, T, H, dqk]), udv = t([B, T, H, dv]);
  const z3 = (x: Tensor, d: number) => x.reshape([Z, T, d]);

  const fusedFwd = () => attentionForward({ out: fo, lse }, { q, k, v }, { scale });
  const fusedBwd = () =>
    attentionBackward({ dq: fdq, dk: fdk, dv: fdv }, { q, k, v, out: fo, lse, dout }, { scale });
  const unfusedFwd = () => {
    transpose12Forward(qh, q);
    transpose12Forward(kh, k);
    transpose12Forward(vh, v);
    matmulForward(S, z3(qh, dqk), z3(kh, dqk), { transB: true });
    causalMaskScale(S, T, scale, NEG_MAX);
    softmaxForward(P, S);
    matmulForward(z3(oh, dv), P, z3(vh, dv));
    transpose12Forward(uo, oh);
  };
  const unfusedBwd = () => {
    transpose12Forward(doh, dout);
    matmulForward(z3(dvh, dv), P, z3(doh, dv), { transA: true }); // P^T dO
    matmulForward(dP, z3(doh, dv), z3(vh, dv), { transB: true }); // dO V^T
    softmaxBackward(S, dP, P); // dS overwrites S, which the backward no longer needs
    causalMaskScale(S, T, scale, 0);
    matmulForward(z3(dqh, dqk), S, z3(kh, dqk)); // dS K
    matmulForward(z3(dkh, dqk), S, z3(qh, dqk), { transA: true }); // dS^T Q
    transpose12Forward(udq, dqh);
    transpose12Forward(udk, dkh);
    transpose12Forward(udv, dvh);
  };
  const all = [q, k, v, dout, fo, lse, fdq, fdk, fdv, qh, kh, vh, S, P, dP, oh, uo, doh];
  all.push(dqh, dkh, dvh, udq, udk, udv);
  return {
    fused: { fwd: fusedFwd, fwdBwd: () => (fusedFwd(), fusedBwd()) },
    unfused: { fwd: unfusedFwd, fwdBwd: () => (unfusedFwd(), unfusedBwd()) },
    outputs: { fused: [fo, fdq, fdk, fdv], unfused: [uo, udq, udk, udv] },
    dispose: () => all.forEach((x) => x.dispose()),
  };
}

/** Wall and process-CPU seconds of `n` back-to-back runs, to a queue sync. */
async function timeRuns(gpu: Gpu, run: () => void, n: number): Promise<[number, number]> {
  const t0 = performance.now(), c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) run();
  await gpu.sync();
  const c = process.cpuUsage(c0);
  return [(performance.now() - t0) / 1000, (c.user + c.system) / 1e6];
}

/**
 * Best-of-`rounds` wall and process-CPU seconds per run of each side, the sides alternating
 * within a round. On a software adapter the CPU time (the driver's threads are ours) is the
 * steadier figure when other jobs share the cores: it leaves out the time we wait for a core.
 */
async function compare(
  gpu: Gpu,
  runs: (() => void)[],
  opts: { rounds: number; target: number },
): Promise<{ wall: number[]; cpu: number[] }> {
  const counts: number[] = [], wall: number[] = [], cpu: number[] = [];
  for (const r of runs) {
    await timeRuns(gpu, r, 1); // compiles
    const [one, oneCpu] = await timeRuns(gpu, r, 1); // a round when a run outlasts the target
    counts.push(Math.max(1, Math.min(200, Math.round(opts.target / Math.max(one, 1e-5)))));
    wall.push(one);
    cpu.push(oneCpu);
  }
  const skip = counts.every((c) => c === 1) ? 1 : 0;
  for (let round = skip; round < opts.rounds; round++) {
    for (let i = 0; i < runs.length; i++) {
      const [w, c] = await timeRuns(gpu, runs[i], counts[i]);
      wall[i] = Math.min(wall[i], w / counts[i]);
      cpu[i] = Math.min(cpu[i], c / counts[i]);
    }
  }
  return { wall, cpu };
}

/** GPU milliseconds of one run (sum over its kernels' timestamped passes, mean of `reps`). */
async function gpuMs(gpu: Gpu, run: () => void, reps: number, label: string): Promise<number> {
  gpu.startProfiling();
  for (let i = 0; i < reps; i++) run();
  const rows = await gpu.stopProfiling();
  const total = rows.reduce((s, r) => s + r.ms, 0) / reps;
  if (a.profile) {
    console.log(`  ${label}: ${total.toFixed(3)} GPU ms per run`);
    for (const r of rows) {
      console.log(
        `    ${r.kernel.padEnd(44)} ${(r.ms / reps).toFixed(3).padStart(9)} ms  x${r.count / reps}`,
      );
    }
  }
  return total;
}

async function maxDiff(x: Tensor, y: Tensor): Promise<{ diff: number; scale: number }> {
  const [hx, hy] = [await x.readF32(), await y.readF32()];
  let diff = 0, scale = 0;
  for (let i = 0; i < hx.length; i++) {
    const d = Math.abs(hx[i] - hy[i]);
    if (!(d <= diff)) diff = d; // NaN sticks
    scale = Math.max(scale, Math.abs(hy[i]));
  }
  return { diff, scale };
}

/**
 * Max |gpu - CPU twin| over out, dq, dk, dv of each side, at `sh` (keep it small: the twin is
 * the naive f64 T x T formulation).
 */
async function checkAgainstCpu(gpu: Gpu, sh: Shape): Promise<{ fused: number; unfused: number }> {
  const s = setup(gpu, sh);
  s.fused.fwdBwd();
  s.unfused.fwdBwd();
  const { B, T, H, dqk, dv } = sh;
  const n = (d: number) => B * T * H * d;
  const host = { q: values(n(dqk), 1), k: values(n(dqk), 2), v: values(n(dv), 3) };
  const o = { shape: sh, scale: 1 / Math.sqrt(dqk) };
  const want = [
    attentionCpu(host, o).out,
    ...Object.values(attentionBackwardCpu({ ...host, dout: values(n(dv), 4) }, o)),
  ]; // out, dq, dk, dv
  const err = async (ts: Tensor[]) => {
    let worst = 0;
    for (let i = 0; i < 4; i++) {
      const got = await ts[i].readF32();
      for (let j = 0; j < got.length; j++) {
        const d = Math.abs(got[j] - want[i][j]);
        if (!(d <= worst)) worst = d; // NaN sticks
      }
    }
    return worst;
  };
  const res = { fused: await err(s.outputs.fused), unfused: await err(s.outputs.unfused) };
  s.dispose();
  return res;
}

/** One printed row. */
interface Row {
  preset: string;
  B: number;
  T: number;
  H: number;
  dqk: number;
  dv: number;
  mode: "fwd" | "fwd+bwd";
  fused_ms: number;
  unfused_ms: number;
  speedup: number;
  /** Process CPU ms per run (best of the rounds) and their ratio. */
  fused_cpu_ms: number;
  unfused_cpu_ms: number;
  cpu_speedup: number;
  fused_gpu_ms: number | null;
  unfused_gpu_ms: number | null;
  gpu_speedup: number | null;
  fused_gflops: number;
  unfused_gflops: number;
  /** max |fused - unfused| of out (fwd) or of out, dq, dk, dv (fwd+bwd), and max |unfused|. */
  max_abs_diff: number;
  max_abs_value: number;
  /** With --check: max |side - CPU twin| over out, dq, dk, dv at B = 1, H = min(H, 2). */
  cpu_check?: { B: number; H: number; fused: number; unfused: number };
}

async function main() {
  const gpu = await getGpu();
  const software = gpu.info.isFallback || /llvmpipe|lavapipe|swiftshader/i.test(
    gpu.info.description,
  );
  const Ts = a.T ? a.T.split(",").map(Number) : a.quick ? [128, 256] : [128, 256, 512];
  const tokens = Number(a.tokens ?? (software ? 1024 : 16384));
  const rounds = Number(a.rounds ?? (a.quick ? 2 : 3));
  const target = Number(a.target);
  const presets = a.presets.split(",") as PresetName[];
  for (const p of presets) {
    if (!Object.hasOwn(PRESETS, p)) throw new Error(`--presets: unknown preset ${p}`);
  }
  if (Ts.some((T) => !(T > 0 && Number.isInteger(T)))) throw new Error(`--T: bad list ${a.T}`);
  const timestamps = gpu.device.features.has("timestamp-query");
  const load = () => Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
  console.log(`adapter: ${gpu.info.description}; ${navigator.hardwareConcurrency} CPUs`);
  console.log(`load average before: ${load()}`);
  console.log(
    `ms per run: best of ${rounds} alternating rounds, ~${target} s each; ` +
      `B = ${tokens} tokens / T${timestamps ? "; gpu ms = sum of kernel timestamps" : ""}`,
  );
  const t0 = performance.now();
  const rows: Row[] = [];
  const head = [
    "preset",
    "B",
    "T",
    "H/dqk/dv",
    "mode",
    "fused ms",
    "unfused ms",
    "ratio",
    "cpu ratio",
    "gpu ratio",
    "fused GF/s",
    "max|diff|",
  ];
  const table: string[][] = [head];
  const print = (r: string[]) => console.log(r.join("  "));
  print(head);
  for (const preset of presets) {
    const cfg = PRESETS[preset];
    const H = cfg.n_heads, dqk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
    const dv = cfg.v_head_dim;
    for (const T of Ts) {
      let B = Math.max(1, Math.floor(tokens / T));
      // the unfused side's [B*H, T, T] score matrices must fit one storage binding
      while (B > 1 && B * H * T * T * 4 > gpu.maxBinding) B = Math.floor(B / 2);
      if (B * H * T * T * 4 > gpu.maxBinding) {
        console.log(`${preset} T=${T}: skipped, [${H}, ${T}, ${T}] scores pass the binding limit`);
        continue;
      }
      const sh: Shape = { B, T, H, dqk, dv };
      let check: Row["cpu_check"];
      if (a.check) {
        const c = await checkAgainstCpu(gpu, { B: 1, T, H: Math.min(H, 2), dqk, dv });
        check = { B: 1, H: Math.min(H, 2), ...c };
        console.log(
          `${preset} T=${T} check vs CPU twin (B=1, H=${check.H}; out, dq, dk, dv): ` +
            `fused max|err| ${c.fused.toExponential(1)}, unfused ${c.unfused.toExponential(1)}` +
            (c.fused > 1e-3 || !(c.fused >= 0) ? "  <-- FUSED WRONG" : "") +
            (c.unfused > 1e-3 || !(c.unfused >= 0) ? "  <-- UNFUSED WRONG" : ""),
        );
      }
      const s = setup(gpu, sh);
      for (const mode of ["fwd", "fwd+bwd"] as const) {
        const key = mode === "fwd" ? "fwd" : "fwdBwd";
        const runs = [s.fused[key], s.unfused[key]];
        const t = await compare(gpu, runs, { rounds, target });
        const [fs, us] = t.wall, [fc, uc] = t.cpu;
        let fg: number | null = null, ug: number | null = null;
        if (timestamps) {
          const reps = software ? 1 : 3;
          fg = await gpuMs(gpu, runs[0], reps, `${preset} T=${T} ${mode} fused`);
          ug = await gpuMs(gpu, runs[1], reps, `${preset} T=${T} ${mode} unfused`);
        }
        // both sides just ran: compare what they left
        const n = mode === "fwd" ? 1 : 4;
        let diff = 0, scale = 0;
        for (let i = 0; i < n; i++) {
          const d = await maxDiff(s.outputs.fused[i], s.outputs.unfused[i]);
          diff = Number.isNaN(d.diff) ? NaN : Math.max(diff, d.diff);
          scale = Math.max(scale, d.scale);
        }
        const flops = 2 * B * H * T * T / 2 * (dqk + dv) * (mode === "fwd" ? 1 : 3.5);
        const row: Row = {
          preset,
          B,
          T,
          H,
          dqk,
          dv,
          mode,
          fused_ms: fs * 1000,
          unfused_ms: us * 1000,
          speedup: us / fs,
          fused_cpu_ms: fc * 1000,
          unfused_cpu_ms: uc * 1000,
          cpu_speedup: uc / fc,
          fused_gpu_ms: fg,
          unfused_gpu_ms: ug,
          gpu_speedup: fg && ug ? ug / fg : null,
          fused_gflops: flops / fs / 1e9,
          unfused_gflops: flops / us / 1e9,
          max_abs_diff: diff,
          max_abs_value: scale,
          cpu_check: check,
        };
        rows.push(row);
        const cells = [
          preset,
          String(B),
          String(T),
          `${H}/${dqk}/${dv}`,
          mode,
          row.fused_ms.toFixed(2),
          row.unfused_ms.toFixed(2),
          `${row.speedup.toFixed(2)}x`,
          `${row.cpu_speedup.toFixed(2)}x`,
          row.gpu_speedup ? `${row.gpu_speedup.toFixed(2)}x` : "-",
          row.fused_gflops.toFixed(1),
          `${diff.toExponential(1)} (of ${scale.toFixed(2)})`,
        ];
        table.push(cells);
        print(cells);
      }
      s.dispose();
      gpu.trimPool();
    }
  }
  const widths = head.map((_, j) => Math.max(...table.map((r) => r[j].length)));
  console.log("");
  for (const r of table) {
    console.log(
      r.map((v, j) => j === 0 || j === 4 ? v.padEnd(widths[j]) : v.padStart(widths[j]))
        .join("  "),
    );
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage();
  console.log(
    `\nratio = unfused ms / fused ms (goal: >= 3x at T=512); cpu ratio = the same in process ` +
      `CPU time; load average after: ${load()}; ` +
      `${secs.toFixed(0)} s (process CPU ${((cpu.user + cpu.system) / 1e6).toFixed(0)} s)`,
  );
  const bad = rows.filter((r) => !(r.max_abs_diff <= 1e-3 * Math.max(1, r.max_abs_value)));
  if (bad.length) console.log(`WARNING: fused and unfused disagree in ${bad.length} row(s)`);
  if (a.json) {
    await Deno.writeTextFile(
      a.json,
      JSON.stringify({ adapter: gpu.info.description, load: Deno.loadavg(), rows }, null, 1),
    );
  }
}

await main();
