import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { generateWorld, runTool, toolSchemas } from "../data/mod.ts";
import { demoResponder, ScriptedModel, testTokenizer } from "../serve/_test_model.ts";
import { createServer } from "../serve/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();
const SKIP = `skipped: ${CHROMIUM} is missing (apt-get install -y chromium); CI installs it`;
if (!hasChromium) console.warn(`serve_web_test: ${SKIP}`);

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

Deno.test({
  name: "the web page streams a reply, folds reasoning, shows tool calls and stops on request" +
    (hasChromium ? "" : ` (${SKIP})`),
  ignore: !hasChromium,
  // Playwright keeps a pipe to the browser process open between steps.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const tok = testTokenizer();
    const world = generateWorld();
    const city = world.cities[0].name.en;
    const prompts: string[] = [];
    const THOUGHT = "Weighing <b>bold</b> & <i>options</i>\u2026\n" + "step ".repeat(30).trim();
    const reply = (p: string) => {
      prompts.push(p);
      const last = p.slice(p.lastIndexOf("<|im_start|>user\n"));
      if (last.includes("long please")) return "and on ".repeat(300);
      if (last.includes("think first")) return `<think>\n${THOUGHT}\n</think>\n\nDecided.`;
      return demoResponder(p);
    };
    const model = new ScriptedModel(tok, reply, { stepDelayMs: 4, maxSeqLen: 4096 });
    const server = createServer({
      model,
      tokenizer: tok,
      port: 0,
      modelId: "mini-web",
      tools: { schemas: toolSchemas(), run: (name, args) => runTool(world, name, args) },
    });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ARGS,
      timeout: 30_000,
    });
    try {
      // bypassCSP: the page forbids eval, which waitForFunction with a string needs.
      const page = await browser.newPage({
        viewport: { width: 1200, height: 800 },
        bypassCSP: true,
      });
      page.setDefaultTimeout(10_000);
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      const offsite: string[] = [];
      page.on("request", (r) => {
        if (!r.url().startsWith(server.url)) offsite.push(r.url());
      });
      await page.goto(server.url + "/");
      await page.waitForSelector("#status.ok");
      assert.equal(await page.textContent("#model-name"), "mini-web");

      // Browser-side code is passed as strings: this file is type-checked without the DOM lib.
      // Count how often the reply's text changes while it streams in.
      await page.evaluate(`window.updates = 0;
        new MutationObserver(() => window.updates++).observe(document.getElementById("log"),
          { subtree: true, characterData: true, childList: true });`);
      await page.fill("#input", "Hello from the browser");
      await page.press("#input", "Enter");
      const first = page.locator(".msg.assistant .content").first();
      await page.waitForFunction(
        `document.querySelector(".msg.assistant .meta") && !document.querySelector(".msg.streaming")`,
      );
      assert.equal(await first.textContent(), "You said: Hello from the browser");
      const updates = await page.evaluate<number>("window.updates");
      assert.ok(updates > 5, `the reply arrived in ${updates} updates, not streamed`);

      // A tool call: shown as a block with name and arguments, then its result and the answer.
      await page.fill("#input", `What is the weather in ${city}?`);
      await page.press("#input", "Enter");
      await page.waitForFunction(`document.querySelectorAll(".msg.assistant .meta").length === 3`);
      assert.equal(await page.textContent(".tool-call .tool-name"), "get_weather");
      assert.deepEqual(JSON.parse((await page.textContent(".tool-call .tool-args"))!), { city });
      const result = runTool(world, "get_weather", { city });
      assert.deepEqual(
        JSON.parse((await page.textContent(".tool-call .tool-result-text"))!),
        JSON.parse(result),
      );
      const answer = page.locator(".msg.assistant .content").last();
      assert.equal(await answer.textContent(), `The tool says: ${result}`);

      // Reasoning: streamed into a folded "Thought" <details> above the answer, as text.
      await page.evaluate(`window.thinking = [];
        new MutationObserver(() => {
          var r = document.querySelector(".msg.streaming details.reasoning .reasoning-text");
          var c = document.querySelector(".msg.streaming .content");
          if (r) window.thinking.push({ len: r.textContent.length, answer: c.textContent,
            open: r.parentElement.open, summary: r.parentElement.querySelector("summary").textContent });
        }).observe(document.getElementById("log"), { subtree: true, characterData: true, childList: true });`);
      await page.fill("#input", "think first, then answer");
      await page.press("#input", "Enter");
      await page.waitForFunction(`document.querySelectorAll(".msg.assistant .meta").length === 4`);
      const thinking = await page.evaluate<
        { len: number; answer: string; open: boolean; summary: string }[]
      >("window.thinking");
      const before = thinking.filter((t) => t.answer === "");
      assert.ok(
        new Set(before.map((t) => t.len)).size > 5,
        `the reasoning arrived in ${before.length} updates before the answer, not streamed`,
      );
      assert.ok(before.every((t) => !t.open && t.summary === "Thinking\u2026"));
      const bubble = page.locator(".msg.assistant").last();
      const details = bubble.locator("details.reasoning");
      assert.equal(await details.locator("summary").textContent(), "Thought");
      assert.equal(await details.getAttribute("open"), null, "folded by default");
      assert.equal(await bubble.locator(".reasoning-text").textContent(), THOUGHT);
      assert.equal(await bubble.locator(".reasoning-text b, .reasoning-text i").count(), 0);
      assert.equal(await bubble.locator(".reasoning-text").isVisible(), false);
      assert.equal(await bubble.locator("details.reasoning + .content").textContent(), "Decided.");
      await details.locator("summary").click();
      assert.equal(await bubble.locator(".reasoning-text").isVisible(), true);

      const shot = Deno.env.get("SERVE_WEB_SCREENSHOT");
      if (shot) await page.screenshot({ path: shot, fullPage: false });

      // Stop: a long reply is cut short and its sequence freed.
      await page.fill("#input", "long please");
      await page.press("#input", "Enter");
      await page.waitForSelector("#stop:not([hidden])");
      await page.waitForFunction(
        `(document.querySelector(".msg.streaming .content")?.textContent ?? "").length > 20`,
      );
      await page.click("#stop");
      await page.waitForSelector("#send:not([hidden])");
      // The next turn sent the earlier answer back, not its reasoning (DeepSeek-R1's convention).
      const next = prompts.findLast((p) => p.includes("long please"))!;
      assert.ok(next.includes("<|im_start|>assistant\nDecided.<|im_end|>"), next);
      assert.ok(!next.includes("Weighing") && !next.includes("<think>"), next);
      const end = Date.now() + 5000;
      while (model.liveSequences > 0 || server.engine.stats().active > 0) {
        assert.ok(Date.now() < end, "the stopped generation was not released");
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(server.engine.stats().cancelled >= 1);
      assert.deepEqual(errors, []);
      assert.deepEqual(offsite, []);
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});
