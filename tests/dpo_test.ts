/**
 * DPO: the loss kernel against its CPU twin and finite differences, the whole GPU DPO step on
 * the tiny model against the CPU reference model (loss, and gradients by finite differences),
 * ln 2 for a policy equal to its reference, packing invariance, and the pair readers.
 *
 * @module
 */
import assert from "node:assert/strict";
import { noGrad, Tape } from "../kernels/autograd.ts";
import {
  DPO_METRICS,
  DPO_STATS_STRIDE,
  dpoLoss,
  dpoLossBackward,
  dpoLossBackwardCpu,
  dpoLossCpu,
  dpoLossForward,
  type DpoMetric,
} from "../kernels/dpo.ts";
import { Scope, Tensor } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { referenceForwardBackward } from "../model/reference.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { benchmarkText } from "../data/mod.ts";
import { trainBpe } from "../tokenizer/mod.ts";
import {
  DpoTask,
  pairCheck,
  type PairExample,
  pairSequences,
  readPreferencePairs,
  responseExample,
  sequenceLogps,
} from "../train/dpo.ts";
import { JsonlError } from "../train/jsonl.ts";
import { type ChatExample, packSequences } from "../train/sft.ts";
import { checkParamGrads, taskLossAndGrads } from "./_grad.ts";
import { assertClose, finiteDiff, GPU_TEST, randint, randn, testDevice } from "./_util.ts";

Deno.test(
  "dpoLoss() matches its CPU twin: loss, sums, metrics and the gradient",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    for (const [N, P] of [[7, 1], [300, 5], [1000, 70]]) {
      const lp = randn(N, N, 1).map((v) => -Math.abs(v));
      // every sequence gets some tokens; some tokens belong to none
      const seq = Int32Array.from({ length: N }, (_, i) => (i % 5 === 4 ? -1 : i % (2 * P)));
      const ref = randn(2 * P, P + 3, 2);
      const beta = 0.3;
      const scope = new Scope();
      const x = Tensor.from(device, lp, [N]);
      x.requiresGrad = true;
      const tape = new Tape().start();
      const out = dpoLoss(x, {
        seqIds: Tensor.from(device, seq, [N], "i32"),
        refLogps: Tensor.from(device, ref, [2 * P]),
        pairs: P,
        beta,
      });
      tape.backward(out.loss);
      const want = dpoLossCpu(lp, seq, ref, { pairs: P, beta });
      const label = `N ${N} P ${P}`;
      assertClose(await out.loss.readF32(), [want.loss], { atol: 1e-5, label: `${label} loss` });
      assertClose(await out.sums.readF32(), want.sums, { atol: 1e-4, label: `${label} sums` });
      for (const k of DPO_METRICS) {
        assertClose(await out.metrics[k].readF32(), [want.metrics[k]], {
          atol: 1e-4,
          label: `${label} ${k}`,
        });
      }
      const dWant = dpoLossBackwardCpu(seq, want.coef, 1, { beta });
      assertClose(await x.grad!.readF32(), dWant, {
        atol: 1e-7,
        rtol: 1e-4,
        label: `${label} grad`,
      });
      // the CPU twin's gradient against central differences of its own loss
      const f = (v: Float64Array) => dpoLossCpu(v, seq, ref, { pairs: P, beta }).loss;
      const idx = [0, 1, 2, N - 1, Math.floor(N / 2)];
      const fd = finiteDiff(f, Float64Array.from(lp), { indices: idx, h: 1e-5 });
      assertClose(idx.map((i) => dWant[i]), fd, { atol: 1e-8, rtol: 1e-5, label: `${label} fd` });
      scope.dispose();
    }
  },
);

