/**
 * The model: the typed config and presets, the parameter table with HF names, the GPU model
 * ({@linkcode DeepSeekV3}: the training forward with every loss term, MTP and the bias update),
 * the incremental decoder ({@linkcode Decoder}: latent KV cache, absorbed MLA, MTP drafting;
 * {@linkcode generateGreedy}), f32/f16/fp8 projections, the CPU f64 reference forward/backward,
 * safetensors bytes and the Hugging Face `config.json` / `generation_config.json` mapping.
 *
 * No file I/O here: `./train` reads and writes checkpoints and Hugging Face directories.
 *
 * @example A tiny model's logits for one sequence, then greedy decoding
 * ```ts
 * import { getDevice, Scope } from "@minideepseek/minideepseek";
 * import {
 *   DeepSeekV3,
 *   Decoder,
 *   generateGreedy,
 *   resolveConfig,
 * } from "@minideepseek/minideepseek/model";
 *
 * const cfg = resolveConfig("tiny");
 * const model = DeepSeekV3.create(await getDevice(), cfg, { seed: 42 });
 * const tokens = Int32Array.from([1, 5, 9, 2]);
 * const scope = new Scope();
 * const { logits } = model.forward(
 *   model.upload({ tokens, targets: new Int32Array(0), B: 1, T: tokens.length }),
 *   { logitsOnly: true },
 * );
 * console.log((await logits.readF32()).length); // 4 * cfg.vocab_size
 * scope.dispose();
 *
 * const decoder = new Decoder(model, { maxBatch: 1 });
 * const { tokens: [next] } = await generateGreedy(decoder, [[1, 5, 9]], { maxTokens: 4 });
 * console.log(next); // 4 greedy token ids
 * decoder.dispose();
 * ```
 *
 * @module
 */

export * from "./config.ts";
export * from "./params.ts";
export * from "./reference.ts";
export * from "./safetensors.ts";
export * from "./hf_config.ts";
export * from "./mla.ts";
export * from "./ffn.ts";
export * from "./transformer.ts";
export * from "./decode.ts";
export * from "./precision.ts";
