/**
 * The autograd tape.
 *
 * While a {@linkcode Tape} is active, each differentiable op that has an input needing a gradient
 * records a closure that encodes its backward kernels. {@linkcode Tape.backward} seeds the loss
 * gradient and runs the closures in reverse. Gradients accumulate: a tensor whose `grad` already
 * exists (parameters, whose gradients live in the gradient arena and are zeroed once per
 * optimizer step) is added into; otherwise the first writer allocates the gradient and
 * overwrites it, which saves a zero fill per activation.
 *
 * Nothing here reads back from the GPU; backward only encodes work.
 *
 * @module
 */
import { Tensor } from "./tensor.ts";

/** One recorded op. */
export interface TapeEntry {
  /** Kernel family name, for debugging. */
  name: string;
  /** Encodes the op's backward. */
  backward: () => void;
}

let active: Tape | null = null;

/** The tape recording now, or null (inference, or inside {@linkcode noGrad}). */
export function activeTape(): Tape | null {
  return active;
}

/** Whether an op on `inputs` must record its backward. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!active) return false;
  for (const t of inputs) if (t?.requiresGrad) return true;
  return false;
}

/**
 * Records `backward` for an op whose inputs need gradients and marks its outputs as needing
 * them too. Call only after {@linkcode needsGrad} returned true.
 */
export function record(name: string, outputs: Tensor[], backward: () => void): void {
  if (!active) return;
  for (const o of outputs) o.requiresGrad = true;
  active.entries.push({ name, backward });
}

/** Runs `fn` with recording switched off (evaluation, the frozen DPO reference). */
export function noGrad<T>(fn: () => T): T {
  const saved = active;
  active = null;
  try {
    return fn();
  } finally {
    active = saved;
  }
}

/**
 * Where a backward kernel writes the gradient of `t`.
 *
 * @param zeroed set when the kernel writes only part of the gradient (a gather's backward, a
 *   slice): a newly allocated gradient is then zero-filled and added into.
 * @returns the gradient tensor and whether the kernel must add into it.
 */
export function gradFor(t: Tensor, zeroed = false): { grad: Tensor; accumulate: boolean } {
  if (t.grad) return { grad: t.grad, accumulate: true };
  t.grad = zeroed ? Tensor.zeros(t.device, t.shape, "f32") : Tensor.empty(t.device, t.shape, "f32");
  return { grad: t.grad, accumulate: zeroed };
}

/** The reverse-mode tape. Create one per step; `backward` consumes it. */
export class Tape {
  /** Recorded ops in forward order. */
  readonly entries: TapeEntry[] = [];
  private saved: Tape | null = null;

  /** Makes this tape the active one. */
  start(): this {
    this.saved = active;
    active = this;
    return this;
  }

  /** Stops recording (restores the previous tape). */
  stop(): void {
    if (active === this) active = this.saved;
  }

  /**
   * Seeds d(loss)/d(loss) with ones (or `seed`) and encodes every recorded backward in reverse.
   * Stops recording first. Gradients of non-parameters are left on the tensors; dispose them
   * with the step's {@linkcode Scope}.
   *
   * @example
   * const tape = new Tape().start();
   * const loss = crossEntropy(logits, targets);
   * tape.backward(loss); // parameter .grad now holds dLoss/dParam (after a flush)
   */
  backward(loss: Tensor, seed?: Tensor): void {
    this.stop();
    if (!loss.requiresGrad) throw new Error("backward: the loss does not depend on any parameter");
    if (seed) {
      const { grad, accumulate } = gradFor(loss);
      if (accumulate) throw new Error("backward: the loss already has a gradient");
      loss.device.copy(seed.binding, grad.binding, loss.bytes);
    } else {
      const { grad } = gradFor(loss);
      grad.upload(new Float32Array(loss.size).fill(1));
    }
    for (let i = this.entries.length - 1; i >= 0; i--) this.entries[i].backward();
    this.entries.length = 0;
  }
}