Deno.test(
  "dpoLossBackward() adds into dlogprobs when accumulating, and overwrites otherwise",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const N = 50, P = 3, beta = 0.2;
    const lp = randn(N, 7, 1).map((v) => -Math.abs(v));
    const seq = Int32Array.from({ length: N }, (_, i) => (i % 7 === 6 ? -1 : i % (2 * P)));
    const ref = randn(2 * P, 8, 2);
    const bufs = {
      sums: Tensor.empty(device, [2 * P]),
      loss: Tensor.empty(device, [1]),
      stats: Tensor.empty(device, [DPO_METRICS.length * DPO_STATS_STRIDE]),
      coef: Tensor.empty(device, [P]),
    };
    const seqT = Tensor.from(device, seq, [N], "i32");
    dpoLossForward(bufs, Tensor.from(device, lp, [N]), seqT, Tensor.from(device, ref, [2 * P]), {
      pairs: P,
      beta,
    });
    const want = dpoLossBackwardCpu(seq, dpoLossCpu(lp, seq, ref, { pairs: P, beta }).coef, 1.5, {
      beta,
    });
    const prior = randn(N, 9);
    const dloss = Tensor.from(device, [1.5], [1]);
    for (const accumulate of [false, true]) {
      const d = Tensor.from(device, prior, [N]);
      dpoLossBackward(d, dloss, { seqIds: seqT, coef: bufs.coef }, { beta, accumulate });
      assertClose(await d.readF32(), accumulate ? want.map((v, i) => v + prior[i]) : want, {
        atol: 1e-7,
        rtol: 1e-4,
        label: `accumulate=${accumulate}`,
      });
    }
  },
);

Deno.test("dpoLossCpu() is ln 2 at the reference and follows the sign of the margin", () => {
  const cpu = (lp: number[]) => dpoLossCpu(lp, [0, 0, 1], [-3, -3], { pairs: 1, beta: 0.1 });
  assert.ok(Math.abs(cpu([-1, -2, -3]).loss - Math.LN2) < 1e-12);
  const better = cpu([-1, -1, -5]);
  assert.ok(better.loss < Math.LN2);
  assert.equal(better.metrics["rewards/accuracies"], 1);
  assertClose([better.metrics["rewards/margins"]], [0.1 * (1 - -2)], { atol: 1e-12 });
});

// --- the whole DPO step on the tiny model against the CPU reference -------------------------

const cfg = resolveConfig("tiny");
const V = cfg.vocab_size;

/** Synthetic pairs: random ids; the response is the last `r` tokens of each side. */
function syntheticPairs(count: number, seed: number): PairExample[] {
  const side = (k: number, len: number, r: number): ChatExample => {
    const ids = randint(len, seed * 100 + k, V);
    const mask = new Uint8Array(len);
    mask.fill(1, len - r);
    return { ids, mask, source: `pair ${k}` };
  };
  return Array.from({ length: count }, (_, p) => ({
    chosen: side(2 * p, 9 + p, 3 + (p % 2)),
    rejected: side(2 * p + 1, 8 + 2 * p, 2 + p),
  }));
}

/** One sequence per row, targets masked to the response: the CPU reference's input. */
function unpacked(seqs: ChatExample[], T: number) {
  const B = seqs.length;
  const tokens = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-1);
  seqs.forEach((s, b) => {
    for (let j = 0; j < s.ids.length - 1; j++) {
      tokens[b * T + j] = s.ids[j];
      if (s.mask[j + 1]) targets[b * T + j] = s.ids[j + 1];
    }
  });
  return { tokens, targets, B, T };
}

/** The DPO loss computed from the CPU reference model's logits (f64). */
function cpuDpoLoss(
  params: ReadonlyMap<string, ArrayLike<number>>,
  pairs: PairExample[],
  ref: ArrayLike<number>,
  beta: number,
): number {
  const seqs = pairSequences(pairs);
  const T = Math.max(...seqs.map((s) => s.ids.length - 1));
  const { tokens, targets, B } = unpacked(seqs, T);
  const r = referenceForwardBackward(cfg, {
    params,
    tokens,
    targets,
    shape: { B, T },
    backward: false,
  });
  const lp = new Float64Array(B * T), seqIds = new Int32Array(B * T).fill(-1);
  for (let i = 0; i < B * T; i++) {
    const t = targets[i];
    if (t < 0) continue;
    let m = -Infinity;
    for (let c = 0; c < V; c++) m = Math.max(m, r.logits[i * V + c]);
    let s = 0;
    for (let c = 0; c < V; c++) s += Math.exp(r.logits[i * V + c] - m);
    lp[i] = r.logits[i * V + t] - m - Math.log(s);
    seqIds[i] = Math.floor(i / T);
  }
  return dpoLossCpu(lp, seqIds, ref, { pairs: pairs.length, beta }).loss;
}

