/**
 * The matmul designs that lost, kept runnable next to the winner (kernels/matmul.ts), and the
 * memory-path microbenchmark that explains why. Not part of `deno task bench`.
 *
 *     deno run -A bench/_matmul_variants.ts [--loads] [--n 1024]
 *
 * Variants, all C [n, n] = A [n, n] @ B [n, n]:
 * - `scalar 8x8`: the winner's layout (8-thread workgroups, registers only) with scalar loads.
 * - `workgroup-memory 64x64`: the classic GPU GEMM: 64 x 64 tiles staged through workgroup
 *   memory by 64 threads, 8 x 8 outputs each, BK = 32, vec4 loads and stores.
 * - `winner 12x16`: kernels/matmul.ts as shipped.
 *
 * Figures on lavapipe (2 cores, LLVM 15, 256-bit; CPU-time GFLOPS at 1024^3, load-insensitive):
 * scalar 8x8 ~10, workgroup-memory ~11, winner ~21; tfjs-backend-webgpu ~4.5 wall-clock.
 * `--loads` times one vec4 load per lane through each memory path: storage ~1.2 ns,
 * storage as 4 scalars ~2.4, uniform ~0.7, workgroup ~1.6, texture ~1.9, against ~0.1 for an
 * FMA-only loop. Every storage/workgroup load is a per-lane loop with a bounds branch per
 * component in this driver, so the only lever is fewer loads per FMA: big register tiles, vec4s,
 * no staging copy.
 *
 * @module
 */
import process from "node:process";
import { getGpu, Params } from "../kernels/gpu.ts";
import { matmulSource } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";

const gpu = await getGpu();
const arg = (name: string) => Deno.args.indexOf(name);
const n = arg("--n") >= 0 ? Number(Deno.args[arg("--n") + 1]) : 1024;

/** A kernel over A, B, C and the matmul params struct, with its grid for M = N = K = n. */
interface Variant {
  name: string;
  src: string;
  grid: [number, number, number];
}

function scalar8x8(): Variant {
  const TM = 8, TN = 8, acc: string[] = [], body: string[] = [], st: string[] = [];
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      acc.push(`var c${i}_${j} = 0.0;`);
      st.push(`C[(m0 + ${i}u) * p.N + n0 + ${8 * j}u] = c${i}_${j};`);
    }
  }
  for (let j = 0; j < TN; j++) body.push(`let b${j} = B[k * p.N + n0 + ${8 * j}u];`);
  for (let i = 0; i < TM; i++) {
    body.push(`let a${i} = A[(m0 + ${i}u) * p.K + k];`);
    for (let j = 0; j < TN; j++) body.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
  }
  return {
    name: "scalar 8x8",
    grid: [n / 64, n / 8, 1],
    src: `${HEAD("f32", "f32")}
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * 8u;
  let n0 = wid.x * 64u + li;
  ${acc.join("\n  ")}
  for (var k = 0u; k < p.K; k++) {
    ${body.join("\n    ")}
  }
  ${st.join("\n  ")}
}`,
  };
}

