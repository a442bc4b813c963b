/**
 * The GRPO loss op: the launchers against the f64 twin (ragged N, uncounted tokens, zero
 * advantages, ratios inside and outside the clip range on both sides, with and without the KL
 * term), the twin against hand-computed values and central differences, the op under the tape
 * (accumulating, seeded), the chain through `tokenLogprobs` into the logits against the CPU
 * twins, same bits on a rerun, and the argument checks.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import {
  tokenLogprobs,
  tokenLogprobsBackwardCpu,
  tokenLogprobsCpu,
} from "../kernels/cross_entropy.ts";
import {
  GRPO_METRICS,
  GRPO_STATS_STRIDE,
  grpoLoss,
  grpoLossBackward,
  grpoLossCpu,
  grpoLossForward,
  type GrpoLossInputs,
  type GrpoLossOptions,
} from "../kernels/grpo.ts";
import type { Device } from "../kernels/backend.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import {
  assertClose,
  assertSameBits,
  finiteDiff,
  GPU_TEST,
  randint,
  randn,
  randu,
  testDevice,
} from "./_util.ts";

/** DAPO's asymmetric clip range: ratios in [0.8, 1.28] are not clipped. */
const EPS = { epsLow: 0.2, epsHigh: 0.28 };

/** Host inputs of one case (f32, as uploaded; the twin reads the same values). */
interface Case {
  lp: Float32Array;
  old: Float32Array;
  ref: Float32Array | null;
  adv: Float32Array;
  w: Float32Array;
}

/**
 * `old` for `lp` so that r = e^(lp - old) spans [0.5, 2] (both clip bounds and beyond) but stays
 * 2e-3 away from the bounds, where f32 and f64 could take different branches.
 */
function oldFor(lp: ArrayLike<number>, seed: number): Float32Array {
  const delta = randu(lp.length, seed, -0.7, 0.7);
  const near = (r: number) => Math.abs(r - 0.8) < 2e-3 || Math.abs(r - 1.28) < 2e-3;
  return Float32Array.from(lp, (x, i) => {
    let o = Math.fround(x - delta[i]);
    while (near(Math.exp(Math.fround(x) - o))) o = Math.fround(o - 0.01);
    return o;
  });
}

/**
 * A case of N tokens: completions of 13 tokens, every fifth with advantage 0; token i % 7 == 3
 * uncounted (weight 0); the reference within 1e-3 of the policy (the series branch) for a third
 * of the tokens and up to 2 nats away for the rest.
 */
function makeCase(N: number, seed: number, withRef: boolean): Case {
  const lp = randn(N, seed).map((v) => -Math.abs(v) * 1.5 - 0.01);
  const old = oldFor(lp, seed + 1);
  const near = randn(N, seed + 2, 1e-3), far = randu(N, seed + 3, -2, 2);
  const ref = withRef ? lp.map((x, i) => x + (i % 3 === 0 ? near[i] : far[i])) : null;
  const perSeq = randn(Math.ceil(N / 13), seed + 4);
  const adv = Float32Array.from({ length: N }, (_, i) => {
    const s = Math.floor(i / 13);
    return s % 5 === 4 ? 0 : perSeq[s];
  });
  const scale = randu(N, seed + 5, 0.5, 1.5);
  const w = Float32Array.from({ length: N }, (_, i) => (i % 7 === 3 ? 0 : scale[i] / N));
  return { lp, old, ref, adv, w };
}

function upload(device: Device, c: Case): GrpoLossInputs {
  const n = [c.lp.length];
  return {
    oldLogprobs: Tensor.from(device, c.old, n),
    refLogprobs: c.ref ? Tensor.from(device, c.ref, n) : null,
    advantages: Tensor.from(device, c.adv, n),
    weights: Tensor.from(device, c.w, n),
  };
}

const twin = (c: Case, opts: GrpoLossOptions, lp: ArrayLike<number> = c.lp) =>
  grpoLossCpu(lp, c.old, c.ref, c.adv, c.w, opts);

