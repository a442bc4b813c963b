import {
  attention,
  attentionBackward,
  attentionBackwardCpu,
  attentionCpu,
  attentionForward,
  type AttentionShape,
} from "../kernels/attention.ts";
import { Tape } from "../kernels/autograd.ts";
import { Tensor } from "../kernels/tensor.ts";
import {
  assertClose,
  assertSameBits,
  finiteDiff,
  GPU_TEST,
  randn,
  rng,
  testDevice,
} from "./_util.ts";

/**
 * Shapes: a single token, ragged small dims (read as scalars), dqk != dv (MLA), and T past one
 * block of rows at the mini preset's head dims (64/32: the kernels' largest register tiles, shared
 * with the long-T tests below so a cold shader cache compiles them once).
 */
const SHAPES: AttentionShape[] = [
  { B: 1, T: 1, H: 1, dqk: 4, dv: 4 },
  { B: 2, T: 7, H: 3, dqk: 12, dv: 8 },
  { B: 2, T: 33, H: 1, dqk: 5, dv: 3 },
  { B: 1, T: 65, H: 2, dqk: 64, dv: 32 },
];

/** Packed-conversation segment ids [B, T]: non-decreasing, with random boundaries. */
function packedSegments(B: number, T: number, seed: number): Int32Array {
  const r = rng(seed);
  const seg = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let id = 0;
    for (let t = 0; t < T; t++) {
      if (t > 0 && r() < 0.15) id++;
      seg[b * T + t] = id;
    }
  }
  return seg;
}

function inputs(s: AttentionShape, seed: number) {
  const nq = s.B * s.T * s.H * s.dqk, nv = s.B * s.T * s.H * s.dv;
  return {
    q: randn(nq, seed),
    k: randn(nq, seed + 1),
    v: randn(nv, seed + 2),
    dout: randn(nv, seed + 3),
  };
}

const label = (s: AttentionShape, seg: boolean) =>
  `B${s.B} T${s.T} H${s.H} dqk${s.dqk} dv${s.dv}${seg ? " seg" : ""}`;

Deno.test(
  "attention forward matches the CPU twin, with and without segments",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const s of SHAPES) {
      for (const withSeg of [false, true]) {
        const x = inputs(s, s.T * 7 + s.dqk);
        const seg = withSeg ? packedSegments(s.B, s.T, s.T) : null;
        const scale = 1 / Math.sqrt(s.dqk);
        const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
        const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
        const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
        const segT = seg ? Tensor.from(device, seg, [s.B, s.T], "i32") : null;
        const out = Tensor.empty(device, [s.B, s.T, s.H, s.dv]);
        const lse = Tensor.empty(device, [s.B, s.H, s.T]);
        attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale });
        const want = attentionCpu({ ...x, seg }, { shape: s, scale });
        assertClose(await out.readF32(), want.out, {
          atol: 1e-5,
          rtol: 1e-4,
          label: label(s, withSeg),
        });
        assertClose(await lse.readF32(), want.lse, { atol: 1e-5, rtol: 1e-5, label: "lse" });
      }
    }
  },
);

