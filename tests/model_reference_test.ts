/**
 * Tests of the CPU f64 model reference (`model/reference.ts`), its routing / balance / bias
 * update twins, and the RoPE tables (`kernels/rope_freqs.ts`).
 *
 * The gradient check perturbs sampled entries of EVERY parameter tensor of the `tiny` preset by
 * h = 1e-5 and compares the central difference of the total loss with the reference's backward.
 * Top-k routing is piecewise constant, so the check is only meaningful where the selection does
 * not flip: every perturbed forward asserts that all MoE blocks chose exactly the experts of the
 * unperturbed run (with seed 1234 and h = 1e-5 none flips; a flip fails loudly rather than
 * silently producing a wrong finite difference).
 *
 * @module
 */
import assert from "node:assert/strict";
import { type ModelConfig, resolveConfig } from "../model/config.ts";
import { initParameters, parameterTable } from "../model/params.ts";
import {
  auxFreeBiasUpdate,
  referenceBalanceLoss,
  referenceForwardBackward,
  type ReferenceResult,
  routeTokens,
} from "../model/reference.ts";
import { Xoshiro128 } from "../random/rng.ts";
import { ropeFrequencies, ropeTables, softmaxScale } from "../kernels/rope_freqs.ts";

const B = 2, T = 8;

function batch(cfg: ModelConfig, seed: number): { tokens: Int32Array; targets: Int32Array } {
  const rng = new Xoshiro128(seed);
  const tokens = new Int32Array(B * T).map(() => rng.nextU32() % cfg.vocab_size);
  // Next-token targets; the last position of each row has none, and one mid-row target is
  // masked as SFT masks prompt tokens.
  const targets = tokens.map((_, i) => (i % T === T - 1 ? -1 : tokens[i + 1]));
  targets[3] = -1;
  return { tokens, targets };
}

/** Parameters in f64 with non-trivial norms and biases, so no gradient is checked at a
 * special point (all-ones norms, zero bias). */
function randomParams(cfg: ModelConfig, seed: number): Map<string, Float64Array> {
  const rng = new Xoshiro128(seed, 99);
  const out = new Map<string, Float64Array>();
  for (const [name, v] of initParameters(cfg, seed)) {
    const d = Float64Array.from(v);
    if (name.endsWith("e_score_correction_bias")) {
      for (let i = 0; i < d.length; i++) d[i] = 0.05 * rng.normal();
    } else if (name.endsWith("norm.weight") || name.endsWith("layernorm.weight")) {
      for (let i = 0; i < d.length; i++) d[i] = 1 + 0.2 * rng.normal();
    }
    out.set(name, d);
  }
  return out;
}

function sameRouting(a: ReferenceResult, b: ReferenceResult): boolean {
  return a.moe.every((m, i) => m.selected.every((e, j) => e === b.moe[i].selected[j]));
}

