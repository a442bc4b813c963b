/**
 * Constrained decoding: which tokens may come next so that the reply follows a grammar. The engine
 * asks a {@linkcode TokenConstraint} for a mask before each sampled token and sets the logits of
 * the tokens outside it to -Infinity, so at temperature 0 the reply is the model's most likely
 * one among the valid ones, deterministically.
 *
 * Masks come from walking a trie of the vocabulary's byte strings with the
 * {@linkcode JsonMatcher}: a subtree is dropped as soon as its prefix cannot extend the JSON, so
 * a token may span several JSON characters or end inside a UTF-8 character. Special tokens are
 * never part of JSON; the constraint allows them only where the reply's structure needs them
 * (`<tool_call>`, `</tool_call>`, the stop tokens once the value is complete).
 *
 * The budget: when few tokens are left, a token is allowed only if the JSON can still be closed
 * in the tokens after it (counting the shortest completion's bytes, each of which is a token of a
 * byte-level vocabulary), so a reply cut by `max_tokens` still parses.
 *
 * - {@linkcode jsonConstraint}: `response_format` `json_object` / `json_schema`.
 * - {@linkcode toolCallConstraint}: `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks
 *   naming offered tools, with schema-checked arguments for `strict` tools; for `tool_choice`
 *   `required` or a named function, the reply is nothing but calls.
 *
 * @module
 */

import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { compileSchema, JsonMatcher, type SchemaNode } from "./json_grammar.ts";

/** What the engine needs to constrain one generation. */
export interface TokenConstraint {
  /**
   * The tokens allowed next.
   *
   * @param budget Output tokens left, this one included.
   * @returns A mask over the vocabulary: 1 allowed, 0 not.
   */
  allowed(budget: number): Uint8Array;
  /**
   * Records the token that was emitted (sampled from the mask, or forced).
   *
   * @param id The token id.
   */
  accept(id: number): void;
}

/** A trie of the vocabulary's byte strings (ordinary tokens only). */
interface TrieNode {
  kids: Map<number, TrieNode>;
  ids: number[];
}

const tries = new WeakMap<Tokenizer, TrieNode>();

function vocabTrie(tok: Tokenizer): TrieNode {
  let root = tries.get(tok);
  if (root) return root;
  root = { kids: new Map(), ids: [] };
  for (let id = 0; id < tok.vocabSize; id++) {
    if (tok.isSpecial(id)) continue;
    const bytes = tok.tokenBytes(id);
    if (bytes.length === 0) continue;
    let n = root;
    for (const b of bytes) {
      let k = n.kids.get(b);
      if (!k) n.kids.set(b, k = { kids: new Map(), ids: [] });
      n = k;
    }
    n.ids.push(id);
  }
  tries.set(tok, root);
  return root;
}

/** Budgets up to this many tokens get the exact closing check (it costs a little per token). */
const TIGHT_BUDGET = 1024;

/**
 * Marks in `mask` every ordinary token that extends `state`, leaving room to finish the JSON in
 * `room` tokens after it (Infinity: no check).
 */
function maskJson(
  tok: Tokenizer,
  state: JsonMatcher,
  room: number,
  mask: Uint8Array,
): void {
  const counts = new Map<string, number>();
  // Tokens to finish: at most one per byte; when that bound is too loose, the finishing text's
  // own encoding (a valid continuation, so an upper bound too).
  const fits = (s: JsonMatcher): boolean => {
    if (s.finishBytes() <= room) return true;
    const text = s.finishText();
    if (text === null) return false;
    let n = counts.get(text);
    if (n === undefined) counts.set(text, n = tok.encode(text).length);
    return n + s.pendingBytes <= room;
  };
  const walk = (node: TrieNode, s: JsonMatcher) => {
    for (const [b, kid] of node.kids) {
      const next = s.advance(b);
      if (!next) continue;
      if (kid.ids.length > 0 && (room === Infinity || fits(next))) {
        for (const id of kid.ids) mask[id] = 1;
      }
      walk(kid, next);
    }
  };
  walk(vocabTrie(tok), state);
}

/** Feeds a token's bytes. */
function advanceToken(tok: Tokenizer, s: JsonMatcher, id: number): JsonMatcher | null {
  return s.advanceText(tok.tokenBytes(id));
}

/**
 * The constraint of `response_format` JSON modes: the reply is one JSON value of the grammar,
 * then a stop token.
 *
 * @param tok The tokenizer.
 * @param options `node`: the grammar; `stopIds`: tokens that end the reply.
 * @returns The constraint.
 * @example
 * ```ts ignore
 * const c = jsonConstraint(tok, { node: anyObjectNode(), stopIds: [tok.imEndId] });
 * ```
 */
export function jsonConstraint(
  tok: Tokenizer,
  options: { node: SchemaNode; stopIds: readonly number[] },
): TokenConstraint {
  let state: JsonMatcher | null = JsonMatcher.start(options.node);
  const V = tok.vocabSize;
  return {
    allowed(budget: number): Uint8Array {
      const mask = new Uint8Array(V);
      if (!state) return mask.fill(1); // unreachable: accept() only takes allowed tokens
      if (state.accepting) { for (const id of options.stopIds) mask[id] = 1; }
      if (!state.closed) {
        maskJson(tok, state, budget <= TIGHT_BUDGET ? budget - 1 : Infinity, mask);
      }
      return mask;
    },
    accept(id: number): void {
      if (state && !options.stopIds.includes(id)) state = advanceToken(tok, state, id);
    },
  };
}

