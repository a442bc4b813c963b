/**
 * A byte-level matcher for JSON, optionally restricted by a JSON Schema: the grammar behind
 * constrained decoding (`response_format`, strict tools, required tool calls).
 *
 * {@linkcode compileSchema} turns a schema into a small grammar ({@linkcode SchemaNode});
 * {@linkcode JsonMatcher} walks it one byte at a time. A matcher state is immutable: `advance`
 * returns a new state, or null when the byte cannot extend a valid prefix, so a decoder can try
 * every token of the vocabulary from the same state (a token's bytes may span several JSON
 * characters, or half of a UTF-8 character) without copying anything. `finishBytes` is the length
 * of the shortest text that completes the value: the decoder uses it to close the JSON before the
 * token budget runs out.
 *
 * Schema subset (what OpenAI's strict mode accepts, and a little more): `type` (one or a list),
 * `properties` with `required`, `additionalProperties` (an object without `properties` takes any
 * keys; with `properties`, only those), `items`, `minItems`, `maxItems`, `enum`, `const`, `anyOf`,
 * `oneOf` (treated as `anyOf`), `allOf` with one member, local `$ref` to `#/$defs/...` or
 * `#/definitions/...` (recursion included), `nullable`. Ignored (not enforced): `pattern`,
 * `format`, `minimum` / `maximum`, `minLength` / `maxLength`, `uniqueItems`. Properties are
 * written in the schema's order; optional ones may be skipped.
 *
 * Whitespace: at most {@linkcode MAX_WHITESPACE} bytes in a row between tokens of the JSON, none
 * before the value and none after it, so a weak model cannot spend its budget on blank lines.
 *
 * @example
 * ```ts
 * import { compileSchema, JsonMatcher } from "./json_grammar.ts";
 * const m = JsonMatcher.start(compileSchema({ type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] }));
 * const s = m.advanceText('{"ok": tr');
 * s?.finishBytes(); // 3: 'ue}'
 * m.advanceText('{"no"'); // null
 * ```
 *
 * @module
 */

/** Longest run of whitespace bytes allowed between JSON tokens. */
export const MAX_WHITESPACE = 1;

/** A compiled schema. */
export type SchemaNode =
  | { k: "any" }
  | { k: "obj"; props: PropNode[]; free: boolean }
  | { k: "arr"; items: SchemaNode; min: number; max: number }
  | { k: "str" }
  | { k: "num"; int: boolean }
  | { k: "lit"; texts: string[] }
  | { k: "or"; alts: SchemaNode[] }
  | { k: "ref"; target: () => SchemaNode };

