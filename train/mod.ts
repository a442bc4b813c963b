/**
 * `train/`: everything that touches files and time around the training loop: token shards,
 * JSONL, corpus preparation, batch sampling, the learning-rate schedule, atomic checkpoints, the
 * metrics log, SVG plots, the progress bar and the run-options layer.
 *
 * @module
 */
export * from "./checkpoint.ts";
export * from "./jsonl.ts";
export * from "./metrics.ts";
export * from "./options.ts";
export * from "./plot.ts";
export * from "./prepare.ts";
export * from "./progress.ts";
export * from "./rng.ts";
export * from "./sampler.ts";
export * from "./schedule.ts";
export * from "./shards.ts";