Deno.test(
  "the GPU DPO loss and gradients on the tiny model (packed rows) match the CPU reference",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const params = initParameters(cfg, 3);
    const model = new DeepSeekV3(device, cfg);
    model.load(params);
    const pairs = syntheticPairs(3, 5);
    // Reference sums away from the policy's, so the loss is not at its ln 2 point.
    const ref = Float64Array.from(randn(6, 9, 2)).map((v, i) => -20 + v + (i % 2 ? 1 : -1));
    const beta = 0.5;
    const task = new DpoTask({ pairs, ref }, { pairs: [], ref: new Float64Array(0) }, {
      pairs: 3,
      T: 40, // all six sequences packed into one row
      B: 1,
      beta,
      seed: 1,
    });
    const { loss: gpuLoss, grads } = await taskLossAndGrads(model, task);

    // The task shuffles pairs; the loss is a mean over pairs, so the order does not matter.
    const p64 = new Map([...params].map(([k, v]) => [k, Float64Array.from(v)]));
    const want = cpuDpoLoss(p64, pairs, ref, beta);
    assertClose([gpuLoss], [want], { atol: 2e-5, label: "DPO loss" });
    assert.ok(Math.abs(want - Math.LN2) > 0.05, `loss ${want} should be away from ln 2`);

    // Gradients against central differences of the CPU loss on a few parameters of the head,
    // the final norm and both blocks' attention.
    checkParamGrads((p) => cpuDpoLoss(p, pairs, ref, beta), p64, grads, [
      ["lm_head.weight", [0, 77, 1000, 4000]],
      ["model.norm.weight", [1, 30]],
      ["model.layers.1.self_attn.o_proj.weight", [5, 300]],
      ["model.layers.0.self_attn.q_b_proj.weight", [17]],
    ]);
    model.arena.destroy();
  },
);

Deno.test(
  "a policy equal to its reference gives loss ln 2 and zero rewards; packing does not change logps",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 4));
    const pairs = syntheticPairs(4, 8);
    const seqs = pairSequences(pairs);
    // Reference from one sequence per row; the task packs several per row.
    const alone = await sequenceLogps(model, seqs, { B: 1, T: 20 });
    const packed = await sequenceLogps(model, seqs, { B: 2, T: 40 });
    assertClose(packed, alone, { atol: 2e-5, rtol: 1e-5, label: "packed vs alone" });
    const task = new DpoTask({ pairs, ref: alone }, { pairs, ref: alone }, {
      pairs: 4,
      T: 48,
      B: 2,
      beta: 0.1,
      seed: 2,
    });
    const scope = new Scope();
    const out = noGrad(() => task.forward(model));
    assertClose(await out.loss.readF32(), [Math.LN2], { atol: 1e-5, label: "loss" });
    const m = (k: DpoMetric) => out.terms[k].readF32();
    assertClose(await m("rewards/margins"), [0], { atol: 1e-5, label: "margins" });
    assertClose(await m("rewards/chosen"), [0], { atol: 1e-5, label: "chosen reward" });
    scope.dispose();
    const val = await task.validate(model);
    assertClose([val.loss], [Math.LN2], { atol: 1e-6, label: "val loss" });
    model.arena.destroy();
  },
);

Deno.test("responseExample() masks only the final assistant turn, <|im_end|> included", () => {
  const tok = trainBpe([benchmarkText({ chars: 20_000 })], { vocabSize: 400 });
  const messages = [
    { role: "user", content: "How old is Karo?" },
    { role: "assistant", content: "34" },
    { role: "user", content: "And Mira?" },
    { role: "assistant", content: "29" },
  ];
  const ex = responseExample(tok, messages, { T: 512, source: "x" });
  const picked = [...ex.ids].filter((_, i) => ex.mask[i]);
  assert.equal(tok.decode(picked), "29<|im_end|>");
  // A tight T cuts the prompt from the left and keeps the response.
  const cut = responseExample(tok, messages, { T: 8, source: "x" });
  assert.equal(cut.ids.length, 9);
  assert.equal(tok.decode([...cut.ids].filter((_, i) => cut.mask[i])), "29<|im_end|>");
});

