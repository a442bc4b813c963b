/**
 * Tests of `model/hf_config.ts`: the config.json round trip, the fields transformers reads
 * (float fields written as floats, token ids, both RoPE layouts of the file), and the
 * generation config of an exported model.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type PresetName, PRESETS, resolveConfig } from "../model/config.ts";
import {
  formatHfJson,
  fromHfConfig,
  MINIDEEPSEEK_TOKEN_IDS,
  toGenerationConfig,
  toHfConfig,
} from "../model/hf_config.ts";
import { BOS_TOKEN, EOS_TOKEN, IM_END_TOKEN, PAD_TOKEN, SPECIAL_TOKENS } from "../tokenizer/mod.ts";

Deno.test("HF config.json round trip for every preset, and its DeepSeek-V3 keys", () => {
  for (const name of Object.keys(PRESETS) as PresetName[]) {
    const cfg = resolveConfig(name);
    const hf = toHfConfig(cfg);
    const back = fromHfConfig(JSON.parse(JSON.stringify(hf)));
    assert.deepEqual(back, cfg, name);
  }
  const tiny = toHfConfig(PRESETS.tiny);
  assert.equal(tiny.model_type, "deepseek_v3");
  assert.deepEqual(tiny.architectures, ["DeepseekV3ForCausalLM"]);
  assert.equal(tiny.hidden_size, 32);
  assert.equal(tiny.first_k_dense_replace, 1);
  assert.equal(tiny.num_key_value_heads, tiny.num_attention_heads);
  assert.equal(tiny.topk_method, "noaux_tc");
  assert.equal(tiny.scoring_func, "sigmoid");
  assert.equal(tiny.norm_topk_prob, true);
  assert.equal(tiny.tie_word_embeddings, false);
  assert.equal(tiny.num_nextn_predict_layers, 1);
  assert.deepEqual(tiny.rope_scaling, {
    type: "yarn",
    rope_type: "yarn",
    factor: 2,
    original_max_position_embeddings: 32,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
  });
  assert.equal(toHfConfig(PRESETS.nano).rope_scaling, null);
  assert.equal(toHfConfig(resolveConfig("tiny", { q_lora_rank: 0 })).q_lora_rank, null);
  assert.equal(fromHfConfig(toHfConfig(resolveConfig("tiny", { q_lora_rank: 0 }))).q_lora_rank, 0);
});

Deno.test("fromHfConfig names the config.json field it cannot use", () => {
  const hf = toHfConfig(PRESETS.nano);
  const bad = (over: Record<string, unknown>, re: RegExp) =>
    assert.throws(() => fromHfConfig({ ...hf, ...over }), re);
  bad({ model_type: "llama" }, /'model_type'/);
  bad({ hidden_size: undefined }, /'hidden_size': missing/);
  bad({ hidden_size: "128" }, /'hidden_size': expected a number/);
  bad({ scoring_func: "softmax" }, /'scoring_func'/);
  bad({ tie_word_embeddings: true }, /'tie_word_embeddings'/);
  bad({ num_key_value_heads: 1 }, /'num_key_value_heads'/);
  bad({ n_group: 3 }, /'n_expert_groups'.*config\.json 'n_group'/);
  bad({ rope_scaling: { type: "linear", factor: 2 } }, /'rope_scaling\.type'/);
  assert.throws(() => fromHfConfig(null), /expected a JSON object/);
  // Fields HF lacks fall back to the defaults.
  const minimal = { ...hf };
  delete minimal.minideepseek_mtp_lambda;
  assert.equal(fromHfConfig(minimal).mtp_lambda, PRESETS.nano.mtp_lambda);
});

Deno.test("formatHfJson() writes float fields with a decimal point, other numbers as given", () => {
  const text = formatHfJson(toHfConfig(resolveConfig("nano")));
  // transformers' strict DeepseekV3Config refuses `"routed_scaling_factor": 1`.
  assert.match(text, /"routed_scaling_factor": 1\.0,/);
  assert.match(text, /"rope_theta": 10000\.0,/);
  assert.match(text, /"attention_dropout": 0\.0,/);
  assert.match(text, /"rms_norm_eps": 0\.000001,/);
  assert.match(text, /"hidden_size": 128,/);
  assert.match(text, /"n_group": 2,/);
  assert.match(text, /"num_nextn_predict_layers": 1,/);
  const yarn = formatHfJson(toHfConfig(PRESETS.tiny));
  assert.match(yarn, /"factor": 2\.0,/);
  assert.match(yarn, /"beta_fast": 32\.0,/);
  assert.match(yarn, /"original_max_position_embeddings": 32,/);
  assert.equal(
    formatHfJson({ mscale: 1e21, x: [1] }),
    '{\n  "mscale": 1e+21,\n  "x": [\n    1\n  ]\n}\n',
  );
  // The text parses back to the same values.
  assert.deepEqual(fromHfConfig(JSON.parse(text)), resolveConfig("nano"));
});

Deno.test("toHfConfig() and toGenerationConfig() name the tokenizer's special ids", () => {
  const ids = MINIDEEPSEEK_TOKEN_IDS;
  assert.equal(SPECIAL_TOKENS[ids.bos], BOS_TOKEN);
  assert.equal(SPECIAL_TOKENS[ids.eos], EOS_TOKEN);
  assert.equal(SPECIAL_TOKENS[ids.pad], PAD_TOKEN);
  assert.deepEqual(ids.stop.map((i) => SPECIAL_TOKENS[i]), [IM_END_TOKEN, EOS_TOKEN]);
  const cfg = resolveConfig("nano");
  const hf = toHfConfig(cfg);
  assert.deepEqual([hf.bos_token_id, hf.eos_token_id, hf.pad_token_id], [0, 1, 2]);
  const gen = toGenerationConfig(cfg);
  assert.deepEqual(gen.eos_token_id, [4, 1]);
  assert.equal(gen.max_length, cfg.max_seq_len);
  assert.equal(gen.do_sample, false);
  const other = { bos: 5, eos: 6, pad: 7, stop: [8] };
  assert.equal(toHfConfig(cfg, { tokenIds: other }).pad_token_id, 7);
  assert.deepEqual(toGenerationConfig(cfg, { tokenIds: other }).eos_token_id, [8]);
});

Deno.test("fromHfConfig() reads transformers 5's rope_parameters form", () => {
  // What DeepseekV3Config.save_pretrained writes: no rope_theta / rope_scaling at the top.
  const tiny = toHfConfig(PRESETS.tiny);
  const { rope_theta: _t, rope_scaling: rs, ...rest } = tiny;
  const yarn = { ...rest, rope_parameters: { ...(rs as object), rope_theta: 10000.0 } };
  assert.deepEqual(fromHfConfig(yarn), PRESETS.tiny);
  const nano = toHfConfig(resolveConfig("nano", { rope_theta: 50000 }));
  const { rope_theta: _n, rope_scaling: _s, ...nrest } = nano;
  const plain = { ...nrest, rope_parameters: { rope_theta: 50000.0, rope_type: "default" } };
  assert.deepEqual(fromHfConfig(plain), resolveConfig("nano", { rope_theta: 50000 }));
  assert.throws(
    () => fromHfConfig({ ...nrest, rope_parameters: { rope_type: "linear", factor: 2 } }),
    /'rope_parameters\.type'/,
  );
});
