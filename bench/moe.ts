/**
 * MoE FFN throughput: the routed experts of one DeepSeekMoE layer (gather -> grouped gate/up
 * GEMMs -> SwiGLU -> grouped down GEMM -> weighted scatter), forward and forward+backward, for
 * 8 and for 32 routed experts at the same top-k. Compute follows top-k, so the ratio of the two
 * should stay near 1; a per-expert loop would launch 4x the kernels at 32 experts.
 *
 * Routing is synthetic: each token picks K distinct experts uniformly at random (seeded).
 *
 * Usage: DENO_WEBGPU_BACKEND=vulkan deno run -A bench/moe.ts [--tokens 2048] [--dim 256]
 *        [--inter 128] [--topk 2] [--experts 8,32] [--iters 5]
 *
 * @module
 */
import process from "node:process";
import { type ArenaSpec, ParamArena } from "../kernels/arena.ts";
import { Tape } from "../kernels/autograd.ts";
import { swiglu } from "../kernels/elementwise.ts";
import { getGpu, type Gpu } from "../kernels/gpu.ts";
import {
  gatherRows,
  invertPermutation,
  permFromChoicesCpu,
  scatterWeighted,
} from "../kernels/moe_dispatch.ts";
import { groupedLinear, groupedTiles } from "../kernels/moe_gemm.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";

interface Sizes {
  N: number;
  D: number;
  I: number;
  K: number;
  iters: number;
}

function parseArgs(args: string[]): Sizes & { experts: number[] } {
  const o: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    if (!args[i].startsWith("--") || args[i + 1] === undefined) {
      throw new Error(`bench/moe.ts: expected --flag value pairs, got "${args[i]}"`);
    }
    o[args[i].slice(2)] = args[i + 1];
  }
  const known = ["tokens", "dim", "inter", "topk", "experts", "iters"];
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new Error(`bench/moe.ts: unknown flag --${k} (known: ${known})`);
  }
  return {
    N: Number(o.tokens ?? 2048),
    D: Number(o.dim ?? 256),
    I: Number(o.inter ?? 128),
    K: Number(o.topk ?? 2),
    iters: Number(o.iters ?? 5),
    experts: (o.experts ?? "8,32").split(",").map(Number),
  };
}

/** Seeded uniform routing: K distinct experts per token, gate weights summing to 1. */
function syntheticRouting(N: number, K: number, E: number, seed: number) {
  let a = seed >>> 0;
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const choices = new Int32Array(N * K), weights = new Float32Array(N * K);
  for (let t = 0; t < N; t++) {
    const pool = Array.from({ length: E }, (_, e) => e);
    for (let s = 0; s < K; s++) {
      choices[t * K + s] = pool.splice(Math.floor(r() * pool.length), 1)[0];
      weights[t * K + s] = 1 / K;
    }
  }
  return { ...permFromChoicesCpu(choices, E), weights };
}

/** One expert count's layer: its parameters, routing and the step to time. */
function makeLayer(gpu: Gpu, s: Sizes, E: number) {
  const { N, D, I, K } = s;
  const specs: ArenaSpec[] = [];
  for (let e = 0; e < E; e++) {
    specs.push({ name: `experts.${e}.gate_proj.weight`, shape: [I, D] });
    specs.push({ name: `experts.${e}.up_proj.weight`, shape: [I, D] });
    specs.push({ name: `experts.${e}.down_proj.weight`, shape: [D, I] });
  }
  // the model's parameter table order: each expert's gate, up and down, padded to 256 bytes
  const arena = new ParamArena(gpu, specs);
  for (const sp of specs) {
    const n = sp.shape[0] * sp.shape[1];
    arena.upload(sp.name, Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.05));
  }
  const stride = (arena.entry("experts.1.gate_proj.weight").offset -
    arena.entry("experts.0.gate_proj.weight").offset) / 4;
  const route = syntheticRouting(N, K, E, 1234 + E);
  const perm = Tensor.from(gpu, route.perm, [N * K], "i32");
  const offsets = Tensor.from(gpu, route.offsets, [E + 1], "i32");
  const gate = Tensor.from(gpu, route.weights, [N, K]);
  const x = Tensor.from(gpu, Float32Array.from({ length: N * D }, (_, i) => Math.cos(i)), [N, D]);
  const dy = Tensor.from(gpu, new Float32Array(N * D).fill(1e-3), [N, D]);
  x.requiresGrad = true;
  gate.requiresGrad = true;
  const w = (n: string) => arena.param(`experts.0.${n}.weight`);

  /** Encodes one forward (and backward) of the routed experts; returns after the GPU is done. */
  const step = async (backward: boolean) => {
    const scope = new Scope();
    const tape = backward ? new Tape().start() : null;
    // routing bookkeeping shared by the layer's kernels, as the model does it
    const inv = invertPermutation(perm);
    const tiles = groupedTiles(offsets, N * K);
    const opts = { E, strideElems: stride, offsets, tiles };
    const xs = gatherRows(x, perm, { inv });
    const h = swiglu(
      groupedLinear(xs, w("gate_proj"), opts),
      groupedLinear(xs, w("up_proj"), opts),
    );
    const y = scatterWeighted(groupedLinear(h, w("down_proj"), opts), perm, { weights: gate, inv });
    if (tape) tape.backward(y, dy);
    x.grad = gate.grad = null; // allocated in `scope`
    scope.dispose();
    await gpu.sync();
  };
  return { E, step, destroy: () => arena.destroy() };
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

