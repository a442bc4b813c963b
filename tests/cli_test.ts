import assert from "node:assert/strict";
import { demoCommand, demoOptionsOf, FULL_RECIPE } from "../cli/demo.ts";
import { describeModel } from "../cli/model.ts";
import { countParameters, resolveConfig } from "../model/config.ts";
import { parameterTable } from "../model/params.ts";

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("cli model reports totals that equal the parameter table's sizes", () => {
  for (const preset of ["tiny", "nano", "mini", "small"] as const) {
    const text = describeModel(preset);
    const total = parameterTable(resolveConfig(preset)).reduce((a, p) => a + p.size, 0);
    assert.equal(countParameters(resolveConfig(preset)).total, total);
    assert.match(text, new RegExp(`all\\s+${total.toLocaleString("en-US")}\\s`));
    assert.match(text, /MLA latent/);
  }
});

Deno.test("cli info names the adapter and whether it is a CPU fallback", async () => {
  const r = await cli("info");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /adapter:\s+\S/);
  assert.match(r.out, /fallback\/CPU:\s+(yes|no)/);
  assert.match(r.out, /maxStorageBufferBindingSize\s+\d+/);
});

Deno.test("cli rejects an unknown command and an unknown pretrain flag with a clear error", async () => {
  const a = await cli("nonsense");
  assert.notEqual(a.code, 0);
  assert.match(a.err, /unknown command 'nonsense'/);
  const b = await cli("pretrain", "--stepz", "3");
  assert.equal(b.code, 2);
  assert.match(b.err, /--stepz/);
  const c = await cli("pretrain", "--lr", "abc");
  assert.equal(c.code, 2);
  assert.match(c.err, /--lr expects a number, got 'abc'/);
});

Deno.test("cli pretrain --help lists every option with its default", async () => {
  const r = await cli("pretrain", "--help");
  assert.equal(r.code, 0, r.err);
  for (const flag of ["--steps", "--lr", "--batch-size", "--seq-len", "--resume", "--config"]) {
    assert.ok(r.out.includes(flag), `help lacks ${flag}`);
  }
  assert.match(r.out, /300/); // the default step count
});

Deno.test("cli pretrain names the missing data directory", async () => {
  const r = await cli("pretrain", "--data", "/nonexistent/dir", "--no-progress");
  assert.notEqual(r.code, 0);
  assert.match(r.err + r.out, /\/nonexistent\/dir: no meta\.json there; run `cli\.ts prepare/);
});

Deno.test("demo --full raises only the step counts left at their defaults", () => {
  const parse = (args: string[]) => {
    const cmd = demoCommand().exitOverride().configureOutput({ writeErr: () => {} })
      .action(() => {});
    cmd.parse(args, { from: "user" });
    return demoOptionsOf(cmd);
  };
  const quick = parse([]);
  assert.equal(quick.pretrainSteps, 1500);
  assert.equal(quick.dpoReplay, true);
  assert.equal(quick.sftSteps, 650);
  assert.equal(quick.sftLr, 2e-3);
  assert.equal(quick.dpoLr, 1e-4);
  assert.equal(quick.dpoRpoAlpha, 3);
  assert.equal(quick.dpoSteps, 120);
  assert.equal(quick.dpoOnPolicy, true);
  const full = parse(["--full"]);
  assert.equal(full.pretrainSteps, FULL_RECIPE.pretrainSteps);
  assert.equal(full.sftSteps, FULL_RECIPE.sftSteps);
  assert.equal(full.dpoSteps, 120);
  const mixed = parse(["--full", "--sft-steps", "300", "--no-dpo-on-policy", "--no-dpo-replay"]);
  assert.equal(mixed.pretrainSteps, FULL_RECIPE.pretrainSteps);
  assert.equal(mixed.sftSteps, 300, "an explicit flag wins over --full");
  assert.equal(mixed.dpoOnPolicy, false);
  assert.equal(mixed.dpoReplay, false);
  assert.throws(() => parse(["--pretrain-steps", "0"]), /positive integer/);
});
