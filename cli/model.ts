/**
 * `cli.ts model --preset P`: the model's size, part by part, and its KV-cache budget.
 *
 * @module
 */
import { Command, Option } from "commander";
import {
  countParameters,
  kvCacheBytesPerToken,
  PARAM_PARTS,
  type PresetName,
  PRESETS,
  resolveConfig,
} from "../model/config.ts";

const fmt = (n: number) => n.toLocaleString("en-US");

/** The report `model` prints (also used by tests). */
export function describeModel(preset: PresetName, overrides: Record<string, unknown> = {}): string {
  const cfg = resolveConfig(preset, overrides);
  const c = countParameters(cfg);
  const kv = kvCacheBytesPerToken(cfg);
  const lines = [
    `preset ${preset}: dim ${cfg.dim}, ${cfg.n_layers} layers (${cfg.n_dense_layers} dense), ` +
    `${cfg.n_heads} heads, ${cfg.n_routed_experts} routed + ${cfg.n_shared_experts} shared ` +
    `experts, top-${cfg.n_activated_experts}, MTP depth ${cfg.mtp_depth}, vocab ${cfg.vocab_size}`,
    "",
    `${"part".padEnd(16)} ${"total".padStart(14)} ${"active/token".padStart(14)}`,
    ...PARAM_PARTS.map((p) =>
      `${p.padEnd(16)} ${fmt(c.parts[p].total).padStart(14)} ${fmt(c.parts[p].active).padStart(14)}`
    ),
    `${"all".padEnd(16)} ${fmt(c.total).padStart(14)} ${fmt(c.active).padStart(14)}`,
    `${"without MTP".padEnd(16)} ${fmt(c.main.total).padStart(14)} ${
      fmt(c.main.active).padStart(14)
    }`,
    "",
    "KV cache per token (all layers):",
    `  MLA latent (rkv + dr = ${cfg.kv_lora_rank + cfg.qk_rope_head_dim} per layer): ` +
    `${fmt(kv.mla.f32)} B f32, ${fmt(kv.mla.bf16)} B bf16`,
    `  standard MHA, same heads (H x (dn + dr + dv)):    ` +
    `${fmt(kv.mha.f32)} B f32, ${fmt(kv.mha.bf16)} B bf16  (${kv.ratio.toFixed(1)}x MLA)`,
  ];
  return lines.join("\n");
}

/** Builds the `model` subcommand. */
export function modelCommand(): Command {
  return new Command("model")
    .description("print a preset's parameter counts per part and its KV-cache bytes per token")
    .addOption(
      new Option("--preset <name>", "model preset").choices(Object.keys(PRESETS)).default("nano"),
    )
    .option("--model <json>", "JSON overrides of config fields", "{}")
    .action((o: { preset: PresetName; model: string }) => {
      let overrides: Record<string, unknown>;
      try {
        overrides = JSON.parse(o.model);
      } catch (e) {
        console.error(`error: --model is not valid JSON: ${(e as Error).message}`);
        Deno.exit(2);
      }
      console.log(describeModel(o.preset, overrides));
    });
}
