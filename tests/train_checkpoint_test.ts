import assert from "node:assert/strict";
import { resolveConfig } from "../model/config.ts";
import { initParameters, parameterTable } from "../model/params.ts";
import { encodeSafetensors } from "../model/safetensors.ts";
import { toHfConfig } from "../model/hf_config.ts";
import { readModelDir } from "../train/model_dir.ts";
import {
  type CheckpointData,
  CheckpointError,
  listCheckpoints,
  loadCheckpoint,
  NonFiniteCheckpointError,
  removeLeftovers,
  resolveCheckpoint,
  saveCheckpoint,
} from "../train/checkpoint.ts";

const TABLE = [
  { name: "model.embed_tokens.weight", shape: [16, 8] },
  { name: "model.layers.0.input_layernorm.weight", shape: [8] },
  { name: "model.layers.0.mlp.gate.e_score_correction_bias", shape: [4] },
  { name: "lm_head.weight", shape: [16, 8] },
];

/**
 * Values including the awkward finite ones a bit-exact format must keep: -0, denormals, any bit
 * pattern short of inf/NaN (a checkpoint refuses those; safetensors_test keeps NaN payloads).
 */
function tensor(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  const u = new Uint32Array(a.buffer);
  for (let i = 0; i < n; i++) {
    u[i] = Math.imul(i + 1, 2654435761 + seed) >>> 0;
    if ((u[i] & 0x7f800000) === 0x7f800000) u[i] ^= 0x40000000; // inf/NaN -> a finite value
  }
  a[0] = -0;
  u[1] = 0x7f7fffff; // the largest finite f32
  u[2] = 0x00000001; // the smallest denormal
  return a;
}

function data(step: number): CheckpointData {
  const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const params = new Map(TABLE.map((t, i) => [t.name, tensor(numel(t.shape), step * 10 + i)]));
  const trainable = TABLE.filter((t) => !t.name.includes("e_score_correction_bias"));
  const m = new Map(trainable.map((t, i) => [t.name, tensor(numel(t.shape), step * 100 + i)]));
  const v = new Map(trainable.map((t, i) => [t.name, tensor(numel(t.shape), step * 1000 + i)]));
  return {
    table: TABLE,
    params,
    m,
    v,
    hfConfig: { model_type: "deepseek_v3", hidden_size: 8 },
    state: {
      step,
      tokensSeen: step * 64,
      rng: [1, 2, 3, step],
      sampler: { epoch: 0, index: step },
    },
  };
}

function assertBitExact(
  a: ReadonlyMap<string, Float32Array>,
  b: ReadonlyMap<string, Float32Array>,
) {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, x] of a) {
    const y = b.get(name)!;
    assert.deepEqual(
      new Uint32Array(y.buffer, y.byteOffset, y.length),
      new Uint32Array(x.buffer, x.byteOffset, x.length),
      name,
    );
  }
}

Deno.test("a checkpoint round-trips parameters, moments, config and state bit-exactly", async () => {
  const run = await Deno.makeTempDir();
  const d = data(123);
  const dir = await saveCheckpoint(run, d);
  assert.equal(dir, `${run}/step-000123`);
  assert.deepEqual(JSON.parse(await Deno.readTextFile(`${run}/latest.json`)), {
    format: 1,
    step: 123,
    dir: "step-000123",
  });
  const files = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  assert.deepEqual(files, [
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
  ]);
  for (const path of [run, dir]) {
    const ck = await loadCheckpoint(path, { expect: TABLE });
    assertBitExact(ck.params, d.params);
    assertBitExact(ck.m, d.m);
    assertBitExact(ck.v, d.v);
    assert.deepEqual(ck.hfConfig, d.hfConfig);
    assert.equal(ck.state.step, 123);
    assert.deepEqual(ck.state.rng, [1, 2, 3, 123]);
    assert.deepEqual(ck.state.sampler, { epoch: 0, index: 123 });
    assert.deepEqual(ck.table, TABLE);
  }
  await Deno.remove(run, { recursive: true });
});

Deno.test("loading names the tensor whose shape or presence differs from the model's", async () => {
  const run = await Deno.makeTempDir();
  await saveCheckpoint(run, data(1));
  const wrong = TABLE.map((t) => t.name === "lm_head.weight" ? { ...t, shape: [32, 8] } : t);
  await assert.rejects(
    () => loadCheckpoint(run, { expect: wrong }),
    (e: Error) =>
      e instanceof CheckpointError && e.message.includes("model.safetensors") &&
      e.message.includes("'lm_head.weight' has shape [16, 8], expected [32, 8]"),
  );
  await assert.rejects(
    () => loadCheckpoint(run, { expect: [...TABLE, { name: "model.norm.weight", shape: [8] }] }),
    /missing tensor 'model\.norm\.weight'/,
  );
  await assert.rejects(
    () => loadCheckpoint(run, { expect: TABLE.slice(1) }),
    /unexpected tensor 'model\.embed_tokens\.weight'/,
  );
  const bad = data(2);
  bad.params = new Map([...bad.params, ["lm_head.weight", new Float32Array(3)]]);
  await assert.rejects(
    () => saveCheckpoint(run, bad),
    /'lm_head\.weight' has 3 values, shape \[16,8\] needs 128/,
  );
  await assert.rejects(
    () => loadCheckpoint(`${run}/nowhere`),
    /no such checkpoint or run directory/,
  );
  await Deno.remove(run, { recursive: true });
});

