/**
 * The run-options layer of `cli.ts pretrain|sft|dpo`: each stage declares a schema table of
 * `{ name, type, default, help, why }`; values come from the defaults, then an optional JSON
 * config file (`--config run.json`, keys are the option names), then flags (`--batch-size 8`,
 * `--batch-size=8`, `--no-compile`), each layer overriding the one before.
 *
 * Unknown flags, unknown config keys and wrong types are errors that name the flag or key and
 * say what was expected (`--lr expects a number, got 'abc'`), with a "did you mean" for typos.
 * {@linkcode renderOptionsHelp} prints every option with its type, default and the reason for it.
 *
 * Flag names are the option names in kebab-case (`batchSize` -> `--batch-size`); the config file
 * uses the option names as written in the schema.
 *
 * @module
 */

/** Value types an option can have. */
export type OptionType = "number" | "integer" | "string" | "boolean" | "string[]";

/** The TypeScript type of an option type. */
export type ValueOf<T extends OptionType> = T extends "number" | "integer" ? number
  : T extends "string" ? string
  : T extends "boolean" ? boolean
  : string[];

/** One row of an options schema. */
export interface OptionSpec<T extends OptionType = OptionType> {
  /** camelCase name: the config-file key; the flag is its kebab-case form. */
  name: string;
  /** Value type. */
  type: T;
  /** Default value; `null` means unset (e.g. `resume`). */
  default: ValueOf<T> | null;
  /** One line: what the option does. */
  help: string;
  /** One line: why the default is what it is. */
  why?: string;
  /** Allowed values of a string option. */
  choices?: readonly string[];
  /** Smallest allowed value of a number/integer option. */
  min?: number;
  /** Largest allowed value of a number/integer option. */
  max?: number;
}

/** The values object a schema literal describes: one typed field per option. */
export type SchemaValues<S extends readonly OptionSpec[]> = {
  -readonly [E in S[number] as E["name"]]: E extends OptionSpec<infer T>
    ? (null extends E["default"] ? ValueOf<T> | null : ValueOf<T>)
    : never;
};

/**
 * A schema whose values type is declared by name ({@linkcode declareOptions}): what a module
 * publishes, since a published constant needs an explicit type.
 */
export type OptionTable<V> = readonly OptionSpec[] & {
  /** Type-level only: the values type (never set at run time). */
  readonly __values?: V;
};

/**
 * The values object of a schema: the declared type of an {@linkcode OptionTable}, else one typed
 * field per option of the schema literal ({@linkcode SchemaValues}).
 */
export type OptionValues<S extends readonly OptionSpec[]> = S extends
  { readonly __values?: infer V } ? (unknown extends V ? SchemaValues<S> : V)
  : SchemaValues<S>;

/**
 * Compile-time check of {@linkcode declareOptions}: `unknown` when the schema's values are
 * exactly `V`, else an object type naming the difference (so the call does not compile).
 */
export type SameValues<A, V> = [A] extends [V] ? ([V] extends [A] ? unknown : Difference<A, V>)
  : Difference<A, V>;

/** The fields two values types disagree on, as {@linkcode SameValues} reports them. */
export interface Difference<A, V> {
  /** Options of the schema that the declared type lacks. */
  __onlyInSchema: Exclude<keyof A, keyof V>;
  /** Fields of the declared type that the schema lacks. */
  __onlyInDeclaredType: Exclude<keyof V, keyof A>;
  /** Fields of both whose types differ. */
  __typesDiffer: {
    [K in keyof A & keyof V]: [A[K]] extends [V[K]] ? ([V[K]] extends [A[K]] ? never : K) : K;
  }[keyof A & keyof V];
}

/**
 * Gives a schema literal its declared values type: `declareOptions<SftValues>()(SFT_SCHEMA)`
 * compiles only if the schema describes exactly `SftValues` (same names, same types), so the
 * named interface and the table cannot drift apart.
 *
 * @returns A function taking the schema and returning it as an {@linkcode OptionTable}.
 * @example
 * ```ts
 * interface LrValues {
 *   /** Peak learning rate. *\/
 *   lr: number;
 * }
 * const LR: OptionTable<LrValues> = declareOptions<LrValues>()(
 *   defineOptions([{ name: "lr", type: "number", default: 3e-4, help: "peak learning rate" }]),
 * );
 * ```
 */
export function declareOptions<V>(): <const S extends readonly OptionSpec[]>(
  schema: S & SameValues<SchemaValues<S>, V>,
) => OptionTable<V> {
  return (schema) => schema;
}

