/**
 * On-policy DPO pairs: the rejected turn becomes the policy's own greedy reply unless that reply
 * already equals the chosen turn.
 *
 * @module
 */
import assert from "node:assert/strict";
import { resolveConfig } from "../model/config.ts";
import { DeepSeekV3 } from "../model/transformer.ts";
import { type ChatMessage, encodeChatPrompt, IM_END_TOKEN, trainBpe } from "../tokenizer/mod.ts";
import { generateTokens, replyText } from "../train/eval.ts";
import { onPolicyPairs, sameAssistantTurn } from "../train/policy_pairs.ts";
import { GPU_TEST, testDevice } from "./_util.ts";

const call = (name: string, args: string | Record<string, unknown>, id = "a"): ChatMessage => ({
  role: "assistant",
  content: null,
  tool_calls: [{ id, type: "function", function: { name, arguments: args } }],
});

Deno.test("sameAssistantTurn() compares text and tool calls by meaning", () => {
  const say = (content: string): ChatMessage => ({ role: "assistant", content });
  assert.ok(sameAssistantTurn(say(" Dalmor "), say("Dalmor")));
  assert.ok(!sameAssistantTurn(say("Dalmor"), say("Velmora")));
  assert.ok(
    sameAssistantTurn(
      call("f", '{"b": 1, "a": {"y": 2, "x": 3}}', "id1"),
      call("f", { a: { x: 3, y: 2 }, b: 1 }, "id2"),
    ),
    "key order, JSON text vs object and call ids do not matter",
  );
  assert.ok(!sameAssistantTurn(call("f", { city: "Havi" }), call("f", { city: "Zuru" })));
  assert.ok(!sameAssistantTurn(call("f", { x: 1 }), call("g", { x: 1 })));
  assert.ok(!sameAssistantTurn(call("f", { x: 1 }), say("")), "a call is not an empty reply");
});

Deno.test(
  "onPolicyPairs() swaps in the model's greedy reply as rejected, unless it equals chosen",
  GPU_TEST,
  async () => {
    const tok = trainBpe(["Dalmor is a city. Karo is 34. Hello there."], { vocabSize: 300 });
    const cfg = resolveConfig("tiny", { vocab_size: tok.vocabSize });
    const model = DeepSeekV3.create(await testDevice(), cfg, { seed: 5 });
    try {
      const user: ChatMessage = { role: "user", content: "Hello" };
      const [reply] = await generateTokens(model, [encodeChatPrompt(tok, [user])], {
        maxTokens: 6,
        stop: [tok.specialId(IM_END_TOKEN)],
      });
      const said = replyText(tok, reply).trim();
      const say = (content: string): ChatMessage => ({ role: "assistant", content });
      const agreeing = { chosen: [user, say(said)], rejected: [user, say("no")], flaw: "x" };
      const differing = {
        chosen: [user, say(said + " Dalmor")],
        rejected: [user, say("no")],
        flaw: "wrong_fact",
      };
      const { pairs, replaced } = await onPolicyPairs(model, [agreeing, differing], {
        tok,
        maxTokens: 6,
      });
      assert.equal(replaced, 1);
      assert.equal(pairs[0], agreeing, "a pair the model already answers as chosen is kept");
      assert.deepEqual(pairs[1], {
        chosen: differing.chosen,
        rejected: [user, say(said)],
        flaw: "on_policy",
      });
    } finally {
      model.arena.destroy();
    }
  },
);
