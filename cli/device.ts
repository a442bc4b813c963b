/**
 * `--device`, the backend flag of the commander-built stages (serve, generate, chat, demo); the
 * training stages take the same flag through their options schema.
 *
 * @module
 */
import { type Command, Option } from "commander";
import { DEVICE_CHOICES } from "../kernels/backend.ts";

/** Adds `--device auto|gpu|cpu` (default auto) to a stage. */
export function addDeviceOption(cmd: Command): Command {
  return cmd.addOption(
    new Option(
      "--device <kind>",
      "backend: gpu (WebGPU), cpu (host memory and BLAS), or auto (a hardware GPU, else cpu)",
    ).choices(DEVICE_CHOICES).default("auto"),
  );
}