/** Where each value came from. */
export type OptionSource = "default" | "config" | "flag";

/** Resolved options. */
export interface ResolvedOptions<S extends readonly OptionSpec[]> {
  /** The values. */
  values: OptionValues<S>;
  /** Where each value came from. */
  sources: Record<string, OptionSource>;
  /** The `--config` file used, if any. */
  configPath: string | null;
  /** True when `--help`/`-h` was given (values are then the defaults plus what parsed). */
  help: boolean;
}

/** Thrown for an unknown flag or key, a wrong type or a missing value; names the flag or key. */
export class OptionsError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do.
   */
  constructor(message: string) {
    super(message);
    this.name = "OptionsError";
  }
}

/** The flag reserved for the config file. */
export const CONFIG_FLAG = "--config";

/**
 * Declares a schema with its literal types kept, so {@linkcode OptionValues} is precise.
 *
 * @param schema The option rows.
 * @returns `schema` unchanged.
 * @throws {OptionsError} for a duplicate name, the reserved name `config`, or a default of the
 *   wrong type.
 * @example
 * ```ts
 * const PRETRAIN = defineOptions([
 *   { name: "lr", type: "number", default: 3e-4, help: "peak learning rate", why: "stable for small models" },
 *   { name: "steps", type: "integer", default: 2000, help: "optimizer steps" },
 * ]);
 * ```
 */
export function defineOptions<const S extends readonly OptionSpec[]>(schema: S): S {
  const seen = new Set<string>();
  for (const o of schema) {
    if (seen.has(o.name)) throw new OptionsError(`options schema: duplicate option "${o.name}"`);
    if (o.name === "config" || o.name === "help") {
      throw new OptionsError(`options schema: "${o.name}" is reserved`);
    }
    seen.add(o.name);
    if (o.default !== null) {
      const err = checkValue(o, o.default);
      if (err) throw new OptionsError(`options schema: default of "${o.name}" ${err}`);
    }
  }
  return schema;
}

/**
 * The flag spelling of an option name.
 *
 * @param name camelCase name.
 * @returns `--` and the kebab-case name.
 * @example
 * ```ts
 * flagName("batchSize"); // "--batch-size"
 * ```
 */
export function flagName(name: string): string {
  return "--" + name.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

function typeWord(o: OptionSpec): string {
  if (o.choices) return `one of ${o.choices.join(", ")}`;
  return {
    number: "a number",
    integer: "an integer",
    string: "a string",
    boolean: "true or false",
    "string[]": "a list of strings",
  }[o.type];
}

/** Checks a parsed value's type and range; returns a reason or undefined. */
function checkValue(o: OptionSpec, v: unknown): string | undefined {
  const expects = `expects ${typeWord(o)}`;
  switch (o.type) {
    case "number":
    case "integer":
      if (typeof v !== "number" || !Number.isFinite(v)) return expects;
      if (o.type === "integer" && !Number.isInteger(v)) return expects;
      if (o.min !== undefined && v < o.min) return `must be >= ${o.min}`;
      if (o.max !== undefined && v > o.max) return `must be <= ${o.max}`;
      return undefined;
    case "string":
      if (typeof v !== "string") return expects;
      if (o.choices && !o.choices.includes(v)) return expects;
      return undefined;
    case "boolean":
      return typeof v === "boolean" ? undefined : expects;
    case "string[]":
      return Array.isArray(v) && v.every((s) => typeof s === "string") ? undefined : expects;
  }
}

/**
 * A JSON value as an error message shows it: `null`, `string "abc"`, `array [1,2]`, and
 * `Infinity (1e999 is past the largest 64-bit float)` where JSON.stringify would print null.
 */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (typeof v === "number" && !Number.isFinite(v)) {
    return Number.isNaN(v) ? "NaN" : `${v} (a number past the largest 64-bit float, ~1.8e308)`;
  }
  if (typeof v === "number") return String(v);
  const json = JSON.stringify(v);
  const text = json !== undefined && json.length > 60 ? json.slice(0, 60) + "..." : json;
  return `${Array.isArray(v) ? "array" : typeof v} ${text}`;
}

/** Parses a flag's text value; throws an OptionsError naming the flag. */
function parseText(o: OptionSpec, text: string): unknown {
  const flag = flagName(o.name);
  let v: unknown = text;
  if (o.type === "number" || o.type === "integer") {
    v = text.trim() === "" ? NaN : Number(text);
  } else if (o.type === "boolean") {
    v = text === "true" ? true : text === "false" ? false : text;
  }
  const err = checkValue(o, v);
  if (err) {
    throw new OptionsError(
      err.startsWith("expects") ? `${flag} ${err}, got '${text}'` : `${flag} ${err}, got ${text}`,
    );
  }
  return v;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

function suggest(word: string, candidates: string[]): string {
  let best = "", bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 4)) ? ` (did you mean ${best}?)` : "";
}

