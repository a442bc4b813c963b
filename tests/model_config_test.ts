/**
 * Tests of `model/config.ts` and `model/params.ts`: presets, validation, parameter counts
 * against the parameter table, KV-cache sizes, deterministic init.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  countParameters,
  deriveSizes,
  kvCacheBytesPerToken,
  PARAM_PARTS,
  type PresetName,
  PRESETS,
  resolveConfig,
} from "../model/config.ts";
import { initParameters, parameterTable } from "../model/params.ts";

const NAMES = Object.keys(PRESETS) as PresetName[];

Deno.test("every preset validates and its counts equal the parameter table's sizes", () => {
  for (const name of NAMES) {
    const cfg = resolveConfig(name);
    const table = parameterTable(cfg);
    const counts = countParameters(cfg);
    const perPart = Object.fromEntries(PARAM_PARTS.map((p) => [p, 0]));
    for (const s of table) perPart[s.part] += s.size;
    for (const p of PARAM_PARTS) assert.equal(counts.parts[p].total, perPart[p], `${name} ${p}`);
    assert.equal(counts.total, table.reduce((a, s) => a + s.size, 0), name);
    assert.equal(new Set(table.map((s) => s.name)).size, table.length, `${name}: duplicate names`);
    assert.ok(counts.active < counts.total, name);
    assert.equal(counts.main.total + counts.parts.mtp.total, counts.total);
  }
});

Deno.test("active counts follow K of E experts per MoE layer", () => {
  const cfg = resolveConfig("tiny");
  const c = countParameters(cfg);
  const expert = 3 * cfg.dim * cfg.moe_inter_dim;
  const moeLayers = cfg.n_layers - cfg.n_dense_layers;
  assert.equal(c.parts.routed_experts.total, moeLayers * cfg.n_routed_experts * expert);
  assert.equal(c.parts.routed_experts.active, moeLayers * cfg.n_activated_experts * expert);
  assert.equal(c.parts.dense_ffn.active, c.parts.dense_ffn.total);
});

Deno.test("preset sizes are in their intended ranges", () => {
  const tiny = countParameters(PRESETS.tiny);
  assert.ok(tiny.total < 200_000, `tiny has ${tiny.total}`);
  const nano = countParameters(PRESETS.nano);
  assert.ok(nano.total >= 1e6 && nano.total <= 3e6, `nano has ${nano.total}`);
  assert.equal(PRESETS.nano.vocab_size, 6400);
  const mini = countParameters(PRESETS.mini);
  assert.ok(mini.main.active > 22e6 && mini.main.active < 28e6, `mini active ${mini.main.active}`);
  const small = countParameters(PRESETS.small);
  assert.ok(small.total >= 100e6 && small.total <= 200e6, `small has ${small.total}`);
});

Deno.test("preset counts match the numbers quoted in config.ts", () => {
  const want: Record<PresetName, [number, number, number, number]> = {
    tiny: [52_656, 34_224, 33_768, 24_552],
    nano: [2_344_496, 2_049_584, 2_053_960, 1_906_504],
    mini: [93_812_672, 27_752_384, 82_775_152, 24_972_400],
    small: [161_471_296, 76_536_640, 148_306_352, 70_449_584],
  };
  for (const name of NAMES) {
    const c = countParameters(PRESETS[name]);
    assert.deepEqual([c.total, c.active, c.main.total, c.main.active], want[name], name);
  }
});

Deno.test("tiny exercises every feature", () => {
  const c = PRESETS.tiny;
  assert.ok(c.q_lora_rank > 0);
  assert.ok(c.n_dense_layers >= 1 && c.n_layers - c.n_dense_layers >= 1);
  assert.ok(c.n_expert_groups >= 2 && c.n_limited_groups < c.n_expert_groups);
  assert.ok(c.n_shared_experts >= 1);
  assert.equal(c.mtp_depth, 1);
  assert.ok(deriveSizes(c).yarn_active);
  const names = parameterTable(c).map((s) => s.name);
  for (
    const n of [
      "model.layers.0.self_attn.q_a_layernorm.weight",
      "model.layers.0.mlp.gate_proj.weight",
      "model.layers.1.mlp.gate.e_score_correction_bias",
      "model.layers.1.mlp.shared_experts.down_proj.weight",
      "model.layers.2.eh_proj.weight",
      "model.layers.2.shared_head.norm.weight",
      "model.layers.2.mlp.experts.7.up_proj.weight",
    ]
  ) assert.ok(names.includes(n), n);
});

Deno.test("resolveConfig rejects bad fields with a message naming the field", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ dimm: 3 }, /'dimm'.*unknown field/],
    [{ dim: 0 }, /'dim'.*>= 1/],
    [{ dim: 3.5 }, /'dim'.*integer/],
    [{ n_heads: "4" }, /'n_heads'.*finite number/],
    [{ qk_rope_head_dim: 3 }, /'qk_rope_head_dim'.*even/],
    [{ n_expert_groups: 3 }, /'n_expert_groups'.*divide/],
    [{ n_limited_groups: 3 }, /'n_limited_groups'/],
    [{ n_activated_experts: 5 }, /'n_activated_experts'/],
    [{ n_dense_layers: 3 }, /'n_dense_layers'/],
    [{ norm_eps: 0 }, /'norm_eps'.*> 0/],
    [{ beta_fast: 0.5 }, /'beta_fast'/],
    [{ mtp_lambda: -1 }, /'mtp_lambda'/],
  ];
  for (const [over, re] of cases) {
    assert.throws(() => resolveConfig("tiny", over as never), re, JSON.stringify(over));
  }
  assert.throws(() => resolveConfig("huge" as PresetName), /unknown model preset 'huge'/);
  const q0 = resolveConfig("tiny", { q_lora_rank: 0 });
  assert.ok(parameterTable(q0).some((s) => s.name === "model.layers.0.self_attn.q_proj.weight"));
  assert.equal(countParameters(q0).total, parameterTable(q0).reduce((a, s) => a + s.size, 0));
});

Deno.test("KV cache per token: MLA caches rkv + dr, MHA H*(dn+dr+dv) per layer", () => {
  const cfg = PRESETS.mini;
  const kv = kvCacheBytesPerToken(cfg);
  assert.equal(kv.mla.elements, cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim));
  assert.equal(kv.mla.f32, 4 * kv.mla.elements);
  assert.equal(kv.mla.bf16, 2 * kv.mla.elements);
  assert.equal(kv.mha.elements, 8 * 8 * (32 + 32 + 32));
  assert.equal(kvCacheBytesPerToken(PRESETS.tiny).mla.f32, 160);
});

Deno.test("parameter table flags: norms and biases get no decay, the gate bias is frozen", () => {
  for (const s of parameterTable(PRESETS.tiny)) {
    if (s.name.endsWith("e_score_correction_bias")) {
      assert.equal(s.trainable, false);
      assert.equal(s.init, "zeros");
      assert.equal(s.weightDecay, false);
    } else if (s.shape.length === 1) {
      assert.equal(s.init, "ones", s.name);
      assert.equal(s.weightDecay, false, s.name);
    } else {
      assert.equal(s.init, "normal", s.name);
      assert.equal(s.weightDecay, true, s.name);
      assert.equal(s.trainable, true, s.name);
    }
  }
});

Deno.test("initParameters is deterministic, seed-dependent and has the init std", () => {
  const cfg = resolveConfig("tiny");
  const a = initParameters(cfg, 7), b = initParameters(cfg, 7), c = initParameters(cfg, 8);
  const name = "model.layers.1.mlp.experts.3.down_proj.weight";
  assert.deepEqual(a.get(name), b.get(name));
  assert.notDeepEqual(a.get(name), c.get(name));
  const emb = a.get("model.embed_tokens.weight")!;
  let s = 0, s2 = 0;
  for (const v of emb) {
    s += v;
    s2 += v * v;
  }
  const mean = s / emb.length, std = Math.sqrt(s2 / emb.length - mean * mean);
  assert.ok(Math.abs(mean) < 0.002, `mean ${mean}`);
  assert.ok(Math.abs(std - cfg.init_std) < 0.001, `std ${std}`);
  assert.ok(a.get("model.norm.weight")!.every((v) => v === 1));
  assert.ok(a.get("model.layers.1.mlp.gate.e_score_correction_bias")!.every((v) => v === 0));
  // Different tensors draw different streams.
  assert.notDeepEqual(
    a.get("model.layers.1.mlp.experts.0.up_proj.weight"),
    a.get("model.layers.1.mlp.experts.1.up_proj.weight"),
  );
});

Deno.test("config bounds refuse huge sizes at once, and say the memory a large config needs", async () => {
  const { checkTrainingMemory, modelConfigFrom } = await import("../train/run_pretrain.ts");
  const t0 = performance.now();
  assert.throws(
    () => modelConfigFrom("nano", '{"n_layers": 100000}', 512),
    /^RangeError: --model: invalid model config field 'n_layers': expected an integer <= 1024, got 100000$/,
  );
  assert.ok(performance.now() - t0 < 1000, "refused before sizing anything");
  assert.throws(() => resolveConfig("tiny", { dim: null as unknown as number }), {
    message: "invalid model config field 'dim': expected a finite number, got null",
  });
  assert.throws(() => resolveConfig("tiny", { dim: 1e999 }), {
    message: "invalid model config field 'dim': expected a finite number, got Infinity",
  });
  const big = resolveConfig("nano", { n_layers: 1000, dim: 4096, inter_dim: 16384 });
  assert.throws(
    () => checkTrainingMemory(big, { memoryBytes: 64 * 2 ** 30 }),
    (e: Error) =>
      /^--model: this config has [\d.]+e\+\d+ parameters; training it needs [\d.]+ GiB/.test(
        e.message,
      ) && e.message.includes("this machine has 64.0 GiB"),
  );
  checkTrainingMemory(resolveConfig("nano"), { memoryBytes: 64 * 2 ** 30 });
});
