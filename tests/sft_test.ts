/**
 * SFT: the loss mask token by token on a rendered multi-turn conversation with a tool call,
 * packing (whole conversations, own segments, targets only on assistant tokens), the sampler's
 * exact resume, the record reader's file:line errors, and a packed batch's loss on the GPU
 * equal to one conversation per row.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Scope } from "../kernels/tensor.ts";
import { resolveConfig } from "../model/config.ts";
import { initParameters } from "../model/params.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { benchmarkText, toolSchemas } from "../data/mod.ts";
import { type ChatMessage, renderChat, trainBpe } from "../tokenizer/mod.ts";
import { JsonlError } from "../train/jsonl.ts";
import {
  type ChatExample,
  conversationCheck,
  evaluateChatLoss,
  packSequences,
  readConversations,
  SftSampler,
  SftTask,
  splitHeldOut,
  tokenizeConversations,
} from "../train/sft.ts";
import { assertClose, GPU_TEST, randint, testDevice } from "./_util.ts";

const tok = trainBpe([benchmarkText({ chars: 30_000 })], { vocabSize: 500 });

// ASCII only, so every token decodes to whole characters and maps onto the rendered text.
const conversation: ChatMessage[] = [
  { role: "system", content: "You are helpful." },
  { role: "user", content: "How old is Karo?" },
  { role: "assistant", content: "34" },
  { role: "user", content: "What is 17 + 25?" },
  {
    role: "assistant",
    content: null,
    tool_calls: [{
      id: "call_1",
      type: "function",
      function: { name: "calculator", arguments: '{"expression": "17 + 25"}' },
    }],
  },
  { role: "tool", tool_call_id: "call_1", name: "calculator", content: '{"result": 42}' },
  { role: "assistant", content: "17 + 25 = 42" },
];

Deno.test("the SFT mask covers exactly the assistant spans, token by token", () => {
  const tools = toolSchemas();
  const [ex] = tokenizeConversations(tok, [
    { messages: conversation, tools, file: "x.jsonl", line: 1 },
  ]).examples;
  // The assistant spans in the rendered text, found independently of the tokenizer: from after
  // each "<|im_start|>assistant\n" through its "<|im_end|>".
  const text = renderChat(conversation, { tools });
  const spans: [number, number][] = [];
  const header = "<|im_start|>assistant\n";
  for (let at = text.indexOf(header); at >= 0; at = text.indexOf(header, at + 1)) {
    const start = at + header.length;
    spans.push([start, text.indexOf("<|im_end|>", start) + "<|im_end|>".length]);
  }
  assert.equal(spans.length, 3);
  assert.equal(tok.decode(ex.ids), text);
  let pos = 0, inSpan = 0;
  for (let i = 0; i < ex.ids.length; i++) {
    const piece = tok.decode([ex.ids[i]]);
    const end = pos + piece.length;
    const inside = spans.some(([a, b]) => pos >= a && end <= b);
    const outside = spans.every(([a, b]) => end <= a || pos >= b);
    assert.ok(inside || outside, `token ${i} ${JSON.stringify(piece)} straddles a span edge`);
    assert.equal(ex.mask[i], inside ? 1 : 0, `token ${i} ${JSON.stringify(piece)} at ${pos}`);
    inSpan += inside ? 1 : 0;
    pos = end;
  }
  assert.equal(pos, text.length);
  assert.equal(
    tok.decode([...ex.ids].filter((_, i) => ex.mask[i])),
    '34<|im_end|><tool_call>{"name": "calculator", "arguments": {"expression": "17 + 25"}}' +
      "</tool_call><|im_end|>17 + 25 = 42<|im_end|>",
  );

  // Packed: a target exactly where the NEXT token is an assistant token, and it is that token.
  const b = packSequences([ex], { T: ex.ids.length + 5 });
  let targets = 0;
  for (let j = 0; j < b.T; j++) {
    if (j < ex.ids.length - 1) {
      assert.equal(b.tokens[j], ex.ids[j]);
      assert.equal(b.targets[j], ex.mask[j + 1] ? ex.ids[j + 1] : -1, `target at ${j}`);
    } else {
      assert.equal(b.targets[j], -1, `padding at ${j} has no target`);
    }
    if (b.targets[j] >= 0) targets++;
  }
  assert.equal(targets, inSpan);
  assert.equal(b.targetTokens, inSpan);
});

function fakeExample(len: number, k: number): ChatExample {
  const mask = new Uint8Array(len);
  mask.fill(1, Math.floor(len / 2));
  return { ids: randint(len, k, 100), mask, source: `ex${k}` };
}

Deno.test("packSequences() packs whole conversations first-fit, each in its own segment", () => {
  const exs = [fakeExample(9, 1), fakeExample(5, 2), fakeExample(8, 3), fakeExample(4, 4)];
  // positions 8, 4, 7, 3 into rows of 12: row 0 = ex0 + ex3? first fit: ex0 (8) row0, ex1 (4)
  // row0 (full), ex2 (7) row1, ex3 (3) row1.
  const b = packSequences(exs, { T: 12, maxRows: 2 });
  assert.equal(b.B, 2);
  assert.equal(b.count, 4);
  assert.deepEqual([...b.item.slice(0, 12)], [...Array(8).fill(0), ...Array(4).fill(1)]);
  assert.deepEqual([...b.item.slice(12)], [...Array(7).fill(2), ...Array(3).fill(3), -1, -1]);
  assert.deepEqual([...b.seg.slice(0, 12)], [...Array(8).fill(0), ...Array(4).fill(1)]);
  assert.deepEqual([...b.seg.slice(12)], [...Array(7).fill(0), ...Array(3).fill(1), 2, 2]);
  // one row only: packing stops at the first conversation that does not fit
  const one = packSequences(exs, { T: 12, rows: 1 });
  assert.equal(one.count, 2);
  assert.equal(one.B, 1);
  // too long: keeps its first T + 1 tokens
  const long = packSequences([fakeExample(30, 5)], { T: 12 });
  assert.deepEqual([...long.item], Array(12).fill(0));
});

Deno.test("SftSampler covers every conversation once per epoch and resumes exactly", () => {
  const exs = Array.from({ length: 23 }, (_, k) => fakeExample(3 + (k % 7), k));
  const s = new SftSampler(exs, { B: 2, T: 16, seed: 3 });
  const seen: number[] = [];
  const firstTokens = (b: { tokens: Int32Array }) => [...b.tokens];
  while (seen.reduce((a, c) => a + c, 0) < exs.length) {
    const before = s.state().cursor;
    const b = s.next();
    seen.push(b.count);
    assert.equal(s.state().cursor, before + b.count);
  }
  assert.equal(seen.reduce((a, c) => a + c, 0), exs.length);
  assert.equal(s.state().epoch, 0);
  const saved = s.state();
  const a1 = firstTokens(s.next()), a2 = firstTokens(s.next());
  const t = new SftSampler(exs, { B: 2, T: 16, seed: 3 });
  t.restore(saved);
  assert.deepEqual(firstTokens(t.next()), a1);
  assert.deepEqual(firstTokens(t.next()), a2);
});

Deno.test("readConversations() accepts conversations/messages and names file:line for bad lines", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/sft.jsonl`;
  const lines = [
    JSON.stringify({ conversations: conversation, tools: toolSchemas() }),
    JSON.stringify({
      messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }],
    }),
    JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
    JSON.stringify({ conversations: [{ role: "robot", content: "x" }] }),
    JSON.stringify({
      messages: [{
        role: "assistant",
        content: null,
        tool_calls: [{ function: { name: "f", arguments: 7 } }],
      }],
    }),
    "",
    "[1, 2]",
  ];
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  await assert.rejects(
    () => readConversations(path),
    (e: Error) =>
      e instanceof JsonlError &&
      e.message === `${path}:3: "messages" has no assistant message: nothing to train on`,
  );
  const bad: string[] = [];
  const r = await readConversations(path, { skipBad: true, onBad: (m) => bad.push(m) });
  assert.equal(r.conversations.length, 2);
  assert.equal(r.bad, 4);
  assert.deepEqual(bad.map((m) => m.split(": ")[0]), [
    `${path}:3`,
    `${path}:4`,
    `${path}:5`,
    `${path}:7`,
  ]);
  assert.match(bad[1], /conversations\[0\]\.role must be one of system, user, assistant, tool/);
  assert.match(bad[2], /tool_calls\[0\]\.function\.arguments must be a JSON string or an object/);
  assert.equal(r.conversations[1].line, 2);
  const { examples } = tokenizeConversations(tok, r.conversations);
  assert.equal(examples[1].source, `${path}:2`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("splitHeldOut() holds out every k-th example", () => {
  const { train, val } = splitHeldOut([...Array(40).keys()], 0.1);
  assert.deepEqual(val, [9, 19, 29, 39]);
  assert.equal(train.length, 36);
  assert.equal(splitHeldOut([1, 2], 0).val.length, 0);
});

Deno.test(
  "packed conversations get the same masked loss as one conversation per row",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny");
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 9));
    const exs = Array.from({ length: 5 }, (_, k) => {
      const e = fakeExample(6 + 3 * k, 40 + k);
      e.ids = e.ids.map((v) => v % cfg.vocab_size);
      return e;
    });
    const scope = new Scope();
    const packed = await evaluateChatLoss(model, exs, { B: 2, T: 40 });
    assert.equal(packed.tokens, exs.reduce((a, e) => a + e.mask.reduce((x, y) => x + y, 0), 0));
    let sum = 0;
    for (const e of exs) {
      const one = await evaluateChatLoss(model, [e], { B: 1, T: e.ids.length - 1 });
      sum += one.loss * one.tokens;
    }
    assertClose([packed.loss], [sum / packed.tokens], { atol: 2e-5, label: "mean assistant CE" });
    scope.dispose();
    model.arena.destroy();
  },
);

Deno.test(
  "SftTask without MTP trains the main CE alone and gives the MTP block zero loads",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny");
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 10));
    const exs = Array.from({ length: 6 }, (_, k) => {
      const e = fakeExample(8 + k, 60 + k);
      e.ids = e.ids.map((v) => v % cfg.vocab_size);
      return e;
    });
    const scope = new Scope();
    const full = new SftTask(exs, [], { B: 2, T: 32, seed: 1 }).forward(model);
    const lean = new SftTask(exs, [], { B: 2, T: 32, seed: 1, mtp: false }).forward(model);
    assert.deepEqual(Object.keys(full.terms).sort(), ["balance", "ce", "mtp"]);
    assert.deepEqual(Object.keys(lean.terms), ["ce"]);
    assert.equal(lean.tokens, full.tokens);
    // Same batch: the main CE agrees; the MTP block, not run, reports no routed tokens.
    assertClose(await lean.loss.readF32(), await full.terms.ce.readF32(), { atol: 1e-6 });
    assert.equal(lean.loads.length, model.moeLayers().length);
    assert.deepEqual([...await lean.loads.at(-1)!.read()], Array(cfg.n_routed_experts).fill(0));
    scope.dispose();
    model.arena.destroy();
  },
);

Deno.test(
  "SftTask with replay adds weight x the replayed text's CE and resumes both samplers exactly",
  GPU_TEST,
  async () => {
    const device = await testDevice();
    const cfg = resolveConfig("tiny");
    const model = new DeepSeekV3(device, cfg);
    model.load(initParameters(cfg, 11));
    const exs = Array.from({ length: 6 }, (_, k) => {
      const e = fakeExample(8 + k, 70 + k);
      e.ids = e.ids.map((v) => v % cfg.vocab_size);
      return e;
    });
    const text = randint(400, 5, cfg.vocab_size);
    const opts = { B: 2, T: 32, seed: 1, mtp: false };
    const replay = { tokens: text, B: 2, T: 16, weight: 0.5 };
    const scope = new Scope();
    const plain = new SftTask(exs, [], opts).forward(model);
    const task = new SftTask(exs, [], { ...opts, replay });
    const mixed = task.forward(model);
    assert.deepEqual(Object.keys(mixed.terms).sort(), ["ce", "replay_ce"]);
    assert.equal(mixed.tokens, plain.tokens + 2 * 16, "replayed targets count as tokens");
    const ce = (await mixed.terms.ce.readF32())[0];
    const rce = (await mixed.terms.replay_ce.readF32())[0];
    assertClose([ce], await plain.loss.readF32(), { atol: 1e-6, label: "same conversations" });
    assert.ok(rce > 1, `replayed CE of an untrained model ${rce}`);
    assertClose(await mixed.loss.readF32(), [ce + 0.5 * rce], { atol: 1e-5, label: "loss" });

    // Resume: a task restored from the state continues with the same batches.
    const saved = JSON.parse(JSON.stringify(task.state()));
    const next = (await task.forward(model).loss.readF32())[0];
    const resumed = new SftTask(exs, [], { ...opts, replay });
    resumed.restore(saved);
    assertClose(await resumed.forward(model).loss.readF32(), [next], { atol: 0 });
    assert.throws(() => new SftTask(exs, [], opts).restore(saved), /with replay/);
    assert.throws(
      () => new SftTask(exs, [], { ...opts, replay }).restore({ epoch: 0, cursor: 0 }),
      /without replay/,
    );
    scope.dispose();
    model.arena.destroy();
  },
);

Deno.test("SFT records with empty turns, null content, image-only turns or malformed tools are named", () => {
  const user = { role: "user", content: "hi" }, reply = { role: "assistant", content: "hello" };
  const cases: [unknown, RegExp][] = [
    [{ messages: [user, reply], tools: [{}] }, /^tools\[0\]\.function must be an object/],
    [{ messages: [user, reply], tools: [{ function: 1 }] }, /^tools\[0\]\.function must be/],
    [
      { messages: [user, reply], tools: [{ type: "function", function: { name: "" } }] },
      /^tools\[0\]\.function\.name must be a non-empty string/,
    ],
    [{ messages: [{ role: "user", content: "" }, reply] }, /^messages\[0\]\.content is empty/],
    [{ messages: [{ role: "user", content: null }, reply] }, /^messages\[0\]\.content is missing/],
    [
      { messages: [user, { role: "assistant", content: null }] },
      /^messages\[1\]\.content is missing and it has no tool_calls: an empty reply/,
    ],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }, reply] },
      /^messages\[0\]\.content\[0\] must be a text part .*got a "image_url" part/,
    ],
  ];
  for (const [record, re] of cases) {
    const reason = conversationCheck(record);
    assert.ok(reason !== undefined && re.test(reason), `${JSON.stringify(record)}: ${reason}`);
  }
  // Still accepted: text parts, a tool-call-only reply, an empty tool result, a full tool spec.
  assert.equal(
    conversationCheck({
      messages: [
        { role: "user", content: [{ type: "text", text: "weather?" }] },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ function: { name: "w", arguments: {} } }],
        },
        { role: "tool", content: "" },
        reply,
      ],
      tools: [{ type: "function", function: { name: "w", parameters: { type: "object" } } }],
    }),
    undefined,
  );
});
