// Tile-size tuning for kernels/matmul.ts: interleaves variants so background load hits all alike.
// deno run -A bench/_tune_matmul.ts 12x16 16x16 ... [--shape MxKxN[:ta|:tb]]
import process from "node:process";
import { getGpu, Params } from "../kernels/gpu.ts";
import { matmulSource, type MatmulSpec } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";

const gpu = await getGpu();
const tiles = Deno.args.filter((a) => /^\d+x\d+$/.test(a)).map((a) => a.split("x").map(Number));
const shapeArg = Deno.args.find((a) => a.startsWith("--shape="))?.slice(8) ?? "1024x1024x1024";
const [dims, tr = ""] = shapeArg.split(":");
const [M, K, N] = dims.split("x").map(Number);
const transA = tr.includes("a"), transB = tr.endsWith("b");
const A = Tensor.zeros(gpu, [M * K]),
  B = Tensor.zeros(gpu, [K * N]),
  C = Tensor.empty(gpu, [M * N]);
const runs = tiles.map(([TM, TN]) => {
  const spec: MatmulSpec = {
    transA,
    transB,
    vecA: true,
    vecB: true,
    TM,
    TN,
    quadC: true,
    tailK: false,
    accumulate: false,
  };
  const pipe = gpu.pipeline("tune", `${TM}x${TN}${tr}`, () => matmulSource(spec));
  const grid: [number, number, number] = [Math.ceil(N / (8 * TN)), Math.ceil(M / TM), 1];
  const params = () =>
    new Params().u32(M).u32(N).u32(K).f32(1).u32(0).u32(0).u32(0).u32(1).u32(0).u32(0).u32(0).u32(0)
      .u32(0).u32(0).u32(0).u32(0);
  return {
    name: `${TM}x${TN}`,
    go: () => gpu.dispatch(pipe, [A.binding, B.binding, C.binding], grid, params()),
    best: Infinity,
    cpu: Infinity,
  };
});
for (const r of runs) {
  r.go();
  await gpu.sync();
}
for (let rep = 0; rep < 4; rep++) {
  for (const r of runs) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    r.go();
    r.go();
    await gpu.sync();
    const c1 = process.cpuUsage(c0);
    r.best = Math.min(r.best, (performance.now() - t0) / 2000);
    r.cpu = Math.min(r.cpu, (c1.user + c1.system) / 1e6 / 2 / 2); // per run, per core of 2
  }
}
console.log(
  `${shapeArg} load ${Deno.loadavg()[0].toFixed(2)}: ` +
    runs.map((r) =>
      `${r.name} ${(2 * M * N * K / r.best / 1e9).toFixed(1)}/${
        (2 * M * N * K / r.cpu / 1e9).toFixed(1)
      }`
    ).join("  "),
);