Deno.test(
  "grpoLoss() matches its f64 twin: loss, metrics and the gradient, ragged N, with and without KL",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const configs: [number, boolean][] = [[0, false], [0, true], [0.04, true], [0.5, true]];
    let sawLow = false, sawHigh = false, sawKl = false;
    for (const N of [1, 7, 255, 300, 1000, 4099]) {
      for (const [beta, withRef] of configs) {
        const c = makeCase(N, N + Math.round(100 * beta), withRef);
        const opts = { beta, ...EPS };
        const scope = new Scope();
        const x = Tensor.from(device, c.lp, [N]);
        x.requiresGrad = true;
        const tape = new Tape().start();
        const out = grpoLoss(x, upload(device, c), opts);
        tape.backward(out.loss);
        const want = twin(c, opts);
        const label = `N ${N} beta ${beta} ref ${withRef}`;
        assertClose(await out.loss.readF32(), [want.loss], {
          atol: 1e-6,
          rtol: 1e-5,
          label: `${label} loss`,
        });
        for (const k of GRPO_METRICS) {
          assertClose(await out.metrics[k].readF32(), [want.metrics[k]], {
            atol: 1e-6,
            rtol: 1e-5,
            label: `${label} ${k}`,
          });
        }
        assertClose(await x.grad!.readF32(), want.grad, {
          atol: 1e-9,
          rtol: 1e-5,
          label: `${label} grad`,
        });
        sawLow ||= want.metrics["clip_ratio/low_mean"] > 0;
        sawHigh ||= want.metrics["clip_ratio/high_mean"] > 0;
        sawKl ||= beta === 0 && withRef && want.metrics.kl > 0;
        if (!withRef) assert.equal(want.metrics.kl, 0);
        scope.dispose();
      }
    }
    // The cases reach both clip regions, and the KL metric without the KL term.
    assert.ok(sawLow && sawHigh && sawKl);
  },
);

Deno.test(
  "grpoLoss() with no counted token: loss, metrics and gradient are 0",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const c = makeCase(9, 3, true);
    c.w.fill(0);
    const scope = new Scope();
    const x = Tensor.from(device, c.lp, [9]);
    x.requiresGrad = true;
    const tape = new Tape().start();
    const out = grpoLoss(x, upload(device, c), { beta: 0.1, ...EPS });
    tape.backward(out.loss);
    assert.deepEqual([...await out.loss.readF32()], [0]);
    for (const k of GRPO_METRICS) assert.deepEqual([...await out.metrics[k].readF32()], [0]);
    assert.deepEqual([...await x.grad!.readF32()], new Array(9).fill(0));
    scope.dispose();
  },
);

Deno.test(
  "grpoLoss(): the KL of a policy near its reference keeps its relative precision",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 600;
    for (
      const [label, d] of [
        ["|d| ~ 1e-3", randn(N, 51, 1e-3)],
        ["|d| < 0.7", randu(N, 52, -0.7, 0.7)],
      ] as const
    ) {
      const c = makeCase(N, 53, true);
      c.ref = c.lp.map((x, i) => x + d[i]);
      const opts = { beta: 0.5, ...EPS };
      const want = twin(c, opts);
      const scope = new Scope();
      const x = Tensor.from(device, c.lp, [N]);
      x.requiresGrad = true;
      const tape = new Tape().start();
      const out = grpoLoss(x, upload(device, c), opts);
      tape.backward(out.loss);
      assertClose(await out.metrics.kl.readF32(), [want.metrics.kl], {
        atol: 0,
        rtol: 1e-4,
        label: `${label} kl`,
      });
      // the KL term of the gradient alone: the twin with beta 0 takes out the surrogate's
      const surr = twin(c, { ...opts, beta: 0 }).grad;
      const got = await x.grad!.readF32();
      assertClose(got.map((g, i) => g - surr[i]), want.grad.map((g, i) => g - surr[i]), {
        atol: 1e-9,
        rtol: 1e-3,
        label: `${label} KL gradient`,
      });
      scope.dispose();
    }
  },
);