Deno.test("attention segments with arbitrary ids keep unequal ids apart", GPU_TEST, async () => {
  const device = await testDevice();
  // T = 150 spans several query blocks of the CPU backend (64 rows), whose key ranges start at
  // the first position of a row's id
  for (const s of [{ B: 2, T: 40, H: 2, dqk: 6, dv: 5 }, { B: 1, T: 150, H: 2, dqk: 6, dv: 5 }]) {
    const x = inputs(s, 99);
    const r = rng(5);
    const seg = Int32Array.from({ length: s.B * s.T }, () => Math.floor(r() * 3));
    const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
    const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
    const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
    const out = Tensor.empty(device, [s.B, s.T, s.H, s.dv]);
    const lse = Tensor.empty(device, [s.B, s.H, s.T]);
    const segT = Tensor.from(device, seg, [s.B, s.T], "i32");
    attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale: 0.4 });
    const want = attentionCpu({ ...x, seg }, { shape: s, scale: 0.4 });
    assertClose(await out.readF32(), want.out, { atol: 1e-5, rtol: 1e-4, label: label(s, true) });
    const dq = Tensor.empty(device, q.shape), dk = Tensor.empty(device, k.shape);
    const dv = Tensor.empty(device, v.shape);
    const dout = Tensor.from(device, x.dout, v.shape);
    attentionBackward({ dq, dk, dv }, { q, k, v, seg: segT, out, lse, dout }, { scale: 0.4 });
    const g = attentionBackwardCpu({ ...x, seg }, { shape: s, scale: 0.4 });
    const tol = { atol: 1e-5, rtol: 1e-3 };
    assertClose(await dq.readF32(), g.dq, { ...tol, label: `dq ${label(s, true)}` });
    assertClose(await dk.readF32(), g.dk, { ...tol, label: `dk ${label(s, true)}` });
    assertClose(await dv.readF32(), g.dv, { ...tol, label: `dv ${label(s, true)}` });
  }
});

Deno.test("attention backward computes only the gradients asked for", GPU_TEST, async () => {
  const device = await testDevice();
  const s = { B: 2, T: 70, H: 2, dqk: 8, dv: 4 };
  const x = inputs(s, 12);
  const seg = packedSegments(s.B, s.T, 6);
  const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
  const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
  const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
  const dout = Tensor.from(device, x.dout, v.shape);
  const segT = Tensor.from(device, seg, [s.B, s.T], "i32");
  const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
  attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale: 0.3 });
  const want = attentionBackwardCpu({ ...x, seg }, { shape: s, scale: 0.3 });
  const tol = { atol: 1e-5, rtol: 1e-3 };
  const saved = { q, k, v, seg: segT, out, lse, dout };
  const dq = Tensor.empty(device, q.shape);
  attentionBackward({ dq, dk: null, dv: null }, saved, { scale: 0.3 });
  assertClose(await dq.readF32(), want.dq, { ...tol, label: "dq alone" });
  const dk = Tensor.empty(device, k.shape);
  attentionBackward({ dq: null, dk, dv: null }, saved, { scale: 0.3 });
  assertClose(await dk.readF32(), want.dk, { ...tol, label: "dk alone" });
  const dv = Tensor.empty(device, v.shape);
  attentionBackward({ dq: null, dk: null, dv }, saved, { scale: 0.3 });
  assertClose(await dv.readF32(), want.dv, { ...tol, label: "dv alone" });
});

Deno.test("attention CPU backward matches central finite differences", () => {
  for (const withSeg of [false, true]) {
    const s = { B: 2, T: 6, H: 2, dqk: 3, dv: 2 };
    const x = inputs(s, 21);
    const seg = withSeg ? Int32Array.from([0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 1, 1]) : null;
    const o = { shape: s, scale: 0.7 };
    const base = {
      q: Float64Array.from(x.q),
      k: Float64Array.from(x.k),
      v: Float64Array.from(x.v),
      seg,
    };
    // loss = sum(out * dout), so d loss / d out = dout
    const loss = () => {
      const { out } = attentionCpu(base, o);
      let l = 0;
      for (let i = 0; i < out.length; i++) l += out[i] * x.dout[i];
      return l;
    };
    const g = attentionBackwardCpu({ ...base, dout: x.dout }, o);
    for (const name of ["q", "k", "v"] as const) {
      const fd = finiteDiff(() => loss(), base[name]);
      const grad = name === "q" ? g.dq : name === "k" ? g.dk : g.dv;
      assertClose(grad, fd, { atol: 1e-7, rtol: 1e-6, label: `d${name}${withSeg ? " seg" : ""}` });
    }
  }
});