Deno.test("reference gradients match central finite differences for every tiny parameter tensor", () => {
  // Larger init, balance weight and MTP weight than the preset so every path carries a gradient
  // well above the finite-difference noise (the balance loss at alpha = 1e-4 would be invisible).
  const cfg = resolveConfig("tiny", { init_std: 0.1, balance_alpha: 0.3, mtp_lambda: 0.5 });
  const seed = 1234;
  const params = randomParams(cfg, seed);
  const { tokens, targets } = batch(cfg, seed);
  const shape = { B, T };
  const base = referenceForwardBackward(cfg, { params, tokens, targets, shape });
  assert.ok(base.losses.balance > 0);
  const loss = () =>
    referenceForwardBackward(cfg, { params, tokens, targets, shape, backward: false });
  const h = 1e-5;
  const rng = new Xoshiro128(seed, 7);
  let checked = 0, worst = 0;
  const liveExperts = new Map<number, number>(); // layer -> expert matrices with a gradient
  for (const spec of parameterTable(cfg)) {
    const p = params.get(spec.name)!;
    const g = base.grads.get(spec.name);
    if (!spec.trainable) {
      assert.equal(g, undefined, `${spec.name} is frozen and gets no gradient`);
      // Selection is locally constant in the bias, so the loss must not move at all.
      const i = rng.nextU32() % p.length, old = p[i];
      p[i] = old + h;
      const up = loss();
      p[i] = old;
      assert.ok(sameRouting(up, base), `${spec.name}[${i}]: routing flipped`);
      assert.equal(up.losses.total, base.losses.total, spec.name);
      continue;
    }
    assert.ok(g !== undefined && g.length === p.length, spec.name);
    // A tensor nothing flows into is a wiring bug. A routed expert may legitimately get a zero
    // gradient (no token chose it, or only tokens whose targets are ignored), so experts are
    // counted per block instead.
    let gi = 0;
    for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[gi])) gi = i;
    if (/mlp\.experts\.\d+\./.test(spec.name)) {
      if (Math.abs(g[gi]) > 1e-6) {
        liveExperts.set(spec.layer, (liveExperts.get(spec.layer) ?? 0) + 1);
      }
    } else {
      assert.ok(Math.abs(g[gi]) > 1e-6, `${spec.name}: gradient is all ~0`);
    }
    const sample = [gi, rng.nextU32() % p.length, rng.nextU32() % p.length];
    for (const i of sample) {
      const old = p[i];
      p[i] = old + h;
      const up = loss();
      p[i] = old - h;
      const down = loss();
      p[i] = old;
      assert.ok(
        sameRouting(up, base) && sameRouting(down, base),
        `${spec.name}[${i}]: routing flipped`,
      );
      const fd = (up.losses.total - down.losses.total) / (2 * h);
      const err = Math.abs(fd - g[i]);
      worst = Math.max(worst, err / (1e-8 + Math.abs(g[i])));
      assert.ok(
        err <= 1e-8 + 1e-5 * Math.abs(g[i]),
        `${spec.name}[${i}]: backward ${g[i]} vs finite difference ${fd} (|diff| ${err})`,
      );
      checked++;
    }
  }
  assert.ok(checked > 250, `checked ${checked} entries`);
  for (const m of base.moe) {
    const live = liveExperts.get(m.layer) ?? 0;
    assert.ok(
      live >= 3 * (cfg.n_routed_experts / 2),
      `layer ${m.layer}: ${live} expert matrices live`,
    );
  }
  assert.ok(worst < 1, `worst relative error ${worst}`);
});

Deno.test("an untrained tiny model has finite losses near ln(vocab)", () => {
  const cfg = resolveConfig("tiny");
  const r = referenceForwardBackward(cfg, {
    params: initParameters(cfg, 5),
    ...batch(cfg, 5),
    shape: { B, T },
  });
  for (const [k, v] of Object.entries(r.losses)) {
    if (typeof v === "number") assert.ok(Number.isFinite(v), k);
  }
  const lnV = Math.log(cfg.vocab_size);
  assert.ok(Math.abs(r.losses.main - lnV) < 0.05, `main ${r.losses.main} vs ln V ${lnV}`);
  assert.ok(Math.abs(r.losses.mtpPerDepth[0] - lnV) < 0.05, `mtp CE ${r.losses.mtpPerDepth[0]}`);
  assert.ok(Math.abs(r.losses.mtp - cfg.mtp_lambda * r.losses.mtpPerDepth[0]) < 1e-12);
  assert.ok(
    Math.abs(r.losses.total - (r.losses.main + r.losses.mtp + r.losses.balance)) < 1e-12,
  );
  // Balance at uniform routing is ~alpha per MoE block (f ~ 1, P ~ 1/E, sum_i f_i P_i ~ 1).
  assert.equal(r.moe.length, 2); // layer 1 and the MTP block (layer 2)
  for (const m of r.moe) {
    assert.ok(m.balance > 0.5 * cfg.balance_alpha && m.balance < 3 * cfg.balance_alpha);
    assert.equal(m.loads.reduce((a, b) => a + b, 0), B * T * cfg.n_activated_experts);
    for (let n = 0; n < B * T; n++) {
      const w = m.weights.subarray(n * 2, n * 2 + 2);
      assert.ok(Math.abs(w[0] + w[1] - cfg.route_scale) < 1e-12);
    }
  }
  assert.equal(r.logits.length, B * T * cfg.vocab_size);
});

