/**
 * Tests of `model/safetensors.ts`: bit-exact round trips, header layout, errors that name the
 * tensor and bf16 conversion (the HF config.json mapping: `hf_config_test.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { resolveConfig } from "../model/config.ts";
import { initParameters, parameterTable } from "../model/params.ts";
import {
  bf16FromF32,
  checkTensors,
  decodeSafetensors,
  encodeSafetensors,
  f32FromBf16,
  type SafeTensor,
} from "../model/safetensors.ts";

function bytesOf(t: SafeTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Float32Array with odd bit patterns: NaNs with payloads (both signs), -0, infinities, a
 * subnormal. */
function oddF32(): Float32Array {
  const u = new Uint32Array([
    0x7fc00001,
    0xffa5a5a5,
    0x7f800001,
    0x80000000,
    0x7f800000,
    0xff800000,
    0x00000001,
    0x3f800000,
  ]);
  return new Float32Array(u.buffer);
}

function sample(): Map<string, SafeTensor> {
  return new Map<string, SafeTensor>([
    ["a.f32", { dtype: "F32", shape: [2, 4], data: oddF32() }],
    ["b.f16", { dtype: "F16", shape: [3], data: new Uint16Array([0x7e01, 0x8000, 0x3c00]) }],
    ["c.bf16", { dtype: "BF16", shape: [1, 1, 2], data: new Uint16Array([0xffc1, 0x0000]) }],
    ["d.i32", { dtype: "I32", shape: [3], data: new Int32Array([-1, 0, 2147483647]) }],
    ["e.u32", { dtype: "U32", shape: [], data: new Uint32Array([4294967295]) }],
    ["f.empty", { dtype: "F32", shape: [0, 5], data: new Float32Array(0) }],
    ["g.f64", { dtype: "F64", shape: [1], data: new Float64Array([-0]) }],
  ]);
}

Deno.test("safetensors round trip is bit-exact, NaN payloads and -0 included", () => {
  const t = sample();
  const bytes = encodeSafetensors(t, { metadata: { format: "pt", note: "ünïcode" } });
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, { format: "pt", note: "ünïcode" });
  assert.deepEqual([...tensors.keys()], [...t.keys()]);
  for (const [name, want] of t) {
    const got = tensors.get(name)!;
    assert.equal(got.dtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    assert.equal(got.data.constructor, want.data.constructor, name);
    assert.deepEqual(bytesOf(got), bytesOf(want), name);
  }
  assert.ok(Object.is((tensors.get("g.f64")!.data as Float64Array)[0], -0));
  // Encoding the decoded map gives the same file back.
  assert.deepEqual(encodeSafetensors(tensors, { metadata }), bytes);
});

Deno.test("safetensors header: u64 length, JSON padded with spaces to 8-byte alignment", () => {
  for (const name of ["x", "xy", "xyz", "a_longer_name"]) {
    const bytes = encodeSafetensors(
      new Map([[name, { dtype: "F32", shape: [1], data: new Float32Array([1]) }]]),
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0, name);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.match(header, /^\{.*\} *$/);
    assert.deepEqual(JSON.parse(header)[name], { dtype: "F32", shape: [1], data_offsets: [0, 4] });
    assert.equal(bytes.length, 8 + n + 4);
    assert.deepEqual([...bytes.subarray(8 + n)], [0, 0, 0x80, 0x3f]); // 1.0f little-endian
  }
});

Deno.test("a checkpoint of the tiny model round-trips and checks against the parameter table", () => {
  const cfg = resolveConfig("tiny");
  const params = initParameters(cfg, 11);
  const table = parameterTable(cfg);
  const t = new Map<string, SafeTensor>(
    table.map((s) => [s.name, { dtype: "F32", shape: [...s.shape], data: params.get(s.name)! }]),
  );
  const { tensors } = decodeSafetensors(encodeSafetensors(t));
  checkTensors(tensors, table.map((s) => ({ ...s, dtype: "F32" })));
  for (const s of table) assert.deepEqual(tensors.get(s.name)!.data, params.get(s.name), s.name);
  // Errors name the tensor.
  const missing = new Map(tensors);
  missing.delete("lm_head.weight");
  assert.throws(() => checkTensors(missing, table), /missing tensor 'lm_head\.weight'/);
  const extra = new Map(tensors).set("zzz", {
    dtype: "F32",
    shape: [1],
    data: new Float32Array(1),
  });
  assert.throws(() => checkTensors(extra, table), /unexpected tensor 'zzz'/);
  const wrong = new Map(tensors).set("model.norm.weight", {
    dtype: "F32",
    shape: [31],
    data: new Float32Array(31),
  });
  assert.throws(
    () => checkTensors(wrong, table),
    /'model\.norm\.weight' has shape \[31\], expected \[32\]/,
  );
  assert.throws(
    () => checkTensors(tensors, table.map((s) => ({ ...s, dtype: "BF16" }))),
    /'model\.embed_tokens\.weight' has dtype F32, expected BF16/,
  );
});