/** A tool as the constraint sees it. */
export interface ConstrainedTool {
  /** The function name. */
  name: string;
  /** Its `parameters` schema, enforced when `strict`. */
  parameters?: unknown;
  /** Whether the arguments must follow `parameters`. */
  strict?: boolean;
}

/**
 * The grammar of one call's JSON: `{"name": <an offered tool>, "arguments": <its arguments>}`,
 * arguments following the tool's schema when it is strict, any object otherwise.
 *
 * @param tools The offered tools (at least one).
 * @returns The grammar.
 * @throws {Error} For a strict tool whose schema the matcher cannot follow.
 */
export function toolCallNode(tools: readonly ConstrainedTool[]): SchemaNode {
  return compileSchema({
    anyOf: tools.map((t) => ({
      type: "object",
      properties: {
        name: { const: t.name },
        arguments: t.strict && t.parameters ? t.parameters : { type: "object" },
      },
      required: ["name", "arguments"],
    })),
  });
}

/** Options of {@linkcode toolCallConstraint}. */
export interface ToolCallConstraintOptions {
  /** The tools a call may name. */
  tools: readonly ConstrainedTool[];
  /**
   * `calls`: the reply is only tool calls (`required`, a named function; the first
   * `<tool_call>` is forced by the caller); `auto`: free text, with each call constrained once
   * the model opens it.
   */
  mode: "calls" | "auto";
  /** More than one call (`parallel_tool_calls`, default true). */
  parallel: boolean;
  /** Tokens that end the reply. */
  stopIds: readonly number[];
  /**
   * The caller forced `<tool_call>` and then this text of the call's JSON (`""` for just the
   * marker, `{"name": "f", "arguments":` for a named function); undefined: nothing was forced.
   */
  opened?: string;
}

/**
 * The constraint for tool calls in the chat template's format: `<tool_call>` JSON `</tool_call>`,
 * calls separated by a newline.
 *
 * @param tok The tokenizer (with `<tool_call>` and `</tool_call>` special tokens).
 * @param options Tools, mode, parallel calls, stop tokens.
 * @returns The constraint.
 */
export function toolCallConstraint(
  tok: Tokenizer,
  options: ToolCallConstraintOptions,
): TokenConstraint {
  const open = tok.specialId("<tool_call>"), close = tok.specialId("</tool_call>");
  const node = toolCallNode(options.tools);
  const start = JsonMatcher.start(node);
  const minCall = start.finishBytes() + 2; // the JSON plus both markers
  const newline = tok.encode("\n");
  const V = tok.vocabSize;
  // phase: free (auto, outside calls), json (inside a call), closing (wants </tool_call>),
  // after (a call ended), sep (after the newline between calls)
  let phase: "free" | "json" | "closing" | "after" | "sep" = options.opened !== undefined
    ? "json"
    : options.mode === "auto"
    ? "free"
    : "after";
  let state: JsonMatcher | null = options.opened ? start.advanceText(options.opened) : start;
  if (!state) throw new Error(`the forced text ${options.opened} does not start a call`);
  let calls = 0;
  return {
    allowed(budget: number): Uint8Array {
      const mask = new Uint8Array(V);
      switch (phase) {
        case "free":
          return mask.fill(1);
        case "json":
          if (state!.accepting) mask[close] = 1;
          if (!state!.closed) {
            // Room for the rest of the JSON, the closing marker and a stop token.
            maskJson(tok, state!, budget <= TIGHT_BUDGET ? budget - 3 : Infinity, mask);
          }
          return mask;
        case "closing":
          mask[close] = 1;
          return mask;
        case "after":
        case "sep": {
          const more = calls === 0 || options.parallel;
          // A new call must fit whole: its markers, its JSON (one token per byte at worst), a stop.
          if (more && budget - 1 >= minCall) mask[open] = 1;
          if (phase === "after") {
            if (calls > 0) { for (const id of options.stopIds) mask[id] = 1; }
            if (calls > 0 && more && newline.length === 1 && budget - 2 >= minCall) {
              mask[newline[0]] = 1;
            }
            if (options.mode === "auto" && calls > 0) mask.fill(1);
          }
          return mask;
        }
      }
    },
    accept(id: number): void {
      switch (phase) {
        case "free":
        case "after":
        case "sep":
          if (id === open) {
            phase = "json";
            state = start;
          } else if (phase === "after" && newline.length === 1 && id === newline[0]) {
            phase = "sep";
          } else if (options.mode === "auto") phase = "free";
          return;
        case "json":
          if (id === close) {
            calls++;
            phase = "after";
            return;
          }
          state = advanceToken(tok, state!, id);
          if (state?.closed) phase = "closing";
          if (!state) phase = options.mode === "auto" ? "free" : "after";
          return;
        case "closing":
          calls++;
          phase = "after";
          return;
      }
    },
  };
}
