/**
 * Rotary position embedding, interleaved layout (the DeepSeek-V3 reference code's
 * `view_as_complex`), with its backward (the inverse rotation) and CPU twin.
 *
 * Legend: B batch, T time (positions of this call), H heads (1 for MLA's shared k_pe), S row
 * length (the last dim of the tensor), dr rope dims (even), dr/2 frequency pairs, Tmax table
 * rows. Token (b, t) sits at position `pos0 + t`.
 *
 *     x [B, T, H, Sx], out [B, T, H, So], cos/sin [Tmax, dr/2] (from rope_freqs.ts ropeTables)
 *     for pair i of the dr rope dims starting at column `off` of a row at position p:
 *       out[off + 2i]     = x0 cos(p, i) - x1 sin(p, i)        x0 = x[off + 2i]
 *       out[off + 2i + 1] = x0 sin(p, i) + x1 cos(p, i)        x1 = x[off + 2i + 1]
 *     backward: the same with sin negated (a rotation's inverse is its transpose).
 *
 * The rope dims may be a sub-range of a longer row (MLA's q [B, T, H, dn + dr] rotates only its
 * last dr): `xOffset` / `outOffset` give where they start in each row of x / out, whose row
 * strides are their last dims. `out` may be `x` itself (in place: one thread per pair reads both
 * values before writing them) or another region of the same buffer that does not overlap it.
 * `copyRest` also copies the other columns, which is what the differentiable {@linkcode rope}
 * does. One thread per pair (plus one per copied column); no reductions.
 *
 * On the CPU backend each launcher calls its implementation in `host/rope.ts` after its
 * checks.
 *
 * @module
 */
import { gradFor, needsGrad, record } from "./autograd.ts";
import { launch1d } from "./_launch.ts";
import { assertF32, type Floats, like } from "./_rows.ts";
import type { Binding } from "./device.ts";
import { hostRope } from "./host/rope.ts";
import { Tensor } from "./tensor.ts";

/** Options of {@linkcode ropeForward}. */
export interface RopeOptions {
  /** Position of token t = 0 (the KV-cache length when decoding). Default 0. */
  pos0?: number;
  /** First rope column in each row of x. Default: the last dr columns (Sx - dr). */
  xOffset?: number;
  /** First rope column in each row of out. Default: the last dr columns (So - dr). */
  outOffset?: number;
  /** Also copy x's non-rope columns into out (needs So == Sx and equal offsets). */
  copyRest?: boolean;
  /** Rotate by -angle (the backward). */
  inverse?: boolean;
  /** Add into out instead of overwriting it (not in place). */
  accumulate?: boolean;
}

function ropeSource(aliased: boolean, acc: boolean): string {
  const X = aliased ? "buf" : "x", O = aliased ? "buf" : "out";
  const decl = aliased
    ? "@group(0) @binding(0) var<storage, read_write> buf: array<f32>;"
    : "@group(0) @binding(0) var<storage, read> x: array<f32>;";
  const outDecl = aliased ? "" : "@group(0) @binding(3) var<storage, read_write> out: array<f32>;";
  const put = (i: string, v: string) =>
    acc ? `${O}[${i}] = ${O}[${i}] + ${v};` : `${O}[${i}] = ${v};`;
  return /* wgsl */ `
${decl}
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
${outDecl}
struct P {
  n: u32, units: u32, h: u32, t: u32,
  pos0: u32, half: u32, xs: u32, xo: u32,
  os: u32, oo: u32, xb: u32, ob: u32,
  sgn: f32, _a: u32, _b: u32, _c: u32,
}
@group(0) @binding(${aliased ? 3 : 4}) var<storage, read> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + li;
  if (i >= p.n) { return; }
  let row = i / p.units;
  let u = i - row * p.units;
  let xr = p.xb + row * p.xs;
  let orow = p.ob + row * p.os;
  if (u < p.half) {
    let pos = p.pos0 + (row / p.h) % p.t;
    let c = cos_t[pos * p.half + u];
    let s = sin_t[pos * p.half + u] * p.sgn;
    let x0 = ${X}[xr + p.xo + 2u * u];
    let x1 = ${X}[xr + p.xo + 2u * u + 1u];
    ${put("orow + p.oo + 2u * u", "x0 * c - x1 * s")}
    ${put("orow + p.oo + 2u * u + 1u", "x0 * s + x1 * c")}
  } else {
    // the copied columns are [0, oo) and [oo + dr, S): the row minus the rope range
    let r = u - p.half;
    let col = select(r + 2u * p.half, r, r < p.oo);
    ${put("orow + col", `${X}[xr + col]`)}
  }
}`;
}