Deno.test("the reference is causal, and MTP module 1 reads token i + 1", () => {
  const cfg = resolveConfig("tiny");
  const params = initParameters(cfg, 3);
  const { tokens, targets } = batch(cfg, 3);
  const a = referenceForwardBackward(cfg, {
    params,
    tokens,
    targets,
    shape: { B, T },
    backward: false,
  });
  const t2 = tokens.slice();
  t2[T - 1] = (t2[T - 1] + 1) % cfg.vocab_size; // change the last token of sequence 0
  const b = referenceForwardBackward(cfg, {
    params,
    tokens: t2,
    targets,
    shape: { B, T },
    backward: false,
  });
  const V = cfg.vocab_size;
  const rowsEqual = (x: Float64Array, y: Float64Array, n: number) =>
    x.subarray(n * V, (n + 1) * V).every((v, i) => v === y[n * V + i]);
  for (let t = 0; t < T - 1; t++) assert.ok(rowsEqual(a.logits, b.logits, t), `main row ${t}`);
  assert.ok(!rowsEqual(a.logits, b.logits, T - 1));
  // MTP position i embeds token i + 1: rows before T - 2 cannot see token T - 1.
  for (let t = 0; t < T - 2; t++) {
    assert.ok(rowsEqual(a.mtpLogits[0], b.mtpLogits[0], t), `mtp row ${t}`);
  }
  assert.ok(!rowsEqual(a.mtpLogits[0], b.mtpLogits[0], T - 2));
  // Sequence 1 is untouched.
  for (let t = T; t < 2 * T; t++) assert.ok(rowsEqual(a.logits, b.logits, t));
});

Deno.test("routeTokens: group-limited top-k on biased scores, weights from unbiased scores", () => {
  // E = 6 in G = 3 groups of 2, keep 2 groups, K = 2.
  const s = new Float64Array([0.9, 0.1, 0.5, 0.5, 0.45, 0.44]);
  const bias = [0, 0, 0, 0, 0.2, 0]; // expert 4 looks best once biased
  // biased: [0.9, 0.1 | 0.5, 0.5 | 0.65, 0.44]; group scores (sum of top 2): 1.0, 1.0, 1.09
  // keep groups 2 and 0 (tie 0 vs 1 goes to the lower index); top 2 of {0, 1, 4, 5}: 0 (0.9), 4 (0.65)
  const r = routeTokens(s, {
    shape: { N: 1, E: 6 },
    topK: 2,
    nGroups: 3,
    nLimitedGroups: 2,
    routeScale: 2.5,
    bias,
  });
  assert.deepEqual([...r.selected], [0, 4]);
  // Unbiased s at 0 and 4: 0.9 and 0.45, normalized, times 2.5.
  assert.ok(Math.abs(r.weights[0] - 2.5 * 0.9 / 1.35) < 1e-15);
  assert.ok(Math.abs(r.weights[1] - 2.5 * 0.45 / 1.35) < 1e-15);
  // Without grouping the best two biased experts win.
  const flat = routeTokens(s, {
    shape: { N: 1, E: 6 },
    topK: 2,
    nGroups: 1,
    nLimitedGroups: 1,
    routeScale: 1,
    bias,
  });
  assert.deepEqual([...flat.selected], [0, 4]);
  const limited = routeTokens(s, {
    shape: { N: 1, E: 6 },
    topK: 2,
    nGroups: 3,
    nLimitedGroups: 1,
    routeScale: 1,
    bias,
  });
  assert.deepEqual([...limited.selected], [4, 5]); // only group 2 is kept
});

Deno.test("referenceBalanceLoss matches a hand-computed example", () => {
  // B = 1, T = 2, E = 3, K = 1, alpha = 0.1.
  const s = new Float64Array([0.5, 0.3, 0.2, 0.1, 0.1, 0.8]); // rows already sum to 1
  const selected = new Int32Array([0, 2]);
  // f_i = E / (K T) * count = 1.5 * [1, 0, 1] = [1.5, 0, 1.5]
  // P = mean_t s' = [(0.5 + 0.1) / 2, (0.3 + 0.1) / 2, (0.2 + 0.8) / 2] = [0.3, 0.2, 0.5]
  // L = 0.1 * (1.5 * 0.3 + 0 + 1.5 * 0.5) = 0.12
  const got = referenceBalanceLoss(s, selected, { shape: { B: 1, T: 2, E: 3, K: 1 }, alpha: 0.1 });
  assert.ok(Math.abs(got - 0.12) < 1e-15, `${got}`);
  // Scores are normalized per token first: doubling a row changes nothing.
  const s2 = s.slice();
  for (let i = 0; i < 3; i++) s2[i] *= 2;
  const got2 = referenceBalanceLoss(s2, selected, {
    shape: { B: 1, T: 2, E: 3, K: 1 },
    alpha: 0.1,
  });
  assert.ok(Math.abs(got2 - 0.12) < 1e-15);
  // Two identical sequences average to the same value.
  const both = referenceBalanceLoss(Float64Array.of(...s, ...s), Int32Array.of(0, 2, 0, 2), {
    shape: { B: 2, T: 2, E: 3, K: 1 },
    alpha: 0.1,
  });
  assert.ok(Math.abs(both - 0.12) < 1e-15);
});

