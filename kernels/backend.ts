/**
 * The backend of a process: WebGPU ({@linkcode Gpu}) or the CPU backend ({@linkcode Cpu}).
 *
 * Model, training and serving code never asks which one runs it: tensors carry their device, and
 * every kernel launcher sends host tensors to its `kernels/host/` implementation. The choice is
 * made once, by {@linkcode getDevice}: `auto` takes a hardware GPU adapter when there is one,
 * else the CPU backend when a BLAS library loads, else a software WebGPU adapter (lavapipe),
 * which works but uses a few percent of the CPU.
 *
 * @module
 */
import { type Cpu, createCpu } from "./cpu.ts";
import { getGpu, type Gpu, NoAdapterError } from "./gpu.ts";
import { NoBlasError } from "./blas.ts";

/** A backend: the WebGPU runtime or the CPU backend. */
export type Device = Gpu | Cpu;

/** What `--device` accepts. */
export type DeviceChoice = "auto" | "gpu" | "cpu";

/** The choices, for option parsing. */
export const DEVICE_CHOICES: readonly DeviceChoice[] = ["auto", "gpu", "cpu"];

/**
 * The default choice: `MINIDEEPSEEK_DEVICE` when set (how CI runs the suite on each backend),
 * else "auto".
 * @throws when the variable holds something else.
 */
export function defaultDeviceChoice(): DeviceChoice {
  const env = Deno.env.get("MINIDEEPSEEK_DEVICE");
  if (env === undefined || env === "") return "auto";
  if (!(DEVICE_CHOICES as readonly string[]).includes(env)) {
    throw new Error(
      `MINIDEEPSEEK_DEVICE must be one of ${DEVICE_CHOICES.join(", ")}, got '${env}'`,
    );
  }
  return env as DeviceChoice;
}

/** Whether a WebGPU adapter is a software rasterizer on the CPU (lavapipe, SwiftShader). */
export function isSoftwareAdapter(info: { description: string; isFallback: boolean }): boolean {
  return info.isFallback || /llvmpipe|lavapipe|swiftshader|software/i.test(info.description);
}

let auto: Promise<{ device: Device; warning: string | null }> | null = null;
let chosen: DeviceChoice | null = null;

/**
 * Sets the process's backend (a stage's `--device` flag) for every later {@linkcode getDevice}
 * call that names none. "auto" keeps an earlier choice (the demo's, say) and otherwise detects.
 * @throws on a value that is not a {@linkcode DeviceChoice}, naming the flag.
 */
export function chooseDevice(choice: string): void {
  if (!(DEVICE_CHOICES as readonly string[]).includes(choice)) {
    throw new Error(`--device must be one of ${DEVICE_CHOICES.join(", ")}, got '${choice}'`);
  }
  if (choice !== "auto") chosen = choice as DeviceChoice;
}

/**
 * The backend for `choice` (default: the one {@linkcode chooseDevice} set, else "auto"), created
 * once per process; "auto" follows `MINIDEEPSEEK_DEVICE` when that is set
 * ({@linkcode defaultDeviceChoice}).
 *
 * @param opts.warn called with a warning when `auto` settles for a software WebGPU adapter
 *   (default: printed to stderr).
 * @throws {NoAdapterError} for "gpu" without a WebGPU adapter; {@linkcode NoBlasError} for "cpu"
 *   without a BLAS library; for "auto", only when neither exists.
 * @example const device = await getDevice("cpu"); console.log(device.info.description);
 */
export async function getDevice(
  choice: DeviceChoice = chosen ?? "auto",
  opts: { warn?: (message: string) => void } = { warn: (m) => console.warn(`warning: ${m}`) },
): Promise<Device> {
  if (choice === "auto") choice = defaultDeviceChoice();
  if (choice === "gpu") return await getGpu();
  if (choice === "cpu") return createCpu();
  auto ??= pickAuto();
  const { device, warning } = await auto;
  if (warning) opts.warn?.(warning);
  return device;
}

async function pickAuto(): Promise<{ device: Device; warning: string | null }> {
  // Look at the adapter before making a device from it: a software one is not used if BLAS loads.
  const adapter = typeof navigator !== "undefined" && "gpu" in navigator
    ? await navigator.gpu.requestAdapter({ powerPreference: "high-performance" })
    : null;
  const info = adapter && {
    description: adapter.info.description || adapter.info.device,
    isFallback: Boolean(
      (adapter.info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    ),
  };
  if (info && !isSoftwareAdapter(info)) return { device: await getGpu(), warning: null };
  try {
    return { device: createCpu(), warning: null };
  } catch (e) {
    if (!(e instanceof NoBlasError)) throw e;
    if (!adapter) throw new Error(`no backend: ${new NoAdapterError().message}\n${e.message}`);
    const gpu = await getGpu();
    return {
      device: gpu,
      warning: `using the software WebGPU adapter (${gpu.info.description}), which is slow: ` +
        e.message,
    };
  }
}