Deno.test("attention GPU backward matches the CPU backward", GPU_TEST, async () => {
  const device = await testDevice();
  for (const s of SHAPES) {
    for (const withSeg of [false, true]) {
      const x = inputs(s, s.T * 3 + s.dv);
      const seg = withSeg ? packedSegments(s.B, s.T, s.T + 1) : null;
      const scale = 1 / Math.sqrt(s.dqk);
      const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
      const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
      const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
      const dout = Tensor.from(device, x.dout, [s.B, s.T, s.H, s.dv]);
      const segT = seg ? Tensor.from(device, seg, [s.B, s.T], "i32") : null;
      const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
      attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale });
      const dq = Tensor.empty(device, q.shape), dk = Tensor.empty(device, k.shape);
      const dv = Tensor.empty(device, v.shape);
      attentionBackward({ dq, dk, dv }, { q, k, v, seg: segT, out, lse, dout }, { scale });
      const want = attentionBackwardCpu({ ...x, seg }, { shape: s, scale });
      const tol = { atol: 1e-5, rtol: 1e-3 };
      const l = label(s, withSeg);
      assertClose(await dq.readF32(), want.dq, { ...tol, label: `dq ${l}` });
      assertClose(await dk.readF32(), want.dk, { ...tol, label: `dk ${l}` });
      assertClose(await dv.readF32(), want.dv, { ...tol, label: `dv ${l}` });
    }
  }
});

Deno.test("attention backward accumulates into existing gradients", GPU_TEST, async () => {
  const device = await testDevice();
  const s = { B: 1, T: 9, H: 2, dqk: 4, dv: 6 };
  const x = inputs(s, 77);
  const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
  const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
  const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
  const dout = Tensor.from(device, x.dout, v.shape);
  const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
  attentionForward({ out, lse }, { q, k, v }, { scale: 0.5 });
  const pre = { dq: randn(q.size, 1), dk: randn(k.size, 2), dv: randn(v.size, 3) };
  const dq = Tensor.from(device, pre.dq, q.shape), dk = Tensor.from(device, pre.dk, k.shape);
  const dv = Tensor.from(device, pre.dv, v.shape);
  attentionBackward({ dq, dk, dv }, { q, k, v, out, lse, dout }, {
    scale: 0.5,
    accumulate: { dq: true, dk: true, dv: true },
  });
  const want = attentionBackwardCpu(x, { shape: s, scale: 0.5 });
  const add = (a: Float32Array, b: Float64Array) => b.map((w, i) => w + a[i]);
  assertClose(await dq.readF32(), add(pre.dq, want.dq), { atol: 1e-5, rtol: 1e-3 });
  assertClose(await dk.readF32(), add(pre.dk, want.dk), { atol: 1e-5, rtol: 1e-3 });
  assertClose(await dv.readF32(), add(pre.dv, want.dv), { atol: 1e-5, rtol: 1e-3 });
});

Deno.test(
  "attention() records a backward on the tape that matches the CPU twin",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const s = { B: 2, T: 37, H: 2, dqk: 10, dv: 7 };
    const x = inputs(s, 5);
    const seg = packedSegments(s.B, s.T, 3);
    const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
    const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
    const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
    q.requiresGrad = k.requiresGrad = v.requiresGrad = true;
    const tape = new Tape().start();
    const out = attention(q, k, v, {
      scale: 0.3,
      seg: Tensor.from(device, seg, [s.B, s.T], "i32"),
    });
    tape.backward(out, Tensor.from(device, x.dout, out.shape));
    const want = attentionBackwardCpu({ ...x, seg }, { shape: s, scale: 0.3 });
    const cpuOut = attentionCpu({ ...x, seg }, { shape: s, scale: 0.3 }).out;
    assertClose(await out.readF32(), cpuOut, { atol: 1e-5, rtol: 1e-4 });
    assertClose(await q.grad!.readF32(), want.dq, { atol: 1e-5, rtol: 1e-3, label: "dq" });
    assertClose(await k.grad!.readF32(), want.dk, { atol: 1e-5, rtol: 1e-3, label: "dk" });
    assertClose(await v.grad!.readF32(), want.dv, { atol: 1e-5, rtol: 1e-3, label: "dv" });
  },
);

