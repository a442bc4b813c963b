/**
 * Atomic training checkpoints on disk, GPU-free: they take and give plain data (name ->
 * Float32Array maps for the parameters and the AdamW moments, the HF config object, a JSON state).
 *
 * Layout of a run directory:
 *
 *     runs/demo/
 *       latest.json                 {"format":1,"step":123,"dir":"step-000123"}
 *       step-000100/
 *       step-000123/
 *         model.safetensors         parameters, HF DeepSeek-V3 names, F32
 *         optimizer.safetensors     "<name>.exp_avg" (m) and "<name>.exp_avg_sq" (v), F32
 *         config.json               HF DeepSeek-V3 config (`toHfConfig`, `formatHfJson`)
 *         state.json                {format, step, tokensSeen, rng, sampler, run, metrics, ...}
 *
 * Save protocol (crash-safe at every point): write everything into `step-000123.tmp-<pid>/`,
 * fsync each file and the directory, rename it to `step-000123/`, fsync the run directory, then
 * replace `latest.json` atomically (temp file, fsync, rename, fsync). Only then are leftover
 * `*.tmp-*` entries from earlier crashes removed and old checkpoints pruned. A kill at any moment
 * leaves `latest.json` naming a complete checkpoint (the old or the new one). A save refuses a
 * non-finite parameter or moment before writing anything; a failed write removes its temporary
 * directory and names the last good checkpoint; {@linkcode removeLeftovers} clears what crashes
 * left, at the start of a run.
 *
 * Left out: sharded files for models larger than memory, non-F32 dtypes (the arenas are f32).
 *
 * @module
 */
import { formatHfJson } from "../model/hf_config.ts";
import {
  checkTensors,
  decodeSafetensors,
  encodeSafetensors,
  type SafeTensor,
} from "../model/safetensors.ts";
import { atomicWriteFile, exists, join, syncDir, writeAll } from "./_fs.ts";

/** Version written to `state.json` and `latest.json`; loading refuses other versions. */
export const CHECKPOINT_FORMAT = 1;
/** Suffix of the first AdamW moment's tensor name in `optimizer.safetensors`. */
export const M_SUFFIX = ".exp_avg";
/** Suffix of the second AdamW moment's tensor name in `optimizer.safetensors`. */
export const V_SUFFIX = ".exp_avg_sq";

/** A tensor's name and shape (an `ArenaEntry` or a model `ParamSpec` fits). */
export interface TensorShape {
  /** HF tensor name. */
  name: string;
  /** Row-major shape. */
  shape: readonly number[];
}

/** The JSON part of a checkpoint (`state.json`). Extra fields are kept as given. */
export interface TrainState {
  /** Optimizer steps done. */
  step: number;
  /** Training tokens consumed (targets counted). */
  tokensSeen: number;
  /** RNG state(s) of the run, e.g. `Rng.state()`. */
  rng?: unknown;
  /** Sampler position, e.g. `BatchSampler.state()`. */
  sampler?: unknown;
  /** The run's resolved options (to resume with the same settings). */
  run?: Record<string, unknown>;
  /** A summary of recent metrics (last loss, best val loss, ...). */
  metrics?: Record<string, unknown>;
  /** Anything else the loop wants back. */
  [extra: string]: unknown;
}

/** Everything a checkpoint holds. */
export interface CheckpointData {
  /** Tensor names and shapes, in file order; `params` must hold exactly these. */
  table: readonly TensorShape[];
  /** Parameters by HF name. */
  params: ReadonlyMap<string, Float32Array>;
  /** AdamW first moments by parameter name (a subset of the table, e.g. trainable ones). */
  m: ReadonlyMap<string, Float32Array>;
  /** AdamW second moments, same names as `m`. */
  v: ReadonlyMap<string, Float32Array>;
  /** HF `config.json` object (`toHfConfig(cfg)`). */
  hfConfig: Record<string, unknown>;
  /** The JSON state; `state.step` names the directory. */
  state: TrainState;
}

