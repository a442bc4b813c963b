import assert from "node:assert/strict";
import { Command, CommanderError } from "commander";
import { chatCommand, demoTools, runChatRepl } from "../cli/chat.ts";
import { generateCommand } from "../cli/generate.ts";
import { serveCommand, startServe } from "../cli/serve.ts";
import {
  BigramModel,
  demoResponder,
  ScriptedModel,
  TEST_TEXTS,
  testTokenizer,
} from "../serve/_test_model.ts";
import { type ChatBackend, ChatSession, serviceBackend } from "../serve/chat_session.ts";
import { CompletionService } from "../serve/completions.ts";
import { runGenerate, type SamplingSettings } from "../serve/generate.ts";
import { httpBackend } from "../serve/http_backend.ts";
import { Engine } from "../serve/engine.ts";
import type { LanguageModel } from "../serve/model_api.ts";
import { generateWorld } from "../data/mod.ts";
import { saveTokenizer } from "../tokenizer/io.ts";

const tok = testTokenizer();

/** A program holding one subcommand that throws instead of exiting, with captured output. */
function program(sub: Command): { run: (...args: string[]) => Promise<void>; out: () => string } {
  let out = "";
  const capture = { writeOut: (s: string) => (out += s), writeErr: (s: string) => (out += s) };
  const p = new Command("cli").exitOverride().configureOutput(capture);
  sub.exitOverride().configureOutput(capture);
  p.addCommand(sub);
  return {
    run: (...args) => p.parseAsync(["deno", "cli", ...args]).then(() => {}),
    out: () => out,
  };
}

function service(
  model: LanguageModel = new ScriptedModel(tok, demoResponder, { maxSeqLen: 2048 }),
) {
  return new CompletionService(new Engine(model, tok), tok, { modelId: "cli-test" });
}

const FLAGS: SamplingSettings = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  maxTokens: 32,
  stop: [],
};

async function* lines(...xs: string[]): AsyncGenerator<string> {
  for (const x of xs) yield x;
}

Deno.test("serve, chat and generate --help list their flags with defaults", async () => {
  for (
    const [cmd, flags] of [
      [serveCommand(), [
        "--model",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--api-key",
        "--no-demo-tools",
      ]],
      [chatCommand(), [
        "--model",
        "--url",
        "--system",
        "--tools",
        "--show-reasoning",
        "--temperature",
        "0.7",
      ]],
      [generateCommand(), ["--prompt", "--chat", "--top-k", "--top-p", "--seed", "--stop", "128"]],
    ] as const
  ) {
    const p = program(cmd);
    await assert.rejects(p.run(cmd.name(), "--help"), (e: CommanderError) => e.exitCode === 0);
    for (const f of flags) assert.ok(p.out().includes(f), `${cmd.name()} --help lacks ${f}`);
  }
});

Deno.test("a flag of the wrong type is refused with the flag's name", async () => {
  const p = program(serveCommand());
  await assert.rejects(p.run("serve", "--model", "x", "--port", "eighty"), CommanderError);
  assert.match(p.out(), /--port expects an integer from 0 to 65535, got 'eighty'/);
  const g = program(generateCommand());
  await assert.rejects(g.run("generate", "--model", "x", "--temperature", "3"), CommanderError);
  assert.match(g.out(), /--temperature expects a number from 0 to 2/);
  const u = program(chatCommand());
  await assert.rejects(u.run("chat", "--model", "x", "--bogus"), CommanderError);
  assert.match(u.out(), /unknown option '--bogus'/);
});