const s = parseArgs(Deno.args);
const gpu = await getGpu();
const flopFwd = 2 * s.N * s.K * 3 * s.D * s.I; // three GEMMs per routed row
console.log(
  `MoE FFN on ${gpu.info.description}: N=${s.N} tokens, D=${s.D}, moe_inter=${s.I}, ` +
    `top-k=${s.K}; median of ${s.iters} iterations, expert counts interleaved`,
);
const keep = new Scope();
const layers = s.experts.map((E) => makeLayer(gpu, s, E));
const times = layers.map(() => ({
  fwd: [] as number[],
  fwdBwd: [] as number[],
  cpuFwd: [] as number[],
  cpuFwdBwd: [] as number[],
}));
for (const backward of [false, true]) {
  for (const l of layers) await l.step(backward); // warm-up: pipelines compile here
  // alternate the expert counts so that noise from other work on the machine hits both alike
  for (let i = 0; i < s.iters; i++) {
    for (let k = 0; k < layers.length; k++) {
      const t0 = performance.now(), c0 = process.cpuUsage();
      await layers[k].step(backward);
      const c = process.cpuUsage(c0);
      times[k][backward ? "fwdBwd" : "fwd"].push((performance.now() - t0) / 1000);
      times[k][backward ? "cpuFwdBwd" : "cpuFwd"].push((c.user + c.system) / 1e6);
    }
  }
}
const results = layers.map((l, k) => ({
  E: l.E,
  fwd: median(times[k].fwd),
  fwdBwd: median(times[k].fwdBwd),
  cpuFwd: median(times[k].cpuFwd),
  cpuFwdBwd: median(times[k].cpuFwdBwd),
}));
for (const r of results) {
  console.log(
    `E=${String(r.E).padStart(3)}  forward ${(s.N / r.fwd).toFixed(0).padStart(7)} tok/s ` +
      `(${(flopFwd / r.fwd / 1e9).toFixed(2)} GFLOP/s)   forward+backward ` +
      `${(s.N / r.fwdBwd).toFixed(0).padStart(7)} tok/s ` +
      `(${(3 * flopFwd / r.fwdBwd / 1e9).toFixed(2)} GFLOP/s)   process CPU-s per step ` +
      `${r.cpuFwd.toFixed(3)} / ${r.cpuFwdBwd.toFixed(3)}`,
  );
}
if (results.length >= 2) {
  const [a, b] = [results[0], results[results.length - 1]];
  console.log(
    `ratio E=${b.E} / E=${a.E} (tokens/s): forward ${(a.fwd / b.fwd).toFixed(3)}, ` +
      `forward+backward ${(a.fwdBwd / b.fwdBwd).toFixed(3)}  (1.0 = compute follows top-k)`,
  );
  // On a software adapter the process CPU time is the work itself and ignores other load.
  console.log(
    `ratio by process CPU time:     forward ${(a.cpuFwd / b.cpuFwd).toFixed(3)}, ` +
      `forward+backward ${(a.cpuFwdBwd / b.cpuFwdBwd).toFixed(3)}`,
  );
}
for (const l of layers) l.destroy();
keep.dispose();