Deno.test("saving keeps the newest N checkpoints and removes crash leftovers", async () => {
  const run = await Deno.makeTempDir();
  await Deno.mkdir(`${run}/step-000007.tmp-99999`);
  await Deno.writeTextFile(`${run}/step-000007.tmp-99999/model.safetensors`, "partial");
  for (const step of [1, 2, 3, 4]) await saveCheckpoint(run, data(step), { keep: 2 });
  assert.deepEqual((await listCheckpoints(run)).map((c) => c.step), [3, 4]);
  const names = (await Array.fromAsync(Deno.readDir(run))).map((e) => e.name).sort();
  assert.deepEqual(names, ["latest.json", "step-000003", "step-000004"]);
  // Saving a step again (a resumed run) replaces it.
  await saveCheckpoint(run, data(3), { keep: 2 });
  assert.equal((await loadCheckpoint(run)).state.step, 3);
  assert.deepEqual((await listCheckpoints(run)).map((c) => c.step), [3, 4]);
  await Deno.remove(run, { recursive: true });
});

Deno.test("a SIGKILL in the middle of a checkpoint write leaves the previous one loadable", async () => {
  const run = await Deno.makeTempDir();
  const first = data(1);
  await saveCheckpoint(run, first);
  // A child process writes a 32 MiB checkpoint in 1 MiB blocks and stalls half way through
  // model.safetensors; we kill it there.
  const child = `${run}/child.ts`;
  await Deno.writeTextFile(
    child,
    `import { saveCheckpoint } from ${
      JSON.stringify(import.meta.resolve("../train/checkpoint.ts"))
    };
const n = 8 << 20;
const big = new Float32Array(n).fill(2.5);
await saveCheckpoint(Deno.args[0], {
  table: [{ name: "w", shape: [n] }],
  params: new Map([["w", big]]),
  m: new Map(),
  v: new Map(),
  hfConfig: {},
  state: { step: 2, tokensSeen: 0 },
}, {
  blockBytes: 1 << 20,
  onProgress: async (p) => {
    if (p.file === "model.safetensors" && p.written >= 16 << 20) {
      console.log("MID");
      await new Promise((r) => setTimeout(r, 60_000));
    }
  },
});
console.log("DONE");
`,
  );
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", child, run],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("MID")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  assert.ok(out.includes("MID"), `child did not reach the middle of the write: ${out}`);
  proc.kill("SIGKILL");
  const status = await proc.status;
  assert.equal(status.signal, "SIGKILL");
  await reader.cancel();

  const leftovers = (await Array.fromAsync(Deno.readDir(run))).filter((e) =>
    e.name.includes(".tmp-")
  );
  assert.equal(leftovers.length, 1, "the killed write left its temporary directory");
  const partial = await Deno.stat(`${run}/${leftovers[0].name}/model.safetensors`);
  assert.ok(partial.size > 0 && partial.size < 32 << 20);
  assert.equal(JSON.parse(await Deno.readTextFile(`${run}/latest.json`)).dir, "step-000001");
  assert.deepEqual((await listCheckpoints(run)).map((c) => c.step), [1]);
  const ck = await loadCheckpoint(run, { expect: TABLE });
  assert.equal(ck.state.step, 1);
  assertBitExact(ck.params, first.params);
  assertBitExact(ck.m, first.m);
  assertBitExact(ck.v, first.v);

  // The next successful save cleans the leftover up.
  await saveCheckpoint(run, data(3));
  const after = (await Array.fromAsync(Deno.readDir(run))).map((e) => e.name).sort();
  assert.deepEqual(after, ["child.ts", "latest.json", "step-000001", "step-000003"]);
  await Deno.remove(run, { recursive: true });
});

Deno.test("a checkpoint with a non-finite parameter or moment is refused and nothing is written", async () => {
  const dir = await Deno.makeTempDir();
  await saveCheckpoint(dir, data(1));
  for (const [which, field] of [["parameter", "params"], ["exp_avg_sq", "v"]] as const) {
    const bad = data(2);
    const t = (bad[field] as Map<string, Float32Array>).get("lm_head.weight")!;
    t[5] = Infinity;
    t[9] = NaN;
    await assert.rejects(
      saveCheckpoint(dir, bad),
      (e: Error) =>
        e instanceof NonFiniteCheckpointError && e.tensor === "lm_head.weight" &&
        e.which === which && e.count === 2 && /^step 2: 2 value\(s\)/.test(e.message),
    );
  }
  assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [1]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
    "latest.json",
    "step-000001",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a failed checkpoint write (disk full) removes its partial files and names the last good one", async () => {
  const dir = await Deno.makeTempDir();
  await saveCheckpoint(dir, data(1));
  const full = () => {
    throw new Error("No space left on device (os error 28)");
  };
  for (const at of ["model.safetensors", "state.json"]) {
    await assert.rejects(
      saveCheckpoint(dir, data(2), {
        blockBytes: 64,
        onProgress: (p) => p.file === at && p.written >= 64 ? full() : undefined,
      }),
      (e: Error) =>
        e instanceof CheckpointError &&
        e.message.startsWith(`cannot write checkpoint ${dir}/step-000002: No space left`) &&
        e.message.includes(`the last good checkpoint is ${dir}/step-000001`) &&
        e.message.includes("partial files were removed"),
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "latest.json",
      "step-000001",
    ]);
  }
  // The first checkpoint of a run has no last good one to name.
  const fresh = await Deno.makeTempDir();
  await assert.rejects(
    saveCheckpoint(fresh, data(1), { onProgress: full }),
    /there is no earlier checkpoint/,
  );
  assert.deepEqual([...Deno.readDirSync(fresh)], []);
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(fresh, { recursive: true });
});