Deno.test("serve, chat and generate say loading a model waits for the GPU decoder", async () => {
  const dir = await Deno.makeTempDir({ prefix: "serve_cli_" });
  try {
    await saveTokenizer(tok, dir);
    for (
      const args of [["serve", "--model", dir], ["chat", "--model", dir], [
        "generate",
        "--model",
        dir,
        "--prompt",
        "hi",
      ]]
    ) {
      const cmd = { serve: serveCommand, chat: chatCommand, generate: generateCommand }[
        args[0] as "serve"
      ]();
      await assert.rejects(
        program(cmd).run(...args),
        /config\.json: missing/,
      );
    }
    await assert.rejects(
      program(serveCommand()).run("serve", "--model", `${dir}/missing`),
      /--model .*missing: no such directory/,
    );
    // --tokenizer points elsewhere than --model.
    const modelDir = await Deno.makeTempDir({ dir, prefix: "model_" });
    await assert.rejects(
      program(serveCommand()).run("serve", "--model", modelDir, "--tokenizer", dir),
      /config\.json: missing/,
    );
    // Without --tokenizer the model directory's ancestors are searched; none has one here.
    const bare = await Deno.makeTempDir();
    await assert.rejects(
      program(serveCommand()).run("serve", "--model", bare),
      /tokenizer\.json/,
    );
    await Deno.remove(bare, { recursive: true });
    await assert.rejects(
      program(chatCommand()).run("chat"),
      /exactly one of --model <dir> or --url/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startServe() serves a model and reports its URLs", async () => {
  const log: string[] = [];
  const server = startServe({
    model: new ScriptedModel(tok, demoResponder),
    tokenizer: tok,
    port: 0,
    write: (l) => log.push(l),
    tools: demoTools(),
  });
  try {
    const health = await (await fetch(`${server.url}/health`)).json();
    assert.equal(health.status, "ok");
    assert.match(log.join("\n"), /web chat:\s+http:\/\/127\.0\.0\.1:\d+\//);
    assert.match(log.join("\n"), /OpenAI base URL: http:\/\/127\.0\.0\.1:\d+\/v1/);
    const tools = await (await fetch(`${server.url}/api/tools`)).json();
    assert.equal(tools.tools.length, 2);
  } finally {
    await server.shutdown();
  }
  const open: string[] = [];
  const wide = startServe({
    model: new ScriptedModel(tok, demoResponder),
    tokenizer: tok,
    host: "0.0.0.0",
    port: 0,
    write: (l) => open.push(l),
  });
  await wide.shutdown();
  assert.match(open.join("\n"), /warning: listening on 0\.0\.0\.0 without --api-key/);
});

Deno.test("a taken port is reported with the --port flag", async () => {
  const first = startServe({
    model: new ScriptedModel(tok, demoResponder),
    tokenizer: tok,
    port: 0,
    write: () => {},
  });
  try {
    assert.throws(
      () =>
        startServe({
          model: new ScriptedModel(tok, demoResponder),
          tokenizer: tok,
          port: first.port,
          write: () => {},
        }),
      /--port \d+: the port is in use/,
    );
  } finally {
    await first.shutdown();
  }
});

Deno.test("the chat REPL streams replies and handles /reset, /system and /exit", async () => {
  const seen: string[] = [];
  const model = new ScriptedModel(tok, (p) => {
    seen.push(p);
    const users = p.split("<|im_start|>user").length - 1;
    return `turns=${users} system=${p.includes("<|im_start|>system\nBe terse.")}`;
  });
  let out = "";
  await runChatRepl({
    backend: serviceBackend(service(model)),
    input: lines(
      "hello",
      "again",
      "/system Be terse.",
      "third",
      "/reset",
      "fresh",
      "/nope",
      "/exit",
      "never",
    ),
    write: (t) => {
      out += t;
    },
    temperature: 0,
  });
  assert.match(out, /^Chatting with cli-test\./);
  assert.match(out, /> turns=1 system=false\n/);
  assert.match(out, /> turns=2 system=false\n/);
  assert.match(out, /\(system prompt set\)/);
  assert.match(out, /> turns=3 system=true\n/);
  assert.match(out, /\(conversation cleared\)/);
  assert.match(out, /> turns=1 system=true\n/);
  assert.match(out, /unknown command \/nope/);
  assert.equal(seen.length, 4, "nothing after /exit may run");
  // The history holds the assistant's earlier replies.
  assert.ok(seen[1].includes("<|im_start|>assistant\nturns=1 system=false<|im_end|>"));
});

/** The last user message of a ChatML prompt. */
function lastUser(prompt: string): string {
  const start = prompt.lastIndexOf("<|im_start|>user\n") + "<|im_start|>user\n".length;
  return prompt.slice(start, prompt.indexOf("<|im_end|>", start));
}

/** Replies with a think block (markup in it, to check it is printed as text), then the answer. */
function thinkingReply(prompt: string): string {
  const user = lastUser(prompt);
  return `<think>\nLet me think about <b>${user}</b>.\nStill thinking.\n</think>\n\nAnswer: ${user}`;
}

Deno.test("the chat REPL folds reasoning, /think shows it, and the history drops it", async () => {
  const seen: string[] = [];
  const model = new ScriptedModel(tok, (p) => {
    seen.push(p);
    return thinkingReply(p);
  });
  let out = "";
  await runChatRepl({
    backend: serviceBackend(service(model)),
    input: lines("hello", "/think", "again", "/think off", "third", "/think maybe"),
    write: (t) => {
      out += t;
    },
    temperature: 0,
    showPrompt: false,
  });
  assert.match(out, /\/think \(show or fold reasoning\)/);
  // Folded: one plain summary line, then the answer; the reasoning's text is not printed.
  const folded = /\n\[thought for (\d+) tokens\]\nAnswer: hello\n/.exec(out);
  assert.ok(folded, out);
  assert.ok(Number(folded[1]) > 3, "one count per streamed piece");
  assert.ok(!out.includes("about <b>hello</b>"), out);
  // Shown: the text between [reasoning] and the summary, as it came (markup stays text).
  assert.match(out, /\(reasoning shown\)\n/);
  assert.match(
    out,
    /\[reasoning\]\nLet me think about <b>again<\/b>\.\nStill thinking\.\n\[thought for \d+ tokens\]\nAnswer: again\n/,
  );
  assert.match(out, /\(reasoning folded\)\n\[thought for \d+ tokens\]\nAnswer: third\n/);
  assert.match(out, /usage: \/think \[on\|off\]/);
  // DeepSeek-R1's convention: earlier answers go back to the model, their reasoning does not.
  assert.equal(seen.length, 3);
  assert.ok(seen[2].includes("<|im_start|>assistant\nAnswer: hello<|im_end|>"), seen[2]);
  assert.ok(seen[2].includes("<|im_start|>assistant\nAnswer: again<|im_end|>"), seen[2]);
  assert.ok(!seen[2].includes("Let me think") && !seen[2].includes("<think>"), seen[2]);
});

Deno.test("on a terminal the folded reasoning counts up in place, dimmed, as it streams", async () => {
  const model = new ScriptedModel(tok, thinkingReply);
  // The escapes made visible: ESC [2m dims, ESC [22m undims, \r ESC [2K clears the line.
  const visible = (t: string) =>
    t.replaceAll("\r\x1b[2K", "<CLR>").replaceAll("\x1b[2m", "<DIM>").replaceAll(
      "\x1b[22m",
      "</DIM>",
    );
  for (const showReasoning of [false, true]) {
    const writes: string[] = [];
    await runChatRepl({
      backend: serviceBackend(service(model)),
      input: lines("hello"),
      write: (t) => void writes.push(visible(t)),
      temperature: 0,
      showPrompt: false,
      ansi: true,
      showReasoning,
    });
    const out = writes.join("");
    assert.ok(!out.includes("\x1b"), "every escape is one of the three");
    assert.ok(out.endsWith("</DIM>\nAnswer: hello\n"), out);
    if (!showReasoning) {
      // One rewritten line per piece: 1 token, 2 tokens, ... n tokens, then the summary.
      const n = Number(/<CLR><DIM>▸ thought for (\d+) tokens<\/DIM>\n/.exec(out)?.[1]);
      const counts = writes.flatMap((w) => {
        const m = /^<CLR><DIM>▸ thinking… (\d+) tokens?<\/DIM>$/.exec(w);
        return m ? [Number(m[1])] : [];
      });
      assert.ok(n > 3, out);
      assert.deepEqual(counts, Array.from({ length: n }, (_, i) => i + 1));
      assert.ok(!out.includes("Let me think"), out);
    } else {
      assert.match(out, /<DIM>▾ thinking<\/DIM>\n/);
      assert.match(out, /\n<DIM>▴ thought for \d+ tokens<\/DIM>\nAnswer: hello\n$/);
      const pieces = writes.filter((w) => w.startsWith("<DIM>") && !/think|thought/.test(w));
      assert.ok(pieces.length > 3, "the reasoning streams piece by piece");
      assert.equal(
        pieces.map((w) => w.slice("<DIM>".length, -"</DIM>".length)).join(""),
        "Let me think about <b>hello</b>.\nStill thinking.",
      );
    }
  }
});

Deno.test("a ChatSession streams events, runs tool rounds and keeps no reasoning in its history", async () => {
  const tools = demoTools();
  const model = new ScriptedModel(tok, (p) => {
    const r = demoResponder(p);
    return r.startsWith("<tool_call>") ? `<think>\nI need the weather.\n</think>\n\n${r}` : r;
  }, { maxSeqLen: 2048 });
  const session = new ChatSession({
    backend: serviceBackend(service(model)),
    tools,
    temperature: 0,
  });
  const events = [];
  for await (const e of session.send("What is the weather in Karo?")) events.push(e);
  const kinds = events.map((e) => e.type).filter((k, i, a) => k !== a[i - 1]);
  assert.deepEqual(kinds, ["reasoning", "reply", "tool_result", "content", "reply"]);
  const reasoning = events.flatMap((e) => e.type === "reasoning" ? [e.text] : []).join("");
  assert.equal(reasoning, "I need the weather.");
  const result = await tools.run("get_weather", '{"city": "Karo"}');
  const replies = events.filter((e) => e.type === "reply");
  assert.equal(replies[0].content, "");
  assert.equal(replies[0].finishReason, "tool_calls");
  assert.deepEqual(replies[0].toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [
    ["get_weather", { city: "Karo" }],
  ]);
  assert.equal(replies[1].content, `The tool says: ${result}`);
  assert.deepEqual(session.messages.map((m) => m.role), ["user", "assistant", "tool", "assistant"]);
  assert.ok(session.messages.every((m) => !("reasoning_content" in m)));
  assert.equal(session.messages[1].content, null);
  assert.equal(session.messages[2].content, result);
  session.reset();
  assert.equal(session.messages.length, 0);

  // A message whose reply is stopped with an error (as the HTTP backend's fetch throws) leaves
  // the history as it was.
  const throwing: ChatBackend = {
    modelId: "throws-when-stopped",
    async *chat(_req, signal) {
      const delta = { content: "partial" };
      yield { choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] } as never;
      signal?.throwIfAborted();
    },
  };
  const stopped = new ChatSession({ backend: throwing });
  const abort = new AbortController();
  await assert.rejects(async () => {
    for await (const e of stopped.send("go on", abort.signal)) {
      if (e.type === "content") abort.abort();
    }
  });
  assert.equal(stopped.messages.length, 0);
});

Deno.test("the chat REPL runs tool calls and continues with the results", async () => {
  const tools = demoTools();
  const city = generateWorld().cities[0].name.en;
  let out = "";
  await runChatRepl({
    backend: serviceBackend(service()),
    input: lines(`What is the weather in ${city}?`),
    write: (t) => {
      out += t;
    },
    tools,
    showPrompt: false,
  });
  const result = await tools.run("get_weather", JSON.stringify({ city }));
  assert.ok(out.includes(`[tool call] get_weather {"city":"${city}"}`), out);
  assert.ok(out.includes(`[tool result] ${result}`), out);
  assert.ok(out.includes(`The tool says: ${result}`), out);
});

Deno.test("the chat REPL talks to a running server over HTTP", async () => {
  const server = startServe({
    model: new ScriptedModel(
      tok,
      (p) => lastUser(p).startsWith("think") ? thinkingReply(p) : demoResponder(p),
    ),
    tokenizer: tok,
    port: 0,
    apiKey: "k",
    write: () => {},
  });
  try {
    await assert.rejects(httpBackend(server.url, { apiKey: "wrong" }), /Incorrect API key/);
    const backend = await httpBackend(server.url + "/v1/", { apiKey: "k" });
    assert.equal(backend.modelId, "scripted-test-model");
    let out = "";
    await runChatRepl({
      backend,
      input: lines("over the wire 你好", "think over the wire"),
      write: (t) => {
        out += t;
      },
      showReasoning: true,
    });
    assert.ok(out.includes("You said: over the wire 你好\n"), out);
    assert.match(
      out,
      /\[reasoning\]\nLet me think about <b>think over the wire<\/b>\.\nStill thinking\.\n\[thought for \d+ tokens\]\nAnswer: think over the wire\n/,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("runGenerate() streams a completion; the same seed repeats it; stop strings cut it", async () => {
  const svc = service(new BigramModel(tok, TEST_TEXTS));
  const run = async (over: Partial<SamplingSettings>) => {
    const pieces: string[] = [];
    const r = await runGenerate(svc, {
      ...FLAGS,
      ...over,
      prompt: "The",
      write: (t) => void pieces.push(t),
    });
    assert.equal(pieces.join(""), r.text);
    return r;
  };
  const a = await run({ temperature: 1, seed: 5, maxTokens: 20 });
  const b = await run({ temperature: 1, seed: 5, maxTokens: 20 });
  assert.equal(a.text, b.text);
  assert.ok(a.usage.completion_tokens <= 20 && a.usage.completion_tokens > 0);
  const greedy = await run({});
  const cut = greedy.text.indexOf(" ", 2);
  if (cut > 0) {
    const stop = greedy.text.slice(cut, cut + 2);
    const stopped = await run({ stop: [stop] });
    assert.equal(stopped.text, greedy.text.slice(0, greedy.text.indexOf(stop)));
    assert.equal(stopped.finishReason, "stop");
  }
  const chat = await runGenerate(service(), {
    ...FLAGS,
    prompt: "hi there",
    chat: true,
    write: () => {},
  });
  assert.equal(chat.text, "You said: hi there");
});