Deno.test("auxFreeBiasUpdate moves under-loaded experts up and over-loaded down by gamma", () => {
  const b = new Float32Array([0, 0.5, -0.25, 1]);
  auxFreeBiasUpdate(b, [5, 1, 3, 3], { gamma: 0.125 }); // mean 3
  assert.deepEqual([...b], [-0.125, 0.625, -0.25, 1]);
  assert.throws(() => auxFreeBiasUpdate(new Float32Array(2), [1], { gamma: 1 }), /1 loads for 2/);
});

Deno.test("ropeFrequencies and ropeTables match hand values without YaRN", () => {
  const f = ropeFrequencies({
    dim: 4,
    theta: 10000,
    maxSeqLen: 16,
    originalSeqLen: 16,
    factor: 40,
    betaFast: 32,
    betaSlow: 1,
  });
  assert.deepEqual([...f], [1, Math.fround(0.01)]);
  const { cos, sin } = ropeTables(f, 3); // [3, 2]
  assert.equal(cos.length, 6);
  assert.deepEqual([...cos.subarray(0, 2)], [1, 1]);
  assert.deepEqual([...sin.subarray(0, 2)], [0, 0]);
  assert.equal(cos[2 * 2 + 0], Math.fround(Math.cos(2)));
  assert.equal(sin[2 * 2 + 1], Math.fround(Math.sin(2 * Math.fround(0.01))));
  assert.equal(
    softmaxScale({ headDim: 192, maxSeqLen: 16, originalSeqLen: 16, factor: 40, mscale: 1 }),
    1 / Math.sqrt(192),
  );
});

Deno.test("ropeFrequencies applies the YaRN ramp like the V3 reference code", () => {
  // dim 8, base 1e4, original 4096, factor 40, beta 32 / 1 (V3's values):
  // correction dims 1.309 -> floor 1 and 2.814 -> ceil 3; ramp over 4 freqs = [0, 0, 0.5, 1];
  // freqs [1, 0.1, 0.01, 0.001] -> [1, 0.1, 0.01 * (0.5 / 40 + 0.5), 0.001 / 40].
  const f = ropeFrequencies({
    dim: 8,
    theta: 10000,
    maxSeqLen: 8192,
    originalSeqLen: 4096,
    factor: 40,
    betaFast: 32,
    betaSlow: 1,
  });
  const want = [1, 0.1, 0.005125, 2.5e-5].map(Math.fround);
  f.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 1e-7 * want[i], `f[${i}] = ${v}`));
  // The tiny preset: dim 4, original 32, factor 2: range [0, 1], ramp [0, 1] -> [1, 0.005].
  const tiny = ropeFrequencies({
    dim: 4,
    theta: 10000,
    maxSeqLen: 64,
    originalSeqLen: 32,
    factor: 2,
    betaFast: 32,
    betaSlow: 1,
  });
  assert.deepEqual([...tiny], [1, Math.fround(0.005)]);
  // mscale: m = 0.1 * ln(40) + 1; scale = m^2 / sqrt(192).
  const m = 0.1 * Math.log(40) + 1;
  const sc = softmaxScale({
    headDim: 192,
    maxSeqLen: 8192,
    originalSeqLen: 4096,
    factor: 40,
    mscale: 1,
  });
  assert.ok(Math.abs(sc - (m * m) / Math.sqrt(192)) < 1e-15);
  assert.throws(
    () =>
      ropeFrequencies({
        dim: 3,
        theta: 1e4,
        maxSeqLen: 1,
        originalSeqLen: 1,
        factor: 1,
        betaFast: 32,
        betaSlow: 1,
      }),
    /dim/,
  );
});
