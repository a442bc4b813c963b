import {
  embedding,
  embeddingBackward,
  embeddingBackwardCpu,
  embeddingCpu,
  embeddingForward,
} from "../kernels/embedding.ts";
import { add } from "../kernels/elementwise.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, assertSameBits, GPU_TEST, randint, randn, testDevice } from "./_util.ts";
import { checkFiniteDiff, f64 } from "./_grad.ts";

// [N tokens, V, D]: includes N past one rank tile (256), V past one scan chunk, odd D
// [N, V, D]: scalar and vec4 rows (D % 4), scalar and vec4 rank scans (N % 4), rows of
// D > 256 (8 threads per row), many repeated ids (130 tokens over 50 ids)
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [7, 5, 3],
  [300, 37, 19],
  [600, 1000, 8],
  [130, 50, 300],
];

/** Seeded ids in [0, V) with a few -1 (ignored) and one out-of-range id. */
function makeIds(N: number, V: number, seed: number): Int32Array {
  const ids = randint(N, seed, V);
  for (let n = 3; n < N; n += 17) ids[n] = -1;
  if (N > 5) ids[5] = V + 2;
  return ids;
}

Deno.test("embedding lookup matches the CPU twin, zero rows for bad ids", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [N, V, D] of SHAPES) {
    const table = randn(V * D, V + D), ids = makeIds(N, V, N);
    const out = Tensor.empty(device, [N, D]);
    embeddingForward(out, Tensor.from(device, table, [V, D]), Tensor.from(device, ids, [N], "i32"));
    assertClose(await out.readF32(), embeddingCpu(table, ids, D), { label: `${N}x${V}x${D}` });
  }
});

Deno.test("embedding CPU backward matches finite differences", () => {
  const [N, V, D] = [9, 4, 3];
  const table = f64(randn(V * D, 1)), ids = makeIds(N, V, 2), G = f64(randn(N * D, 3));
  const grad = embeddingBackwardCpu(G, ids, { V, D });
  checkFiniteDiff((t) => embeddingCpu(t, ids, D), table, G, grad);
});

Deno.test("embedding GPU backward matches the CPU and accumulates", GPU_TEST, async () => {
  const device = await testDevice();
  for (const [N, V, D] of SHAPES) {
    const ids = makeIds(N, V, N + 1), dout = randn(N * D, N * D), prior = randn(V * D, 4);
    const idt = Tensor.from(device, ids, [N], "i32"), dt = Tensor.from(device, dout, [N, D]);
    const want = embeddingBackwardCpu(dout, ids, { V, D });
    const g = Tensor.from(device, randn(V * D, 9), [V, D]); // garbage: must be overwritten
    embeddingBackward(g, dt, idt);
    assertClose(await g.readF32(), want, { atol: 1e-5, label: `${N}x${V}x${D}` });
    const ga = Tensor.from(device, prior, [V, D]);
    embeddingBackward(ga, dt, idt, { accumulate: true });
    assertClose(await ga.readF32(), want.map((v, i) => v + prior[i]), { atol: 1e-5, label: "acc" });
  }
});

Deno.test(
  "embedding backward sums repeated ids in token order: identical bits",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const [N, V, D] = [1500, 11, 64]; // ~136 tokens per id
    const ids = Tensor.from(device, randint(N, 5, V), [N], "i32");
    const dout = Tensor.from(device, randn(N * D, 6, 3), [N, D]);
    const a = Tensor.empty(device, [V, D]), b = Tensor.empty(device, [V, D]);
    embeddingBackward(a, dout, ids);
    embeddingBackward(b, dout, ids);
    const ga = await a.readF32();
    assertSameBits(ga, await b.readF32());
    // token-order f32 summation is exactly what the CPU twin does in f32
    const want = embeddingBackwardCpu(await dout.readF32(), await ids.read(), { V, D });
    assertSameBits(ga, want, "token-order sum");
  },
);

Deno.test("embedding op records a backward that accumulates under the tape", GPU_TEST, async () => {
  const device = await testDevice();
  const [V, D] = [13, 6];
  const idsh = makeIds(20, V, 7);
  const th = randn(V * D, 1), g = randn(20 * D, 2);
  const table = Tensor.from(device, th, [V, D]);
  table.requiresGrad = true;
  const ids = Tensor.from(device, idsh, [4, 5], "i32");
  const tape = new Tape().start();
  const y = add(embedding(table, ids), embedding(table, ids));
  tape.backward(y, Tensor.from(device, g, [4, 5, D]));
  const one = embeddingBackwardCpu(g, idsh, { V, D });
  assertClose(await table.grad!.readF32(), one.map((v) => 2 * v));
});