Deno.test("encodeSafetensors names the tensor on a bad shape, dtype or array type", () => {
  const enc = (t: SafeTensor) => () => encodeSafetensors(new Map([["w.q", t]]));
  assert.throws(
    enc({ dtype: "F32", shape: [2, 3], data: new Float32Array(5) }),
    /'w\.q' has shape \[2, 3\] \(6 elements\) but 5 values/,
  );
  assert.throws(
    enc({ dtype: "F32", shape: [2], data: new Float64Array(2) as never }),
    /'w\.q' of dtype F32 needs a Float32Array/,
  );
  assert.throws(
    enc({ dtype: "Q4" as never, shape: [1], data: new Float32Array(1) }),
    /'w\.q' has unknown dtype 'Q4'/,
  );
  assert.throws(
    enc({ dtype: "F32", shape: [-1], data: new Float32Array(1) }),
    /'w\.q' has an invalid shape/,
  );
});

Deno.test("decodeSafetensors reports truncated files and bad headers", () => {
  const good = encodeSafetensors(
    new Map<string, SafeTensor>([
      ["first", { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) }],
      ["second", { dtype: "I32", shape: [2], data: new Int32Array([3, 4]) }],
    ]),
  );
  assert.throws(() => decodeSafetensors(good.subarray(0, 5)), /truncated file: 5 bytes/);
  assert.throws(() => decodeSafetensors(good.subarray(0, 20)), /truncated file: header says/);
  assert.throws(
    () => decodeSafetensors(good.subarray(0, good.length - 1)),
    /truncated file: tensor 'second'/,
  );
  const withHeader = (h: unknown, data = new Uint8Array(0)) => {
    const json = new TextEncoder().encode(typeof h === "string" ? h : JSON.stringify(h));
    const out = new Uint8Array(8 + json.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(data, 8 + json.length);
    return out;
  };
  assert.throws(() => decodeSafetensors(withHeader("{not json")), /bad header: not UTF-8 JSON/);
  assert.throws(() => decodeSafetensors(withHeader([1])), /bad header: expected a JSON object/);
  assert.throws(
    () =>
      decodeSafetensors(
        withHeader({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      ),
    /bad header: tensor 'w' of dtype F32 and shape \[3\] needs 12 bytes/,
  );
  assert.throws(
    () =>
      decodeSafetensors(
        withHeader({ w: { dtype: "X9", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      ),
    /tensor 'w' has unsupported dtype "X9"/,
  );
  assert.throws(
    () =>
      decodeSafetensors(withHeader({
        a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        b: { dtype: "F32", shape: [1], data_offsets: [2, 6] },
      }, new Uint8Array(6))),
    /tensor 'b' starts at data byte 2, expected 4 \(overlaps/,
  );
  assert.throws(
    () =>
      decodeSafetensors(
        withHeader({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)),
      ),
    /cover 4 data bytes but the file has 8/,
  );
  assert.throws(
    () => decodeSafetensors(withHeader({ __metadata__: { n: 1 } })),
    /__metadata__\['n'\] is not a string/,
  );
});

Deno.test("bf16 conversion rounds to nearest even and keeps NaN and -0", () => {
  const x = new Float32Array([1, -0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, Infinity]);
  assert.deepEqual([...bf16FromF32(x)], [0x3f80, 0x8000, 0x3f80, 0x3f82, 0x7f80]);
  const nan = new Float32Array(new Uint32Array([0x7f800001]).buffer); // payload only in low bits
  const b = bf16FromF32(nan)[0];
  assert.ok(Number.isNaN(f32FromBf16(new Uint16Array([b]))[0]));
  assert.deepEqual([...f32FromBf16(new Uint16Array([0x3f80, 0xc000]))], [1, -2]);
});
