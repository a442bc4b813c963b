import assert from "node:assert/strict";
import {
  AMAX_FLOOR,
  dequantize,
  dequantizeCpu,
  e4m3Decode,
  e4m3Encode,
  e4m3Scale,
  quantize,
  quantizeActivations,
  quantizeCpu,
  type QuantizeOptions,
  quantizeWeights,
} from "../kernels/quant.ts";
import { Tensor } from "../kernels/tensor.ts";
import { GPU_TEST, randn, rng, testDevice } from "./_util.ts";

/** Every finite, non-negative E4M3 value in code order (codes 0x00 .. 0x7e). */
const GRID = Array.from({ length: 0x7f }, (_, c) => e4m3Decode(c));

/** Asserts equal u32 words, naming the first difference. */
function assertWords(got: Uint32Array, want: Uint32Array, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) {
      assert.fail(
        `${label}: word ${i} is 0x${got[i].toString(16)}, want 0x${want[i].toString(16)}`,
      );
    }
  }
}

/** Asserts identical f32 bits, all NaNs counting as equal. */
function assertF32Bits(got: Float32Array, want: Float32Array, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < got.length; i++) {
    if (Number.isNaN(got[i]) && Number.isNaN(want[i])) continue;
    if (g[i] !== w[i]) assert.fail(`${label}: [${i}] is ${got[i]}, want ${want[i]}`);
  }
}

/** Runs quantize on the GPU and its CPU twin and checks codes, scales and dequantized values. */
async function checkTwin(
  x: Float32Array,
  shape: [number, number],
  opts: QuantizeOptions,
  label: string,
): Promise<void> {
  const device = await testDevice();
  const [r0, c0] = shape;
  const [rows, cols] = opts.transpose ? [c0, r0] : [r0, c0];
  const g = quantize(Tensor.from(device, x, shape), opts);
  const c = quantizeCpu(x, { rows, cols, ...opts });
  assert.deepEqual(g.q.shape, [rows, Math.ceil(cols / 4)], `${label}: q shape`);
  assertWords((await g.q.read()) as Uint32Array, c.q, `${label} codes`);
  assertF32Bits(await g.scales.readF32(), c.scales, `${label} scales`);
  assertF32Bits(await dequantize(g).readF32(), dequantizeCpu(c), `${label} dequantized`);
}

/** Values whose quotient by `scale` hits every code, every midpoint (a tie) and both sides. */
function codecProbe(scale: number): Float32Array {
  const v: number[] = [];
  for (let c = 0; c < 0x7e; c++) {
    const mid = (GRID[c] + GRID[c + 1]) / 2;
    v.push(GRID[c], mid, mid * (1 + 2 ** -20), mid * (1 - 2 ** -20));
  }
  v.push(448, 449, 464, 465, 480, 1e6, 3e38, Infinity, NaN, 0, -0, 1e-40, -1e-42, 2 ** -10);
  const out = new Float32Array(2 * v.length);
  v.forEach((a, i) => {
    out[2 * i] = a * scale;
    out[2 * i + 1] = -a * scale;
  });
  return out;
}

Deno.test("e4m3Encode() inverts e4m3Decode(), rounds ties to even and saturates at 448", () => {
  for (let c = 0; c < 256; c++) {
    if ((c & 0x7f) === 0x7f) assert.ok(Number.isNaN(e4m3Decode(c)), `code ${c} is NaN`);
    else assert.equal(e4m3Encode(e4m3Decode(c)), c, `code 0x${c.toString(16)} round trip`);
  }
  for (let c = 0; c < 0x7e; c++) {
    const mid = (GRID[c] + GRID[c + 1]) / 2;
    assert.equal(e4m3Encode(mid), c % 2 === 0 ? c : c + 1, `tie above code ${c} goes to even`);
    assert.equal(e4m3Encode(mid * (1 + 1e-9)), c + 1);
    assert.equal(e4m3Encode(mid * (1 - 1e-9)), c);
  }
  assert.equal(e4m3Decode(0x7e), 448);
  assert.equal(e4m3Decode(0x01), 2 ** -9);
  assert.equal(e4m3Decode(0x08), 2 ** -6);
  for (const big of [448, 449, 464, 465, 1e30, Infinity]) {
    assert.equal(e4m3Encode(big), 0x7e, `${big} saturates`);
    assert.equal(e4m3Encode(-big), 0xfe, `${-big} saturates`);
  }
  assert.equal(e4m3Encode(NaN), 0x7f);
  assert.equal(e4m3Encode(-0), 0x80);
  assert.equal(e4m3Encode(2 ** -10), 0); // a tie between 0 and 2^-9 goes to 0
  assert.equal(e4m3Encode(-(2 ** -10) * 1.01), 0x81);
  assert.equal(e4m3Scale(448), 1);
  assert.equal(e4m3Scale(0), Math.fround(Math.fround(AMAX_FLOOR) / 448));
  assert.ok(Number.isNaN(e4m3Scale(Infinity)));
});