/** A checkpoint read back. */
export interface LoadedCheckpoint {
  /** The checkpoint directory read. */
  dir: string;
  /** Tensor names and shapes in file order. */
  table: TensorShape[];
  /** Parameters by name. */
  params: Map<string, Float32Array>;
  /** AdamW first moments. */
  m: Map<string, Float32Array>;
  /** AdamW second moments. */
  v: Map<string, Float32Array>;
  /** The parsed `config.json`. */
  hfConfig: Record<string, unknown>;
  /** The parsed `state.json` (with `format` and `savedAt`). */
  state: TrainState;
}

/** Progress of a save, reported after each written block. */
export interface SaveProgress {
  /** File being written (`model.safetensors`, ...). */
  file: string;
  /** Bytes of it written so far. */
  written: number;
  /** Its size. */
  total: number;
}

/** Options of {@linkcode saveCheckpoint}. */
export interface SaveOptions {
  /** Checkpoints to keep, the new one included (default 3; 0 keeps all). */
  keep?: number;
  /** Bytes per write call (default 8 MiB). */
  blockBytes?: number;
  /** Called (and awaited) after each block written: progress display, or a test's kill point. */
  onProgress?: (p: SaveProgress) => void | Promise<void>;
}

/** Thrown for a missing, malformed or mismatched checkpoint; the message names file and field. */
export class CheckpointError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do.
   * @param options `cause`: the underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CheckpointError";
  }
}

/**
 * Thrown by {@linkcode saveCheckpoint} when a parameter or an AdamW moment is NaN or infinite:
 * such a checkpoint would load, then fail at once; nothing is written.
 */
export class NonFiniteCheckpointError extends CheckpointError {
  /**
   * Creates the error.
   *
   * @param tensor The first tensor holding a non-finite value (HF name).
   * @param which `parameter`, `exp_avg` or `exp_avg_sq`.
   * @param count How many values of the checkpoint are not finite.
   * @param step The step the checkpoint is for.
   */
  constructor(
    readonly tensor: string,
    readonly which: string,
    readonly count: number,
    readonly step: number,
  ) {
    super(
      `step ${step}: ${count} value(s) of the parameters or optimizer moments are not finite ` +
        `(first: ${which} of '${tensor}'); the checkpoint was not written`,
    );
    this.name = "NonFiniteCheckpointError";
  }
}

/** Counts the NaN/inf values of `data`; a plain pass over what the save holds anyway. */
function countNonFinite(data: Float32Array): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    // x - x is 0 for a finite x, NaN for NaN and +-inf: one compare per value.
    const x = data[i];
    if (x - x !== 0) n++;
  }
  return n;
}

/**
 * The directory name of a step's checkpoint.
 *
 * @param step Optimizer steps done.
 * @returns `step-` and the step, zero-padded to 6 digits.
 * @example
 * ```ts
 * checkpointDirName(123); // "step-000123"
 * ```
 */
export function checkpointDirName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}

const STEP_DIR = /^step-(\d+)$/;
const TMP_ENTRY = /\.tmp-/;

/**
 * The complete checkpoints of a run directory (temporary leftovers are skipped), oldest first.
 *
 * @param runDir The run directory.
 * @returns `{ step, dir }` per checkpoint; empty when the directory does not exist.
 * @example
 * ```ts
 * const all = await listCheckpoints("runs/demo"); // [{ step: 100, dir: "runs/demo/step-000100" }]
 * ```
 */
