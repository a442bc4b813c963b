/**
 * A minimal reverse-mode autograd over f64 matrices, for the CPU model reference only
 * (`model/reference.ts`). Every value is a row-major `[rows, cols]` Float64Array; vectors are
 * `[1, n]`, scalars `[1, 1]`. Each op computes its forward eagerly and, when recording, pushes a
 * closure that accumulates the input gradients from the output gradient (micrograd style);
 * `backward` runs the closures in reverse. Ops that only the model needs are fused (causal
 * attention, RMSNorm, cross-entropy) with hand-derived backward formulas, checked against
 * central finite differences in `tests/model_reference_test.ts`.
 *
 * Slow by design (plain loops, no blocking): it is the spec, not the engine.
 *
 * Shape legend: N rows (tokens), C columns, R rows of per-head data (N * H), B batch, T time,
 * H heads, V vocab.
 *
 * @module
 */

/** A value on the tape. */
export interface Node {
  /** Row-major values [rows, cols]. */
  readonly data: Float64Array;
  /** Number of rows. */
  readonly rows: number;
  /** Number of columns. */
  readonly cols: number;
  /** Gradient of the loss w.r.t. `data`, allocated on first accumulation. */
  grad: Float64Array | null;
  /** Whether a gradient flows into this node. */
  readonly needsGrad: boolean;
}

function gradOf(n: Node): Float64Array {
  if (n.grad === null) n.grad = new Float64Array(n.data.length);
  return n.grad;
}

function checkShape(op: string, cond: boolean, detail: string): void {
  if (!cond) throw new RangeError(`${op}: shape mismatch, ${detail}`);
}

/**
 * The CPU reference's tape (f64 matrices; not the `Tape` of device tensors in
 * `kernels/autograd.ts`): creates nodes, records backward closures, runs them.
 *
 * @example
 * ```ts
 * const t = new CpuTape(true);
 * const x = t.leaf(new Float64Array([1, 2]), { rows: 1, cols: 2 }, true);
 * const y = t.dotConst(t.mul(x, x), new Float64Array([1, 1])); // x0^2 + x1^2
 * t.backward(y); // x.grad = [2, 4]
 * ```
 */
export class CpuTape {
  #backs: (() => void)[] = [];
  /** Whether ops record backward closures (false: forward only, cheaper). */
  readonly record: boolean;

  /** @param record Record backward closures (default true). */
  constructor(record = true) {
    this.record = record;
  }