Deno.test(
  "quantize() with a fixed scale matches the CPU twin bit for bit on ties, subnormals, " +
    "values beyond 448, zeros and -0",
  GPU_TEST,
  async () => {
    for (const scale of [1, 2 ** -12, 0.37, 3.3e5]) {
      const x = codecProbe(scale);
      await checkTwin(x, [1, x.length], { fixedScale: scale }, `fixed scale ${scale}`);
      if (scale === 1) {
        // with scale 1 the codes are e4m3Encode's, an independent spec of the kernel's division
        const c = quantizeCpu(x, { rows: 1, cols: x.length, fixedScale: 1 });
        x.forEach((v, i) => {
          const code = (c.q[i >> 2] >>> (8 * (i & 3))) & 0xff;
          // NaN keeps its sign bit, whatever that is
          if (Number.isNaN(v)) assert.equal(code & 0x7f, 0x7f, `element ${i} = NaN`);
          else assert.equal(code, e4m3Encode(v), `element ${i} = ${v}`);
        });
      }
    }
    // random magnitudes over 2^-40 .. 2^40 against a non-power-of-two scale
    const r = rng(7);
    const x = Float32Array.from(
      { length: 3000 },
      () => (r() < 0.5 ? -1 : 1) * 2 ** (80 * r() - 40) * (1 + r()),
    );
    await checkTwin(x, [3, 1000], { fixedScale: 0.0123 }, "random magnitudes");
  },
);

Deno.test(
  "quantize() with random fixed scales matches the CPU twin bit for bit",
  GPU_TEST,
  async () => {
    const r = rng(21);
    for (let t = 0; t < 12; t++) {
      // scales over 2^-100 .. 2^100 with random mantissas; values around scale * 2^-12 .. 2^12
      const scale = Math.fround(2 ** (200 * r() - 100) * (1 + r()));
      const x = Float32Array.from(
        { length: 1024 },
        () => (r() < 0.5 ? -1 : 1) * scale * 2 ** (24 * r() - 12) * (1 + r()),
      );
      await checkTwin(x, [4, 256], { fixedScale: scale }, `fixed scale ${scale}`);
    }
  },
);

/** Ragged test data: normal values, tiles of very different magnitudes, a zero tile, -0, f32
 * subnormals, and one tile per 8 rows of exact ties (amax 448 * 2^-3, so the scale is 2^-3). */
function raggedData(R: number, C: number, seed: number): Float32Array {
  const x = randn(R * C, seed);
  const r = rng(seed + 1);
  const tileMag = Array.from({ length: R * Math.ceil(C / 128) }, () => 10 ** (6 * r() - 3));
  for (let i = 0; i < R; i++) {
    for (let c = 0; c < C; c++) {
      const t = i * Math.ceil(C / 128) + Math.floor(c / 128);
      let v = x[i * C + c] * tileMag[t];
      if (i % 8 === 1 && c < 128) {
        // exact ties: midpoints of the grid times the power-of-two scale
        const k = Math.floor(r() * 0x7e);
        v = (c === 0 ? 448 : (GRID[k] + GRID[k + 1]) / 2) * 2 ** -3 * (r() < 0.5 ? -1 : 1);
      }
      if (i % 8 === 2 && c < 128) v = c % 3 === 0 ? -0 : 0; // a zero tile
      if (i % 8 === 3 && c % 17 === 0) v = (c % 2 ? -1 : 1) * 1e-40; // f32 subnormals
      x[i * C + c] = v;
    }
  }
  return x;
}