Deno.test("grpoLossCpu() gives the hand-computed surrogate, clip flags, KL and gradient", () => {
  const opts = { beta: 0, epsLow: 0.2, epsHigh: 0.2 };
  const one = (dr: number, a: number, w = 0.5) => grpoLossCpu([0], [-dr], null, [a], [w], opts);
  // r = 1: s = A, dloss/dlp = -w A r
  let o = one(0, 2);
  assertClose([o.loss, o.grad[0]], [-1, -1], { atol: 1e-15 });
  // r = e^0.5 = 1.65 > 1.2, A > 0: high-clipped, s = 1.2 A, no gradient
  o = one(0.5, 1);
  assertClose([o.loss, o.grad[0]], [-0.5 * 1.2, 0], { atol: 1e-15 });
  assert.equal(o.metrics["clip_ratio/high_mean"], 1);
  assert.equal(o.metrics["clip_ratio/region_mean"], 1);
  // r = e^-0.5 = 0.61 < 0.8, A < 0: low-clipped, s = 0.8 A
  o = one(-0.5, -1);
  assertClose([o.loss, o.grad[0]], [0.5 * 0.8, 0], { atol: 1e-15 });
  assert.equal(o.metrics["clip_ratio/low_mean"], 1);
  // outside the range on the side that min() keeps: not clipped, the gradient flows
  const r = Math.exp(-0.5);
  o = one(-0.5, 1);
  assertClose([o.loss, o.grad[0]], [-0.5 * r, -0.5 * r], { atol: 1e-15 });
  assert.equal(o.metrics["clip_ratio/region_mean"], 0);
  o = one(0.5, -1);
  assertClose([o.loss, o.grad[0]], [0.5 * Math.exp(0.5), 0.5 * Math.exp(0.5)], { atol: 1e-15 });
  // k3 KL: ref - lp = ln 2 gives 2 - ln 2 - 1; its gradient is beta (1 - 2)
  const kl = grpoLossCpu([-1], [-1], [-1 + Math.LN2], [0], [0.25], { ...opts, beta: 0.1 });
  assertClose([kl.metrics.kl], [1 - Math.LN2], { atol: 1e-15 });
  assertClose([kl.loss, kl.grad[0]], [0.25 * 0.1 * (1 - Math.LN2), -0.25 * 0.1], {
    atol: 1e-15,
  });
  // uncounted tokens are left out of the means
  const two = grpoLossCpu([0, 0], [-0.5, -0.5], null, [1, 1], [1, 0], opts);
  assert.equal(two.metrics["clip_ratio/high_mean"], 1);
  assert.equal(two.grad[1], 0);
});

Deno.test("grpoLossCpu()'s gradient matches central differences of its loss", () => {
  for (const [beta, withRef] of [[0, false], [0.3, true]] as const) {
    const c = makeCase(40, 5, withRef);
    const opts = { beta, ...EPS };
    const want = twin(c, opts).grad;
    const fd = finiteDiff((v) => twin(c, opts, v).loss, Float64Array.from(c.lp), { h: 1e-6 });
    assertClose(want, fd, { atol: 1e-9, rtol: 1e-6, label: `beta ${beta}` });
    assert.ok(want.some((g) => g === 0) && want.some((g) => g !== 0));
  }
});

Deno.test(
  "grpoLoss() under the tape adds into an existing gradient, scaled by the loss seed; " +
    "grpoLossBackward() overwrites without accumulate",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 300, c = makeCase(N, 11, true), opts = { beta: 0.2, ...EPS };
    const want = twin(c, opts).grad;
    const prior = randn(N, 12);
    const scope = new Scope();
    const inputs = upload(device, c);
    const x = Tensor.from(device, c.lp, [N]);
    x.requiresGrad = true;
    x.grad = Tensor.from(device, prior, [N]);
    const tape = new Tape().start();
    const out = grpoLoss(x, inputs, opts);
    tape.backward(out.loss, Tensor.from(device, [2.5], [1]));
    assertClose(await x.grad.readF32(), want.map((g, i) => prior[i] + 2.5 * g), {
      atol: 1e-7,
      rtol: 1e-5,
      label: "accumulated",
    });
    // the lower-level launchers
    const bufs = {
      loss: Tensor.empty(device, [1]),
      stats: Tensor.empty(device, [GRPO_METRICS.length * GRPO_STATS_STRIDE]),
    };
    const lp = Tensor.from(device, c.lp, [N]);
    grpoLossForward(bufs, lp, inputs, opts);
    assertClose(await bufs.loss.readF32(), [twin(c, opts).loss], { atol: 1e-6, rtol: 1e-5 });
    const dloss = Tensor.from(device, [-1.5], [1]);
    for (const accumulate of [false, true]) {
      const d = Tensor.from(device, prior, [N]);
      grpoLossBackward(d, dloss, lp, inputs, { ...opts, accumulate });
      assertClose(
        await d.readF32(),
        want.map((g, i) => (accumulate ? prior[i] : 0) - 1.5 * g),
        { atol: 1e-7, rtol: 1e-5, label: `accumulate=${accumulate}` },
      );
    }
    scope.dispose();
  },
);

