import assert from "node:assert/strict";
import { MetricsLog, readMetrics } from "../train/metrics.ts";
import { lossSeries, niceTicks, renderLinePlot, writeLossPlot } from "../train/plot.ts";

/** A minimal well-formedness check: every tag closes in order, attributes are quoted. */
function assertWellFormedXml(xml: string) {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, "");
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([<>])/g;
  let last = 0;
  for (const m of body.matchAll(tag)) {
    assert.ok(!/[<>]/.test(body.slice(last, m.index)), "stray angle bracket");
    assert.equal(m[5], undefined, `malformed tag near ${body.slice(m.index!, m.index! + 40)}`);
    last = m.index! + m[0].length;
    if (m[4] === "/") continue;
    if (m[1] === "/") assert.equal(stack.pop(), m[2], `</${m[2]}> closes the wrong tag`);
    else stack.push(m[2]);
  }
  assert.deepEqual(stack, [], "unclosed tags");
  assert.ok(!/&(?!(amp|lt|gt|quot|apos);)/.test(body), "unescaped &");
}

Deno.test("the SVG loss plot is well-formed XML with one point per record", async () => {
  const dir = await Deno.makeTempDir();
  const log = await MetricsLog.open(`${dir}/metrics.jsonl`, { fresh: true });
  for (let step = 1; step <= 120; step++) {
    await log.log({ step, loss: 5 * Math.exp(-step / 40) + 1, lr: 1e-3, gradNorm: 1 });
    if (step % 30 === 0) await log.log({ step, kind: "val", loss: 5 * Math.exp(-step / 40) + 1.2 });
  }
  await log.close();
  const records = await readMetrics(`${dir}/metrics.jsonl`);
  assert.equal(records.length, 124);
  for (const logY of [false, true]) {
    await writeLossPlot(`${dir}/loss.svg`, records, { logY, title: 'loss <&> "demo"' });
    const svg = await Deno.readTextFile(`${dir}/loss.svg`);
    assertWellFormedXml(svg);
    const lines = [...svg.matchAll(/<polyline data-series="([^"]+)"[^>]* points="([^"]*)"/g)];
    assert.deepEqual(lines.map((m) => m[1]), ["train loss", "val loss"]);
    assert.deepEqual(lines.map((m) => m[2].split(" ").length), [120, 4]);
    assert.match(svg, />step</);
    assert.match(svg, /&lt;&amp;&gt;/);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the plot skips non-finite points and survives a single point", () => {
  const svg = renderLinePlot([{ name: "a", points: [[0, 1], [1, NaN], [2, Infinity]] }], {
    logY: true,
  });
  assertWellFormedXml(svg);
  assert.match(svg, /points="[\d.]+,[\d.]+"/);
  assert.deepEqual(niceTicks(0, 1000), [0, 200, 400, 600, 800, 1000]);
  assert.equal(lossSeries([]).length, 1);
});