/**
 * Encodes RoPE of the rope dims of `x` into those of `out` (see the module doc for layouts).
 *
 * @param out f32 [B, T, H, So]; may be `x` (in place) or a disjoint region of x's buffer.
 * @param x f32 [B, T, H, Sx].
 * @param cos f32 [Tmax, dr/2] with Tmax >= pos0 + T.
 * @param sin f32 [Tmax, dr/2].
 * @throws when shapes, offsets or the position range do not fit, or `out` partly overlaps `x`.
 * @example
 * // q [B, T, H, dn + dr]: rotate its last dr dims in place at positions pos0..pos0+T-1
 * ropeForward(q, q, cos, sin, { pos0 });
 */
export function ropeForward(
  out: Tensor,
  x: Tensor,
  cos: Tensor,
  sin: Tensor,
  opts: RopeOptions = {},
): void {
  assertF32(x, "ropeForward");
  if (x.shape.length !== 4 || out.shape.length !== 4) {
    throw new Error(`ropeForward: want x, out [B, T, H, S], got [${x.shape}], [${out.shape}]`);
  }
  const [B, T, H, Sx] = x.shape, So = out.shape[3];
  if (out.shape[0] !== B || out.shape[1] !== T || out.shape[2] !== H) {
    throw new Error(`ropeForward: out [${out.shape}] does not match x [${x.shape}] in B, T, H`);
  }
  if (cos.shape.length !== 2 || sin.size !== cos.size) {
    throw new Error(`ropeForward: want cos, sin [Tmax, dr/2], got [${cos.shape}], [${sin.shape}]`);
  }
  const [tmax, half] = cos.shape, dr = 2 * half;
  const pos0 = opts.pos0 ?? 0;
  const xo = opts.xOffset ?? Sx - dr, oo = opts.outOffset ?? So - dr;
  if (xo < 0 || xo + dr > Sx || oo < 0 || oo + dr > So) {
    throw new Error(
      `ropeForward: ${dr} rope dims at x column ${xo} / out column ${oo} do not fit rows of ` +
        `${Sx} / ${So}`,
    );
  }
  if (pos0 < 0 || pos0 + T > tmax) {
    throw new Error(
      `ropeForward: positions ${pos0}..${pos0 + T - 1} outside the ${tmax}-row table`,
    );
  }
  let copyRest = Boolean(opts.copyRest);
  if (copyRest && (Sx !== So || xo !== oo)) {
    throw new Error("ropeForward: copyRest needs x and out rows of equal length and offsets");
  }
  const acc = Boolean(opts.accumulate);
  const aliased = out.buffer === x.buffer;
  let bindings: Binding[], xb = 0, ob = 0;
  if (aliased) {
    const inPlace = out.offset === x.offset && Sx === So && xo === oo;
    const disjoint = out.offset + out.bytes <= x.offset || x.offset + x.bytes <= out.offset;
    if (!inPlace && !disjoint) throw new Error("ropeForward: out partly overlaps x");
    if (inPlace && acc) throw new Error("ropeForward: cannot accumulate in place");
    if (inPlace) copyRest = false; // the other columns already hold x
  }
  if (out.device.kind === "cpu") {
    const sgn = opts.inverse ? -1 : 1;
    const layout = { T, H, Sx, So, xo, oo, half, pos0, sgn, copyRest, accumulate: acc };
    return hostRope(out, x, cos, sin, layout);
  }
  if (aliased) {
    const lo = Math.min(x.offset, out.offset);
    const hi = Math.max(x.offset + x.bytes, out.offset + out.bytes);
    xb = (x.offset - lo) / 4;
    ob = (out.offset - lo) / 4;
    bindings = [{ buffer: x.buffer, offset: lo, size: hi - lo }, cos.binding, sin.binding];
  } else {
    bindings = [x.binding, cos.binding, sin.binding, out.binding];
  }
  const rows = B * T * H;
  const units = half + (copyRest ? Sx - dr : 0);
  const n = rows * units;
  launch1d(
    x.device,
    "rope",
    `${aliased}|${acc}`,
    () => ropeSource(aliased, acc),
    bindings,
    n,
    (p) =>
      p.u32(n).u32(units).u32(H).u32(T)
        .u32(pos0).u32(half).u32(Sx).u32(xo)
        .u32(So).u32(oo).u32(xb).u32(ob)
        .f32(opts.inverse ? -1 : 1).u32(0).u32(0).u32(0),
  );
}