export async function listCheckpoints(runDir: string): Promise<{ step: number; dir: string }[]> {
  const out: { step: number; dir: string }[] = [];
  try {
    for await (const e of Deno.readDir(runDir)) {
      const m = STEP_DIR.exec(e.name);
      if (e.isDirectory && m) out.push({ step: Number(m[1]), dir: join(runDir, e.name) });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return out.sort((a, b) => a.step - b.step);
}

function checkData(data: CheckpointData): void {
  const { state, table, params } = data;
  if (!Number.isSafeInteger(state.step) || state.step < 0) {
    throw new CheckpointError(`checkpoint: state.step must be an integer >= 0, got ${state.step}`);
  }
  const names = new Set<string>();
  for (const t of table) {
    names.add(t.name);
    const p = params.get(t.name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (p === undefined) throw new CheckpointError(`checkpoint: no data for parameter '${t.name}'`);
    if (p.length !== n) {
      throw new CheckpointError(
        `checkpoint: parameter '${t.name}' has ${p.length} values, shape [${t.shape}] needs ${n}`,
      );
    }
  }
  for (const name of params.keys()) {
    if (!names.has(name)) {
      throw new CheckpointError(`checkpoint: parameter '${name}' is not in the table`);
    }
  }
  for (const [which, map, other] of [["m", data.m, data.v], ["v", data.v, data.m]] as const) {
    for (const [name, arr] of map) {
      if (!names.has(name)) {
        throw new CheckpointError(`checkpoint: optimizer ${which} has unknown parameter '${name}'`);
      }
      if (!other.has(name)) {
        throw new CheckpointError(
          `checkpoint: optimizer has ${which} but not ${which === "m" ? "v" : "m"} for '${name}'`,
        );
      }
      if (arr.length !== params.get(name)!.length) {
        throw new CheckpointError(
          `checkpoint: optimizer ${which} of '${name}' has ${arr.length} values, the parameter ` +
            `has ${params.get(name)!.length}`,
        );
      }
    }
  }
  let bad = 0, first: [string, string] | null = null;
  for (const t of table) {
    for (
      const [which, arr] of [
        ["parameter", params.get(t.name)],
        ["exp_avg", data.m.get(t.name)],
        ["exp_avg_sq", data.v.get(t.name)],
      ] as const
    ) {
      if (arr === undefined) continue;
      const n = countNonFinite(arr);
      if (n > 0 && first === null) first = [t.name, which];
      bad += n;
    }
  }
  if (first !== null) throw new NonFiniteCheckpointError(first[0], first[1], bad, state.step);
}

function f32(shape: readonly number[], data: Float32Array): SafeTensor {
  return { dtype: "F32", shape: [...shape], data };
}

async function writeBlocks(
  path: string,
  file: string,
  bytes: Uint8Array,
  opts: SaveOptions,
): Promise<void> {
  const block = opts.blockBytes ?? 8 << 20;
  const f = await Deno.open(path, { write: true, createNew: true });
  try {
    let at = 0;
    do {
      const end = Math.min(at + block, bytes.length);
      await writeAll(f, bytes.subarray(at, end));
      at = end;
      await opts.onProgress?.({ file, written: at, total: bytes.length });
    } while (at < bytes.length);
    await f.sync();
  } finally {
    f.close();
  }
}

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v, null, 2) + "\n");

/**
 * Saves a checkpoint atomically into `runDir/step-NNNNNN/` and points `latest.json` at it, then
 * removes leftovers of crashed saves and prunes old checkpoints.
 *
 * Pruning keeps the new checkpoint and the `keep - 1` newest ones with a smaller step; ones with
 * a larger step (a run resumed from an earlier checkpoint) are left alone. A checkpoint of the
 * same step is replaced.
 *
 * @param runDir The run directory (created if missing).
 * @param data Tensors, config and state; see {@linkcode CheckpointData}.
 * @param options `keep`, `blockBytes`, `onProgress`.
 * @returns The final checkpoint directory.
 * @throws {CheckpointError} naming the tensor for missing data or a length/shape mismatch.
 * @example
 * ```ts
 * const dir = await saveCheckpoint("runs/demo", {
 *   table: arena.entries,
 *   params: await arena.readAll("params"),
 *   m: await arena.readAll("m"),
 *   v: await arena.readAll("v"),
 *   hfConfig: toHfConfig(cfg),
 *   state: { step: 123, tokensSeen: 123 * 8 * 256, sampler: sampler.state() },
 * }, { keep: 3 });
 * ```
 */
export async function saveCheckpoint(
  runDir: string,
  data: CheckpointData,
  options: SaveOptions = {},
): Promise<string> {
  checkData(data);
  const step = data.state.step;
  const name = checkpointDirName(step);
  const final = join(runDir, name);
  const tmp = `${final}.tmp-${Deno.pid}`;
  try {
    return await writeCheckpoint(runDir, data, options, { step, name, final, tmp });
  } catch (e) {
    // A failed write (a full disk) must not leave the partial copy holding the space.
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    const previous = await resolveCheckpoint(runDir).catch(() => null);
    const last = previous !== null && (await exists(previous))
      ? `the last good checkpoint is ${previous}`
      : "there is no earlier checkpoint";
    throw new CheckpointError(
      `cannot write checkpoint ${final}: ${(e as Error).message}; its partial files were ` +
        `removed and ${last}. Free space (or fix the cause) and rerun with --resume`,
      { cause: e },
    );
  }
}

async function writeCheckpoint(
  runDir: string,
  data: CheckpointData,
  options: SaveOptions,
  where: { step: number; name: string; final: string; tmp: string },
): Promise<string> {
  const { step, name, final, tmp } = where;
  await Deno.mkdir(runDir, { recursive: true });
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp);

  const model = new Map<string, SafeTensor>();
  const optim = new Map<string, SafeTensor>();
  for (const t of data.table) {
    model.set(t.name, f32(t.shape, data.params.get(t.name)!));
    const m = data.m.get(t.name);
    if (m !== undefined) {
      optim.set(t.name + M_SUFFIX, f32(t.shape, m));
      optim.set(t.name + V_SUFFIX, f32(t.shape, data.v.get(t.name)!));
    }
  }
  const meta = { format: "pt", minideepseek_step: String(step) };
  // One file at a time, so at most one encoded copy is in memory.
  await writeBlocks(
    join(tmp, "model.safetensors"),
    "model.safetensors",
    encodeSafetensors(model, { metadata: meta }),
    options,
  );
  await writeBlocks(
    join(tmp, "optimizer.safetensors"),
    "optimizer.safetensors",
    encodeSafetensors(optim, { metadata: meta }),
    options,
  );
  // Float fields stay floats (`formatHfJson`): transformers refuses `routed_scaling_factor: 1`.
  const config = new TextEncoder().encode(formatHfJson(data.hfConfig));
  await writeBlocks(join(tmp, "config.json"), "config.json", config, options);
  const state = {
    ...data.state,
    format: CHECKPOINT_FORMAT,
    savedAt: new Date().toISOString(),
  };
  await writeBlocks(join(tmp, "state.json"), "state.json", json(state), options);
  await syncDir(tmp);

  // Replace a checkpoint of the same step: move it aside under a *.tmp-* name first (a rename
  // onto a non-empty directory fails), so a crash here leaves it to the leftover cleanup.
  const aside = `${final}.tmp-old-${Deno.pid}`;
  const replaced = await exists(final);
  if (replaced) await Deno.rename(final, aside);
  await Deno.rename(tmp, final);
  await syncDir(runDir);
  await atomicWriteFile(
    join(runDir, "latest.json"),
    json({ format: CHECKPOINT_FORMAT, step, dir: name }),
  );
  if (replaced) await Deno.remove(aside, { recursive: true });

  await cleanup(runDir, step, options.keep ?? 3);
  return final;
}