Deno.test("readPreferencePairs() reads both forms and names file:line for bad records", async () => {
  const dir = await Deno.makeTempDir();
  const good = [
    JSON.stringify({ prompt: "2+2?", chosen: "4", rejected: "5" }),
    JSON.stringify({
      chosen: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }],
      rejected: [{ role: "user", content: "hi" }, { role: "assistant", content: "go away" }],
    }),
  ];
  await Deno.writeTextFile(`${dir}/ok.jsonl`, good.join("\n") + "\n");
  const { pairs } = await readPreferencePairs(`${dir}/ok.jsonl`);
  assert.equal(pairs.length, 2);
  assert.deepEqual(pairs[0].chosen, [
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "4" },
  ]);
  const bad = [
    good[0],
    JSON.stringify({ chosen: [{ role: "user", content: "hi" }], rejected: [] }),
    "{not json",
    JSON.stringify({ prompt: "x", chosen: "y" }),
  ];
  await Deno.writeTextFile(`${dir}/bad.jsonl`, bad.join("\n") + "\n");
  await assert.rejects(
    () => readPreferencePairs(`${dir}/bad.jsonl`),
    (e: Error) => e instanceof JsonlError && e.message.startsWith(`${dir}/bad.jsonl:2: `),
  );
  const skipped: string[] = [];
  const r = await readPreferencePairs(`${dir}/bad.jsonl`, {
    skipBad: true,
    onBad: (m) => skipped.push(m),
  });
  assert.equal(r.pairs.length, 1);
  assert.equal(r.bad, 3);
  assert.match(skipped[0], /bad\.jsonl:2: "chosen" must end with the assistant turn/);
  assert.match(skipped[2], /bad\.jsonl:4: missing field "rejected"/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("packSequences() puts each pair's sequences in order with their own segments", () => {
  const pairs = syntheticPairs(2, 3);
  const b = packSequences(pairSequences(pairs), { T: 30 });
  // item ids follow the sequence order (chosen 2q, rejected 2q + 1)
  const items = [...new Set(b.item)].filter((i) => i >= 0).sort();
  assert.deepEqual(items, [0, 1, 2, 3]);
  for (let j = 0; j < b.item.length; j++) {
    if (b.targets[j] >= 0) assert.ok(b.item[j] >= 0);
  }
});

Deno.test(
  "rpoAlpha adds alpha x the chosen responses' mean token NLL to the DPO loss",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 6));
    const pairs = syntheticPairs(3, 11);
    const seqs = pairSequences(pairs);
    const ref = await sequenceLogps(model, seqs, { B: 1, T: 20 });
    const opts = { pairs: 3, T: 48, B: 2, beta: 0.1, seed: 3 };
    const none = { pairs: [], ref: new Float64Array(0) };
    const scope = new Scope();
    const plain = noGrad(() => new DpoTask({ pairs, ref }, none, opts).forward(model));
    const rpo = noGrad(() =>
      new DpoTask({ pairs, ref }, none, { ...opts, rpoAlpha: 0.5 }).forward(model)
    );
    // The chosen replies' summed logps over their target count (every pair is visited once).
    let sum = 0, count = 0;
    pairs.forEach((p, q) => {
      sum += ref[2 * q];
      count += p.chosen.mask.reduce((a, m, j) => a + (j > 0 ? m : 0), 0);
    });
    const nll = (await rpo.terms.nll_chosen.readF32())[0];
    assertClose([nll], [-sum / count], { atol: 1e-5, label: "chosen NLL" });
    assertClose(
      await rpo.loss.readF32(),
      [(await plain.loss.readF32())[0] + 0.5 * nll],
      { atol: 1e-5, label: "DPO + alpha NLL" },
    );
    assert.ok(!("nll_chosen" in plain.terms));
    scope.dispose();
    model.arena.destroy();
  },
);

