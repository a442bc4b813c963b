/**
 * Gradient-check helpers: for the kernel tests, CPU twins run in f64 against central finite
 * differences of the scalar `L(x) = sum(f(x) * G)` for a fixed random `G`; for the training
 * tasks, a model's parameter gradients against differences of an f64 CPU loss.
 *
 * @module
 */
import { Tape } from "../kernels/autograd.ts";
import { Scope } from "../kernels/tensor.ts";
import type { DeepSeekV3 } from "../model/transformer.ts";
import type { TrainTask } from "../train/loop.ts";
import { assertClose, finiteDiff } from "./_util.ts";

/** A Float64Array copy of `a`. */
export function f64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/** `sum(a * b)` in f64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Asserts that `grad` (the analytic gradient of `L(x) = sum(f(x) * G)` at `x`) matches central
 * finite differences of L, on every index (or `indices`).
 */
export function checkFiniteDiff(
  f: (x: Float64Array) => ArrayLike<number>,
  x: Float64Array,
  G: ArrayLike<number>,
  grad: ArrayLike<number>,
  opts: { label?: string; indices?: number[]; atol?: number; rtol?: number; h?: number } = {},
): void {
  const idx = opts.indices ?? [...x.keys()];
  const fd = finiteDiff((v) => dot(f(v), G), x, { indices: idx, h: opts.h });
  assertClose(idx.map((i) => grad[i]), fd, {
    atol: opts.atol ?? 1e-6,
    rtol: opts.rtol ?? 1e-5,
    label: opts.label,
  });
}

/** Parameter entries to check: a parameter's name and flat indices into it. */
export type ParamProbes = readonly (readonly [string, readonly number[]])[];

/**
 * One forward and backward of a training task's loss on `model`: the loss and every parameter's
 * gradient, read back.
 */
export async function taskLossAndGrads(
  model: DeepSeekV3,
  task: TrainTask,
): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const scope = new Scope();
  model.arena.zeroGrads();
  const tape = new Tape().start();
  const out = task.forward(model);
  tape.backward(out.loss);
  const loss = (await out.loss.readF32())[0];
  const grads = await model.arena.readAll("grads");
  scope.dispose();
  return { loss, grads };
}

/**
 * Asserts that a model's gradients at a few parameter entries match central finite differences
 * of an f64 CPU loss over `params` (each probed parameter is restored after its check).
 */
export function checkParamGrads(
  cpuLoss: (params: Map<string, Float64Array>) => number,
  params: Map<string, Float64Array>,
  grads: Map<string, Float32Array>,
  probes: ParamProbes,
  opts: { atol?: number; rtol?: number; h?: number } = {},
): void {
  for (const [name, idx] of probes) {
    const x = params.get(name)!;
    const fd = finiteDiff(
      (v) => {
        params.set(name, v);
        return cpuLoss(params);
      },
      x,
      { indices: [...idx], h: opts.h ?? 1e-4 },
    );
    params.set(name, x);
    const g = grads.get(name)!;
    assertClose(idx.map((i) => g[i]), fd, {
      atol: opts.atol ?? 1e-6,
      rtol: opts.rtol ?? 1e-3,
      label: name,
    });
  }
}