Deno.test("attention forward and backward give identical bits on rerun", GPU_TEST, async () => {
  const device = await testDevice();
  const s = { B: 2, T: 65, H: 2, dqk: 64, dv: 32 };
  const x = inputs(s, 8);
  const seg = Tensor.from(device, packedSegments(s.B, s.T, 4), [s.B, s.T], "i32");
  const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
  const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
  const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
  const dout = Tensor.from(device, x.dout, v.shape);
  const run = () => {
    const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
    attentionForward({ out, lse }, { q, k, v, seg }, { scale: 0.2 });
    const dq = Tensor.empty(device, q.shape), dk = Tensor.empty(device, k.shape);
    const dv = Tensor.empty(device, v.shape);
    attentionBackward({ dq, dk, dv }, { q, k, v, seg, out, lse, dout }, { scale: 0.2 });
    return Promise.all([out, lse, dq, dk, dv].map((t) => t.readF32()));
  };
  const a = await run(), b = await run();
  a.forEach((t, i) => assertSameBits(t, b[i], `output ${i}`));
});

Deno.test(
  "attention backward stays right at long T and wide heads (past llvmpipe's loop cap)",
  GPU_TEST,
  async () => {
    // T * dqk = 40960: with per-dim loops this broke on lavapipe (its loop limiter stops nested
    // loops after 65535 iterations); the kernels now write those loops out.
    const device = await testDevice();
    const s = { B: 1, T: 640, H: 1, dqk: 64, dv: 32 };
    const x = inputs(s, 77);
    const scale = 1 / Math.sqrt(s.dqk);
    const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
    const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
    const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
    const dout = Tensor.from(device, x.dout, [s.B, s.T, s.H, s.dv]);
    const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
    attentionForward({ out, lse }, { q, k, v }, { scale });
    const dq = Tensor.empty(device, q.shape), dk = Tensor.empty(device, k.shape);
    const dv = Tensor.empty(device, v.shape);
    attentionBackward({ dq, dk, dv }, { q, k, v, out, lse, dout }, { scale });
    const wantOut = attentionCpu(x, { shape: s, scale });
    const want = attentionBackwardCpu(x, { shape: s, scale });
    const tol = { atol: 1e-5, rtol: 1e-3 };
    assertClose(await out.readF32(), wantOut.out, { ...tol, label: "out" });
    assertClose(await dq.readF32(), want.dq, { ...tol, label: "dq" });
    assertClose(await dk.readF32(), want.dk, { ...tol, label: "dk" });
    assertClose(await dv.readF32(), want.dv, { ...tol, label: "dv" });
  },
);

Deno.test(
  "attention forward and backward match the CPU twin at T = 509 with mini's head dims and segments",
  GPU_TEST,
  async () => {
    // bench/attention.ts --check at the bench's longest T, as a test: a ragged last block, every
    // row block of the forward and dq kernels and every key block of dkdv, packed segments
    const device = await testDevice();
    const s = { B: 1, T: 509, H: 1, dqk: 64, dv: 32 };
    const x = inputs(s, 31);
    // long and short packed conversations: rows attend to up to 240 keys, some to a few
    const seg = Int32Array.from(
      { length: s.T },
      (_, t) => t < 150 ? 0 : t < 180 ? 1 : t < 420 ? 2 : 3,
    );
    const scale = 1 / Math.sqrt(s.dqk);
    const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
    const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
    const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
    const dout = Tensor.from(device, x.dout, [s.B, s.T, s.H, s.dv]);
    const segT = Tensor.from(device, seg, [s.B, s.T], "i32");
    const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
    attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale });
    const dq = Tensor.empty(device, q.shape), dk = Tensor.empty(device, k.shape);
    const dv = Tensor.empty(device, v.shape);
    attentionBackward({ dq, dk, dv }, { q, k, v, seg: segT, out, lse, dout }, { scale });
    const wantOut = attentionCpu({ ...x, seg }, { shape: s, scale });
    const want = attentionBackwardCpu({ ...x, seg }, { shape: s, scale });
    const tol = { atol: 1e-5, rtol: 1e-3 };
    assertClose(await out.readF32(), wantOut.out, { ...tol, label: "out" });
    assertClose(await lse.readF32(), wantOut.lse, { atol: 1e-5, rtol: 1e-5, label: "lse" });
    assertClose(await dq.readF32(), want.dq, { ...tol, label: "dq" });
    assertClose(await dk.readF32(), want.dk, { ...tol, label: "dk" });
    assertClose(await dv.readF32(), want.dv, { ...tol, label: "dv" });
  },
);