Deno.test(
  "tokenLogprobs() then grpoLoss(): d loss / d logits matches the CPU twins chained",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 300, V = 53;
    const logits = randn(N * V, 21, 2);
    const targets = randint(N, 22, V).map((t, i) => (i % 11 === 5 ? -1 : t));
    const lp64 = tokenLogprobsCpu(Float64Array.from(logits), targets, V);
    const c = makeCase(N, 23, true);
    // the old and reference log-probabilities around the policy's, ignored targets uncounted
    c.lp = Float32Array.from(lp64);
    c.old = oldFor(lp64, 24);
    const dref = randu(N, 25, -1, 1);
    c.ref = Float32Array.from(lp64, (x, i) => x + dref[i]);
    targets.forEach((t, i) => t < 0 && (c.w[i] = 0));
    const opts = { beta: 0.1, ...EPS };
    const want = grpoLossCpu(lp64, c.old, c.ref, c.adv, c.w, opts);
    const dWant = tokenLogprobsBackwardCpu(Float64Array.from(logits), targets, V, want.grad);

    const scope = new Scope();
    const x = Tensor.from(device, logits, [N, V]);
    x.requiresGrad = true;
    const tape = new Tape().start();
    const lp = tokenLogprobs(x, Tensor.from(device, targets, [N], "i32"));
    const out = grpoLoss(lp, upload(device, c), opts);
    tape.backward(out.loss);
    assertClose(await out.loss.readF32(), [want.loss], { atol: 1e-6, rtol: 1e-5, label: "loss" });
    assertClose(await x.grad!.readF32(), dWant, { atol: 1e-8, rtol: 1e-4, label: "dlogits" });
    assert.ok(
      want.metrics["clip_ratio/region_mean"] > 0 && want.metrics["clip_ratio/region_mean"] < 1,
    );
    scope.dispose();
  },
);

Deno.test(
  "grpoLoss() on-policy (oldLogprobs is logprobs itself): r = 1, dloss/dlp = -w A",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 77, c = makeCase(N, 61, false);
    const scope = new Scope();
    const inputs = upload(device, c);
    const x = Tensor.from(device, c.lp, [N]);
    x.requiresGrad = true;
    const tape = new Tape().start();
    const out = grpoLoss(x, { ...inputs, oldLogprobs: x }, { beta: 0, ...EPS });
    tape.backward(out.loss);
    const wA = c.w.map((w, i) => w * c.adv[i]);
    assertClose(await out.loss.readF32(), [-wA.reduce((a, v) => a + v, 0)], { atol: 1e-6 });
    assertClose(await x.grad!.readF32(), wA.map((v) => -v), { atol: 1e-9, rtol: 1e-6 });
    assertClose(await out.metrics["clip_ratio/region_mean"].readF32(), [0], { atol: 0 });
    scope.dispose();
  },
);

Deno.test(
  "grpoLoss() run twice gives the same bits (loss, metrics, gradient)",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 1000, c = makeCase(N, 31, true), opts = { beta: 0.1, ...EPS };
    const run = async () => {
      const scope = new Scope();
      const x = Tensor.from(device, c.lp, [N]);
      x.requiresGrad = true;
      const tape = new Tape().start();
      const out = grpoLoss(x, upload(device, c), opts);
      tape.backward(out.loss);
      const got = [await out.loss.readF32(), await x.grad!.readF32()];
      for (const k of GRPO_METRICS) got.push(await out.metrics[k].readF32());
      scope.dispose();
      return got;
    };
    const a = await run(), b = await run();
    a.forEach((v, i) => assertSameBits(v, b[i], `output ${i}`));
  },
);

Deno.test("grpoLoss() names the bad argument", GPU_TEST, async () => {
  const device = await testDevice();
  const scope = new Scope();
  const c = makeCase(8, 41, true);
  const inputs = upload(device, c);
  const lp = Tensor.from(device, c.lp, [8]);
  const opts = { beta: 0.1, ...EPS };
  assert.throws(() => grpoLoss(lp, { ...inputs, refLogprobs: null }, opts), /refLogprobs is null/);
  assert.throws(
    () => grpoLoss(lp, { ...inputs, advantages: Tensor.from(device, [1, 2, 3], [3]) }, opts),
    /advantages must be f32 with 8 elements.*got f32 \[3\]/,
  );
  assert.throws(
    () => grpoLoss(lp, { ...inputs, weights: Tensor.from(device, c.w, [8], "i32") }, opts),
    /weights must be f32/,
  );
  assert.throws(() => grpoLoss(lp, inputs, { ...opts, beta: -1 }), /beta must be/);
  assert.throws(() => grpoLoss(lp, inputs, { ...opts, epsLow: 1.5 }), /epsLow must be/);
  assert.throws(() => grpoLoss(lp, inputs, { ...opts, epsHigh: NaN }), /epsHigh must be/);
  assert.throws(
    () => grpoLossCpu([0], [0, 0], null, [0], [0], { beta: 0, ...EPS }),
    /old has 2 elements/,
  );
  // beta 0 needs no reference
  grpoLoss(lp, { ...inputs, refLogprobs: null }, { ...opts, beta: 0 });
  scope.dispose();
});
