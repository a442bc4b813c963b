/**
 * A few plain training steps of a model on one fixed random batch (forward, backward, AdamW,
 * bias update), for tests that compare runs bit for bit or across backends.
 */
import { Tape } from "../kernels/autograd.ts";
import type { Device } from "../kernels/backend.ts";
import { Scope } from "../kernels/tensor.ts";
import type { ModelConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { AdamW } from "../train/optimizer.ts";
import { randint } from "./_util.ts";

/** Sizes, seeds and learning rate of {@linkcode trainSteps}. */
export interface TrainStepsOptions {
  B: number;
  T: number;
  steps: number;
  lr: number;
  /** Seed of the initial parameters. */
  initSeed: number;
  /** Seed of the batch's tokens (targets use the next one). */
  dataSeed: number;
}

/** The loss of every step, the first step's gradients, and the parameters after the last. */
export async function trainSteps(device: Device, cfg: ModelConfig, o: TrainStepsOptions) {
  const { B, T } = o;
  const scope = new Scope();
  const model = new DeepSeekV3(device, cfg);
  model.load(initParameters(cfg, o.initSeed));
  const opt = new AdamW(model.arena);
  const tokens = randint(B * T, o.dataSeed, cfg.vocab_size);
  const targets = randint(B * T, o.dataSeed + 1, cfg.vocab_size);
  const losses: number[] = [];
  let grads: Map<string, Float32Array> | null = null;
  for (let s = 0; s < o.steps; s++) {
    const step = new Scope();
    model.arena.zeroGrads();
    const tape = new Tape().start();
    const out = model.forward(model.upload({ tokens, targets, B, T }));
    tape.backward(out.losses!.total);
    losses.push((await out.losses!.total.readF32())[0]);
    grads ??= await model.arena.readAll("grads");
    opt.update(o.lr);
    model.updateBiases(out.loads);
    await device.sync();
    step.dispose();
  }
  const params = await model.arena.readAll("params");
  model.arena.destroy();
  scope.dispose();
  return { losses, grads: grads!, params };
}
