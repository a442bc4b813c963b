/**
 * CPU-backend implementation of the auxiliary-loss-free bias update (`../moe_bias.ts`).
 *
 *     bias: bias [E] += gamma * sign(mean(loads) - loads)
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { f32, i32 } from "./_views.ts";

/**
 * `bias[i] += gamma * sign(mean(loads) - loads[i])` in place, the sign in exact integer arithmetic
 * on the u32 sum and the add in f32: bit for bit the kernel's result.
 */
export function hostBiasUpdate(bias: Tensor, loads: Tensor, gamma: number): void {
  const b = f32(bias), l = i32(loads), E = b.length, g = Math.fround(gamma);
  let sum = 0;
  for (let e = 0; e < E; e++) sum = (sum + (l[e] >>> 0)) >>> 0;
  const q = Math.floor(sum / E), r = sum - q * E;
  for (let i = 0; i < E; i++) {
    const li = l[i] >>> 0;
    const sgn = li < q || (li === q && r > 0) ? 1 : li > q ? -1 : 0;
    b[i] = b[i] + g * sgn;
  }
}