function workgroupTiles(): Variant {
  const TM = 8, TN = 8, T = 8, BK = 32, BM = TM * T, BN = TN * T;
  const acc: string[] = [], body: string[] = [], st: string[] = [];
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) acc.push(`var c${i}_${j} = 0.0;`);
  for (let i = 0; i < TM; i++) {
    body.push(`let a${i} = As[(ty * ${TM}u + ${i}u) * ${BK / 4}u + kb];`);
  }
  for (let kk = 0; kk < 4; kk++) {
    for (let g = 0; g < TN / 4; g++) {
      body.push(`let b${kk}_${g} = Bs[(kb * 4u + ${kk}u) * ${BN / 4}u + tx * ${TN / 4}u + ${g}u];`);
    }
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TN; j++) {
        body.push(`c${i}_${j} = fma(a${i}[${kk}], b${kk}_${j >> 2}[${j & 3}], c${i}_${j});`);
      }
    }
  }
  for (let i = 0; i < TM; i++) {
    for (let g = 0; g < TN / 4; g++) {
      const v = [0, 1, 2, 3].map((q) => `c${i}_${4 * g + q}`).join(", ");
      st.push(
        `C[((m0 + ty * ${TM}u + ${i}u) * p.N + n0 + tx * ${TN}u) / 4u + ${g}u] = vec4(${v});`,
      );
    }
  }
  return {
    name: "workgroup-memory 64x64",
    grid: [n / BN, n / BM, 1],
    src: `${HEAD("vec4<f32>", "vec4<f32>")}
var<workgroup> As: array<vec4<f32>, ${BM * BK / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * BN / 4}>;
@compute @workgroup_size(${T * T})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  let tx = li % ${T}u;
  let ty = li / ${T}u;
  ${acc.join("\n  ")}
  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
    for (var e = li; e < ${BM * BK / 4}u; e += ${T * T}u) {
      As[e] = A[((m0 + e / ${BK / 4}u) * p.K + k0) / 4u + e % ${BK / 4}u];
    }
    for (var e = li; e < ${BK * BN / 4}u; e += ${T * T}u) {
      Bs[e] = B[((k0 + e / ${BN / 4}u) * p.N + n0) / 4u + e % ${BN / 4}u];
    }
    workgroupBarrier();
    for (var kb = 0u; kb < ${BK / 4}u; kb++) {
      ${body.join("\n      ")}
    }
    workgroupBarrier();
  }
  ${st.join("\n  ")}
}`,
  };
}

function winner(): Variant {
  const [TM, TN] = [12, 16];
  return {
    name: "winner 12x16",
    grid: [Math.ceil(n / (8 * TN)), Math.ceil(n / TM), 1],
    src: matmulSource({
      transA: false,
      transB: false,
      vecA: true,
      vecB: true,
      TM,
      TN,
      quadC: true,
      tailK: false,
      accumulate: false,
    }),
  };
}

function HEAD(ta: string, tc: string): string {
  return `
@group(0) @binding(0) var<storage, read> A: array<${ta}>;
@group(0) @binding(1) var<storage, read> B: array<${ta}>;
@group(0) @binding(2) var<storage, read_write> C: array<${tc}>;
struct P {
  M: u32, N: u32, K: u32, alpha: f32, sa: u32, sb: u32, sc: u32, R: u32,
  ra: u32, rb: u32, m_off: u32, n_off: u32, z_off: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(3) var<storage, read> p: P;`;
}

/** Best-of-3 wall and CPU-time GFLOPS (CPU time over the 2 driver threads). */
async function measure(v: Variant): Promise<string> {
  const A = Tensor.from(gpu, Float32Array.from({ length: n * n }, (_, i) => (i % 7) - 3), [n * n]);
  const B = Tensor.from(gpu, Float32Array.from({ length: n * n }, (_, i) => (i % 5) - 2), [n * n]);
  const C = Tensor.empty(gpu, [n * n]);
  const pipe = gpu.pipeline("variant", v.name, () => v.src);
  const go = () => {
    const p = new Params().u32(n).u32(n).u32(n).f32(1).u32(0).u32(0).u32(0).u32(1);
    for (let i = 0; i < 8; i++) p.u32(0);
    gpu.dispatch(pipe, [A.binding, B.binding, C.binding], v.grid, p);
  };
  go();
  await gpu.sync();
  // Check one row against the CPU before timing.
  const a = await A.readF32(), b = await B.readF32(), c = await C.readF32();
  for (let j = 0; j < n; j += 37) {
    let s = 0;
    for (let k = 0; k < n; k++) s += a[5 * n + k] * b[k * n + j];
    if (Math.abs(c[5 * n + j] - s) > 1e-3 * Math.abs(s) + 1e-3) throw new Error(`${v.name} wrong`);
  }
  let wall = Infinity, cpu = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    go();
    await gpu.sync();
    const used = process.cpuUsage(c0);
    wall = Math.min(wall, (performance.now() - t0) / 1000);
    cpu = Math.min(cpu, (used.user + used.system) / 1e6 / navigator.hardwareConcurrency);
  }
  const f = 2 * n ** 3 / 1e9;
  return `${v.name.padEnd(24)} wall ${(f / wall).toFixed(1)}  cpu-time ${
    (f / cpu).toFixed(1)
  } GFLOPS`;
}