Deno.test(
  "attention matches the CPU twin when rows span several uniform windows",
  GPU_TEST,
  async () => {
    // small windows (uniformBytes) so that short sequences cross window boundaries: rows split
    // across windows of one (b, h) slice (resumed softmax state, added dQ/dK/dV partials, blocks
    // straddling a window start) and several slices sharing one window; with and without
    // accumulation into existing gradients
    const device = await testDevice();
    const cases = [
      { s: { B: 2, T: 200, H: 2, dqk: 64, dv: 32 }, bytes: 2560, seg: true },
      { s: { B: 1, T: 45, H: 2, dqk: 5, dv: 3 }, bytes: 512, seg: false },
      { s: { B: 2, T: 20, H: 3, dqk: 8, dv: 4 }, bytes: 1024, seg: true },
    ];
    for (const { s, bytes, seg: withSeg } of cases) {
      for (const accumulate of [false, true]) {
        const x = inputs(s, s.T + s.dqk);
        const seg = withSeg ? packedSegments(s.B, s.T, s.T) : null;
        const scale = 1 / Math.sqrt(s.dqk);
        const q = Tensor.from(device, x.q, [s.B, s.T, s.H, s.dqk]);
        const k = Tensor.from(device, x.k, [s.B, s.T, s.H, s.dqk]);
        const v = Tensor.from(device, x.v, [s.B, s.T, s.H, s.dv]);
        const dout = Tensor.from(device, x.dout, v.shape);
        const segT = seg ? Tensor.from(device, seg, [s.B, s.T], "i32") : null;
        const out = Tensor.empty(device, v.shape), lse = Tensor.empty(device, [s.B, s.H, s.T]);
        attentionForward({ out, lse }, { q, k, v, seg: segT }, { scale, uniformBytes: bytes });
        const pre = accumulate
          ? { dq: randn(q.size, 1), dk: randn(k.size, 2), dv: randn(v.size, 3) }
          : {
            dq: new Float32Array(q.size),
            dk: new Float32Array(k.size),
            dv: new Float32Array(v.size),
          };
        const dq = Tensor.from(device, pre.dq, q.shape), dk = Tensor.from(device, pre.dk, k.shape);
        const dv = Tensor.from(device, pre.dv, v.shape);
        attentionBackward({ dq, dk, dv }, { q, k, v, seg: segT, out, lse, dout }, {
          scale,
          uniformBytes: bytes,
          accumulate: { dq: accumulate, dk: accumulate, dv: accumulate },
        });
        const wantOut = attentionCpu({ ...x, seg }, { shape: s, scale });
        const want = attentionBackwardCpu({ ...x, seg }, { shape: s, scale });
        const add = (a: Float32Array, b: Float64Array) => b.map((w, i) => w + a[i]);
        const tol = { atol: 1e-5, rtol: 1e-3 };
        const l = `${label(s, withSeg)} bytes ${bytes}${accumulate ? " acc" : ""}`;
        assertClose(await out.readF32(), wantOut.out, { ...tol, label: `${l} out` });
        assertClose(await lse.readF32(), wantOut.lse, {
          atol: 1e-5,
          rtol: 1e-5,
          label: `${l} lse`,
        });
        assertClose(await dq.readF32(), add(pre.dq, want.dq), { ...tol, label: `${l} dq` });
        assertClose(await dk.readF32(), add(pre.dk, want.dk), { ...tol, label: `${l} dk` });
        assertClose(await dv.readF32(), add(pre.dv, want.dv), { ...tol, label: `${l} dv` });
      }
    }
  },
);
