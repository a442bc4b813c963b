/**
 * Self-contained SVG line plots (no dependencies, no scripts, no external fonts): axes with
 * "nice" ticks (1, 2, 5 x 10^k) and labels, an optional log y axis, a legend, one `<polyline>` per
 * series. Made for loss curves: {@linkcode lossSeries} pulls train and val loss out of a metrics
 * log.
 *
 * @module
 */
import type { MetricsRecord } from "./metrics.ts";

/** One line of the plot. */
export interface Series {
  /** Legend label. */
  name: string;
  /** (x, y) points; non-finite values (and y <= 0 on a log axis) are skipped. */
  points: readonly (readonly [number, number])[];
  /** CSS color (default: from a fixed palette). */
  color?: string;
  /** Draw a dot at each point (default: when the series has at most 50 points). */
  markers?: boolean;
}

/** Options of {@linkcode renderLinePlot}. */
export interface PlotOptions {
  /** Title above the plot. */
  title?: string;
  /** X axis label (default "step"). */
  xLabel?: string;
  /** Y axis label (default "loss"). */
  yLabel?: string;
  /** Logarithmic y axis (default false). */
  logY?: boolean;
  /** Width in px (default 720). */
  width?: number;
  /** Height in px (default 440). */
  height?: number;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

/**
 * "Nice" tick values covering [lo, hi]: about `count` multiples of 1, 2 or 5 x 10^k.
 *
 * @param lo Lower end.
 * @param hi Upper end (> lo).
 * @param count Wanted number of ticks (default 6).
 * @returns Increasing tick values within [lo, hi].
 * @example
 * ```ts
 * niceTicks(0, 1000); // [0, 200, 400, 600, 800, 1000]
 * ```
 */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const k0 = Math.floor(Math.log10(lo)), k1 = Math.ceil(Math.log10(hi));
  for (const mults of [[1], [1, 2, 5], [1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    const out: number[] = [];
    for (let k = k0; k <= k1; k++) {
      for (const m of mults) {
        const v = Number((m * 10 ** k).toPrecision(6));
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
      }
    }
    if (out.length >= 3) return out;
  }
  return niceTicks(lo, hi, 5); // a range too narrow for log-spaced ticks
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 && Number.isInteger(v)) {
    return a >= 1e6
      ? `${Number((v / 1e6).toPrecision(3))}M`
      : `${Number((v / 1e3).toPrecision(3))}k`;
  }
  if (a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/**
 * Renders series as an SVG line plot.
 *
 * @param series The lines.
 * @param options Title, axis labels, log y, size.
 * @returns A standalone SVG document (starting with `<?xml`).
 * @example
 * ```ts
 * const svg = renderLinePlot([{ name: "train", points: [[0, 4.2], [100, 3.1]] }], { logY: true });
 * await Deno.writeTextFile("loss.svg", svg);
 * ```
 */
export function renderLinePlot(series: readonly Series[], options: PlotOptions = {}): string {
  const W = options.width ?? 720, H = options.height ?? 440;
  const logY = options.logY ?? false;
  const m = { left: 70, right: 20, top: options.title ? 40 : 20, bottom: 55 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const clean = series.map((s) =>
    s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0))
  );
  // Bounds by loop: spreading a long series into Math.min would overflow the stack.
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const pts of clean) {
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
  }
  if (x0 > x1) [x0, x1, y0, y1] = [0, 1, logY ? 1 : 0, logY ? 10 : 1]; // no points at all
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = logY ? [y0 / 1.1, y1 * 1.1] : [y0 - 0.5, y1 + 0.5];
  if (!logY) {
    const pad = (y1 - y0) * 0.05;
    [y0, y1] = [y0 - pad, y1 + pad];
  }
  const ty = (y: number) => logY ? Math.log10(y) : y;
  const [ty0, ty1] = [ty(y0), ty(y1)];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((ty(y) - ty0) / (ty1 - ty0)) * ph;
  const r = (v: number) => Number(v.toFixed(2));

  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  if (options.title) {
    out.push(
      `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  // Grid, ticks and tick labels.
  out.push(`<g stroke="#e5e5e5" stroke-width="1">`);
  const xt = niceTicks(x0, x1, 7), yt = logY ? logTicks(y0, y1) : niceTicks(y0, y1, 6);
  for (const v of xt) {
    out.push(`<line x1="${r(sx(v))}" y1="${m.top}" x2="${r(sx(v))}" y2="${m.top + ph}"/>`);
  }
  for (const v of yt) {
    out.push(`<line x1="${m.left}" y1="${r(sy(v))}" x2="${m.left + pw}" y2="${r(sy(v))}"/>`);
  }
  out.push(`</g>`);
  out.push(`<g fill="#333">`);
  for (const v of xt) {
    out.push(`<text x="${r(sx(v))}" y="${m.top + ph + 18}" text-anchor="middle">${fmt(v)}</text>`);
  }
  for (const v of yt) {
    out.push(`<text x="${m.left - 8}" y="${r(sy(v) + 4)}" text-anchor="end">${fmt(v)}</text>`);
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${
      escapeXml(options.xLabel ?? "step")
    }</text>`,
  );
  const yl = escapeXml((options.yLabel ?? "loss") + (logY ? " (log scale)" : ""));
  out.push(
    `<text x="16" y="${m.top + ph / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 16 ${m.top + ph / 2})">${yl}</text>`,
  );
  // Lines.
  series.forEach((s, i) => {
    const color = escapeXml(s.color ?? PALETTE[i % PALETTE.length]);
    const pts = clean[i];
    const coords = pts.map(([x, y]) => `${r(sx(x))},${r(sy(y))}`).join(" ");
    out.push(
      `<polyline data-series="${escapeXml(s.name)}" fill="none" stroke="${color}" ` +
        `stroke-width="1.8" stroke-linejoin="round" points="${coords}"/>`,
    );
    if (s.markers ?? pts.length <= 50) {
      out.push(`<g fill="${color}">`);
      for (const [x, y] of pts) out.push(`<circle cx="${r(sx(x))}" cy="${r(sy(y))}" r="2.5"/>`);
      out.push(`</g>`);
    }
  });
  // Legend, top right inside the plot area.
  const lw = 16 + 7 * Math.max(1, ...series.map((s) => s.name.length)) + 24;
  const lx = m.left + pw - lw - 8, ly = m.top + 8;
  out.push(
    `<rect x="${lx}" y="${ly}" width="${lw}" height="${series.length * 18 + 8}" ` +
      `fill="white" fill-opacity="0.85" stroke="#999"/>`,
  );
  series.forEach((s, i) => {
    const color = escapeXml(s.color ?? PALETTE[i % PALETTE.length]);
    const y = ly + 16 + i * 18;
    out.push(
      `<line x1="${lx + 8}" y1="${y - 4}" x2="${lx + 28}" y2="${
        y - 4
      }" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${lx + 34}" y="${y}">${escapeXml(s.name)}</text>`);
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/**
 * Train and val loss series from metrics records: train loss from records of kind `train`
 * (or no kind) with a `loss`, val loss from kind `val`.
 *
 * @param records Metrics records in step order.
 * @returns `[train, val]` series (val omitted when there is none).
 * @example
 * ```ts
 * const svg = renderLinePlot(lossSeries(await readMetrics("runs/demo/metrics.jsonl")));
 * ```
 */
export function lossSeries(records: readonly MetricsRecord[]): Series[] {
  const train: [number, number][] = [], val: [number, number][] = [];
  for (const r of records) {
    if (typeof r.loss !== "number") continue;
    (r.kind === "val" ? val : train).push([r.step, r.loss]);
  }
  const out: Series[] = [{ name: "train loss", points: train }];
  if (val.length > 0) out.push({ name: "val loss", points: val, markers: true });
  return out;
}

/**
 * Writes the loss plot of a metrics log as an SVG file.
 *
 * @param path The `.svg` file to write.
 * @param records Metrics records (see {@linkcode readMetrics}).
 * @param options Plot options (default title "loss").
 * @example
 * ```ts
 * await writeLossPlot("runs/demo/loss.svg", await readMetrics("runs/demo/metrics.jsonl"), { logY: true });
 * ```
 */
export async function writeLossPlot(
  path: string,
  records: readonly MetricsRecord[],
  options: PlotOptions = {},
): Promise<void> {
  await Deno.writeTextFile(
    path,
    renderLinePlot(lossSeries(records), { title: "loss", ...options }),
  );
}

/**
 * One metric's series from metrics records: train values from the records' `stats` (host
 * statistics such as GRPO's `reward`), val values from the val records' `losses`.
 *
 * @param records Metrics records in step order.
 * @param key The metric, e.g. `reward`.
 * @returns `[train, val]` series, each omitted when it has no point.
 * @example
 * ```ts
 * const series = metricSeries(await readMetrics("runs/grpo/metrics.jsonl"), "reward");
 * ```
 */
export function metricSeries(records: readonly MetricsRecord[], key: string): Series[] {
  const train: [number, number][] = [], val: [number, number][] = [];
  for (const r of records) {
    const v = r.kind === "val" ? r.losses?.[key] : r.stats?.[key];
    if (typeof v === "number" && Number.isFinite(v)) {
      (r.kind === "val" ? val : train).push([r.step, v]);
    }
  }
  const out: Series[] = [];
  if (train.length > 0) out.push({ name: `train ${key}`, points: train });
  if (val.length > 0) out.push({ name: `val ${key}`, points: val, markers: true });
  return out;
}

/**
 * Writes one metric's plot ({@linkcode metricSeries}) as an SVG file; nothing when the records
 * hold no value of it.
 *
 * @param path The `.svg` file to write.
 * @param records Metrics records (see {@linkcode readMetrics}).
 * @param options `key`, the metric; plot options (default title: the key).
 * @example
 * ```ts
 * await writeMetricPlot("runs/grpo/reward.svg", await readMetrics("runs/grpo/metrics.jsonl"), {
 *   key: "reward",
 * });
 * ```
 */
export async function writeMetricPlot(
  path: string,
  records: readonly MetricsRecord[],
  options: PlotOptions & { key: string },
): Promise<void> {
  const { key, ...plot } = options;
  const series = metricSeries(records, key);
  if (series.length === 0) return;
  await Deno.writeTextFile(path, renderLinePlot(series, { title: key, ...plot }));
}
