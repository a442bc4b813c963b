/**
 * The package as a user imports it: only through `deno.json`'s `exports`
 * (`@minideepseek/minideepseek`, `/model`, `/tokenizer`, `/data`, `/train`, `/serve`), one script
 * trains a tiny model a few steps, runs DPO a few steps on it, saves, loads and generates, and
 * exports it for Hugging Face. Also: every entry point carries a module doc with an example.
 *
 * @module
 */
import assert from "node:assert/strict";
import { getDevice } from "@minideepseek/minideepseek";
import {
  Decoder,
  DeepSeekV3,
  generateGreedy,
  resolveConfig,
} from "@minideepseek/minideepseek/model";
import {
  encodeChatPrompt,
  IM_END_TOKEN,
  saveTokenizer,
  trainBpe,
} from "@minideepseek/minideepseek/tokenizer";
import { benchmarkText } from "@minideepseek/minideepseek/data";
import {
  DPO_OPTIONS,
  exportHf,
  PretrainTask,
  readMetrics,
  readModelDir,
  resolveOptions,
  runDpo,
  trainLoop,
} from "@minideepseek/minideepseek/train";
import { Engine, loadForServing } from "@minideepseek/minideepseek/serve";

const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;
const ROOT = new URL("../", import.meta.url);

Deno.test("this test imports the package only through deno.json's exports", async () => {
  const self = await Deno.readTextFile(new URL(import.meta.url));
  const specifiers = [...self.matchAll(/^\} from "([^"]+)";$|^import [^"]*"([^"]+)";$/gm)]
    .map((m) => m[1] ?? m[2]);
  assert.ok(specifiers.length >= 6);
  for (const s of specifiers) {
    assert.ok(s.startsWith("@minideepseek/minideepseek") || s.startsWith("node:"), s);
  }
});