Deno.test("removeLeftovers() removes partial writes only", async () => {
  const dir = await Deno.makeTempDir();
  await saveCheckpoint(dir, data(1));
  await Deno.mkdir(`${dir}/step-000002.tmp-77`);
  await Deno.writeTextFile(`${dir}/latest.json.tmp-77`, "{");
  await Deno.writeTextFile(`${dir}/metrics.jsonl.tmp-77`, "{");
  await Deno.writeTextFile(`${dir}/mine.tmp-77`, "kept");
  assert.deepEqual((await removeLeftovers(dir)).sort(), [
    "latest.json.tmp-77",
    "metrics.jsonl.tmp-77",
    "step-000002.tmp-77",
  ]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
    "latest.json",
    "mine.tmp-77",
    "step-000001",
  ]);
  assert.deepEqual(await removeLeftovers(`${dir}/missing`), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("latest.json naming a missing checkpoint is an error when no earlier one exists", async () => {
  const dir = await Deno.makeTempDir();
  await saveCheckpoint(dir, data(1));
  await saveCheckpoint(dir, data(2));
  await Deno.remove(`${dir}/step-000002`, { recursive: true });
  const warnings: string[] = [];
  assert.equal(
    await resolveCheckpoint(dir, { onWarn: (m) => warnings.push(m) }),
    `${dir}/step-000001`,
  );
  assert.match(warnings[0], /names step-000002, which is missing/);
  await Deno.remove(`${dir}/step-000001`, { recursive: true });
  await assert.rejects(
    resolveCheckpoint(dir),
    (e: Error) =>
      e instanceof CheckpointError &&
      e.message.startsWith(
        `${dir}/latest.json names step-000002, but ${dir}/step-000002 is missing`,
      ),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readModelDir() names the file for a bad config.json, a truncated or mismatched model.safetensors", async () => {
  const dir = await Deno.makeTempDir();
  const cfg = resolveConfig("tiny");
  const params = initParameters(cfg, 1);
  const bytes = encodeSafetensors(
    new Map(
      parameterTable(cfg).map((p) => [
        p.name,
        { dtype: "F32" as const, shape: [...p.shape], data: params.get(p.name)! },
      ]),
    ),
  );
  const hf = toHfConfig(cfg);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hf));
  await Deno.writeFile(`${dir}/model.safetensors`, bytes);
  assert.equal((await readModelDir(dir)).params.size, params.size, "the good files load");
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hf).slice(0, 40));
  await Deno.writeFile(`${dir}/model.safetensors`, bytes);
  await assert.rejects(
    readModelDir(dir),
    (e: Error) =>
      e instanceof CheckpointError && e.message.startsWith(`${dir}/config.json: invalid JSON`),
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...hf, hidden_size: 48 }));
  await assert.rejects(
    readModelDir(dir),
    (e: Error) =>
      e instanceof CheckpointError && e.message.startsWith(`${dir}/model.safetensors: `) &&
      e.message.includes(`${dir}/config.json`),
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...hf, num_hidden_layers: 1e6 }));
  await assert.rejects(
    readModelDir(dir),
    (e: Error) => e instanceof CheckpointError && e.message.startsWith(`${dir}/config.json: `),
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hf));
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(
    readModelDir(dir),
    (e: Error) =>
      e instanceof CheckpointError && e.message.startsWith(`${dir}/model.safetensors: `),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loading refuses a checkpoint with NaN or inf values (written before saves checked)", async () => {
  const dir = await Deno.makeTempDir();
  await saveCheckpoint(dir, data(1));
  const path = `${dir}/step-000001/optimizer.safetensors`;
  const bytes = await Deno.readFile(path);
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  new DataView(bytes.buffer).setFloat32(8 + headerLen + 4, Infinity, true); // first tensor, [1]
  await Deno.writeFile(path, bytes);
  await assert.rejects(
    loadCheckpoint(dir),
    (e: Error) =>
      e instanceof CheckpointError &&
      /^.+optimizer\.safetensors: tensor '.+\.exp_avg(_sq)?' holds 1 NaN or infinite/.test(
        e.message,
      ),
  );
  await Deno.remove(dir, { recursive: true });
});
