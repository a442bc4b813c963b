/**
 * The examples, run as a user runs them: `cli.ts serve` on a small untrained model
 * (`_tiny_model.ts`) in a child process, then each `examples/*.ts` against it with the
 * environment variables the README gives. Each must exit 0 and print what it did.
 */
import assert from "node:assert/strict";
import { GPU_TEST } from "./_util.ts";
import { writeTinyModel } from "./_tiny_model.ts";

const EXAMPLES: [string, RegExp[]][] = [
  ["api_basics", [/=== 4\. JSON output ===/, /parsed: a JSON object/]],
  ["function_calling", [/call (get_weather|calculator)\(\{/, /call\(s\) in one reply/]],
  ["multi_agent", [/handoff call: transfer_to_/, /last agent: (Weather|Math) agent/]],
  ["knowledge_base", [/graph: \d+ entities/, /vectors of \d+ dimensions/, /sources:\n\s+\[1\]/]],
  ["chat_ui", [/\[DONE\] seen/, /title: /]],
];

async function startServer(model: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", "serve", "--model", model, "--port", "0", "--quiet"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  const deadline = Date.now() + 120_000;
  while (!/OpenAI base URL: (\S+)/.test(banner)) {
    const { value, done } = await reader.read();
    if (done || Date.now() > deadline) throw new Error(`serve did not start:\n${banner}`);
    banner += value;
  }
  const url = /OpenAI base URL: (\S+)/.exec(banner)![1];
  // Keep draining stderr so the child never blocks on a full pipe.
  const drain = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return {
    url,
    stop: async () => {
      child.kill("SIGINT");
      await child.status;
      await drain.catch(() => {});
    },
  };
}

Deno.test("every example runs against cli.ts serve and prints what it did", GPU_TEST, async (t) => {
  const root = await Deno.makeTempDir();
  const server = await startServer(await writeTinyModel(root));
  try {
    for (const [name, patterns] of EXAMPLES) {
      await t.step(`examples/${name}.ts`, async () => {
        const t0 = performance.now();
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", `examples/${name}.ts`],
          env: { OPENAI_BASE_URL: server.url, OPENAI_API_KEY: "not-needed", NO_COLOR: "1" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stdout = new TextDecoder().decode(out.stdout);
        const stderr = new TextDecoder().decode(out.stderr);
        console.log(`examples/${name}.ts: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        assert.equal(out.code, 0, `${name} failed:\n${stdout}\n${stderr}`);
        for (const p of patterns) assert.match(stdout, p, `${name} output lacks ${p}:\n${stdout}`);
        assert.match(stdout, new RegExp(`${name}: done`));
      });
    }
  } finally {
    await server.stop();
    await Deno.remove(root, { recursive: true });
  }
});
