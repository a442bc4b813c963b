import { equal, ok } from "node:assert/strict";
import { matmulForward } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";
import { getGpu } from "../kernels/gpu.ts";
import { assertSameBits, GPU_TEST, randn } from "./_util.ts";

Deno.test("every kernel reads its parameters from storage, never a uniform struct", async () => {
  // Gpu.dispatch binds params from a storage buffer, so a uniform `p` fails validation; and
  // lavapipe JIT-compiles (and keeps) a shader variant per dispatch for some uniform values (see
  // kernels/gpu.ts). Uniform windows of data (attention's `u0`...) are fine: they are not `p`.
  const offenders: string[] = [];
  for (const folder of ["kernels", "model", "bench"]) {
    const dir = new URL(`../${folder}/`, import.meta.url);
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(new URL(e.name, dir));
      if (/var<uniform>\s+p\s*:/.test(text)) offenders.push(`${folder}/${e.name}`);
    }
  }
  equal(offenders.join(", "), "");
});

Deno.test("dispatches that bind the same ranges reuse one bind group", GPU_TEST, async () => {
  const gpu = await getGpu();
  const a = Tensor.from(gpu, randn(8 * 12, 1), [8, 12]);
  const b = Tensor.from(gpu, randn(12 * 16, 2), [12, 16]);
  const c = Tensor.empty(gpu, [8, 16]);
  matmulForward(c, a, b);
  const first = await c.readF32();
  const made = gpu.totalBindGroups;
  for (let i = 0; i < 3; i++) {
    matmulForward(c, a, b);
    await gpu.flush();
  }
  equal(gpu.totalBindGroups, made, "a repeated step creates no bind groups");
  assertSameBits(await c.readF32(), first);
  // A different range of the same buffer is a different binding.
  const c2 = Tensor.empty(gpu, [8, 16]);
  matmulForward(c2, a, b);
  await gpu.flush();
  equal(gpu.totalBindGroups, made + 1);
  assertSameBits(await c2.readF32(), first);
  for (const t of [a, b, c, c2]) t.dispose();
});

/**
 * The Khronos validation layer keeps its own record of every command buffer and dispatch (~1 MB
 * per GEMM here), which would read as a leak: the memory test runs without it (CI runs it on
 * both drivers without the layer).
 */
const UNDER_VALIDATION = (Deno.env.get("VK_INSTANCE_LAYERS") ?? "").includes("validation");

Deno.test("repeated GEMMs with power-of-two sizes do not grow host memory", {
  ...GPU_TEST,
  ignore: UNDER_VALIDATION,
}, async () => {
  // The dW GEMM of a 256-wide layer (A^T, M = 256) once made lavapipe keep ~1.3 MB of JIT code
  // per dispatch: 20 dispatches grew the process by ~26 MB. Now it is a few KB each.
  const gpu = await getGpu();
  const M = 256, N = 256, K = 64;
  const a = Tensor.from(gpu, randn(K * M, 3), [K, M]);
  const b = Tensor.from(gpu, randn(K * N, 4), [K, N]);
  const c = Tensor.empty(gpu, [M, N]);
  const run = async (n: number) => {
    for (let i = 0; i < n; i++) {
      matmulForward(c, a, b, { transA: true, accumulate: true });
      await gpu.flush();
    }
    await gpu.sync();
  };
  await run(5);
  // A leak grows every window; a one-off allocation elsewhere in the process (the other test
  // files share it) shows in one window only, so the smallest window's growth is what counts.
  const windows: number[] = [];
  for (let w = 0; w < 3; w++) {
    const before = Deno.memoryUsage().rss;
    await run(20);
    windows.push((Deno.memoryUsage().rss - before) / 2 ** 20);
  }
  const grown = Math.min(...windows);
  ok(
    grown < 8,
    `20 dispatches grew the process by ${windows.map((g) => g.toFixed(1)).join(", ")} MiB`,
  );
  for (const t of [a, b, c]) t.dispose();
});

Deno.test("pipelines that share a label get bind groups of their own", GPU_TEST, async () => {
  // With layout "auto" a bind group only fits the pipeline whose layout made it.
  const gpu = await getGpu();
  const code = `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1) fn main() { x[0] = x[0] + 1.0; }`;
  const make = () =>
    gpu.device.createComputePipeline({
      layout: "auto",
      compute: { module: gpu.device.createShaderModule({ code }), entryPoint: "main" },
      label: "same label",
    });
  const x = Tensor.zeros(gpu, [1]);
  for (const pipeline of [make(), make()]) gpu.dispatch(pipeline, [x.binding], [1, 1, 1]);
  assertSameBits(await x.readF32(), new Float32Array([2]));
  x.dispose();
});
