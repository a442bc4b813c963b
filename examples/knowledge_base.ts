/**
 * A knowledge-base QA bot in Microsoft GraphRAG's pattern, at small scale, over the demo world's
 * documents:
 *
 * 1. index: the model extracts entities and relations from each document (JSON output following a
 *    schema) into a graph; the graph is split into communities (label propagation, where
 *    GraphRAG uses Leiden), and the model summarizes each community;
 * 2. embed: documents and community summaries get vectors from `/v1/embeddings`;
 * 3. query: sources are retrieved by graph (entities named in the question, their documents and
 *    relations), by vector (nearest documents) and by community (nearest summary); the model
 *    answers from the numbered sources and cites them.
 *
 * The extraction schema lists the document's capitalized names as an `enum`, so even a small
 * model can only name entities that occur in the text. APIs without `json_schema` output (DeepSeek
 * offers `json_object`) get the schema in the prompt instead, and names outside the list are
 * dropped. DeepSeek has no embeddings endpoint: point `EMBEDDINGS_BASE_URL` (and
 * `EMBEDDINGS_MODEL`, `EMBEDDINGS_API_KEY`) at one that has, such as `cli.ts serve`.
 *
 * ```sh
 * deno run -A examples/knowledge_base.ts                      # KB_DOCS=8 documents
 * ```
 *
 * @module
 */

import type OpenAI from "openai";
import { generateWorld, pretrainDocuments } from "../data/mod.ts";
import { BASE_URL, makeClient, modelName, section } from "./_env.ts";

const client = makeClient();
const model = await modelName(client);
const embedBase = Deno.env.get("EMBEDDINGS_BASE_URL");
const embedClient = embedBase
  ? makeClient({ baseURL: embedBase, apiKey: Deno.env.get("EMBEDDINGS_API_KEY") })
  : client;
const embedModel = Deno.env.get("EMBEDDINGS_MODEL") ??
  (embedBase ? await modelName(embedClient) : model);
const docCount = Number(Deno.env.get("KB_DOCS") ?? 8);
console.log(`API ${BASE_URL}, model ${model}; embeddings from ${embedModel}`);

// ---- the documents: short English profiles of the demo world's people, cities and products ----
const docs = pretrainDocuments(generateWorld())
  .map((d) => d.text)
  .filter((t) => /^[A-Z][\x20-\x7e]+$/.test(t) && !t.includes("Q:") && t.length < 400)
  .slice(0, docCount);
docs.forEach((d, i) => console.log(`[doc ${i + 1}] ${d}`));

const STOP = new Set([
  "The",
  "A",
  "An",
  "You",
  "It",
  "He",
  "She",
  "They",
  "In",
  "On",
  "This",
  "One",
  "About",
  "Welcome",
  "Back",
  "Visitors",
  "Bring",
  "At",
  "When",
  "Every",
]);
/** Capitalized names in a text: the entity candidates. */
function candidates(text: string): string[] {
  const found = text.match(/\b[A-Z][a-z]+(?: [A-Z][a-z]+)*/g) ?? [];
  return [...new Set(found.filter((w) => !STOP.has(w)))];
}

/** Chat with JSON output following `schema`; falls back to json_object where unsupported. */
async function jsonChat(
  messages: OpenAI.ChatCompletionMessageParam[],
  schema: Record<string, unknown>,
  maxTokens: number,
): Promise<unknown> {
  const base = { model, messages, max_tokens: maxTokens, temperature: 0 };
  try {
    const r = await client.chat.completions.create({
      ...base,
      response_format: {
        type: "json_schema",
        json_schema: { name: "extraction", schema, strict: true },
      },
    });
    return JSON.parse(r.choices[0].message.content ?? "{}");
  } catch (e) {
    if ((e as { status?: number }).status !== 400) throw e;
    const r = await client.chat.completions.create({
      ...base,
      messages: [
        ...messages,
        {
          role: "system",
          content: `Reply with json following this schema: ${JSON.stringify(schema)}`,
        },
      ],
      response_format: { type: "json_object" },
    });
    return JSON.parse(r.choices[0].message.content ?? "{}");
  }
}

// ---- 1. index: entities and relations into a graph -------------------------------------------
section("1. extracting entities and relations");
type Entity = { name: string; type: string; docs: Set<number> };
const entities = new Map<string, Entity>();
const relations: { source: string; target: string; description: string; doc: number }[] = [];
for (const [i, text] of docs.entries()) {
  const names = candidates(text);
  if (names.length === 0) continue;
  const name = { type: "string", enum: names };
  const schema = {
    type: "object",
    properties: {
      entities: {
        type: "array",
        items: {
          type: "object",
          properties: {
            name,
            type: { type: "string", enum: ["person", "city", "product", "other"] },
          },
          required: ["name", "type"],
          additionalProperties: false,
        },
        minItems: 1,
        maxItems: Math.min(names.length, 6),
      },
      relations: {
        type: "array",
        items: {
          type: "object",
          properties: { source: name, target: name, description: { type: "string" } },
          required: ["source", "target", "description"],
          additionalProperties: false,
        },
        minItems: names.length >= 2 ? 1 : 0,
        maxItems: 3,
      },
    },
    required: ["entities", "relations"],
    additionalProperties: false,
  };
  const out = await jsonChat(
    [
      {
        role: "system",
        content: "Extract the named entities of the text and the relations between them, as json.",
      },
      { role: "user", content: text },
    ],
    schema,
    200,
  ) as {
    entities?: { name: string; type: string }[];
    relations?: { source: string; target: string; description: string }[];
  };
  const known = new Set(names);
  for (const e of out.entities ?? []) {
    if (!known.has(e.name)) continue;
    const ent = entities.get(e.name) ?? { name: e.name, type: e.type, docs: new Set() };
    ent.docs.add(i);
    entities.set(e.name, ent);
  }
  for (const r of out.relations ?? []) {
    if (!known.has(r.source) || !known.has(r.target) || r.source === r.target) continue;
    for (const n of [r.source, r.target]) {
      const ent = entities.get(n) ?? { name: n, type: "other", docs: new Set() };
      ent.docs.add(i);
      entities.set(n, ent);
    }
    relations.push({ ...r, doc: i });
  }
  console.log(
    `doc ${i + 1}: ${out.entities?.length ?? 0} entities, ${out.relations?.length ?? 0} relations`,
  );
}
console.log(`graph: ${entities.size} entities, ${relations.length} relations`);

