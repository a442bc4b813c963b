import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import { Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { referenceForwardBackward } from "../model/reference.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { assertClose, GPU_TEST, randint, testDevice } from "./_util.ts";

const B = 2, T = 8;

function tinyBatch(V: number) {
  const tokens = randint(B * T, 11, V);
  const targets = randint(B * T, 12, V);
  targets[3] = -1; // ignored targets must drop out of every loss
  targets[B * T - 2] = -1;
  return { tokens, targets };
}

Deno.test(
  "the GPU model's logits, losses and every gradient match the CPU reference (tiny)",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny", { balance_alpha: 0.05 });
    const params = initParameters(cfg, 7);
    const { tokens, targets } = tinyBatch(cfg.vocab_size);
    const ref = referenceForwardBackward(cfg, { params, tokens, targets, shape: { B, T } });

    const scope = new Scope();
    const model = new DeepSeekV3(device, cfg);
    model.load(params);
    model.arena.zeroGrads();
    const tape = new Tape().start();
    const out = model.forward(model.upload({ tokens, targets, B, T }));
    tape.backward(out.losses!.total);
    const l = out.losses!;
    assertClose(await out.logits.readF32(), ref.logits, {
      atol: 2e-5,
      rtol: 1e-4,
      label: "logits",
    });
    const scalar = async (t: { readF32(): Promise<Float32Array> } | null) =>
      t ? (await t.readF32())[0] : 0;
    assertClose([await scalar(l.main)], [ref.losses.main], { atol: 1e-5, label: "main CE" });
    assertClose([await scalar(l.mtp)], [ref.losses.mtp], { atol: 1e-5, label: "MTP loss" });
    assertClose([await scalar(l.balance)], [ref.losses.balance], { atol: 1e-6, label: "balance" });
    assertClose([await scalar(l.total)], [ref.losses.total], { atol: 1e-5, label: "total" });
    // Expert loads per MoE block equal the reference's routing.
    assert.equal(out.loads.length, ref.moe.length);
    for (let j = 0; j < ref.moe.length; j++) {
      assert.deepEqual(
        [...await out.loads[j].read()],
        [...ref.moe[j].loads],
        `loads of block ${j}`,
      );
    }
    const grads = await model.arena.readAll("grads");
    let checked = 0;
    for (const [name, want] of ref.grads) {
      let maxAbs = 0;
      for (const v of want) maxAbs = Math.max(maxAbs, Math.abs(v));
      assertClose(grads.get(name)!, want, { atol: 1e-6 + 2e-4 * maxAbs, rtol: 2e-3, label: name });
      checked++;
    }
    assert.ok(checked > 40, `checked ${checked} gradients`);
    scope.dispose();
  },
);

Deno.test(
  'logitRows "targets" gives the same losses and gradients as logits at every position',
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny", { balance_alpha: 0.05 });
    const params = initParameters(cfg, 9);
    const { tokens, targets } = tinyBatch(cfg.vocab_size);
    // SFT-like: most positions ignored, so the main and MTP rows differ.
    for (let i = 0; i < B * T; i++) if (i % 3 !== 1) targets[i] = -1;
    const weights = Float32Array.from({ length: B * T }, (_, i) => 0.5 + (i % 4) / 4);
    const run = async (logitRows: "all" | "targets") => {
      const scope = new Scope();
      const model = new DeepSeekV3(device, cfg);
      model.load(params);
      model.arena.zeroGrads();
      const tape = new Tape().start();
      const dev = model.upload({ tokens, targets, weights, B, T }, { logitRows });
      const out = model.forward(dev);
      tape.backward(out.losses!.total);
      const l = out.losses!;
      const result = {
        rows: out.logits.shape[0],
        main: (await l.main.readF32())[0],
        mtp: (await l.mtp!.readF32())[0],
        grads: await model.arena.readAll("grads"),
      };
      scope.dispose();
      return result;
    };
    const all = await run("all");
    const sparse = await run("targets");
    const kept = targets.filter((t) => t >= 0).length;
    assert.equal(all.rows, B * T);
    assert.equal(sparse.rows, kept, "one logits row per target");
    assertClose([sparse.main], [all.main], { atol: 1e-6, label: "main CE" });
    assertClose([sparse.mtp], [all.mtp], { atol: 1e-6, label: "MTP loss" });
    for (const [name, want] of all.grads) {
      let maxAbs = 0;
      for (const v of want) maxAbs = Math.max(maxAbs, Math.abs(v));
      assertClose(sparse.grads.get(name)!, want, { atol: 1e-7 + 1e-5 * maxAbs, label: name });
    }
  },
);

Deno.test(
  "upload(): MTP targets never reach across a packed segment boundary",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny");
    const model = new DeepSeekV3(device, cfg);
    const T = 6;
    const tokens = Int32Array.from({ length: T }, (_, i) => 1 + i);
    const targets = Int32Array.from({ length: T }, (_, i) => 10 + i);
    const seg = Int32Array.of(0, 0, 0, 1, 1, 1); // two sequences packed in one row
    const scope = new Scope();
    const dev = model.upload({ tokens, targets, seg, B: 1, T });
    assert.equal(dev.mtp.length, cfg.mtp_depth);
    // Depth 1: position i predicts targets[i + 1] only inside its own segment.
    assert.deepEqual([...await dev.mtp[0].targets!.read()], [11, 12, -1, 14, 15, -1]);
    const plain = model.upload({ tokens, targets, B: 1, T });
    assert.deepEqual([...await plain.mtp[0].targets!.read()], [11, 12, 13, 14, 15, -1]);
    scope.dispose();
    model.arena.destroy();
  },
);