/**
 * Parses command-line flags against a schema.
 *
 * @param schema The options.
 * @param argv The arguments after the subcommand name.
 * @returns The values given (only those), the `--config` path, and whether help was asked.
 * @throws {OptionsError} for an unknown flag (`unknown flag --lrr (did you mean --lr?)`), a
 *   missing or ill-typed value (`--lr expects a number, got 'abc'`), or a stray argument.
 * @example
 * ```ts
 * parseFlags(schema, ["--lr", "1e-3", "--no-compile"]).values; // { lr: 0.001, compile: false }
 * ```
 */
export function parseFlags(
  schema: readonly OptionSpec[],
  argv: readonly string[],
): { values: Record<string, unknown>; configPath: string | null; help: boolean } {
  const byFlag = new Map(schema.map((o) => [flagName(o.name), o]));
  const values: Record<string, unknown> = {};
  let configPath: string | null = null;
  let help = false;
  const known = [...byFlag.keys(), CONFIG_FLAG, "--help"];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      throw new OptionsError(
        `unexpected argument '${arg}'; options are flags like --name value (see --help)`,
      );
    }
    const eq = arg.indexOf("=");
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    let inline: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const takeValue = (what: string): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("--") && next.length > 2)) {
        throw new OptionsError(`${flag} expects ${what}, got nothing`);
      }
      i++;
      return next;
    };
    if (flag === CONFIG_FLAG) {
      configPath = takeValue("a file path");
      continue;
    }
    const o = byFlag.get(flag);
    if (o === undefined && flag.startsWith("--no-")) {
      const pos = byFlag.get("--" + flag.slice(5));
      if (pos?.type === "boolean") {
        if (inline !== undefined) throw new OptionsError(`${flag} takes no value, got '${inline}'`);
        values[pos.name] = false;
        continue;
      }
    }
    if (o === undefined) {
      throw new OptionsError(`unknown flag ${flag}${suggest(flag, known)}; see --help`);
    }
    if (o.type === "boolean") {
      values[o.name] = inline === undefined ? true : parseText(o, inline);
    } else if (o.type === "string[]") {
      const list: string[] = inline !== undefined ? [inline] : [];
      inline = undefined;
      while (i + 1 < argv.length && !argv[i + 1].startsWith("--")) list.push(argv[++i]);
      if (list.length === 0) {
        throw new OptionsError(`${flag} expects one or more values, got nothing`);
      }
      values[o.name] = [...((values[o.name] as string[] | undefined) ?? []), ...list];
    } else {
      values[o.name] = parseText(o, takeValue(typeWord(o)));
    }
  }
  return { values, configPath, help };
}

/**
 * Checks a parsed config-file object against a schema.
 *
 * @param schema The options.
 * @param obj The parsed JSON.
 * @param source Its name for messages (the file path).
 * @returns The values it sets.
 * @throws {OptionsError} `run.json: unknown key "lrr" (did you mean "lr"?)`,
 *   `run.json: "lr" expects a number, got string "abc"`, or a non-object.
 * @example
 * ```ts
 * checkConfigObject(schema, { lr: 1e-3 }, "run.json"); // { lr: 0.001 }
 * ```
 */
export function checkConfigObject(
  schema: readonly OptionSpec[],
  obj: unknown,
  source: string,
): Record<string, unknown> {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new OptionsError(
      `${source}: expected a JSON object of options, got ${JSON.stringify(obj)}`,
    );
  }
  const byName = new Map(schema.map((o) => [o.name, o]));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(obj)) {
    const o = byName.get(key);
    if (o === undefined) {
      const hint = suggest(key, [...byName.keys()]).replace(/mean (\S+)\?/, 'mean "$1"?');
      throw new OptionsError(`${source}: unknown key "${key}"${hint}; see --help for the keys`);
    }
    if (v === null && o.default === null) {
      out[key] = null;
      continue;
    }
    const err = checkValue(o, v);
    if (err) throw new OptionsError(`${source}: "${key}" ${err}, got ${describeValue(v)}`);
    out[key] = v;
  }
  return out;
}

