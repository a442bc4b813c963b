import assert from "node:assert/strict";
import { formatDuration, ProgressBar } from "../train/progress.ts";

Deno.test("the progress bar prints plain periodic lines when stdout is not a terminal", () => {
  let clock = 0;
  const out: string[] = [];
  const bar = new ProgressBar({
    total: 100,
    tty: false,
    write: (t) => out.push(t),
    plainEveryMs: 10_000,
    now: () => clock,
  });
  for (let step = 1; step <= 100; step++) {
    clock += 1000; // one second per step
    bar.update(step, { loss: 3 - step / 100, lr: 3e-4, tokensPerSec: 12345 });
  }
  bar.finish();
  assert.ok(out.every((l) => l.endsWith("\n") && !l.includes("\x1b")));
  assert.equal(out.length, 1 + 9 + 1); // first step, every 10 s, the last step
  assert.equal(out[0], "step   1/100 1% | loss 2.990 | lr 3.00e-4 | 12.3k tok/s | ETA 1m39s\n");
  assert.match(out.at(-1)!, /^step 100\/100 100% \| loss 2\.000 .* took 1m40s\n$/);
  assert.equal(formatDuration(7500), "2h05m");
});

Deno.test("the progress bar redraws one line in a terminal and keeps it under logged lines", () => {
  let clock = 0;
  const out: string[] = [];
  const bar = new ProgressBar({
    total: 10,
    start: 5,
    tty: true,
    write: (t) => out.push(t),
    now: () => clock,
    width: 10,
  });
  clock = 2000;
  bar.update(6, { loss: 2 });
  bar.log("saved step-000006");
  bar.finish();
  assert.equal(out[0], "\r\x1b[2K[######----]  6/10 60% | loss 2.000 | ETA 8s");
  assert.equal(out[1], "\r\x1b[2Ksaved step-000006\n[######----]  6/10 60% | loss 2.000 | ETA 8s");
  assert.equal(out.at(-1), "\n");
});
