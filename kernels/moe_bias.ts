/**
 * The auxiliary-loss-free load balancing of DeepSeek-V3 (section 2.1.2): after each step every
 * routed expert's bias moves by `gamma` toward the mean load, `b_i += gamma * sign(mean(load) -
 * load_i)`; and its CPU twin. The bias steers selection only (`moe_route.ts`), never the weights.
 *
 * Legend: E routed experts.
 *
 *     bias   [E]  f32   updated in place
 *     loads  [E]  i32   tokens per expert (`moe_plan.ts` counts, or their sum over micro-batches)
 *
 * On the CPU backend the launcher calls `host/moe_bias.ts` after its checks.
 *
 * @module
 */
import { launch1d } from "./_launch.ts";
import { DeviceError } from "./device.ts";
import type { Tensor } from "./tensor.ts";
import { hostBiasUpdate } from "./host/moe_bias.ts";

const BIAS_SRC = /* wgsl */ `
@group(0) @binding(0) var<storage, read> loads: array<i32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
struct P { E: u32, gamma: f32, _a: u32, _b: u32 }
@group(0) @binding(2) var<storage, read> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 64u + li;
  if (i >= p.E) { return; }
  var sum = 0u;
  for (var e = 0u; e < p.E; e++) { sum += u32(loads[e]); }
  // sign(mean - load) exactly, without forming E * load (which could overflow):
  // with sum = q E + r, load < q -> +1, load > q -> -1, load == q -> sign(r)
  let q = sum / p.E;
  let r = sum % p.E;
  let l = u32(loads[i]);
  var sgn = 0.0;
  if (l < q || (l == q && r > 0u)) { sgn = 1.0; } else if (l > q) { sgn = -1.0; }
  bias[i] = bias[i] + p.gamma * sgn;
}`;

/**
 * Encodes the auxiliary-loss-free bias update (V3 section 2.1.2), in place:
 * `b_i += gamma * sign(mean(load) - load_i)`. The sign is exact (integer arithmetic).
 *
 * @param bias [E] f32, updated.
 * @param loads [E] i32 tokens per expert over the whole batch (e.g. `dispatchPlan(...).counts`,
 *   or their sum over micro-batches).
 * @example biasUpdate(bias, plan.counts, { gamma: 0.001 });
 */
export function biasUpdate(bias: Tensor, loads: Tensor, opts: { gamma: number }): void {
  const E = bias.size;
  if (loads.size !== E || loads.dtype !== "i32") {
    throw new DeviceError(
      `biasUpdate: loads must be i32 [${E}], got ${loads.dtype} [${loads.shape}]`,
    );
  }
  if (bias.device.kind === "cpu") return hostBiasUpdate(bias, loads, opts.gamma);
  launch1d(
    bias.device,
    "moe_bias_update",
    "",
    () => BIAS_SRC,
    [loads.binding, bias.binding],
    E,
    (p) => p.u32(E).f32(opts.gamma).u32(0).u32(0),
    64,
  );
}

/**
 * CPU twin of {@linkcode biasUpdate}, in place, bit-exact with the GPU (f32 gamma, f32 add).
 * @example biasUpdateCpu(new Float32Array(3), [5, 1, 3], { gamma: 0.001 }) // [-0.001, 0.001, 0]
 */
export function biasUpdateCpu(
  bias: Float32Array,
  loads: ArrayLike<number>,
  opts: { gamma: number },
): Float32Array {
  const E = bias.length;
  let sum = 0;
  for (let e = 0; e < E; e++) sum += loads[e];
  const g = Math.fround(opts.gamma);
  for (let i = 0; i < E; i++) bias[i] = Math.fround(bias[i] + g * Math.sign(sum - E * loads[i]));
  return bias;
}