/**
 * Reads a JSON config file and checks it against a schema.
 *
 * @param schema The options.
 * @param path The file.
 * @returns The values it sets.
 * @throws {OptionsError} for a missing file, invalid JSON, an unknown key or a wrong type, each
 *   naming the file.
 * @example
 * ```ts
 * const fromFile = await loadConfigFile(schema, "configs/pretrain.json");
 * ```
 */
export async function loadConfigFile(
  schema: readonly OptionSpec[],
  path: string,
): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new OptionsError(`${CONFIG_FLAG} ${path}: no such file`);
    }
    throw e;
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new OptionsError(`${path}: invalid JSON (${(e as Error).message})`);
  }
  return checkConfigObject(schema, obj, path);
}

/**
 * Resolves options: defaults, then the `--config` file, then flags (flags win).
 *
 * @param schema The options.
 * @param argv The arguments after the subcommand name.
 * @returns Values, where each came from, the config path, and whether `--help` was given.
 * @throws {OptionsError} from {@linkcode parseFlags} or {@linkcode loadConfigFile}.
 * @example
 * ```ts
 * const { values } = await resolveOptions(PRETRAIN, ["--config", "run.json", "--lr", "1e-3"]);
 * values.lr; // 0.001, whatever run.json says
 * ```
 */
export async function resolveOptions<S extends readonly OptionSpec[]>(
  schema: S,
  argv: readonly string[],
): Promise<ResolvedOptions<S>> {
  const flags = parseFlags(schema, argv);
  const values: Record<string, unknown> = {};
  const sources: Record<string, OptionSource> = {};
  for (const o of schema) {
    values[o.name] = Array.isArray(o.default) ? [...o.default] : o.default;
    sources[o.name] = "default";
  }
  if (flags.configPath !== null && !flags.help) {
    for (const [k, v] of Object.entries(await loadConfigFile(schema, flags.configPath))) {
      values[k] = v;
      sources[k] = "config";
    }
  }
  for (const [k, v] of Object.entries(flags.values)) {
    values[k] = v;
    sources[k] = "flag";
  }
  return {
    values: values as OptionValues<S>,
    sources,
    configPath: flags.configPath,
    help: flags.help,
  };
}

function formatDefault(v: unknown): string {
  if (v === null) return "unset";
  if (Array.isArray(v)) return v.length === 0 ? "none" : v.join(" ");
  return String(v);
}

/**
 * Renders every option with its type, default and the reason for the default, for `--help`.
 *
 * @param schema The options.
 * @param options `usage` line and `description` paragraph printed first.
 * @returns The help text.
 * @example
 * ```ts
 * console.log(renderOptionsHelp(PRETRAIN, { usage: "cli.ts pretrain [options]" }));
 * //   --lr <number>          peak learning rate (default: 0.0003)
 * //                            why: stable for small models
 * ```
 */
export function renderOptionsHelp(
  schema: readonly OptionSpec[],
  options: { usage?: string; description?: string } = {},
): string {
  const rows: [string, string[]][] = [[`${CONFIG_FLAG} <file>`, [
    "JSON file of options (keys are the names in camelCase, e.g. batchSize); flags override it",
  ]], ["-h, --help", ["print this help"]]];
  for (const o of schema) {
    const arg = o.type === "boolean"
      ? ""
      : o.type === "string[]"
      ? " <string...>"
      : o.choices
      ? ` <${o.choices.join("|")}>`
      : ` <${o.type}>`;
    const neg = o.type === "boolean" ? `, --no-${flagName(o.name).slice(2)}` : "";
    // A help text that already names its default (`(default: --init)`) gets no second one.
    const named = /\(default: [^)]*\)/.test(o.help);
    const lines = [named ? o.help : `${o.help} (default: ${formatDefault(o.default)})`];
    if (o.why) lines.push(`  why: ${o.why}`);
    rows.push([`${flagName(o.name)}${arg}${neg}`, lines]);
  }
  const width = Math.min(34, Math.max(...rows.map(([f]) => f.length)) + 2);
  const out: string[] = [];
  if (options.usage) out.push(`Usage: ${options.usage}`, "");
  if (options.description) out.push(options.description, "");
  out.push("Options (precedence: defaults < --config file < flags):");
  for (const [flag, lines] of rows) {
    const pad = flag.length + 2 > width
      ? "\n" + " ".repeat(width + 2)
      : " ".repeat(width - flag.length);
    out.push(`  ${flag}${pad}${lines[0]}`);
    for (const l of lines.slice(1)) out.push(" ".repeat(width + 2) + l);
  }
  return out.join("\n");
}
