/**
 * A small model directory for tests that run `cli.ts serve` as a user would: a tokenizer trained
 * on the demo world's English documents and an untrained `tiny` model (random weights, fixed
 * seed), saved like a training run. Its replies are gibberish, but everything the API promises
 * about their shape (JSON that parses, tool calls that name offered tools) must still hold.
 */
import { generateWorld, pretrainDocuments } from "../data/mod.ts";
import { testDevice } from "./_util.ts";
import { resolveConfig } from "../model/config.ts";
import { toHfConfig } from "../model/hf_config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { saveTokenizer, trainBpe } from "../tokenizer/mod.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";

/**
 * Writes `<root>/tokenizer` and `<root>/run` (a run directory with one checkpoint).
 *
 * @param root An empty directory.
 * @param options Context length (default 2048), vocabulary (default 600).
 * @returns The run directory to pass to `--model`.
 */
export async function writeTinyModel(
  root: string,
  options: { maxSeqLen?: number; vocabSize?: number } = {},
): Promise<string> {
  const docs = pretrainDocuments(generateWorld())
    .map((d) => d.text)
    .filter((t) => /^[\x20-\x7e\n]+$/.test(t))
    .slice(0, 400);
  const tok = trainBpe(docs, { vocabSize: options.vocabSize ?? 600 });
  await saveTokenizer(tok, `${root}/tokenizer`);
  const cfg = resolveConfig("tiny", {
    vocab_size: tok.vocabSize,
    max_seq_len: options.maxSeqLen ?? 2048,
  });
  const model = DeepSeekV3.create(await testDevice(), cfg, { seed: 7 });
  await saveCheckpoint(`${root}/run`, {
    table: model.arena.entries,
    params: await model.weights(),
    m: new Map(),
    v: new Map(),
    hfConfig: toHfConfig(cfg),
    state: { step: 1, tokensSeen: 0 },
  });
  model.arena.destroy();
  return `${root}/run`;
}

if (import.meta.main) {
  const root = Deno.args[0] ?? await Deno.makeTempDir();
  await Deno.mkdir(root, { recursive: true });
  console.log(await writeTinyModel(root));
}