Deno.test("every entry point has a module doc with an example", async () => {
  const { exports } = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.deepEqual(Object.keys(exports).sort(), [
    ".",
    "./data",
    "./kernels",
    "./model",
    "./serve",
    "./tokenizer",
    "./train",
  ]);
  for (const [name, path] of Object.entries(exports as Record<string, string>)) {
    const text = await Deno.readTextFile(new URL(path, ROOT));
    const doc = /^\/\*\*([\s\S]*?)\*\//.exec(text)?.[1] ?? "";
    assert.match(doc, /@module/, `${name} (${path}) has no module doc`);
    assert.match(doc, /@example[\s\S]*```ts/, `${name} (${path}): module doc without example`);
    assert.doesNotMatch(doc, /from "\.\//, `${name}: examples import the package, not files`);
  }
});

Deno.test("deno publish --dry-run: no slow types, no test fixtures among the files", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  assert.match(text, /Checking for slow types/);
  const files = [...text.matchAll(/file:\/\/\S+?\/((?:[\w.-]+\/)*[\w.-]+\.\w+) \(/g)].map((m) =>
    m[1]
  );
  for (const f of ["mod.ts", "serve/mod.ts", "train/export.ts", "model/hf_config.ts"]) {
    assert.ok(files.some((x) => x.endsWith(f)), `${f} is published`);
  }
  for (const f of files) {
    assert.doesNotMatch(f, /(^|\/)(tests|bench|\.ci)\/|_test_model\.ts$|_test\.ts$/, f);
  }
});

Deno.test(
  "one script through the package: pretrain a few steps, DPO a few steps, save, load, generate, export",
  GPU_TEST,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "mds-package-" });
    const quiet = { progress: false, log: () => {} };
    try {
      // A tokenizer and a tiny model.
      const text = benchmarkText({ chars: 20_000 });
      const tok = trainBpe([text], { vocabSize: 300 });
      await saveTokenizer(tok, `${root}/tokenizer`);
      const cfg = resolveConfig("tiny", {
        vocab_size: tok.vocabSize,
        max_seq_len: 128,
        original_seq_len: 64,
      });
      const device = await getDevice(Deno.env.get("MINIDEEPSEEK_DEVICE") ? "auto" : "gpu");
      const model = DeepSeekV3.create(device, cfg, { seed: 1 });

      // Pretraining: the loop on a PretrainTask; the run records its tokenizer.
      const tokens = tok.encode(text);
      const task = new PretrainTask(tokens, tokens.slice(0, 600), { B: 2, T: 64, seed: 1 });
      const pre = await trainLoop(model, task, {
        runDir: `${root}/pretrain`,
        steps: 6,
        lr: 3e-3,
        logEvery: 1,
        runInfo: { model: cfg, tokenizer: `${root}/tokenizer` },
        ...quiet,
      });
      model.arena.destroy();
      const losses = (await readMetrics(`${root}/pretrain/metrics.jsonl`))
        .filter((r) => r.kind === "train").map((r) => r.loss as number);
      assert.equal(losses.length, 6);
      assert.ok(losses[5] < losses[0], `pretraining loss ${losses[0]} -> ${losses[5]}`);
      assert.match(pre.checkpoint, /step-000006$/);

      // DPO through its stage runner, from the pretraining run.
      const pairs = `${root}/pairs.jsonl`;
      await Deno.writeTextFile(
        pairs,
        [
          { prompt: "Name a color.", chosen: "Blue.", rejected: "I like trains very much." },
          { prompt: "Say hi.", chosen: "Hi!", rejected: "No." },
          { prompt: "Count to three.", chosen: "1, 2, 3.", rejected: "Seven." },
          { prompt: "A fruit?", chosen: "An apple.", rejected: "A bicycle." },
        ].map((p) => JSON.stringify(p)).join("\n") + "\n",
      );
      const { values } = await resolveOptions(DPO_OPTIONS, [
        ...["--init", `${root}/pretrain`, "--data", pairs, "--out", `${root}/dpo`],
        ...["--steps", "3", "--batch-size", "2", "--seq-len", "64", "--val-fraction", "0"],
        "--no-progress",
      ]);
      const dpo = await runDpo(values, { log: () => {} });
      assert.equal(dpo.step, 3);
      assert.ok(Number.isFinite(dpo.lastLoss), `DPO loss ${dpo.lastLoss}`);

      // Load the saved DPO model two ways and generate greedily: the serving engine and the
      // model's own decoder agree token for token.
      const prompt = encodeChatPrompt(tok, [{ role: "user", content: "Name a color." }]);
      const imEnd = tok.specialId(IM_END_TOKEN);
      const served = await loadForServing(`${root}/dpo`, { maxSequences: 2 });
      assert.equal(served.tokenizer.vocabSize, tok.vocabSize, "the run's tokenizer was found");
      const engine = new Engine(served.model, served.tokenizer);
      let viaEngine: number[];
      try {
        const g = engine.generate(prompt, {
          maxTokens: 12,
          sampling: { temperature: 0 },
          stopTokenIds: [imEnd],
        });
        viaEngine = (await g.result).tokenIds;
      } finally {
        await engine.close();
      }
      const md = await readModelDir(`${root}/dpo`);
      assert.equal(md.kind, "checkpoint");
      assert.deepEqual(md.cfg, cfg);
      const loaded = new DeepSeekV3(device, md.cfg);
      loaded.load(md.params);
      const decoder = new Decoder(loaded, { maxBatch: 1 });
      const { tokens: [viaDecoder] } = await generateGreedy(decoder, [prompt], {
        maxTokens: 12,
        stop: [imEnd],
      });
      decoder.dispose();
      loaded.arena.destroy();
      assert.ok(viaDecoder.length > 0 && viaDecoder.length <= 12);
      assert.deepEqual(viaEngine, viaDecoder);

      // Export for Hugging Face and read it back: the same weights.
      const hf = await exportHf(`${root}/dpo`, `${root}/hf`);
      assert.equal(hf.tokenizerDir, `${root}/tokenizer`);
      const back = await readModelDir(`${root}/hf`);
      assert.equal(back.kind, "huggingface");
      for (const [name, w] of md.params) assert.deepEqual(back.params.get(name), w, name);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
