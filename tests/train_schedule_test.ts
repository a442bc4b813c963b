import assert from "node:assert/strict";
import { learningRate, makeSchedule, ScheduleError } from "../train/schedule.ts";

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-12, `${a} != ${b}`);

Deno.test("the schedule warms up linearly, holds the peak, then decays by cosine to 10%", () => {
  const s = { peakLr: 1e-3, warmupSteps: 10, decayStartStep: 50, totalSteps: 100 };
  close(learningRate(0, s), 1e-4);
  close(learningRate(4, s), 5e-4);
  close(learningRate(9, s), 1e-3);
  close(learningRate(10, s), 1e-3);
  close(learningRate(49, s), 1e-3);
  close(learningRate(50, s), 1e-3);
  close(learningRate(75, s), 1e-4 + 9e-4 * 0.5);
  close(learningRate(100, s), 1e-4);
  close(learningRate(5000, s), 1e-4);
  const lr = makeSchedule(s);
  for (let t = 51; t <= 100; t++) assert.ok(lr(t) < lr(t - 1));
});

Deno.test("the decay start can be a fraction of the run and defaults to the end of warmup", () => {
  const a = makeSchedule({ peakLr: 2, warmupSteps: 0, totalSteps: 100, decayStartFraction: 0.8 });
  close(a(0), 2);
  close(a(79), 2);
  close(a(90), 0.2 + 1.8 * 0.5);
  const b = makeSchedule({ peakLr: 2, warmupSteps: 20, totalSteps: 100, minLrRatio: 0 });
  close(b(20), 2);
  close(b(60), 1);
  close(b(100), 0);
});

Deno.test("inconsistent schedule settings name the field", () => {
  assert.throws(
    () => makeSchedule({ peakLr: 1, warmupSteps: 10, decayStartStep: 5, totalSteps: 100 }),
    (e: Error) => e instanceof ScheduleError && /decayStartStep \(5\)/.test(e.message),
  );
  assert.throws(() => makeSchedule({ peakLr: 1, warmupSteps: 1.5, totalSteps: 10 }), /warmupSteps/);
  assert.throws(
    () => makeSchedule({ peakLr: 1, warmupSteps: 1, totalSteps: 10, minLrRatio: 2 }),
    /minLrRatio/,
  );
});
