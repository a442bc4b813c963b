/**
 * `cli.ts export` against Hugging Face transformers itself: a tiny chat model trained here is
 * exported, loaded with `AutoModelForCausalLM` and `AutoTokenizer` in Python, and must give our
 * logits, our chat-template ids and our greedy reply, stopping at `<|im_end|>`; the directory
 * transformers' `save_pretrained` writes back must continue training with `sft --init`.
 *
 * Needs a Python with torch and transformers: `MINIDEEPSEEK_HF_PYTHON` names it (`.ci/run`
 * creates one). Without it the transformers test is skipped with the reason printed; the export
 * test that needs no Python always runs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { f16ToF32, f32ToF16, Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { initParameters } from "../model/params.ts";
import { fromHfConfig } from "../model/hf_config.ts";
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from "../model/safetensors.ts";
import {
  type ChatMessage,
  encodeChatPrompt,
  IM_END_TOKEN,
  saveTokenizer,
  type Tokenizer,
  trainBpe,
} from "../tokenizer/mod.ts";
import { benchmarkText, toJsonl } from "../data/mod.ts";
import { prepareShards } from "../train/prepare.ts";
import { PRETRAIN_OPTIONS, runPretrain } from "../train/run_pretrain.ts";
import { generateTokens } from "../train/eval.ts";
import { exportHf, runExport } from "../train/export.ts";
import { buildCli } from "../cli.ts";
import { trainLoop } from "../train/loop.ts";
import { readModelDir } from "../train/model_dir.ts";
import { runSft, SFT_OPTIONS } from "../train/run_sft.ts";
import { resolveOptions } from "../train/options.ts";
import { SftTask, tokenizeConversations } from "../train/sft.ts";
import { GPU_TEST, testDevice } from "./_util.ts";

const PYTHON = Deno.env.get("MINIDEEPSEEK_HF_PYTHON");

/** Why the transformers test cannot run here, or null when it can. */
async function pythonProblem(): Promise<string | null> {
  if (!PYTHON) {
    return "MINIDEEPSEEK_HF_PYTHON is not set (.ci/run sets it to a venv with torch and " +
      "transformers)";
  }
  try {
    const out = await new Deno.Command(PYTHON, {
      args: ["-c", "import torch, transformers, safetensors; print(transformers.__version__)"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      return `${PYTHON} cannot import torch, transformers and safetensors: ` +
        new TextDecoder().decode(out.stderr).trim().split("\n").pop();
    }
    return null;
  } catch (e) {
    return `${PYTHON}: ${(e as Error).message}`;
  }
}
const problem = await pythonProblem();
if (problem) console.log(`hf_export_test: skipping the transformers test: ${problem}`);

const CONVERSATIONS: ChatMessage[][] = [
  [
    { role: "user", content: "What is the capital of Veldra?" },
    { role: "assistant", content: "Veldra's capital is Ostrava." },
  ],
  [
    { role: "system", content: "Answer briefly." },
    { role: "user", content: "Name a color." },
    { role: "assistant", content: "Blue." },
  ],
];

/**
 * A tiny chat model that has memorized the two conversations (so its greedy replies end with
 * `<|im_end|>`), trained as a run directory that records its tokenizer.
 */
async function trainedRun(root: string): Promise<{ tok: Tokenizer; run: string }> {
  const tok = trainBpe([benchmarkText({ chars: 20_000 })], { vocabSize: 320 });
  const tokDir = `${root}/tokenizer`;
  await saveTokenizer(tok, tokDir);
  // YaRN stays active (max_seq_len > original_seq_len), so transformers' YaRN path is compared;
  // route_scale 1 (nano's) is the float field transformers refused as the integer `1`.
  const cfg = resolveConfig("tiny", {
    vocab_size: 320,
    max_seq_len: 128,
    original_seq_len: 64,
    route_scale: 1,
  });
  const model = DeepSeekV3.create(await testDevice(), cfg, { seed: 3 });
  const { examples } = tokenizeConversations(
    tok,
    CONVERSATIONS.map((messages, i) => ({ messages, file: "test", line: i + 1 })),
  );
  const run = `${root}/run`;
  try {
    await trainLoop(model, new SftTask(examples, [], { B: 2, T: 96, seed: 1, padId: 2 }), {
      runDir: run,
      steps: 80,
      lr: 1e-2,
      warmupSteps: 5,
      progress: false,
      runInfo: { model: cfg, tokenizer: tokDir, stage: "sft" },
      log: () => {},
    });
  } finally {
    model.arena.destroy();
  }
  return { tok, run };
}

/** Our GPU model's logits [T, V] of one sequence. */
async function ourLogits(model: DeepSeekV3, ids: readonly number[]): Promise<Float32Array> {
  const scope = new Scope();
  try {
    const tokens = Int32Array.from(ids);
    const out = model.forward(
      model.upload({ tokens, targets: new Int32Array(0), B: 1, T: tokens.length }),
      { logitsOnly: true },
    );
    return await out.logits.readF32();
  } finally {
    scope.dispose();
  }
}

async function loadOurs(dir: string): Promise<DeepSeekV3> {
  const md = await readModelDir(dir);
  const model = new DeepSeekV3(await testDevice(), md.cfg);
  model.load(md.params);
  return model;
}

Deno.test(
  "export writes a self-contained HF directory whose files read back to the same model",
  GPU_TEST,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "mds-export-" });
    try {
      const tok = trainBpe([benchmarkText({ chars: 5_000 })], { vocabSize: 300 });
      await saveTokenizer(tok, `${root}/tokenizer`);
      const cfg = resolveConfig("tiny", { vocab_size: 300 });
      const model = DeepSeekV3.create(await testDevice(), cfg, { seed: 9 });
      await trainLoop(
        model,
        new SftTask(
          tokenizeConversations(tok, [{ messages: CONVERSATIONS[0], file: "t", line: 1 }]).examples,
          [],
          { B: 1, T: 32, seed: 1 },
        ),
        {
          runDir: `${root}/run`,
          steps: 1,
          lr: 1e-3,
          progress: false,
          runInfo: { model: cfg, tokenizer: `${root}/tokenizer` },
          log: () => {},
        },
      );
      const weights = await model.weights();
      model.arena.destroy();

      // The checkpoint's own config.json already carries the float fields and the ids.
      const ckText = await Deno.readTextFile(`${root}/run/step-000001/config.json`);
      assert.match(ckText, /"routed_scaling_factor": 2\.5/);
      assert.match(ckText, /"attention_dropout": 0\.0/);
      assert.match(ckText, /"eos_token_id": 1,/);

      const out = `${root}/hf`;
      const r = await exportHf(`${root}/run`, out);
      assert.equal(r.tokenizerDir, `${root}/tokenizer`, "found through the run's record");
      const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      assert.deepEqual(names, [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
      ]);
      const config = await Deno.readTextFile(`${out}/config.json`);
      assert.match(config, /"rope_theta": 10000\.0/);
      assert.match(config, /"factor": 2\.0/);
      assert.deepEqual(fromHfConfig(JSON.parse(config)), cfg);
      const gen = JSON.parse(await Deno.readTextFile(`${out}/generation_config.json`));
      assert.deepEqual(gen.eos_token_id, [tok.specialId(IM_END_TOKEN), tok.specialId("<|eos|>")]);
      assert.equal(gen.pad_token_id, tok.specialId("<|pad|>"));
      const tc = JSON.parse(await Deno.readTextFile(`${out}/tokenizer_config.json`));
      assert.equal(tc.model_max_length, cfg.max_seq_len);
      assert.match(tc.chat_template, /tool_call/);

      // Read back: same config and bit-identical weights, MTP layer included.
      const md = await readModelDir(out);
      assert.equal(md.kind, "huggingface");
      assert.deepEqual(md.cfg, cfg);
      assert.deepEqual(md.notes, []);
      for (const [name, w] of weights) assert.deepEqual(md.params.get(name), w, name);

      // bf16 and --no-mtp: smaller file, no MTP layer, read back as a model without MTP.
      await exportHf(`${root}/run`, `${root}/hf16`, { dtype: "bfloat16", mtp: false });
      const { tensors } = decodeSafetensors(await Deno.readFile(`${root}/hf16/model.safetensors`));
      assert.ok([...tensors.values()].every((t) => t.dtype === "BF16"));
      assert.ok(![...tensors.keys()].some((n) => n.startsWith(`model.layers.${cfg.n_layers}.`)));
      const md16 = await readModelDir(`${root}/hf16`);
      assert.equal(md16.cfg.mtp_depth, 0);
      assert.deepEqual(md16.notes, ["widened BF16 tensors to F32"]);
      const e = md16.params.get("lm_head.weight")!, w = weights.get("lm_head.weight")!;
      for (let i = 0; i < w.length; i++) assert.ok(Math.abs(e[i] - w[i]) <= Math.abs(w[i]) / 128);

      // transformers' save_pretrained writes no MTP layer but keeps num_nextn_predict_layers:
      // inference reads a model without MTP, training gets fresh MTP weights.
      const noMtp = `${root}/nomtp`;
      await Deno.mkdir(noMtp);
      await Deno.copyFile(`${out}/config.json`, `${noMtp}/config.json`);
      const main = new Map(
        [...decodeSafetensors(await Deno.readFile(`${out}/model.safetensors`)).tensors]
          .filter(([n]) => !n.startsWith(`model.layers.${cfg.n_layers}.`)),
      );
      await Deno.writeFile(`${noMtp}/model.safetensors`, encodeSafetensors(main));
      assert.equal((await readModelDir(noMtp)).cfg.mtp_depth, 0);
      const fresh = await readModelDir(noMtp, { missingMtp: "init", seed: 7 });
      assert.deepEqual(fresh.cfg, cfg);
      assert.match(fresh.notes.join(), /initialized fresh/);
      const init = initParameters(cfg, 7);
      for (const [name, w] of fresh.params) {
        assert.deepEqual(w, main.has(name) ? weights.get(name) : init.get(name), name);
      }

      // Other writers' layouts: shards named by an index, experts fused into 3-D tensors
      // (`mlp.experts.gate_up_proj` [E, 2I, D], `mlp.experts.down_proj` [E, D, I]), F16.
      const sharded = `${root}/sharded`;
      await Deno.mkdir(sharded);
      await Deno.copyFile(`${out}/config.json`, `${sharded}/config.json`);
      const all = decodeSafetensors(await Deno.readFile(`${out}/model.safetensors`)).tensors;
      const E = cfg.n_routed_experts, I = cfg.moe_inter_dim, D = cfg.dim;
      const fused = new Map<string, SafeTensor>();
      const gateUp = new Float32Array(E * 2 * I * D), down = new Float32Array(E * D * I);
      const p = "model.layers.1.mlp.experts";
      for (let e = 0; e < E; e++) {
        gateUp.set(weights.get(`${p}.${e}.gate_proj.weight`)!, e * 2 * I * D);
        gateUp.set(weights.get(`${p}.${e}.up_proj.weight`)!, e * 2 * I * D + I * D);
        down.set(weights.get(`${p}.${e}.down_proj.weight`)!, e * D * I);
      }
      fused.set(`${p}.gate_up_proj`, { dtype: "F32", shape: [E, 2 * I, D], data: gateUp });
      fused.set(`${p}.down_proj`, { dtype: "F32", shape: [E, D, I], data: down });
      const rest = new Map<string, SafeTensor>();
      for (const [name, t] of all) {
        if (name.startsWith(`${p}.`)) continue;
        rest.set(
          name,
          name === "lm_head.weight"
            ? { dtype: "F16", shape: t.shape, data: f32ToF16(t.data as Float32Array) }
            : t,
        );
      }
      const weightMap: Record<string, string> = {};
      for (const [file, m] of [["a.safetensors", fused], ["b.safetensors", rest]] as const) {
        await Deno.writeFile(`${sharded}/${file}`, encodeSafetensors(m));
        for (const name of m.keys()) weightMap[name] = file;
      }
      await Deno.writeTextFile(
        `${sharded}/model.safetensors.index.json`,
        JSON.stringify({ weight_map: weightMap }),
      );
      const mds = await readModelDir(sharded);
      assert.deepEqual(mds.notes, [
        "split 2 fused expert tensors into per-expert matrices",
        "widened F16 tensors to F32",
      ]);
      for (const [name, w] of weights) {
        if (name !== "lm_head.weight") assert.deepEqual(mds.params.get(name), w, name);
      }
      assert.deepEqual(
        mds.params.get("lm_head.weight"),
        f16ToF32(f32ToF16(weights.get("lm_head.weight")!)),
      );
      // A tensor the config does not expect is named.
      await Deno.writeFile(
        `${sharded}/a.safetensors`,
        encodeSafetensors(
          new Map([...fused, [
            "model.layers.1.mlp.extra.weight",
            { dtype: "F32", shape: [1], data: new Float32Array(1) },
          ]]),
        ),
      );
      weightMap["model.layers.1.mlp.extra.weight"] = "a.safetensors";
      await Deno.writeTextFile(
        `${sharded}/model.safetensors.index.json`,
        JSON.stringify({ weight_map: weightMap }),
      );
      await assert.rejects(
        () => readModelDir(sharded),
        /unexpected tensor 'model\.layers\.1\.mlp\.extra/,
      );

      // The command line: a checkpoint directory (not the run) and its flags.
      const logged: string[] = [];
      const realLog = console.log;
      console.log = (s: string) => logged.push(s);
      try {
        await buildCli().parseAsync([
          ...["deno", "cli.ts", "export", "--model", `${root}/run/step-000001`],
          ...["--out", `${root}/hfcli`, "--no-mtp"],
        ]);
      } finally {
        console.log = realLog;
      }
      assert.match(logged.join("\n"), /export: .*step-000001 \(tokenizer .*tokenizer\) -> /);
      assert.equal((await readModelDir(`${root}/hfcli`)).cfg.mtp_depth, 0);
      await assert.rejects(
        () =>
          runExport({
            model: `${root}/run`,
            out: null,
            tokenizer: null,
            dtype: "float32",
            mtp: true,
          }),
        /--out is required/,
      );
      await assert.rejects(
        () => exportHf(`${root}/run`, `${root}/x`, { tokenizer: `${root}/nowhere` }),
        /nowhere/,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test({
  name: "transformers loads the export: same logits, chat ids and greedy reply, stops at " +
    "<|im_end|>; its save_pretrained directory continues training with sft --init",
  ignore: problem !== null,
  ...GPU_TEST,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "mds-hf-" });
    try {
      const { tok, run } = await trainedRun(root);
      const out = `${root}/hf`;
      await exportHf(run, out);
      const model = await loadOurs(out);
      const imEnd = tok.specialId(IM_END_TOKEN);
      const messages = CONVERSATIONS[0].slice(0, 1);
      const prompt = encodeChatPrompt(tok, messages);
      const [reply] = await generateTokens(model, [prompt], { maxTokens: 40, stop: [imEnd, 1] });
      assert.equal(reply.at(-1), imEnd, `our model stops: ${tok.decode(reply)}`);
      assert.equal(tok.decode(reply.slice(0, -1)), "Veldra's capital is Ostrava.");
      const sequences = [
        [...prompt, ...reply],
        Array.from({ length: 100 }, (_, i) => (i * 37 + 11) % 320), // past original_seq_len
      ];
      const ours = await Promise.all(sequences.map((s) => ourLogits(model, s)));
      model.arena.destroy();

      const saved = `${root}/saved`;
      const cmd = new Deno.Command(PYTHON!, {
        args: [new URL("./_hf_transformers.py", import.meta.url).pathname],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = cmd.stdin.getWriter();
      await w.write(new TextEncoder().encode(JSON.stringify({
        dir: out,
        sequences,
        messages,
        tools: null,
        max_new_tokens: 40,
        save_to: saved,
      })));
      await w.close();
      const res = await cmd.output();
      const stderr = new TextDecoder().decode(res.stderr);
      assert.ok(res.success, `python failed:\n${stderr}`);
      const hf = JSON.parse(new TextDecoder().decode(res.stdout));

      assert.equal(hf.model_class, "DeepseekV3ForCausalLM");
      assert.deepEqual(hf.missing, []);
      assert.deepEqual(hf.mismatched, []);
      // Only the MTP layer is unused: transformers' DeepseekV3 has no MTP module.
      assert.ok(hf.unexpected.length > 0, "the export carries the MTP layer");
      assert.ok(hf.unexpected.every((k: string) => k.startsWith("model.layers.2.")), hf.unexpected);
      assert.equal(hf.config.routed_scaling_factor, 1);
      assert.deepEqual(hf.generation_eos, [imEnd, 1]);

      let maxDiff = 0, positions = 0, top1 = 0;
      sequences.forEach((s, k) => {
        const V = 320;
        for (let t = 0; t < s.length; t++) {
          const row = hf.logits[k][t] as number[];
          let a = 0, b = 0;
          for (let v = 0; v < V; v++) {
            maxDiff = Math.max(maxDiff, Math.abs(row[v] - ours[k][t * V + v]));
            if (row[v] > row[a]) a = v;
            if (ours[k][t * V + v] > ours[k][t * V + b]) b = v;
          }
          positions++;
          if (a === b) top1++;
        }
      });
      console.log(
        `transformers vs ours: max |logit diff| ${maxDiff.toExponential(2)} over ${positions} ` +
          `positions, top-1 equal at ${top1}`,
      );
      assert.ok(maxDiff < 1e-4, `max logit difference ${maxDiff}`);
      assert.equal(top1, positions);

      assert.deepEqual(hf.chat_ids, prompt, "AutoTokenizer's chat template gives our ids");
      assert.deepEqual(hf.generated, reply, "generate() gives our greedy tokens and stops");
      assert.equal(hf.text, tok.decode(reply));

      // save_pretrained's directory (fused experts, no MTP) reads back as the same weights...
      const md = await readModelDir(saved);
      const back = await readModelDir(out);
      assert.deepEqual(hf.saved, ["config.json", "generation_config.json", "model.safetensors"]);
      assert.deepEqual(md.notes, [
        "no MTP weights (model.layers.2.*): read as a model without MTP",
      ]);
      // transformers 5 rewrites the RoPE fields as rope_parameters; the config is still ours.
      assert.deepEqual(md.cfg, resolveConfig({ ...back.cfg, mtp_depth: 0 }));
      for (const [name, p] of md.params) assert.deepEqual(p, back.params.get(name), name);
      // ...and continues training: sft --init from it, with fresh MTP weights.
      const data = `${root}/sft.jsonl`;
      await Deno.writeTextFile(
        data,
        CONVERSATIONS.map((c) => JSON.stringify({ messages: c })).join("\n") + "\n",
      );
      const { values } = await resolveOptions(SFT_OPTIONS, [
        ...["--init", saved, "--tokenizer", `${root}/tokenizer`, "--data", data],
        ...["--out", `${root}/sft2`, "--steps", "2", "--batch-size", "2", "--seq-len", "96"],
        ...["--val-fraction", "0", "--no-progress"],
      ]);
      const lines: string[] = [];
      const r = await runSft(values, { log: (l) => lines.push(l) });
      assert.equal(r.step, 2);
      assert.ok(Number.isFinite(r.lastLoss));
      assert.ok(lines.some((l) => /initialized fresh/.test(l)), lines.join("\n"));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test(
  "pretrain --init continues from an exported directory with its weights and config",
  GPU_TEST,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "mds-init-" });
    try {
      const text = benchmarkText({ chars: 6_000 });
      const tok = trainBpe([text], { vocabSize: 300 });
      await saveTokenizer(tok, `${root}/tok`);
      await Deno.writeTextFile(
        `${root}/pre.jsonl`,
        toJsonl(
          Array.from({ length: 20 }, (_, i) => ({ text: text.slice(i * 300, i * 300 + 300) })),
        ),
      );
      await prepareShards({
        inputs: [`${root}/pre.jsonl`],
        tokenizer: tok,
        tokenizerPath: `${root}/tok`,
        outDir: `${root}/data`,
        valFraction: 0.2,
        seed: 1,
      });
      const run = async (args: string[]) =>
        await runPretrain(
          (await resolveOptions(PRETRAIN_OPTIONS, [
            ...["--data", `${root}/data`, "--batch-size", "2", "--seq-len", "32"],
            ...["--no-progress", "--eval-every", "0", ...args],
          ])).values,
          { log: () => {} },
        );
      // A model of another shape than the flags ask for: --init's config wins.
      await run([
        "--out",
        `${root}/a`,
        "--preset",
        "tiny",
        "--model",
        '{"n_layers": 3}',
        "--steps",
        "1",
      ]);
      await exportHf(`${root}/a`, `${root}/hf`, { mtp: false });
      const exported = await readModelDir(`${root}/hf`);
      // lr 0: the step leaves the weights as loaded (only the MoE biases move).
      const r = await run([
        "--out",
        `${root}/b`,
        "--init",
        `${root}/hf`,
        "--lr",
        "0",
        "--steps",
        "1",
      ]);
      const b = await readModelDir(`${root}/b`);
      assert.equal(b.cfg.n_layers, 3);
      assert.deepEqual(b.cfg, exported.cfg);
      for (const [name, w] of exported.params) {
        if (!name.endsWith("e_score_correction_bias")) {
          assert.deepEqual(b.params.get(name), w, name);
        }
      }
      const state = JSON.parse(await Deno.readTextFile(`${r.checkpoint}/state.json`));
      assert.equal(state.run.initCheckpoint, `${root}/hf`);
      assert.equal(state.run.tokenizer, `${root}/tok`, "pretraining records its tokenizer");
      await assert.rejects(
        () => run(["--out", `${root}/c`, "--init", `${root}/nowhere`]),
        /nowhere: no such model/,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
