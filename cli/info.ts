/**
 * `cli.ts info`: the backend `--device` picks, the BLAS library of the CPU backend, and the
 * WebGPU adapter this machine gives us with what we asked of it.
 *
 * @module
 */
import { Command } from "commander";
import { chooseDevice, getDevice, isSoftwareAdapter } from "../kernels/backend.ts";
import { loadBlas, NoBlasError } from "../kernels/blas.ts";
import { getGpu, NoAdapterError } from "../kernels/gpu.ts";
import { addDeviceOption } from "./device.ts";

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
  return addDeviceOption(new Command("info"))
    .description(
      "print the backend --device picks, the BLAS library and its threads, and the WebGPU " +
        "adapter with the limits requested and the features enabled",
    )
    .option("--all", "print every limit", false)
    .option("--json", "print JSON", false)
    .action(async (opts: { all: boolean; json: boolean; device: string }) => {
      chooseDevice(opts.device);
      let device, deviceError = "";
      try {
        device = await getDevice();
      } catch (e) {
        deviceError = (e as Error).message;
      }
      let blas = null, blasError = "";
      try {
        const b = loadBlas();
        blas = { path: b.path, threads: b.threads, core: b.core };
      } catch (e) {
        if (!(e instanceof NoBlasError)) throw e;
        blasError = e.message;
      }
      let gpu = null, gpuError = "";
      try {
        gpu = await getGpu();
      } catch (e) {
        if (!(e instanceof NoAdapterError)) throw e;
        gpuError = e.message;
      }
      const webgpuBackend = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default (wgpu's choice)";
      if (opts.json) {
        console.log(JSON.stringify(
          {
            device: device ? { kind: device.kind, description: device.info.description } : null,
            deviceError: deviceError || undefined,
            blas,
            blasError: blasError || undefined,
            webgpu: gpu ? { ...gpu.info, backend: webgpuBackend } : null,
            webgpuError: gpuError || undefined,
          },
          null,
          2,
        ));
        return;
      }
      console.log(
        `device:       ${device ? `${device.kind}: ${device.info.description}` : deviceError}` +
          ` (--device ${opts.device})`,
      );
      console.log(
        `BLAS:         ${
          blas
            ? `${blas.path}${blas.core ? ` (${blas.core})` : ""}, ${blas.threads} threads`
            : blasError
        }`,
      );
      if (!gpu) {
        console.log(`WebGPU:       ${gpuError}`);
        if (!device) Deno.exit(1);
        return;
      }
      const info = gpu.info;
      console.log(`adapter:      ${info.description}`);
      console.log(`vendor:       ${info.vendor || "-"}  architecture: ${info.architecture || "-"}`);
      console.log(`backend:      ${webgpuBackend}`);
      console.log(
        `fallback/CPU: ${
          isSoftwareAdapter(info) ? "yes (software adapter: slow, fine for tests)" : "no"
        }`,
      );
      console.log(`features:     ${info.features.join(", ") || "(none)"}`);
      console.log("limits requested:");
      const keys = opts.all ? Object.keys(info.limits).sort() : KEY_LIMITS;
      for (const k of keys) {
        if (k in info.limits) console.log(`  ${k.padEnd(36)} ${info.limits[k]}`);
      }
      gpu.device.destroy();
      if (!device) Deno.exit(1);
    });
}