Deno.test(
  "DpoTask with replay adds weight x the replayed text's CE and resumes both positions exactly",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 7));
    const pairs = syntheticPairs(5, 12);
    const ref = await sequenceLogps(model, pairSequences(pairs), { B: 1, T: 20 });
    const opts = { pairs: 2, T: 48, B: 2, beta: 0.1, seed: 4 };
    const replay = { tokens: randint(300, 9, cfg.vocab_size), B: 2, T: 16, weight: 0.5 };
    const none = { pairs: [], ref: new Float64Array(0) };
    const scope = new Scope();
    const plain = noGrad(() => new DpoTask({ pairs, ref }, none, opts).forward(model));
    const task = new DpoTask({ pairs, ref }, none, { ...opts, replay });
    const mixed = noGrad(() => task.forward(model));
    assert.ok("replay_ce" in mixed.terms && !("replay_ce" in plain.terms));
    assert.equal(mixed.tokens, plain.tokens + 2 * 16, "replayed targets count as tokens");
    const rce = (await mixed.terms.replay_ce.readF32())[0];
    assert.ok(rce > 1, `replayed CE of an untrained model ${rce}`);
    assertClose(
      await mixed.loss.readF32(),
      [(await plain.loss.readF32())[0] + 0.5 * rce],
      { atol: 1e-5, label: "DPO + weight x replay CE (same pairs as without replay)" },
    );

    // Resume mid-epoch: a task restored from the state continues with the same pairs and text.
    const saved = JSON.parse(JSON.stringify(task.state()));
    const next = (await noGrad(() => task.forward(model)).loss.readF32())[0];
    const resumed = new DpoTask({ pairs, ref }, none, { ...opts, replay });
    resumed.restore(saved);
    assertClose(await noGrad(() => resumed.forward(model)).loss.readF32(), [next], { atol: 0 });
    // upcoming() looks ahead without moving either position.
    const before = JSON.stringify(resumed.state());
    resumed.upcoming(3);
    assert.equal(JSON.stringify(resumed.state()), before);
    assert.throws(() => new DpoTask({ pairs, ref }, none, opts).restore(saved), /with replay/);
    assert.throws(
      () => new DpoTask({ pairs, ref }, none, { ...opts, replay }).restore({ epoch: 0, cursor: 0 }),
      /without replay/,
    );
    scope.dispose();
    model.arena.destroy();
  },
);

Deno.test("DPO pairs that are identical, have different or empty prompts, or empty replies are named", () => {
  const u = (content: string | null) => ({ role: "user", content });
  const a = (content: string | null) => ({ role: "assistant", content });
  const cases: [unknown, RegExp][] = [
    [{ prompt: "q", chosen: "same", rejected: "same" }, /are identical/],
    [{ chosen: [u("q"), a("x")], rejected: [u("q"), a("x")] }, /are identical/],
    [{ prompt: "", chosen: "x", rejected: "y" }, /^field "prompt" is empty/],
    [{ prompt: "q", chosen: " ", rejected: "y" }, /^field "chosen" is empty/],
    [{ chosen: [u("q"), a("x")], rejected: [u("other"), a("y")] }, /must share the prompt/],
    [{ chosen: [u("q"), a(null)], rejected: [u("q"), a("y")] }, /chosen\[1\]\.content is missing/],
    [{ chosen: [u(null), a("x")], rejected: [u(null), a("y")] }, /chosen\[0\]\.content is missing/],
    [{ chosen: [a("x")], rejected: [a("y")] }, /"chosen" has no prompt/],
  ];
  for (const [record, re] of cases) {
    const reason = pairCheck(record);
    assert.ok(reason !== undefined && re.test(reason), `${JSON.stringify(record)}: ${reason}`);
  }
  assert.equal(pairCheck({ prompt: "q", chosen: "x", rejected: "y" }), undefined);
});
