import assert from "node:assert/strict";
import {
  checkConfigObject,
  defineOptions,
  OptionsError,
  parseFlags,
  renderOptionsHelp,
  resolveOptions,
} from "../train/options.ts";

const SCHEMA = defineOptions([
  {
    name: "lr",
    type: "number",
    default: 3e-4,
    help: "peak learning rate",
    why: "stable for small models",
  },
  { name: "batchSize", type: "integer", default: 8, help: "rows per batch", min: 1 },
  { name: "compile", type: "boolean", default: true, help: "cache pipelines" },
  {
    name: "precision",
    type: "string",
    default: "f32",
    choices: ["f32", "f16", "fp8"],
    help: "GEMM precision",
  },
  { name: "resume", type: "string", default: null, help: "checkpoint to resume from" },
  { name: "inputs", type: "string[]", default: [], help: "extra data files" },
]);

async function withConfig(obj: unknown, fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/run.json`;
  await Deno.writeTextFile(path, JSON.stringify(obj));
  try {
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("flags override the config file, which overrides the defaults", async () => {
  await withConfig({ lr: 1e-3, batchSize: 16, precision: "f16" }, async (path) => {
    const r = await resolveOptions(SCHEMA, [
      "--config",
      path,
      "--lr=2e-3",
      "--no-compile",
      "--inputs",
      "a",
      "b",
    ]);
    const values: { lr: number; batchSize: number; resume: string | null; inputs: string[] } =
      r.values;
    assert.deepEqual(values, {
      lr: 2e-3,
      batchSize: 16,
      compile: false,
      precision: "f16",
      resume: null,
      inputs: ["a", "b"],
    });
    assert.deepEqual(r.sources, {
      lr: "flag",
      batchSize: "config",
      compile: "flag",
      precision: "config",
      resume: "default",
      inputs: "flag",
    });
    assert.equal(r.configPath, path);
  });
  assert.deepEqual((await resolveOptions(SCHEMA, [])).values.inputs, []);
});

Deno.test("an unknown flag is an error naming it, with a suggestion", () => {
  assert.throws(
    () => parseFlags(SCHEMA, ["--batch-sise", "4"]),
    (e: Error) =>
      e instanceof OptionsError &&
      e.message === "unknown flag --batch-sise (did you mean --batch-size?); see --help",
  );
  assert.throws(() => parseFlags(SCHEMA, ["--wat"]), { message: "unknown flag --wat; see --help" });
  assert.throws(() => parseFlags(SCHEMA, ["stray"]), /unexpected argument 'stray'/);
});

Deno.test("a wrong type is an error naming the flag and the value", () => {
  assert.throws(() => parseFlags(SCHEMA, ["--lr", "abc"]), {
    message: "--lr expects a number, got 'abc'",
  });
  assert.throws(() => parseFlags(SCHEMA, ["--batch-size", "1.5"]), {
    message: "--batch-size expects an integer, got '1.5'",
  });
  assert.throws(() => parseFlags(SCHEMA, ["--batch-size", "0"]), {
    message: "--batch-size must be >= 1, got 0",
  });
  assert.throws(() => parseFlags(SCHEMA, ["--precision", "f64"]), {
    message: "--precision expects one of f32, f16, fp8, got 'f64'",
  });
  assert.throws(() => parseFlags(SCHEMA, ["--lr"]), {
    message: "--lr expects a number, got nothing",
  });
  assert.throws(() => parseFlags(SCHEMA, ["--compile=maybe"]), {
    message: "--compile expects true or false, got 'maybe'",
  });
});

Deno.test("an unknown or wrong-typed config key is an error naming the file and key", async () => {
  assert.throws(() => checkConfigObject(SCHEMA, { lrr: 1 }, "run.json"), {
    message: 'run.json: unknown key "lrr" (did you mean "lr"?); see --help for the keys',
  });
  assert.throws(() => checkConfigObject(SCHEMA, { lr: "abc" }, "run.json"), {
    message: 'run.json: "lr" expects a number, got string "abc"',
  });
  assert.throws(
    () => checkConfigObject(SCHEMA, [1], "run.json"),
    /run\.json: expected a JSON object/,
  );
  await withConfig({ batch_size: 3 }, async (path) => {
    await assert.rejects(
      () => resolveOptions(SCHEMA, ["--config", path]),
      (e: Error) => e.message.startsWith(`${path}: unknown key "batch_size"`),
    );
  });
  await assert.rejects(
    () => resolveOptions(SCHEMA, ["--config", "/nonexistent/run.json"]),
    /--config \/nonexistent\/run\.json: no such file/,
  );
});

Deno.test("the help lists every option with its default and the reason for it", () => {
  const help = renderOptionsHelp(SCHEMA, { usage: "cli.ts pretrain [options]" });
  assert.match(
    help,
    /--lr <number> +peak learning rate \(default: 0\.0003\)\n +why: stable for small models/,
  );
  assert.match(help, /--batch-size <integer> +rows per batch \(default: 8\)/);
  assert.match(help, /--compile, --no-compile +cache pipelines \(default: true\)/);
  assert.match(help, /--precision <f32\|f16\|fp8> +GEMM precision \(default: f32\)/);
  assert.match(help, /--resume <string> +checkpoint to resume from \(default: unset\)/);
  assert.match(help, /--config <file>/);
  const named = renderOptionsHelp(defineOptions([
    { name: "ref", type: "string", default: null, help: "reference model (default: --init)" },
  ]));
  assert.match(named, /--ref <string> +reference model \(default: --init\)$/m);
  assert.doesNotMatch(named, /unset/, "a help text that names its default gets no second one");
});

Deno.test("defineOptions() rejects a default of the wrong type", () => {
  assert.throws(
    () => defineOptions([{ name: "steps", type: "integer", default: 1.5, help: "steps" }]),
    /default of "steps" expects an integer/,
  );
});

Deno.test("training options have bounds that reject nonsense before anything runs", async () => {
  const { PRETRAIN_OPTIONS } = await import("../train/run_pretrain.ts");
  const bad: [string[], RegExp][] = [
    [["--lr", "1e39"], /^--lr must be <= 1, got 1e39$/],
    [["--grad-accum", "1000000000"], /^--grad-accum must be <= 4096/],
    [["--batch-size", "1e6"], /^--batch-size must be <= 4096/],
    [["--beta2", "1"], /^--beta2 must be <= 0\.999999/],
    [["--steps", "1e12"], /^--steps must be <= 100000000/],
  ];
  for (const [argv, re] of bad) {
    await assert.rejects(
      resolveOptions(PRETRAIN_OPTIONS, argv),
      (e: Error) => e instanceof OptionsError && re.test(e.message),
    );
  }
  assert.throws(
    () => checkConfigObject(PRETRAIN_OPTIONS, { gradAccum: 1e9 }, "run.json"),
    /^OptionsError: run\.json: "gradAccum" must be <= 4096, got 1000000000$/,
  );
});

Deno.test("config errors describe null and numbers past the f64 range as such", () => {
  const schema = defineOptions([{ name: "lr", type: "number", default: 1, help: "lr" }] as const);
  assert.throws(() => checkConfigObject(schema, { lr: null }, "run.json"), {
    message: 'run.json: "lr" expects a number, got null',
  });
  assert.throws(
    () => checkConfigObject(schema, JSON.parse('{"lr": 1e999}'), "run.json"),
    {
      message: 'run.json: "lr" expects a number, got Infinity (a number past the largest ' +
        "64-bit float, ~1.8e308)",
    },
  );
});
