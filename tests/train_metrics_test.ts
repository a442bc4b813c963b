import assert from "node:assert/strict";
import { MetricsLog, readMetrics } from "../train/metrics.ts";

Deno.test("resuming the metrics log drops records after the checkpoint and a torn last line", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/metrics.jsonl`;
  await Deno.writeTextFile(
    path,
    '{"step":1,"loss":3}\n{"step":2,"loss":2.9}\n{"step":3,"loss":2.8}\n{"step":4,"lo',
  );
  const log = await MetricsLog.open(path, { resumeStep: 2 });
  await log.log({ step: 3, loss: 2.7, time: 0 });
  await log.close();
  assert.deepEqual((await readMetrics(path)).map((r) => [r.step, r.loss]), [[1, 3], [2, 2.9], [
    3,
    2.7,
  ]]);
  await Deno.remove(dir, { recursive: true });
});