Deno.test(
  "quantizeActivations() and quantizeWeights() match the CPU twin bit for bit for ragged shapes",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [R, C] of [[1, 1], [3, 130], [37, 300], [130, 257], [257, 129]] as const) {
      const x = raggedData(R, C, R * 1000 + C);
      for (const block of [false, true]) {
        for (const transpose of [false, true]) {
          await checkTwin(x, [R, C], { block, transpose }, `[${R}, ${C}] ${block} ${transpose}`);
        }
      }
    }
    // the named entry points are quantize's two modes
    const w = randn(200 * 140, 3);
    const t = Tensor.from(device, w, [200, 140]);
    assertWords(
      (await quantizeWeights(t).q.read()) as Uint32Array,
      quantizeCpu(w, { rows: 200, cols: 140, block: true }).q,
      "quantizeWeights",
    );
    const qa = quantizeActivations(t);
    assert.deepEqual(qa.scales.shape, [200, 2]);
    assertWords(
      (await qa.q.read()) as Uint32Array,
      quantizeCpu(w, { rows: 200, cols: 140 }).q,
      "quantizeActivations",
    );
  },
);

Deno.test(
  "a 128x128 weight block with amax 448 * 2^-4 rounds exact ties to even",
  GPU_TEST,
  async () => {
    const R = 150, C = 200, r = rng(11);
    const x = new Float32Array(R * C);
    for (let i = 0; i < x.length; i++) {
      const k = Math.floor(r() * 0x7e);
      x[i] = (GRID[k] + GRID[k + 1]) / 2 * 2 ** -4 * (r() < 0.5 ? -1 : 1);
    }
    for (const [i, c] of [[0, 0], [0, 128], [128, 0], [128, 128]]) x[i * C + c] = 448 * 2 ** -4;
    await checkTwin(x, [R, C], { block: true }, "block ties");
    const q = quantizeCpu(x, { rows: R, cols: C, block: true });
    assert.deepEqual([...q.scales], [2 ** -4, 2 ** -4, 2 ** -4, 2 ** -4]);
    // every code is even in its mantissa: ties went to even, and 448 is 0x7e
    for (const word of q.q) {
      for (let k = 0; k < 4; k++) assert.equal((word >>> (8 * k)) & 1, 0);
    }
  },
);

Deno.test(
  "the scale amax / 448 matches Math.fround bit for bit over 2^-30 .. 2^120",
  GPU_TEST,
  async () => {
    const r = rng(5);
    const amax = Float32Array.from({ length: 4096 }, () => 2 ** (150 * r() - 30) * (1 + r()));
    amax[0] = 0;
    amax[1] = AMAX_FLOOR;
    amax[2] = 448;
    amax[3] = 3.4e38;
    amax[4] = 7 * 2 ** 20;
    const device = await testDevice();
    // one column per row: each row is a tile whose amax is that element
    const g = quantize(Tensor.from(device, amax, [amax.length, 1]));
    assertF32Bits(await g.scales.readF32(), amax.map(e4m3Scale), "scales");
  },
);

Deno.test(
  "dequantize() stays within half an E4M3 step of the input",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const R = 70, C = 300, x = raggedData(R, C, 9);
    for (const block of [false, true]) {
      const qt = quantize(Tensor.from(device, x, [R, C]), { block });
      const back = await dequantize(qt).readF32();
      const scales = await qt.scales.readF32(), CB = Math.ceil(C / 128);
      for (let i = 0; i < R; i++) {
        for (let c = 0; c < C; c++) {
          const s = scales[(block ? Math.floor(i / 128) : i) * CB + Math.floor(c / 128)];
          const v = x[i * C + c], err = Math.abs(back[i * C + c] - v);
          // 3 mantissa bits: half a step is 2^-4 relative, or 2^-10 * scale among subnormals
          const tol = Math.max(Math.abs(v) * 2 ** -4, s * 2 ** -10) * (1 + 1e-6);
          if (!(err <= tol)) assert.fail(`[${i}, ${c}]: ${v} came back as ${back[i * C + c]}`);
        }
      }
    }
  },
);