  #node(
    data: Float64Array,
    rows: number,
    cols: number,
    inputs: Node[],
    back: (g: Float64Array) => void,
  ): Node {
    const needsGrad = this.record && inputs.some((n) => n.needsGrad);
    const out: Node = { data, rows, cols, grad: null, needsGrad };
    if (needsGrad) {
      this.#backs.push(() => {
        if (out.grad !== null) back(out.grad);
      });
    }
    return out;
  }

  /**
   * A leaf (a parameter or a constant input).
   *
   * @param data Values [rows, cols]; not copied.
   * @param shape `{ rows, cols }`.
   * @param needsGrad Whether to accumulate a gradient into it.
   * @returns The node.
   */
  leaf(data: Float64Array, shape: { rows: number; cols: number }, needsGrad = false): Node {
    checkShape("leaf", data.length === shape.rows * shape.cols, `${data.length} values`);
    return { data, rows: shape.rows, cols: shape.cols, grad: null, needsGrad };
  }

  /**
   * Seeds d(loss)/d(loss) = 1 and runs every recorded closure in reverse.
   *
   * @param loss A [1, 1] node.
   */
  backward(loss: Node): void {
    checkShape("backward", loss.data.length === 1, "loss must be a scalar");
    gradOf(loss)[0] += 1;
    for (let i = this.#backs.length - 1; i >= 0; i--) this.#backs[i]();
    this.#backs = [];
  }

  /**
   * y = x W^T, the nn.Linear convention with W stored [out, in].
   *
   * @param x [N, K]
   * @param w [M, K]
   * @returns [N, M]
   */
  linear(x: Node, w: Node): Node {
    const N = x.rows, K = x.cols, M = w.rows;
    checkShape("linear", w.cols === K, `x [${N}, ${K}] vs W [${M}, ${w.cols}]`);
    const y = new Float64Array(N * M);
    for (let n = 0; n < N; n++) {
      for (let m = 0; m < M; m++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x.data[n * K + k] * w.data[m * K + k];
        y[n * M + m] = s;
      }
    }
    return this.#node(y, N, M, [x, w], (g) => {
      if (x.needsGrad) {
        const dx = gradOf(x);
        for (let n = 0; n < N; n++) {
          for (let m = 0; m < M; m++) {
            const gv = g[n * M + m];
            if (gv === 0) continue;
            for (let k = 0; k < K; k++) dx[n * K + k] += gv * w.data[m * K + k];
          }
        }
      }
      if (w.needsGrad) {
        const dw = gradOf(w);
        for (let n = 0; n < N; n++) {
          for (let m = 0; m < M; m++) {
            const gv = g[n * M + m];
            if (gv === 0) continue;
            for (let k = 0; k < K; k++) dw[m * K + k] += gv * x.data[n * K + k];
          }
        }
      }
    });
  }

  /**
   * Elementwise a + b.
   *
   * @param a [N, C]
   * @param b [N, C]
   * @returns [N, C]
   */
  add(a: Node, b: Node): Node {
    checkShape(
      "add",
      a.rows === b.rows && a.cols === b.cols,
      `[${a.rows}, ${a.cols}] vs [${b.rows}, ${b.cols}]`,
    );
    const y = new Float64Array(a.data.length);
    for (let i = 0; i < y.length; i++) y[i] = a.data[i] + b.data[i];
    return this.#node(y, a.rows, a.cols, [a, b], (g) => {
      if (a.needsGrad) {
        const d = gradOf(a);
        for (let i = 0; i < g.length; i++) d[i] += g[i];
      }
      if (b.needsGrad) {
        const d = gradOf(b);
        for (let i = 0; i < g.length; i++) d[i] += g[i];
      }
    });
  }

  /**
   * Elementwise a * b.
   *
   * @param a [N, C]
   * @param b [N, C]
   * @returns [N, C]
   */
  mul(a: Node, b: Node): Node {
    checkShape(
      "mul",
      a.rows === b.rows && a.cols === b.cols,
      `[${a.rows}, ${a.cols}] vs [${b.rows}, ${b.cols}]`,
    );
    const y = new Float64Array(a.data.length);
    for (let i = 0; i < y.length; i++) y[i] = a.data[i] * b.data[i];
    return this.#node(y, a.rows, a.cols, [a, b], (g) => {
      if (a.needsGrad) {
        const d = gradOf(a);
        for (let i = 0; i < g.length; i++) d[i] += g[i] * b.data[i];
      }
      if (b.needsGrad) {
        const d = gradOf(b);
        for (let i = 0; i < g.length; i++) d[i] += g[i] * a.data[i];
      }
    });
  }

  /**
   * a * c for a constant c.
   *
   * @param a Any shape.
   * @param c The constant.
   * @returns Same shape as a.
   */
  scale(a: Node, c: number): Node {
    const y = new Float64Array(a.data.length);
    for (let i = 0; i < y.length; i++) y[i] = a.data[i] * c;
    return this.#node(y, a.rows, a.cols, [a], (g) => {
      const d = gradOf(a);
      for (let i = 0; i < g.length; i++) d[i] += g[i] * c;
    });
  }

  /**
   * RMSNorm over each row: y = x / sqrt(mean(x^2) + eps) * w.
   *
   * @param x [N, C]
   * @param w [1, C]
   * @param eps The epsilon inside the root.
   * @returns [N, C]
   */
  rmsnorm(x: Node, w: Node, eps: number): Node {
    const N = x.rows, C = x.cols;
    checkShape("rmsnorm", w.data.length === C, `x [${N}, ${C}] vs w [${w.data.length}]`);
    const y = new Float64Array(N * C);
    const rstd = new Float64Array(N); // saved for the backward, as llm.c does
    for (let n = 0; n < N; n++) {
      let ss = 0;
      for (let c = 0; c < C; c++) ss += x.data[n * C + c] ** 2;
      const r = 1 / Math.sqrt(ss / C + eps);
      rstd[n] = r;
      for (let c = 0; c < C; c++) y[n * C + c] = x.data[n * C + c] * r * w.data[c];
    }
    return this.#node(y, N, C, [x, w], (g) => {
      for (let n = 0; n < N; n++) {
        const r = rstd[n];
        // dx = r * (w*g) - r^3 / C * x * sum(w*g*x)
        let dot = 0;
        for (let c = 0; c < C; c++) dot += w.data[c] * g[n * C + c] * x.data[n * C + c];
        if (x.needsGrad) {
          const dx = gradOf(x);
          for (let c = 0; c < C; c++) {
            dx[n * C + c] += r * w.data[c] * g[n * C + c] -
              (r * r * r / C) * x.data[n * C + c] * dot;
          }
        }
        if (w.needsGrad) {
          const dw = gradOf(w);
          for (let c = 0; c < C; c++) dw[c] += g[n * C + c] * x.data[n * C + c] * r;
        }
      }
    });
  }

  /**
   * SiLU, x * sigmoid(x).
   *
   * @param x Any shape.
   * @returns Same shape.
   */
  silu(x: Node): Node {
    const y = new Float64Array(x.data.length);
    for (let i = 0; i < y.length; i++) y[i] = x.data[i] / (1 + Math.exp(-x.data[i]));
    return this.#node(y, x.rows, x.cols, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < g.length; i++) {
        const s = 1 / (1 + Math.exp(-x.data[i]));
        d[i] += g[i] * s * (1 + x.data[i] * (1 - s));
      }
    });
  }

  /**
   * Logistic sigmoid.
   *
   * @param x Any shape.
   * @returns Same shape.
   */
  sigmoid(x: Node): Node {
    const y = new Float64Array(x.data.length);
    for (let i = 0; i < y.length; i++) y[i] = 1 / (1 + Math.exp(-x.data[i]));
    return this.#node(y, x.rows, x.cols, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < g.length; i++) d[i] += g[i] * y[i] * (1 - y[i]);
    });
  }

  /**
   * Same data, new shape (no copy).
   *
   * @param x [N, C]
   * @param shape `{ rows, cols }` with rows * cols = N * C.
   * @returns [rows, cols]
   */
  reshape(x: Node, shape: { rows: number; cols: number }): Node {
    checkShape("reshape", shape.rows * shape.cols === x.data.length, `${x.data.length} values`);
    return this.#node(x.data, shape.rows, shape.cols, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < g.length; i++) d[i] += g[i];
    });
  }

  /**
   * Columns [start, end) of every row.
   *
   * @param x [N, C]
   * @param range `{ start, end }`.
   * @returns [N, end - start]
   */
  sliceCols(x: Node, range: { start: number; end: number }): Node {
    const { start, end } = range;
    checkShape(
      "sliceCols",
      0 <= start && start <= end && end <= x.cols,
      `[${start}, ${end}) of ${x.cols}`,
    );
    const N = x.rows, C = x.cols, W = end - start;
    const y = new Float64Array(N * W);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < W; c++) y[n * W + c] = x.data[n * C + start + c];
    }
    return this.#node(y, N, W, [x], (g) => {
      const d = gradOf(x);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < W; c++) d[n * C + start + c] += g[n * W + c];
      }
    });
  }

  /**
   * Row-wise concatenation [a ; b].
   *
   * @param a [N, A]
   * @param b [N, Bc]
   * @returns [N, A + Bc]
   */
  concatCols(a: Node, b: Node): Node {
    checkShape("concatCols", a.rows === b.rows, `${a.rows} vs ${b.rows} rows`);
    const N = a.rows, A = a.cols, Bc = b.cols, C = A + Bc;
    const y = new Float64Array(N * C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < A; c++) y[n * C + c] = a.data[n * A + c];
      for (let c = 0; c < Bc; c++) y[n * C + A + c] = b.data[n * Bc + c];
    }
    return this.#node(y, N, C, [a, b], (g) => {
      if (a.needsGrad) {
        const d = gradOf(a);
        for (let n = 0; n < N; n++) for (let c = 0; c < A; c++) d[n * A + c] += g[n * C + c];
      }
      if (b.needsGrad) {
        const d = gradOf(b);
        for (let n = 0; n < N; n++) for (let c = 0; c < Bc; c++) d[n * Bc + c] += g[n * C + A + c];
      }
    });
  }

  /**
   * Repeats each row `times` times consecutively (broadcast of MLA's shared k_pe to heads).
   *
   * @param x [N, C]
   * @param times Copies per row.
   * @returns [N * times, C], row n * times + j = x[n].
   */
  repeatRows(x: Node, times: number): Node {
    const N = x.rows, C = x.cols;
    const y = new Float64Array(N * times * C);
    for (let n = 0; n < N; n++) {
      for (let j = 0; j < times; j++) y.set(x.data.subarray(n * C, n * C + C), (n * times + j) * C);
    }
    return this.#node(y, N * times, C, [x], (g) => {
      const d = gradOf(x);
      for (let n = 0; n < N; n++) {
        for (let j = 0; j < times; j++) {
          for (let c = 0; c < C; c++) d[n * C + c] += g[(n * times + j) * C + c];
        }
      }
    });
  }

  /**
   * Rows of x at the given indices (embedding lookup, expert dispatch).
   *
   * @param x [N, C]
   * @param rows Int32Array [n] of row indices in [0, N).
   * @returns [n, C]
   */
  gatherRows(x: Node, rows: Int32Array): Node {
    const C = x.cols, n = rows.length;
    const y = new Float64Array(n * C);
    for (let i = 0; i < n; i++) {
      const r = rows[i];
      checkShape("gatherRows", r >= 0 && r < x.rows, `row ${r} out of [0, ${x.rows})`);
      y.set(x.data.subarray(r * C, r * C + C), i * C);
    }
    return this.#node(y, n, C, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < C; c++) d[rows[i] * C + c] += g[i * C + c];
      }
    });
  }

  /**
   * Scatter-add of rows into a zero matrix (expert combine). Duplicate indices sum.
   *
   * @param src [n, C]
   * @param rows Int32Array [n] of destination rows.
   * @param N Rows of the output.
   * @returns [N, C]
   */
  scatterRows(src: Node, rows: Int32Array, N: number): Node {
    const C = src.cols, n = src.rows;
    checkShape("scatterRows", rows.length === n, `${rows.length} indices for ${n} rows`);
    const y = new Float64Array(N * C);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < C; c++) y[rows[i] * C + c] += src.data[i * C + c];
    }
    return this.#node(y, N, C, [src], (g) => {
      const d = gradOf(src);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < C; c++) d[i * C + c] += g[rows[i] * C + c];
      }
    });
  }

  /**
   * Single elements at flat indices.
   *
   * @param x Any shape.
   * @param index Int32Array [n] of flat indices into x.data.
   * @returns [n, 1]
   */
  gatherElems(x: Node, index: Int32Array): Node {
    const y = new Float64Array(index.length);
    for (let i = 0; i < index.length; i++) y[i] = x.data[index[i]];
    return this.#node(y, index.length, 1, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < index.length; i++) d[index[i]] += g[i];
    });
  }

  /**
   * Scales each row by a per-row value (gate weight times expert output).
   *
   * @param x [n, C]
   * @param c [n, 1]
   * @returns [n, C]
   */
  mulRows(x: Node, c: Node): Node {
    const n = x.rows, C = x.cols;
    checkShape("mulRows", c.data.length === n, `${c.data.length} scales for ${n} rows`);
    const y = new Float64Array(n * C);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < C; j++) y[i * C + j] = x.data[i * C + j] * c.data[i];
    }
    return this.#node(y, n, C, [x, c], (g) => {
      if (x.needsGrad) {
        const d = gradOf(x);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < C; j++) d[i * C + j] += g[i * C + j] * c.data[i];
        }
      }
      if (c.needsGrad) {
        const d = gradOf(c);
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let j = 0; j < C; j++) s += g[i * C + j] * x.data[i * C + j];
          d[i] += s;
        }
      }
    });
  }

  /**
   * Each row divided by its sum, times a constant: y = scale * x / sum(x). Rows must have a
   * non-zero sum (sigmoid scores are positive).
   *
   * @param x [N, C]
   * @param scale The constant.
   * @returns [N, C]
   */
  rowNormalize(x: Node, scale: number): Node {
    const N = x.rows, C = x.cols;
    const y = new Float64Array(N * C);
    const sums = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += x.data[n * C + c];
      sums[n] = s;
      for (let c = 0; c < C; c++) y[n * C + c] = (scale * x.data[n * C + c]) / s;
    }
    return this.#node(y, N, C, [x], (g) => {
      const d = gradOf(x);
      for (let n = 0; n < N; n++) {
        // dx_j = scale / S * (g_j - sum_c g_c x_c / S)
        const S = sums[n];
        let dot = 0;
        for (let c = 0; c < C; c++) dot += g[n * C + c] * x.data[n * C + c];
        for (let c = 0; c < C; c++) d[n * C + c] += (scale / S) * (g[n * C + c] - dot / S);
      }
    });
  }

  /**
   * Interleaved RoPE on every row: pairs (2i, 2i+1) rotated by angle pos * f_i.
   *
   * @param x [R, dr]
   * @param positions Int32Array [R], the position of each row.
   * @param tables `{ cos, sin }` [T, dr/2] from `ropeTables`.
   * @returns [R, dr]
   */
  rope(
    x: Node,
    positions: Int32Array,
    tables: { cos: ArrayLike<number>; sin: ArrayLike<number> },
  ): Node {
    const R = x.rows, C = x.cols, half = C / 2;
    checkShape(
      "rope",
      positions.length === R && C % 2 === 0,
      `${positions.length} positions, ${C} dims`,
    );
    const y = new Float64Array(R * C);
    for (let r = 0; r < R; r++) {
      const p = positions[r] * half;
      for (let i = 0; i < half; i++) {
        const c = tables.cos[p + i], s = tables.sin[p + i];
        const a = x.data[r * C + 2 * i], b = x.data[r * C + 2 * i + 1];
        y[r * C + 2 * i] = a * c - b * s;
        y[r * C + 2 * i + 1] = a * s + b * c;
      }
    }
    return this.#node(y, R, C, [x], (g) => {
      const d = gradOf(x);
      for (let r = 0; r < R; r++) {
        const p = positions[r] * half;
        for (let i = 0; i < half; i++) {
          // The transpose of the rotation: rotate the gradient by -angle.
          const c = tables.cos[p + i], s = tables.sin[p + i];
          const ga = g[r * C + 2 * i], gb = g[r * C + 2 * i + 1];
          d[r * C + 2 * i] += ga * c + gb * s;
          d[r * C + 2 * i + 1] += -ga * s + gb * c;
        }
      }
    });
  }

  /**
   * Causal softmax attention per sequence and head: o_i = sum_{j <= i} softmax_j(scale q_i.k_j) v_j.
   * Rows are ordered (b, t, h).
   *
   * @param q [B*T*H, dq]
   * @param k [B*T*H, dq]
   * @param v [B*T*H, dv]
   * @param options `{ shape: { B, T, H }, scale }`.
   * @returns [B*T*H, dv]
   */
  causalAttention(
    q: Node,
    k: Node,
    v: Node,
    options: { shape: { B: number; T: number; H: number }; scale: number },
  ): Node {
    const { B, T, H } = options.shape, scale = options.scale;
    const dq = q.cols, dv = v.cols, R = B * T * H;
    checkShape(
      "causalAttention",
      q.rows === R && k.rows === R && v.rows === R && k.cols === dq,
      `q [${q.rows}, ${dq}], k [${k.rows}, ${k.cols}], v [${v.rows}, ${dv}] for B*T*H = ${R}`,
    );
    const row = (b: number, t: number, h: number) => (b * T + t) * H + h;
    const probs = new Float64Array(B * H * T * T); // [B, H, T, T], saved for the backward
    const o = new Float64Array(R * dv);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < T; i++) {
          const qi = row(b, i, h) * dq;
          const p = probs.subarray(((b * H + h) * T + i) * T, ((b * H + h) * T + i + 1) * T);
          let max = -Infinity;
          for (let j = 0; j <= i; j++) {
            const kj = row(b, j, h) * dq;
            let s = 0;
            for (let d = 0; d < dq; d++) s += q.data[qi + d] * k.data[kj + d];
            p[j] = s * scale;
            if (p[j] > max) max = p[j];
          }
          let sum = 0;
          for (let j = 0; j <= i; j++) {
            p[j] = Math.exp(p[j] - max);
            sum += p[j];
          }
          const oi = row(b, i, h) * dv;
          for (let j = 0; j <= i; j++) {
            p[j] /= sum;
            const vj = row(b, j, h) * dv;
            for (let d = 0; d < dv; d++) o[oi + d] += p[j] * v.data[vj + d];
          }
        }
      }
    }
    return this.#node(o, R, dv, [q, k, v], (g) => {
      const dQ = q.needsGrad ? gradOf(q) : null;
      const dK = k.needsGrad ? gradOf(k) : null;
      const dV = v.needsGrad ? gradOf(v) : null;
      const dp = new Float64Array(T);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < T; i++) {
            const p = probs.subarray(((b * H + h) * T + i) * T, ((b * H + h) * T + i + 1) * T);
            const gi = row(b, i, h) * dv, qi = row(b, i, h) * dq;
            // dp_j = g_i . v_j ; ds_j = p_j (dp_j - sum_l p_l dp_l)
            let pdp = 0;
            for (let j = 0; j <= i; j++) {
              const vj = row(b, j, h) * dv;
              let s = 0;
              for (let d = 0; d < dv; d++) s += g[gi + d] * v.data[vj + d];
              dp[j] = s;
              pdp += p[j] * s;
              if (dV) { for (let d = 0; d < dv; d++) dV[vj + d] += p[j] * g[gi + d]; }
            }
            for (let j = 0; j <= i; j++) {
              const ds = p[j] * (dp[j] - pdp) * scale;
              const kj = row(b, j, h) * dq;
              if (dQ) { for (let d = 0; d < dq; d++) dQ[qi + d] += ds * k.data[kj + d]; }
              if (dK) { for (let d = 0; d < dq; d++) dK[kj + d] += ds * q.data[qi + d]; }
            }
          }
        }
      }
    });
  }

  /**
   * Mean cross-entropy over rows whose target is not negative (target -1 is ignored);
   * 0 when every target is ignored.
   *
   * @param logits [N, V]
   * @param targets Int32Array [N], class index or a negative number to ignore.
   * @returns [1, 1]
   */
  crossEntropy(logits: Node, targets: Int32Array): Node {
    const N = logits.rows, V = logits.cols;
    checkShape("crossEntropy", targets.length === N, `${targets.length} targets for ${N} rows`);
    const probs = new Float64Array(N * V); // softmax, saved for the backward
    let total = 0, count = 0;
    for (let n = 0; n < N; n++) {
      const y = targets[n];
      if (y < 0) continue;
      checkShape("crossEntropy", y < V, `target ${y} at row ${n} is >= vocab ${V}`);
      let max = -Infinity;
      for (let c = 0; c < V; c++) max = Math.max(max, logits.data[n * V + c]);
      let sum = 0;
      for (let c = 0; c < V; c++) {
        const e = Math.exp(logits.data[n * V + c] - max);
        probs[n * V + c] = e;
        sum += e;
      }
      for (let c = 0; c < V; c++) probs[n * V + c] /= sum;
      total += Math.log(sum) + max - logits.data[n * V + y];
      count++;
    }
    const loss = new Float64Array([count > 0 ? total / count : 0]);
    return this.#node(loss, 1, 1, [logits], (g) => {
      if (count === 0) return;
      const d = gradOf(logits);
      const c0 = g[0] / count;
      for (let n = 0; n < N; n++) {
        const y = targets[n];
        if (y < 0) continue;
        for (let c = 0; c < V; c++) d[n * V + c] += c0 * probs[n * V + c];
        d[n * V + y] -= c0;
      }
    });
  }

  /**
   * sum(x * w) for constant weights w (the balance loss with f held constant).
   *
   * @param x Any shape.
   * @param w Float64Array of the same length, no gradient.
   * @returns [1, 1]
   */
  dotConst(x: Node, w: Float64Array): Node {
    checkShape("dotConst", w.length === x.data.length, `${w.length} weights for ${x.data.length}`);
    let s = 0;
    for (let i = 0; i < w.length; i++) s += x.data[i] * w[i];
    return this.#node(new Float64Array([s]), 1, 1, [x], (g) => {
      const d = gradOf(x);
      for (let i = 0; i < w.length; i++) d[i] += g[0] * w[i];
    });
  }
}
