/**
 * `cli.ts info`: what WebGPU adapter this machine gives us and what we asked of it.
 *
 * @module
 */
import { Command } from "commander";
import { getGpu, NoAdapterError } from "../kernels/gpu.ts";

/** Limits worth showing first (the rest follow with --all). */
const KEY_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
];

/** Builds the `info` subcommand. */
export function infoCommand(): Command {
  return new Command("info")
    .description("print the WebGPU adapter, the limits requested and the features enabled")
    .option("--all", "print every limit", false)
    .option("--json", "print JSON", false)
    .action(async (opts: { all: boolean; json: boolean }) => {
      let gpu;
      try {
        gpu = await getGpu();
      } catch (e) {
        if (e instanceof NoAdapterError) {
          console.error(`error: ${e.message}`);
          Deno.exit(1);
        }
        throw e;
      }
      const info = gpu.info;
      const backend = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default (wgpu's choice)";
      if (opts.json) {
        console.log(JSON.stringify({ ...info, backend }, null, 2));
        return;
      }
      console.log(`adapter:      ${info.description}`);
      console.log(`vendor:       ${info.vendor || "-"}  architecture: ${info.architecture || "-"}`);
      console.log(`backend:      ${backend}`);
      console.log(
        `fallback/CPU: ${info.isFallback ? "yes (software adapter: slow, fine for tests)" : "no"}`,
      );
      console.log(`features:     ${info.features.join(", ") || "(none)"}`);
      console.log("limits requested:");
      const keys = opts.all ? Object.keys(info.limits).sort() : KEY_LIMITS;
      for (const k of keys) {
        if (k in info.limits) console.log(`  ${k.padEnd(36)} ${info.limits[k]}`);
      }
      gpu.device.destroy();
    });
}