/**
 * Removes what crashed or failed writes left in a run directory: `step-*.tmp-*` checkpoint
 * directories and `latest.json.tmp-*` / `metrics.jsonl.tmp-*` files. Complete checkpoints,
 * `latest.json` and `metrics.jsonl` are never touched. Call it when a run starts.
 *
 * @param runDir The run directory (a missing one is fine).
 * @returns The names removed.
 * @example
 * ```ts
 * await removeLeftovers("runs/demo"); // ["step-000200.tmp-4242"]
 * ```
 */
export async function removeLeftovers(runDir: string): Promise<string[]> {
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(runDir)) {
      if (!TMP_ENTRY.test(e.name)) continue;
      const base = e.name.split(".tmp-")[0];
      if (STEP_DIR.test(base) || base === "latest.json" || base === "metrics.jsonl") {
        await Deno.remove(join(runDir, e.name), { recursive: true }).catch(() => {});
        removed.push(e.name);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return removed;
}

async function cleanup(runDir: string, step: number, keep: number): Promise<void> {
  await removeLeftovers(runDir);
  if (keep > 0) {
    const older = (await listCheckpoints(runDir)).filter((c) => c.step < step);
    for (const c of older.slice(0, Math.max(0, older.length - (keep - 1)))) {
      await Deno.remove(c.dir, { recursive: true });
    }
  }
  await syncDir(runDir);
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${path}: missing; the checkpoint is incomplete or not one`);
    }
    throw new CheckpointError(`${path}: cannot read it (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Finds the checkpoint directory a path designates: a checkpoint directory itself (it has
 * `state.json`), or a run directory, where `latest.json` names it. When `latest.json` is missing
 * the newest complete checkpoint is used; when it names a directory that is gone, the newest
 * complete earlier one is (with a warning through `onWarn`), and when there is none that is an
 * error, never "no checkpoint yet".
 *
 * @param path A run directory or a checkpoint directory.
 * @param options `onWarn`: told when `latest.json` names a missing checkpoint.
 * @returns The checkpoint directory, or null when the run directory has no checkpoint yet.
 * @throws {CheckpointError} for a malformed `latest.json`, one naming a missing checkpoint with
 *   no earlier one to fall back on, or a path that is neither.
 * @example
 * ```ts
 * const dir = await resolveCheckpoint("runs/demo"); // "runs/demo/step-000123"
 * ```
 */
export async function resolveCheckpoint(
  path: string,
  options: { onWarn?: (message: string) => void } = {},
): Promise<string | null> {
  if (await exists(join(path, "state.json"))) return path;
  const latestPath = join(path, "latest.json");
  if (await exists(latestPath)) {
    const latest = await readJson(latestPath) as Record<string, unknown>;
    if (
      typeof latest !== "object" || latest === null || latest.format !== CHECKPOINT_FORMAT ||
      typeof latest.dir !== "string" || !STEP_DIR.test(latest.dir)
    ) {
      throw new CheckpointError(
        `${latestPath}: expected {"format": ${CHECKPOINT_FORMAT}, "step": N, "dir": ` +
          `"step-NNNNNN"}; fix or delete it to use the newest step-* directory`,
      );
    }
    const dir = join(path, latest.dir);
    if (await exists(join(dir, "state.json"))) return dir;
    // latest.json names a checkpoint that is gone: the run had one, so "no checkpoint, start
    // from step 0" would silently throw its progress away.
    const older = (await listCheckpoints(path)).filter((c) => c.step < Number(latest.step));
    const ok = [];
    for (const c of older) if (await exists(join(c.dir, "state.json"))) ok.push(c);
    if (ok.length === 0) {
      throw new CheckpointError(
        `${latestPath} names ${latest.dir}, but ${dir} is missing or incomplete and no earlier ` +
          `checkpoint is there: restore ${dir}, or delete the run directory to start over`,
      );
    }
    options.onWarn?.(
      `${latestPath} names ${latest.dir}, which is missing or incomplete; using the newest ` +
        `complete checkpoint, ${ok.at(-1)!.dir}`,
    );
    return ok.at(-1)!.dir;
  }
  if (!(await exists(path))) {
    throw new CheckpointError(`${path}: no such checkpoint or run directory`);
  }
  const all = await listCheckpoints(path);
  for (let i = all.length - 1; i >= 0; i--) {
    if (await exists(join(all[i].dir, "state.json"))) return all[i].dir;
  }
  return null;
}

function onlyF32(file: string, tensors: Map<string, SafeTensor>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of tensors) {
    if (!(t.data instanceof Float32Array) || t.dtype !== "F32") {
      throw new CheckpointError(
        `${file}: tensor '${name}' is ${t.dtype}; training checkpoints hold F32 tensors`,
      );
    }
    out.set(name, t.data);
  }
  return out;
}

async function readTensors(path: string): Promise<Map<string, SafeTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${path}: missing; the checkpoint is incomplete or not one`);
    }
    throw new CheckpointError(`${path}: cannot read it (${(e as Error).message})`);
  }
  try {
    return decodeSafetensors(bytes).tensors;
  } catch (e) {
    throw new CheckpointError(`${path}: ${(e as Error).message}`);
  }
}

/**
 * Refuses tensors holding NaN or infinity, naming the file and the first such tensor.
 * @throws {CheckpointError} with the count of bad values.
 */
export function assertFinite(
  file: string,
  tensors: ReadonlyMap<string, Float32Array>,
  suffix: string,
) {
  for (const [name, data] of tensors) {
    const n = countNonFinite(data);
    if (n > 0) {
      throw new CheckpointError(
        `${file}: tensor '${name}${suffix}' holds ${n} NaN or infinite value(s), so it cannot be ` +
          `used; take an earlier checkpoint`,
      );
    }
  }
}

/**
 * Reads and validates a checkpoint directory's `state.json` alone (step, counters, run options
 * and model config), without the tensors: what a resume needs to know before it builds the model.
 *
 * @param dir A checkpoint directory (`step-NNNNNN/`).
 * @throws {CheckpointError} naming the file when it is missing, not JSON, of another format
 *   version, or without a valid step.
 * @example
 * ```ts ignore
 * const { step, run } = await readCheckpointState("runs/pretrain/step-000300");
 * ```
 */
export async function readCheckpointState(dir: string): Promise<TrainState> {
  const statePath = join(dir, "state.json");
  const state = await readJson(statePath) as TrainState;
  if (typeof state !== "object" || state === null || state.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(
      `${statePath}: checkpoint format ${JSON.stringify((state as TrainState)?.format)} is not ` +
        `supported (this code reads ${CHECKPOINT_FORMAT})`,
    );
  }
  if (!Number.isSafeInteger(state.step) || state.step < 0) {
    throw new CheckpointError(`${statePath}: "step" must be an integer >= 0`);
  }
  return state;
}

/**
 * Loads and validates a checkpoint.
 *
 * @param path A run directory (its `latest.json` is followed) or a checkpoint directory.
 * @param options `expect`: the tensors the model needs (e.g. `parameterTable(cfg)`); every one
 *   must be present with that shape, and no other.
 * @returns Tensors, moments, config and state.
 * @throws {CheckpointError} for a run directory without checkpoints, a missing file, a format
 *   version mismatch, or, naming the tensor, a missing/unexpected tensor, a shape mismatch or a
 *   NaN/inf value.
 * @example
 * ```ts
 * const ck = await loadCheckpoint("runs/demo", { expect: parameterTable(cfg) });
 * for (const [name, data] of ck.params) arena.upload(name, data);
 * ```
 */
export async function loadCheckpoint(
  path: string,
  options: { expect?: readonly TensorShape[] } = {},
): Promise<LoadedCheckpoint> {
  const dir = await resolveCheckpoint(path);
  if (dir === null) {
    throw new CheckpointError(
      `${path}: no checkpoint yet (no latest.json and no step-* directory)`,
    );
  }
  const state = await readCheckpointState(dir);
  const hfConfig = await readJson(join(dir, "config.json")) as Record<string, unknown>;

  const modelPath = join(dir, "model.safetensors");
  const model = await readTensors(modelPath);
  if (options.expect) {
    try {
      checkTensors(model, options.expect);
    } catch (e) {
      throw new CheckpointError(
        `${modelPath}: ${(e as Error).message.replace(/^safetensors: /, "")}; was it saved ` +
          `with another model config? (compare ${join(dir, "config.json")})`,
      );
    }
  }
  const params = onlyF32(modelPath, model);
  const table = [...model].map(([name, t]) => ({ name, shape: t.shape }));

  const optPath = join(dir, "optimizer.safetensors");
  const optim = onlyF32(optPath, await readTensors(optPath));
  const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
  for (const [name, data] of optim) {
    const isV = name.endsWith(V_SUFFIX);
    const base = isV
      ? name.slice(0, -V_SUFFIX.length)
      : name.endsWith(M_SUFFIX)
      ? name.slice(0, -M_SUFFIX.length)
      : null;
    const p = base === null ? undefined : params.get(base);
    if (base === null || p === undefined) {
      throw new CheckpointError(
        `${optPath}: tensor '${name}' is not "<parameter>${M_SUFFIX}" or "<parameter>${V_SUFFIX}" ` +
          `of a parameter in model.safetensors`,
      );
    }
    if (data.length !== p.length) {
      throw new CheckpointError(
        `${optPath}: tensor '${name}' has ${data.length} values, parameter '${base}' has ${p.length}`,
      );
    }
    (isV ? v : m).set(base, data);
  }
  for (const name of m.keys()) {
    if (!v.has(name)) throw new CheckpointError(`${optPath}: '${name}${V_SUFFIX}' is missing`);
  }
  // Saves refuse non-finite values; one written before that check (or edited) is named here,
  // not after a resume as a NaN loss that blames the data.
  assertFinite(modelPath, params, "");
  assertFinite(optPath, m, M_SUFFIX);
  assertFinite(optPath, v, V_SUFFIX);
  return { dir, table, params, m, v, hfConfig, state };
}