async function loads(): Promise<void> {
  const dev = gpu.device, ITER = 4096, GROUPS = 512;
  const buf = dev.createBuffer({
    size: 65536,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM,
  });
  const out = dev.createBuffer({ size: GROUPS * 64 * 16, usage: GPUBufferUsage.STORAGE });
  const tex = dev.createTexture({
    size: [256, 16],
    format: "rgba32float",
    usage: GPUTextureUsage.TEXTURE_BINDING,
  });
  const kernel = (decl: string, load: string) =>
    `${decl}
@group(0) @binding(1) var<storage, read_write> O: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  var s = vec4<f32>(0.0);
  for (var it = 0u; it < ${ITER}u; it += 4u) {
    ${
      [0, 1, 2, 3].map((q) => `{ let i = (li * 37u + it + ${q}u) & 4095u; s += ${load}; }`).join(
        "\n    ",
      )
    }
  }
  O[wid.x * 64u + li] = s;
}`;
  const ssbo = "@group(0) @binding(0) var<storage, read> S: array<vec4<f32>>;";
  const cases: [string, string][] = [
    ["no load (FMA only)", kernel(ssbo, "vec4<f32>(f32(i))")],
    ["storage vec4", kernel(ssbo, "S[i]")],
    [
      "storage 4 x f32",
      kernel(
        "@group(0) @binding(0) var<storage, read> S: array<f32>;",
        "vec4(S[4u * i], S[4u * i + 1u], S[4u * i + 2u], S[4u * i + 3u])",
      ),
    ],
    [
      "uniform vec4",
      kernel("@group(0) @binding(0) var<uniform> S: array<vec4<f32>, 4096>;", "S[i]"),
    ],
    ["workgroup vec4", kernel("var<workgroup> W: array<vec4<f32>, 4096>;", "W[i]")],
    [
      "texture rgba32f",
      kernel(
        "@group(0) @binding(0) var T: texture_2d<f32>;",
        "textureLoad(T, vec2(i & 255u, i >> 8u), 0)",
      ),
    ],
  ];
  for (const [name, code] of cases) {
    const pipe = dev.createComputePipeline({
      layout: "auto",
      compute: { module: dev.createShaderModule({ code }), entryPoint: "main" },
    });
    const entries: GPUBindGroupEntry[] = [{ binding: 1, resource: { buffer: out } }];
    if (name.startsWith("texture")) entries.push({ binding: 0, resource: tex.createView() });
    else if (!name.startsWith("workgroup")) entries.push({ binding: 0, resource: { buffer: buf } });
    const bg = dev.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
    const run = async () => {
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipe);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(GROUPS);
      pass.end();
      dev.queue.submit([enc.finish()]);
      await dev.queue.onSubmittedWorkDone();
    };
    await run();
    const t0 = performance.now();
    await run();
    const ns = (performance.now() - t0) * 1e6 / (GROUPS * 64 * ITER);
    console.log(`${name.padEnd(20)} ${ns.toFixed(3)} ns per lane per vec4 load (wall, all cores)`);
  }
}

if (arg("--loads") >= 0) await loads();
else {
  console.log(`C [${n}, ${n}] = A @ B; load average ${Deno.loadavg()[0].toFixed(2)}`);
  for (const v of [scalar8x8(), workgroupTiles(), winner()]) console.log(await measure(v));
}