/**
 * Encodes the RoPE backward: `dx` gets `dout` rotated back (the inverse rotation), with the
 * same layout options as the forward.
 * @example ropeBackward(dq, dqRot, cos, sin, { pos0, copyRest: true, accumulate: true });
 */
export function ropeBackward(
  dx: Tensor,
  dout: Tensor,
  cos: Tensor,
  sin: Tensor,
  opts: Omit<RopeOptions, "inverse"> = {},
): void {
  ropeForward(dx, dout, cos, sin, { ...opts, inverse: true });
}

/** Options of {@linkcode ropeCpu}. */
export interface RopeCpuOptions {
  /** x's shape. */
  shape: { B: number; T: number; H: number; S: number };
  /** Rope dims (the tables hold dr/2 columns). */
  dr: number;
  /** Position of token t = 0. Default 0. */
  pos0?: number;
  /** First rope column of each row. Default S - dr. */
  offset?: number;
  /** Rotate by -angle (the backward). */
  inverse?: boolean;
}

/**
 * CPU twin of {@linkcode ropeForward} with `copyRest`: x [B, T, H, S] -> out of the same shape,
 * the rope dims rotated and the other columns copied.
 * @example
 * // one pair at position 1 with cos = 0, sin = 1: (x0, x1) -> (-x1, x0)
 * ropeCpu(new Float32Array([1, 2]), new Float32Array([1, 0]), new Float32Array([0, 1]),
 *   { shape: { B: 1, T: 1, H: 1, S: 2 }, dr: 2, pos0: 1 }); // [-2, 1]
 */
export function ropeCpu<A extends Floats>(
  x: A,
  cos: Floats,
  sin: Floats,
  opts: RopeCpuOptions,
): A {
  const { B, T, H, S } = opts.shape;
  const out = like(x, x.length);
  out.set(x);
  const h2 = opts.dr / 2, off = opts.offset ?? S - opts.dr;
  const sgn = opts.inverse ? -1 : 1, pos0 = opts.pos0 ?? 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const base = ((b * T + t) * H + h) * S + off;
        for (let i = 0; i < h2; i++) {
          const c = cos[(pos0 + t) * h2 + i], s = sgn * sin[(pos0 + t) * h2 + i];
          const x0 = x[base + 2 * i], x1 = x[base + 2 * i + 1];
          out[base + 2 * i] = x0 * c - x1 * s;
          out[base + 2 * i + 1] = x0 * s + x1 * c;
        }
      }
    }
  }
  return out;
}

/** Options of the differentiable {@linkcode rope}. */
export interface RopeOpOptions {
  /** Position of token t = 0. Default 0. */
  pos0?: number;
  /** First rope column of each row. Default: the last dr columns. */
  offset?: number;
}

/**
 * RoPE with autograd: returns a new tensor shaped like `x` whose rope dims are rotated and whose
 * other columns are copied.
 *
 * @param x f32 [B, T, H, S].
 * @param tables cos and sin, f32 [Tmax, dr/2] each.
 * @example
 * const qr = rope(q, { cos, sin }, { offset: dn }); // q [B, T, H, dn + dr]
 * const kpe = rope(kpeRaw, { cos, sin });           // [B, T, 1, dr]
 */
export function rope(
  x: Tensor,
  tables: { cos: Tensor; sin: Tensor },
  opts: RopeOpOptions = {},
): Tensor {
  const { cos, sin } = tables;
  const out = Tensor.empty(x.device, x.shape);
  const layout = { pos0: opts.pos0, xOffset: opts.offset, outOffset: opts.offset, copyRest: true };
  ropeForward(out, x, cos, sin, layout);
  if (needsGrad(x)) {
    record("rope", [out], () => {
      if (!out.grad) return;
      const { grad, accumulate } = gradFor(x);
      ropeBackward(grad, out.grad, cos, sin, { ...layout, accumulate });
    });
  }
  return out;
}