/** One property of an object node. */
export interface PropNode {
  /** The property name. */
  name: string;
  /** Its JSON key as bytes, with the quotes. */
  key: Uint8Array;
  /** The value's schema. */
  node: SchemaNode;
  /** Whether it must appear. */
  required: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const ANY: SchemaNode = { k: "any" };
const ANY_OBJECT: SchemaNode = { k: "obj", props: [], free: true };

/**
 * Compiles a JSON Schema into a grammar node.
 *
 * @param schema A JSON Schema object (`true` or `{}` means any value).
 * @returns The node.
 * @throws {Error} Naming the keyword, for schemas this matcher cannot follow (an unknown `type`, a
 *   `$ref` it cannot resolve, `allOf` with several members).
 * @example
 * ```ts
 * import { compileSchema } from "./json_grammar.ts";
 * compileSchema({ enum: ["a", 1] }); // { k: "lit", texts: ['"a"', "1"] }
 * ```
 */
export function compileSchema(schema: unknown): SchemaNode {
  const root = schema;
  const cache = new Map<string, SchemaNode>();
  const resolve = (ref: string): SchemaNode => {
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
    if (!m) throw new Error(`$ref '${ref}': only local refs to #/$defs/NAME are supported`);
    const defs = (root as Record<string, Record<string, unknown>>)?.[m[1]];
    const name = decodeURIComponent(m[2]).replaceAll("~1", "/").replaceAll("~0", "~");
    if (!defs || !(name in defs)) throw new Error(`$ref '${ref}' names no definition`);
    let node = cache.get(ref);
    if (!node) {
      const slot: { node?: SchemaNode } = {};
      node = { k: "ref", target: () => slot.node! };
      cache.set(ref, node);
      slot.node = go(defs[name], `${ref}`);
    }
    return node;
  };
  const go = (s: unknown, where: string): SchemaNode => {
    if (s === true || s === undefined) return ANY;
    if (s === false) throw new Error(`${where}: the schema 'false' accepts nothing`);
    if (typeof s !== "object" || s === null || Array.isArray(s)) {
      throw new Error(`${where}: a schema must be an object`);
    }
    const o = s as Record<string, unknown>;
    if (typeof o.$ref === "string") return resolve(o.$ref);
    if ("const" in o) return { k: "lit", texts: [JSON.stringify(o.const)] };
    if (Array.isArray(o.enum)) {
      if (o.enum.length === 0) throw new Error(`${where}.enum: an empty enum accepts nothing`);
      return { k: "lit", texts: o.enum.map((v) => JSON.stringify(v)) };
    }
    const alts = (o.anyOf ?? o.oneOf) as unknown[] | undefined;
    if (Array.isArray(alts)) {
      return { k: "or", alts: alts.map((a, i) => go(a, `${where}.anyOf[${i}]`)) };
    }
    if (Array.isArray(o.allOf)) {
      if (o.allOf.length !== 1) throw new Error(`${where}.allOf: only one member is supported`);
      return go(o.allOf[0], `${where}.allOf[0]`);
    }
    let types = Array.isArray(o.type) ? o.type as unknown[] : o.type === undefined ? [] : [o.type];
    if (o.nullable === true && types.length > 0) types = [...types, "null"];
    if (types.length === 0) {
      if (o.properties !== undefined) types = ["object"];
      else if (o.items !== undefined) types = ["array"];
      else return ANY;
    }
    const nodes = types.map((t): SchemaNode => {
      switch (t) {
        case "object": {
          const props = (o.properties ?? {}) as Record<string, unknown>;
          const req = new Set(Array.isArray(o.required) ? o.required as string[] : []);
          const list = Object.entries(props).map(([name, ps]) => ({
            name,
            key: enc.encode(JSON.stringify(name)),
            node: go(ps, `${where}.properties.${name}`),
            required: req.has(name),
          }));
          return { k: "obj", props: list, free: list.length === 0 };
        }
        case "array": {
          const min = typeof o.minItems === "number" ? o.minItems : 0;
          const max = typeof o.maxItems === "number" ? o.maxItems : Infinity;
          return { k: "arr", items: go(o.items, `${where}.items`), min, max };
        }
        case "string":
          return { k: "str" };
        case "number":
          return { k: "num", int: false };
        case "integer":
          return { k: "num", int: true };
        case "boolean":
          return { k: "lit", texts: ["true", "false"] };
        case "null":
          return { k: "lit", texts: ["null"] };
        default:
          throw new Error(`${where}.type: unknown type ${JSON.stringify(t)}`);
      }
    });
    return nodes.length === 1 ? nodes[0] : { k: "or", alts: nodes };
  };
  return go(schema, "schema");
}

/** The grammar of `response_format: {"type": "json_object"}`: any JSON object. */
export function anyObjectNode(): SchemaNode {
  return ANY_OBJECT;
}

function deref(n: SchemaNode): SchemaNode {
  while (n.k === "ref") n = n.target();
  return n;
}

// ---- frames: one per open JSON construct, on a persistent stack -----------------------------

type Frame =
  | { t: "R"; done: boolean }
  | { t: "V"; node: SchemaNode; ws: number }
  // literal texts (true, enum members, keys): candidates still matching, bytes matched so far
  | { t: "L"; texts: Uint8Array[]; ids: number[]; pos: number }
  // free string: esc 0 none, 1 after '\', 2..5 hex digits left + 1; u8 continuation bytes left
  | { t: "S"; esc: number; u8: number; lo?: number; hi?: number }
  // number: st 0 after '-', 1 '0', 2 int digits, 3 '.', 4 frac digits, 5 'e', 6 exp sign, 7 exp digits
  | { t: "N"; int: boolean; st: number; len: number }
  // object: st 0 after '{', 1 after ',', 2 in key, 3 after key (wants ':'), 4 value, 5 after value
  | { t: "O"; node: SchemaNode & { k: "obj" }; st: number; idx: number; prop: number; ws: number }
  // array: st 0 after '[', 1 after ',', 2 value, 3 after value
  | { t: "A"; node: SchemaNode & { k: "arr" }; st: number; n: number; ws: number };

interface Stack {
  f: Frame;
  up: Stack | null;
}

const MAX_NUMBER_LENGTH = 24;

function isWs(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

function isHex(b: number): boolean {
  return isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}

function push(up: Stack | null, f: Frame): Stack {
  return { f, up };
}

/** The shortest value of a node, as text. */
function minText(n: SchemaNode, depth = 0): string {
  n = deref(n);
  if (depth > 32) return "0";
  switch (n.k) {
    case "any":
    case "num":
      return "0";
    case "str":
      return '""';
    case "lit":
      return shortest(n.texts);
    case "or":
      return shortest(n.alts.map((a) => minText(a, depth + 1)));
    case "arr":
      return "[" + Array.from({ length: n.min }, () => minText(n.items, depth + 1)).join(",") + "]";
    case "obj":
      return "{" + requiredText(n, 0, false, depth + 1) + "}";
  }
  return "0";
}

function shortest(texts: string[]): string {
  return texts.reduce((a, b) => (b.length < a.length ? b : a));
}

/** The required members from property `idx` on, each with a leading ',' if `comma`. */
function requiredText(
  n: SchemaNode & { k: "obj" },
  idx: number,
  comma: boolean,
  depth = 0,
): string {
  let out = "", first = !comma;
  for (let j = idx; j < n.props.length; j++) {
    const p = n.props[j];
    if (!p.required) continue;
    out += (first ? "" : ",") + dec.decode(p.key) + ":" + minText(p.node, depth);
    first = false;
  }
  return out;
}

function hasRequiredFrom(n: SchemaNode & { k: "obj" }, idx: number): boolean {
  for (let j = idx; j < n.props.length; j++) if (n.props[j].required) return true;
  return false;
}

/** The properties a key may name next: from `idx` up to and including the first required one. */
function allowedProps(n: SchemaNode & { k: "obj" }, idx: number): number[] {
  const out: number[] = [];
  for (let j = idx; j < n.props.length; j++) {
    out.push(j);
    if (n.props[j].required) break;
  }
  return out;
}

/** Starts a value of `node` with byte `b` (whitespace already skipped): the new stacks. */
function startValue(up: Stack, node: SchemaNode, b: number, out: Stack[]): void {
  node = deref(node);
  switch (node.k) {
    case "or":
      for (const a of node.alts) startValue(up, a, b, out);
      return;
    case "any":
      if (b === 0x7b) {
        out.push(push(up, { t: "O", node: ANY_OBJECT as never, st: 0, idx: 0, prop: -1, ws: 0 }));
      } else if (b === 0x5b) {
        out.push(
          push(up, {
            t: "A",
            node: { k: "arr", items: ANY, min: 0, max: Infinity },
            st: 0,
            n: 0,
            ws: 0,
          }),
        );
      } else if (b === 0x22) out.push(push(up, { t: "S", esc: 0, u8: 0 }));
      else if (b === 0x2d || isDigit(b)) startNumber(up, false, b, out);
      else startLiteral(up, ["true", "false", "null"], b, out);
      return;
    case "obj":
      if (b === 0x7b) out.push(push(up, { t: "O", node, st: 0, idx: 0, prop: -1, ws: 0 }));
      return;
    case "arr":
      if (b === 0x5b) out.push(push(up, { t: "A", node, st: 0, n: 0, ws: 0 }));
      return;
    case "str":
      if (b === 0x22) out.push(push(up, { t: "S", esc: 0, u8: 0 }));
      return;
    case "num":
      if (b === 0x2d || isDigit(b)) startNumber(up, node.int, b, out);
      return;
    case "lit":
      startLiteral(up, node.texts, b, out);
      return;
  }
}

function startNumber(up: Stack, int: boolean, b: number, out: Stack[]): void {
  out.push(push(up, { t: "N", int, st: b === 0x2d ? 0 : b === 0x30 ? 1 : 2, len: 1 }));
}

function startLiteral(up: Stack, texts: string[], b: number, out: Stack[]): void {
  const bytes = texts.map((t) => enc.encode(t));
  const ids: number[] = [];
  bytes.forEach((t, i) => {
    if (t[0] !== b) return;
    if (t.length > 1) ids.push(i);
    else {
      const p = childDone(up, i);
      if (p) out.push(p);
    }
  });
  if (ids.length > 0) out.push(push(up, { t: "L", texts: bytes, ids, pos: 1 }));
}

/** A child frame finished with `result` (a literal's index): the parent's next state. */
function childDone(s: Stack | null, result: number): Stack | null {
  if (!s) return null;
  const f = s.f;
  switch (f.t) {
    case "R":
      return { f: { t: "R", done: true }, up: s.up };
    case "V":
      return childDone(s.up, result);
    case "O":
      if (f.st === 2) {
        return { f: { ...f, st: 3, prop: f.node.free ? -1 : result, ws: 0 }, up: s.up };
      }
      return { f: { ...f, st: 5, idx: f.prop + 1, ws: 0 }, up: s.up };
    case "A":
      return { f: { ...f, st: 3, n: f.n + 1, ws: 0 }, up: s.up };
    default:
      return null;
  }
}

/** Can the number frame end here? */
function numberComplete(f: Frame & { t: "N" }): boolean {
  return f.st === 1 || f.st === 2 || f.st === 4 || f.st === 7;
}

/** Feeds one byte to a stack; pushes every resulting stack to `out`. */
function step(s: Stack, b: number, out: Stack[]): void {
  const f = s.f;
  switch (f.t) {
    case "R":
      return; // nothing after the value
    case "V": {
      if (isWs(b)) {
        // No whitespace before the top-level value; a little between tokens.
        if (s.up?.f.t === "R" || f.ws >= MAX_WHITESPACE) return;
        out.push({ f: { ...f, ws: f.ws + 1 }, up: s.up });
        return;
      }
      startValue(s.up!, f.node, b, out);
      return;
    }
    case "L": {
      // A literal ends on its last byte; one that another extends ("1" vs "10") forks.
      const more: number[] = [];
      for (const i of f.ids) {
        if (f.texts[i][f.pos] !== b) continue;
        if (f.texts[i].length === f.pos + 1) {
          const p = childDone(s.up, i);
          if (p) out.push(p);
        } else more.push(i);
      }
      if (more.length > 0) out.push({ f: { ...f, ids: more, pos: f.pos + 1 }, up: s.up });
      return;
    }
    case "S": {
      if (f.u8 > 0) {
        // The second byte of some lead bytes has a narrower range (no overlong forms, no
        // surrogates, nothing past U+10FFFF: RFC 3629 sec. 4).
        if (b >= (f.lo ?? 0x80) && b <= (f.hi ?? 0xbf)) {
          out.push({ f: { t: "S", esc: 0, u8: f.u8 - 1 }, up: s.up });
        }
        return;
      }
      if (f.esc === 1) {
        if (b === 0x75) out.push({ f: { ...f, esc: 5 }, up: s.up });
        else if ([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74].includes(b)) {
          out.push({ f: { ...f, esc: 0 }, up: s.up });
        }
        return;
      }
      if (f.esc >= 2) {
        if (isHex(b)) out.push({ f: { ...f, esc: f.esc === 2 ? 0 : f.esc - 1 }, up: s.up });
        return;
      }
      if (b === 0x22) {
        const p = childDone(s.up, -1);
        if (p) out.push(p);
      } else if (b === 0x5c) out.push({ f: { ...f, esc: 1 }, up: s.up });
      else if (b < 0x20 || b === 0x7f) return;
      else if (b < 0x80) out.push(s);
      else if (b >= 0xc2 && b <= 0xdf) out.push({ f: { ...f, u8: 1 }, up: s.up });
      else if (b >= 0xe0 && b <= 0xef) {
        const lo = b === 0xe0 ? 0xa0 : 0x80, hi = b === 0xed ? 0x9f : 0xbf;
        out.push({ f: { t: "S", esc: 0, u8: 2, lo, hi }, up: s.up });
      } else if (b >= 0xf0 && b <= 0xf4) {
        const lo = b === 0xf0 ? 0x90 : 0x80, hi = b === 0xf4 ? 0x8f : 0xbf;
        out.push({ f: { t: "S", esc: 0, u8: 3, lo, hi }, up: s.up });
      }
      return;
    }
    case "N": {
      let st = -1;
      const d = isDigit(b);
      if (f.len < MAX_NUMBER_LENGTH) {
        switch (f.st) {
          case 0:
            st = b === 0x30 ? 1 : d ? 2 : -1;
            break;
          case 1:
            st = b === 0x2e && !f.int ? 3 : (b === 0x65 || b === 0x45) && !f.int ? 5 : -1;
            break;
          case 2:
            st = d ? 2 : b === 0x2e && !f.int ? 3 : (b === 0x65 || b === 0x45) && !f.int ? 5 : -1;
            break;
          case 3:
            st = d ? 4 : -1;
            break;
          case 4:
            st = d ? 4 : b === 0x65 || b === 0x45 ? 5 : -1;
            break;
          case 5:
            st = b === 0x2b || b === 0x2d ? 6 : d ? 7 : -1;
            break;
          case 6:
          case 7:
            st = d ? 7 : -1;
            break;
        }
      }
      if (st >= 0) {
        out.push({ f: { ...f, st, len: f.len + 1 }, up: s.up });
        return;
      }
      if (numberComplete(f)) {
        const p = childDone(s.up, -1);
        if (p) step(p, b, out);
      }
      return;
    }
    case "O": {
      const n = f.node;
      if (f.st === 0 || f.st === 1 || f.st === 3 || f.st === 5) {
        if (isWs(b)) {
          if (f.ws < MAX_WHITESPACE) out.push({ f: { ...f, ws: f.ws + 1 }, up: s.up });
          return;
        }
      }
      if (f.st === 0 || f.st === 1) {
        if (b === 0x7d && f.st === 0 && !hasRequiredFrom(n, f.idx)) {
          const p = childDone(s.up, -1);
          if (p) out.push(p);
          return;
        }
        if (b !== 0x22) return;
        const me: Stack = { f: { ...f, st: 2, ws: 0 }, up: s.up };
        if (n.free) {
          out.push(push(me, { t: "S", esc: 0, u8: 0 }));
        } else {
          const props = allowedProps(n, f.idx);
          if (props.length === 0) return;
          const texts: Uint8Array[] = [];
          props.forEach((j) => (texts[j] = n.props[j].key));
          out.push(push(me, { t: "L", texts, ids: props, pos: 1 }));
        }
        return;
      }
      if (f.st === 3) {
        if (b !== 0x3a) return;
        const node = f.prop < 0 ? ANY : n.props[f.prop].node;
        const me: Stack = { f: { ...f, st: 4, ws: 0 }, up: s.up };
        out.push(push(me, { t: "V", node, ws: 0 }));
        return;
      }
      if (f.st === 5) {
        if (b === 0x2c) {
          if (n.free || allowedProps(n, f.idx).length > 0) {
            out.push({ f: { ...f, st: 1, ws: 0 }, up: s.up });
          }
        } else if (b === 0x7d && !hasRequiredFrom(n, f.idx)) {
          const p = childDone(s.up, -1);
          if (p) out.push(p);
        }
      }
      return;
    }
    case "A": {
      if (isWs(b)) {
        if (f.ws < MAX_WHITESPACE) out.push({ f: { ...f, ws: f.ws + 1 }, up: s.up });
        return;
      }
      const n = f.node;
      if (b === 0x5d && f.st !== 1 && f.n >= n.min) {
        const p = childDone(s.up, -1);
        if (p) out.push(p);
        return;
      }
      if (f.st === 3) {
        if (b === 0x2c && f.n < n.max) out.push({ f: { ...f, st: 1, ws: 0 }, up: s.up });
        return;
      }
      if (f.n >= n.max) return;
      const me: Stack = { f: { ...f, st: 2, ws: 0 }, up: s.up };
      startValue(me, n.items, b, out);
      return;
    }
  }
}

/**
 * The shortest text that finishes a stack (null: none), plus the UTF-8 continuation bytes a
 * half-written character still needs before it.
 */
function finish(s: Stack | null): string | null {
  if (!s) return null;
  const f = s.f;
  const then = (text: string, up: Stack | null): string | null => {
    const rest = finish(up);
    return rest === null ? null : text + rest;
  };
  switch (f.t) {
    case "R":
      return f.done ? "" : null;
    case "V":
      return then(minText(f.node), childDone(s.up, 0));
    case "L": {
      let best: string | null = null;
      for (const i of f.ids) {
        const c = then(dec.decode(f.texts[i].subarray(f.pos)), childDone(s.up, i));
        if (c !== null && (best === null || c.length < best.length)) best = c;
      }
      return best;
    }
    case "S":
      return then(
        (f.esc === 1 ? "n" : f.esc >= 2 ? "0".repeat(f.esc - 1) : "") + '"',
        childDone(s.up, -1),
      );
    case "N":
      return then(numberComplete(f) ? "" : "0", childDone(s.up, -1));
    case "O": {
      const n = f.node;
      const close = then("}", childDone(s.up, -1));
      if (close === null) return null;
      switch (f.st) {
        case 0:
          return requiredText(n, f.idx, false) + close;
        case 1: {
          if (hasRequiredFrom(n, f.idx)) return requiredText(n, f.idx, false) + close;
          if (n.free) return '"":0' + close;
          const opts = allowedProps(n, f.idx).map((j) =>
            dec.decode(n.props[j].key) + ":" + minText(n.props[j].node)
          );
          return opts.length > 0 ? shortest(opts) + close : null;
        }
        case 3: {
          const v = f.prop < 0 ? "0" : minText(n.props[f.prop].node);
          return ":" + v + requiredText(n, f.prop + 1, true) + close;
        }
        case 5:
          return requiredText(n, f.idx, true) + close;
        default:
          // st 2 and 4 have a child on top, which counts this frame through childDone.
          return close;
      }
    }
    case "A": {
      const n = f.node;
      const close = then("]", childDone(s.up, -1));
      if (close === null) return null;
      const item = minText(n.items);
      const left = Math.max(0, n.min - f.n);
      const items = (k: number) => Array.from({ length: k }, () => item).join(",");
      if (f.st === 1) return items(Math.max(1, left)) + close;
      if (f.st === 0) return items(left) + close;
      return (left > 0 ? "," + items(left) : "") + close;
    }
  }
}

function accepting(s: Stack | null): boolean {
  if (!s) return false;
  const f = s.f;
  if (f.t === "R") return f.done;
  if (f.t === "N") return numberComplete(f) && accepting(childDone(s.up, -1));
  return false;
}

/** Most alternative parses kept at once (ambiguous `anyOf` branches); more are dropped. */
const MAX_STACKS = 64;

/**
 * A state of the byte-level JSON matcher: the parses still possible after the bytes so far.
 * Immutable; see the module docs.
 */
export class JsonMatcher {
  readonly #stacks: Stack[];

  private constructor(stacks: Stack[]) {
    this.#stacks = stacks;
  }

  /**
   * The state before any byte.
   *
   * @param node The grammar (see {@linkcode compileSchema}).
   * @returns The start state.
   */
  static start(node: SchemaNode): JsonMatcher {
    const root: Stack = { f: { t: "R", done: false }, up: null };
    return new JsonMatcher([push(root, { t: "V", node, ws: 0 })]);
  }

  /**
   * Feeds one byte.
   *
   * @param b A byte, 0..255.
   * @returns The next state, or null if no valid JSON starts with the bytes so far.
   */
  advance(b: number): JsonMatcher | null {
    const out: Stack[] = [];
    for (const s of this.#stacks) {
      step(s, b, out);
      if (out.length >= MAX_STACKS) break;
    }
    return out.length === 0 ? null : new JsonMatcher(out);
  }

  /**
   * Feeds several bytes (or a string's UTF-8 bytes).
   *
   * @param bytes The bytes.
   * @returns The state after them, or null.
   */
  advanceText(bytes: Uint8Array | string): JsonMatcher | null {
    const b = typeof bytes === "string" ? enc.encode(bytes) : bytes;
    if (b.length === 0) return this;
    let m = this.advance(b[0]);
    for (let i = 1; i < b.length && m; i++) m = m.advance(b[i]);
    return m;
  }

  /** True when the bytes so far are a complete value that the grammar accepts. */
  get accepting(): boolean {
    return this.#stacks.some(accepting);
  }

  /** True when nothing can follow (a complete object, array, string or literal). */
  get closed(): boolean {
    return this.#stacks.every((s) => s.f.t === "R");
  }

  /**
   * Length in bytes of the shortest text that completes the value (0 when accepting).
   *
   * @returns The byte count.
   */
  finishBytes(): number {
    const t = this.finishText();
    return t === null ? Infinity : enc.encode(t).length + this.pendingBytes;
  }

  /**
   * The shortest text that completes the value (`""` when accepting), after the UTF-8
   * continuation bytes of a half-written character ({@linkcode JsonMatcher.pendingBytes}).
   *
   * @returns The text, or null if the value cannot be completed (never for a live state).
   */
  finishText(): string | null {
    let best: string | null = null;
    for (const s of this.#stacks) {
      const t = finish(s);
      if (t !== null && (best === null || t.length < best.length)) best = t;
    }
    return best;
  }

  /** Continuation bytes a half-written UTF-8 character still needs (0 almost always). */
  get pendingBytes(): number {
    let most = 0;
    for (const s of this.#stacks) if (s.f.t === "S") most = Math.max(most, s.f.u8);
    return most;
  }
}