// ---- communities: label propagation over the relation graph, then a summary each -------------
section("2. communities and their summaries");
const label = new Map([...entities.keys()].map((n) => [n, n]));
const neighbors = new Map<string, string[]>([...entities.keys()].map((n) => [n, []]));
for (const r of relations) {
  neighbors.get(r.source)!.push(r.target);
  neighbors.get(r.target)!.push(r.source);
}
// Entities found in the same document are linked too, so a document's names stay together.
for (const [i] of docs.entries()) {
  const inDoc = [...entities.values()].filter((e) => e.docs.has(i)).map((e) => e.name);
  for (const a of inDoc) for (const b of inDoc) if (a !== b) neighbors.get(a)!.push(b);
}
for (let round = 0; round < 10; round++) {
  let changed = false;
  for (const n of [...entities.keys()].sort()) {
    const votes = new Map<string, number>();
    for (const m of neighbors.get(n)!) {
      votes.set(label.get(m)!, (votes.get(label.get(m)!) ?? 0) + 1);
    }
    if (votes.size === 0) continue;
    const best = [...votes].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0][0];
    if (best !== label.get(n)) {
      label.set(n, best);
      changed = true;
    }
  }
  if (!changed) break;
}
const communities = new Map<string, string[]>();
for (const [n, l] of label) communities.set(l, [...(communities.get(l) ?? []), n]);
const reports: { members: string[]; summary: string; docs: number[] }[] = [];
for (const members of communities.values()) {
  const docIds = [...new Set(members.flatMap((m) => [...entities.get(m)!.docs]))].sort();
  const facts = relations.filter((r) => members.includes(r.source))
    .map((r) => `${r.source} -> ${r.target}: ${r.description}`);
  const r = await client.chat.completions.create({
    model,
    messages: [
      {
        role: "system",
        content: "Summarize what these texts say about the entities in two sentences.",
      },
      {
        role: "user",
        content: `Entities: ${members.join(", ")}\nRelations:\n${facts.join("\n")}\nTexts:\n${
          docIds.map((d) => docs[d]).join("\n")
        }`,
      },
    ],
    max_tokens: 80,
    temperature: 0,
  });
  const summary = r.choices[0].message.content ?? "";
  reports.push({ members, summary, docs: docIds });
  console.log(`community {${members.join(", ")}}: ${summary.slice(0, 160)}`);
}

// ---- 3. embeddings --------------------------------------------------------------------------
section("3. embeddings");
async function embed(texts: string[]): Promise<Float32Array[]> {
  const r = await embedClient.embeddings.create({ model: embedModel, input: texts });
  return r.data.map((d) => Float32Array.from(d.embedding));
}
const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);
const docVectors = await embed(docs);
const reportVectors = reports.length > 0
  ? await embed(reports.map((r) => r.summary || r.members.join(" ")))
  : [];
console.log(
  `${docVectors.length + reportVectors.length} vectors of ${docVectors[0].length} dimensions`,
);

// ---- 4. query: by graph, by vector, by community; then an answer with citations ---------------
section("4. question answering");
const subject = candidates(docs[0])[0] ?? "the lamp";
const question = Deno.env.get("KB_QUESTION") ?? `What do you know about ${subject}?`;
console.log(`question: ${question}`);
const [qv] = await embed([question]);
const sources: { text: string; why: string }[] = [];
const add = (text: string, why: string) => {
  if (!sources.some((s) => s.text === text)) sources.push({ text, why });
};
const named = [...entities.keys()].filter((n) => question.includes(n));
for (const n of named) {
  for (const d of entities.get(n)!.docs) add(docs[d], `graph: mentions ${n}`);
  for (const r of relations.filter((r) => r.source === n || r.target === n)) {
    add(`${r.source} -> ${r.target}: ${r.description}`, `graph: relation of ${n}`);
  }
}
const byVector = docVectors.map((v, i) => ({ i, score: dot(v, qv) }))
  .sort((a, b) => b.score - a.score).slice(0, 2);
for (const { i, score } of byVector) add(docs[i], `vector: similarity ${score.toFixed(3)}`);
if (reportVectors.length > 0) {
  const best = reportVectors.map((v, i) => ({ i, score: dot(v, qv) }))
    .sort((a, b) => b.score - a.score)[0];
  add(reports[best.i].summary, `community: {${reports[best.i].members.join(", ")}}`);
}
const numbered = sources.map((s, k) => `[${k + 1}] ${s.text}`).join("\n");
const answer = await client.chat.completions.create({
  model,
  messages: [
    {
      role: "system",
      content: "Answer from the numbered sources only and cite them like [1].",
    },
    { role: "user", content: `Sources:\n${numbered}\n\nQuestion: ${question}` },
  ],
  max_tokens: 96,
  temperature: 0,
});
console.log(`answer: ${answer.choices[0].message.content}`);
console.log("sources:");
sources.forEach((s, k) => console.log(`  [${k + 1}] (${s.why}) ${s.text.slice(0, 100)}`));
console.log("\nknowledge_base: done");
