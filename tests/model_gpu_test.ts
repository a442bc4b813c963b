import assert from "node:assert/strict";
import { Tape } from "../kernels/autograd.ts";
import { Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { referenceForwardBackward } from "../model/reference.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { assertClose, GPU_TEST, randint, testGpu } from "./_util.ts";

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
    const gpu = await testGpu();
    const cfg = resolveConfig("tiny", { balance_alpha: 0.05 });
    const params = initParameters(cfg, 7);
    const { tokens, targets } = tinyBatch(cfg.vocab_size);
    const ref = referenceForwardBackward(cfg, { params, tokens, targets, shape: { B, T } });

    const scope = new Scope();
    const model = new DeepSeekV3(gpu, cfg);
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
