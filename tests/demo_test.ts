/**
 * The one-command demo end to end at a toy size: every stage runs (on-policy DPO pairs
 * included, and GRPO after DPO), every output file lands in the run directory, and the final
 * table has one row per checkpoint with every column filled.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runDemo } from "../train/demo.ts";
import { GPU_TEST } from "./_util.ts";

Deno.test("runDemo() runs every stage at a toy size and writes the table", GPU_TEST, async () => {
  const out = await Deno.makeTempDir({ prefix: "demo_test_" });
  try {
    const lines: string[] = [];
    const rows = await runDemo({
      out,
      scale: 0.25,
      preset: "tiny",
      pretrainSteps: 2,
      batchSize: 2,
      seqLen: 64,
      seed: 7,
      vocabSize: 400,
      progress: false,
      sftSteps: 2,
      sftBatchSize: 1,
      sftLr: 1e-3,
      dpoSteps: 2,
      dpoBatchSize: 2,
      dpoLr: 1e-4,
      dpoBeta: 0.1,
      dpoRpoAlpha: 1,
      grpoSteps: 2,
      grpoBatchSize: 2,
      grpoGroup: 2,
      grpoMaxTokens: 8,
    }, { log: (s) => lines.push(s) });
    assert.deepEqual(rows.map((r) => r.stage), ["pretrain", "sft", "dpo", "grpo"]);
    for (const r of rows) {
      for (const [k, v] of Object.entries(r)) {
        if (k === "valLoss" && r.stage === "grpo") assert.equal(v, null, "GRPO has no val loss");
        else if (k !== "toolParts") {
          assert.ok(typeof v === "string" || Number.isFinite(v), `${k}: ${v}`);
        }
      }
    }
    const log = lines.join("\n");
    assert.match(log, /pairs take the SFT model's own reply as the rejected turn/);
    assert.match(log, /grpo: \d+ train \(\d+ with an answer, \d+ with a tool call\)/);
    assert.match(log, /grpo: held-out reward /);
    for (
      const f of [
        "corpus/dpo_policy.jsonl",
        "corpus/dpo_policy_heldout.jsonl",
        "tokenizer/tokenizer.json",
        "dpo/reference_logps.json",
        "corpus/grpo.jsonl",
        "corpus/grpo_heldout.jsonl",
        "grpo/metrics.jsonl",
        "grpo/reward.svg",
        "eval/report.md",
        "report.md",
        "report.json",
      ]
    ) {
      assert.ok((await Deno.stat(`${out}/${f}`)).size > 0, f);
    }
    const policyPairs = (await Deno.readTextFile(`${out}/corpus/dpo_policy.jsonl`)).trim()
      .split("\n").map((l) => JSON.parse(l));
    const written = (await Deno.readTextFile(`${out}/corpus/dpo.jsonl`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(policyPairs.length, written.length);
    // An untrained model never gives the chosen reply: every pair is rebuilt from the prompt,
    // except where it replies nothing (an empty turn keeps the written reject).
    let rebuilt = 0;
    policyPairs.forEach((p, i) => {
      assert.deepEqual(p.chosen, written[i].chosen);
      if (p.flaw !== "on_policy") {
        assert.deepEqual(p, written[i]);
        return;
      }
      rebuilt++;
      assert.deepEqual(p.rejected.slice(0, -1), written[i].chosen.slice(0, -1));
    });
    assert.ok(rebuilt > policyPairs.length / 2, `only ${rebuilt} pairs rebuilt`);
    assert.match(await Deno.readTextFile(`${out}/report.md`), /\| grpo \|/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