Deno.test(
  "a tile holding Inf or NaN gets a NaN scale and NaN codes; the other tiles are unaffected",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const x = randn(4 * 200, 4);
    x[10] = Infinity; // row 0, tile 0
    x[200 + 150] = NaN; // row 1, tile 1
    const g = quantize(Tensor.from(device, x, [4, 200]));
    const s = await g.scales.readF32(), q = (await g.q.read()) as Uint32Array;
    assert.ok(Number.isNaN(s[0]) && Number.isNaN(s[3]));
    assert.ok(!Number.isNaN(s[1]) && !Number.isNaN(s[2]) && !Number.isNaN(s[4]));
    assert.equal(q[0] & 0x7f7f7f7f, 0x7f7f7f7f);
    const back = await dequantize(g).readF32();
    assert.ok(Number.isNaN(back[0]) && Number.isNaN(back[200 + 130]));
    assert.ok(Number.isFinite(back[128]) && Number.isFinite(back[400]));
    await checkTwin(x, [4, 200], {}, "non-finite");
  },
);

Deno.test(
  "quantize() and dequantize() read and write tensor views at an offset",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const R = 5, C = 130, x = randn(R * C, 31);
    // x sits 256 elements (1 KiB) into a larger tensor
    const big = Tensor.from(device, new Float32Array(256 + R * C + 64).fill(7), [256 + R * C + 64]);
    big.view([R * C], 256).upload(x);
    for (const opts of [{}, { block: true, transpose: true }] as QuantizeOptions[]) {
      const g = quantize(big.view([R, C], 256), opts);
      const [rows, cols] = opts.transpose ? [C, R] : [R, C];
      const c = quantizeCpu(x, { rows, cols, ...opts });
      assertWords((await g.q.read()) as Uint32Array, c.q, `codes ${JSON.stringify(opts)}`);
      assertF32Bits(await g.scales.readF32(), c.scales, "scales");
      assertF32Bits(await dequantize(g).readF32(), dequantizeCpu(c), "dequantized");
    }
  },
);

Deno.test("quantize() gives identical bits on rerun", GPU_TEST, async () => {
  const device = await testDevice();
  const t = Tensor.from(device, randn(300 * 260, 8), [300, 260]);
  for (const opts of [{}, { block: true }, { block: true, transpose: true }]) {
    const a = quantize(t, opts), b = quantize(t, opts);
    assertWords((await a.q.read()) as Uint32Array, (await b.q.read()) as Uint32Array, "rerun");
  }
});

Deno.test(
  "quantizing W^T in blocks gives W's block codes transposed (the dgrad operand)",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 140, K = 300, w = randn(N * K, 12, 0.02);
    const t = Tensor.from(device, w, [N, K]);
    const fwd = quantizeCpu(w, { rows: N, cols: K, block: true });
    const g = quantize(t, { block: true, transpose: true });
    const q = (await g.q.read()) as Uint32Array, s = await g.scales.readF32();
    const W = Math.ceil(N / 4);
    for (let k = 0; k < K; k++) {
      for (let n = 0; n < N; n++) {
        const code = (q[k * W + (n >> 2)] >>> (8 * (n & 3))) & 0xff;
        const want = (fwd.q[n * Math.ceil(K / 4) + (k >> 2)] >>> (8 * (k & 3))) & 0xff;
        if (code !== want) assert.fail(`W^T[${k}, ${n}] code ${code}, W's ${want}`);
      }
    }
    // scales [ceil(K/128), ceil(N/128)] = W's [ceil(N/128), ceil(K/128)] transposed
    assert.deepEqual(
      [...s],
      [0, 1, 2].flatMap((kb) => [0, 1].map((nb) => fwd.scales[nb * 3 + kb])),
    );
  },
);
