/**
 * f32 vs f16 vs fp8 linear layers on the projection shapes of one transformer block: time of the
 * forward and of forward + backward per precision, and each low-precision result's error against
 * the f32 one (relative Frobenius error of y, dx and dW).
 *
 * The shapes are those `model/precision.ts` switches, for one layer of each preset: MLA's q_a,
 * q_b, kv_a, kv_b, o_proj and the dense SwiGLU's gate/up/down, at `--tokens` rows. Inputs are
 * seeded normals (x ~ N(0, 1), W ~ N(0, 0.02^2)), dy ~ N(0, 1).
 *
 * On Mesa's lavapipe every "GPU" op runs on the CPU, so this measures emulation cost, not the
 * memory-bandwidth saving f16/fp8 storage gives on a GPU. Times are the minimum over `--iters`
 * rounds, the precisions interleaved within each round (a shared CI machine is noisy).
 *
 * Usage: DENO_WEBGPU_BACKEND=vulkan deno run -A bench/precision.ts [--presets nano,mini]
 *        [--tokens 1024] [--iters 3]
 *
 * @module
 */
import process from "node:process";
import { Tape } from "../kernels/autograd.ts";
import { getGpu } from "../kernels/gpu.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { deriveSizes, type PresetName, resolveConfig } from "../model/config.ts";
import { linearFor, type Precision, PRECISIONS } from "../model/precision.ts";

/** One projection: x [tokens, fin] @ W [fout, fin]^T. */
interface Proj {
  name: string;
  fin: number;
  fout: number;
}

function parseArgs(args: string[]) {
  const o: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    if (!args[i].startsWith("--") || args[i + 1] === undefined) {
      throw new Error(`bench/precision.ts: expected --flag value pairs, got "${args[i]}"`);
    }
    o[args[i].slice(2)] = args[i + 1];
  }
  const known = ["presets", "tokens", "iters"];
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) {
      throw new Error(`bench/precision.ts: unknown flag --${k} (known: ${known.join(", ")})`);
    }
  }
  return {
    presets: (o.presets ?? "nano,mini").split(",") as PresetName[],
    tokens: Number(o.tokens ?? 1024),
    iters: Number(o.iters ?? 3),
  };
}

/** The low-precision projections of one block of `preset` (dense FFN). */
function projections(preset: PresetName): Proj[] {
  const cfg = resolveConfig(preset), s = deriveSizes(cfg), D = cfg.dim;
  const out: Proj[] = [];
  if (cfg.q_lora_rank > 0) {
    out.push({ name: "q_a_proj", fin: D, fout: cfg.q_lora_rank });
    out.push({ name: "q_b_proj", fin: cfg.q_lora_rank, fout: s.q_out });
  } else out.push({ name: "q_proj", fin: D, fout: s.q_out });
  out.push({ name: "kv_a_proj", fin: D, fout: s.kv_a_out });
  out.push({ name: "kv_b_proj", fin: cfg.kv_lora_rank, fout: s.kv_b_out });
  out.push({ name: "o_proj", fin: s.o_in, fout: D });
  out.push({ name: "gate_proj", fin: D, fout: cfg.inter_dim });
  out.push({ name: "up_proj", fin: D, fout: cfg.inter_dim });
  out.push({ name: "down_proj", fin: cfg.inter_dim, fout: D });
  return out;
}

function randn(n: number, seed: number, std: number): Float32Array {
  let a = seed >>> 0;
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Float32Array.from(
    { length: n },
    () => std * Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r()),
  );
}

function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

const { presets, tokens: M, iters } = parseArgs(process.argv.slice(2));
const gpu = await getGpu();
const precisions = PRECISIONS.filter((p) => p !== "f16" || gpu.hasF16);
console.log(`adapter: ${gpu.info.description}; ${M} tokens; min of ${iters} rounds`);
if (!gpu.hasF16) console.log("f16 skipped: the adapter lacks shader-f16");

for (const preset of presets) {
  const projs = projections(preset);
  const data = projs.map((p, i) => ({
    x: Tensor.from(gpu, randn(M * p.fin, 3 * i + 1, 1), [M, p.fin]),
    w: Tensor.from(gpu, randn(p.fout * p.fin, 3 * i + 2, 0.02), [p.fout, p.fin]),
    dy: Tensor.from(gpu, randn(M * p.fout, 3 * i + 3, 1), [M, p.fout]),
  }));
  const flops = projs.reduce((s, p) => s + 2 * M * p.fin * p.fout, 0);

  /** Runs every projection once; returns the results when `read`. */
  const step = async (precision: Precision, backward: boolean, read: boolean) => {
    const lin = linearFor(precision);
    const scope = new Scope();
    const results: { y: Float32Array; dx: Float32Array; dw: Float32Array }[] = [];
    for (const d of data) {
      d.x.grad = d.w.grad = null;
      d.x.requiresGrad = d.w.requiresGrad = backward;
      const tape = backward ? new Tape().start() : null;
      const y = lin(d.x, d.w);
      tape?.backward(y, d.dy);
      if (read) {
        results.push({
          y: await y.readF32(),
          dx: await d.x.grad!.readF32(),
          dw: await d.w.grad!.readF32(),
        });
      }
    }
    await gpu.sync();
    scope.dispose();
    return results;
  };

  const best = new Map<string, number>();
  for (const p of precisions) for (const bwd of [false, true]) await step(p, bwd, false); // compile
  for (let round = 0; round < iters; round++) {
    for (const p of precisions) {
      for (const bwd of [false, true]) {
        const t0 = performance.now();
        await step(p, bwd, false);
        const key = `${p}|${bwd}`;
        best.set(key, Math.min(best.get(key) ?? Infinity, performance.now() - t0));
      }
    }
  }
  const ref = await step("f32", true, true);
  console.log(
    `\n${preset}: ${projs.map((p) => `${p.name} ${p.fin}->${p.fout}`).join(", ")}` +
      ` (${(flops / 1e9).toFixed(2)} GFLOP forward)`,
  );
  console.log("precision  forward ms  GFLOP/s  fwd+bwd ms  GFLOP/s   rel err y     dx      dW");
  for (const p of precisions) {
    const f = best.get(`${p}|false`)!, fb = best.get(`${p}|true`)!;
    const got = p === "f32" ? ref : await step(p, true, true);
    const err = (k: "y" | "dx" | "dw") =>
      Math.sqrt(
        got.reduce((s, r, i) => s + relErr(r[k], ref[i][k]) ** 2, 0) / got.length,
      ).toExponential(2);
    console.log(
      `${p.padEnd(9)} ${f.toFixed(1).padStart(10)} ${(flops / f / 1e6).toFixed(2).padStart(8)}` +
        ` ${fb.toFixed(1).padStart(11)} ${(3 * flops / fb / 1e6).toFixed(2).padStart(8)}` +
        `   ${err("y")} ${err("dx")} ${err("dw")}`,
    );
  }
}
