/**
 * Durable file helpers shared by the shard writer, the checkpoint writer and the metrics log:
 * fsync a directory, write a file and fsync it, and replace a file atomically.
 *
 * Why: a rename is only durable once the directory holding it is fsynced (POSIX leaves the
 * directory entry in the page cache otherwise), and a file's bytes only once the file is.
 * Windows cannot open a directory for fsync; there the directory sync is skipped (NTFS journals
 * renames itself).
 *
 * @module
 */

/**
 * Flushes a directory's entries (new names, renames, deletions) to disk.
 *
 * @param path The directory.
 * @throws {Deno.errors.NotFound} when the directory does not exist.
 * @example
 * ```ts
 * await syncDir("runs/demo");
 * ```
 */
export async function syncDir(path: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/**
 * Writes `bytes` to a new file (replacing any) and fsyncs it before returning.
 *
 * @param path The file to write.
 * @param bytes The whole content.
 * @throws When the file cannot be created or written (the OS error names the path).
 * @example
 * ```ts
 * await writeFileSynced("out/meta.json", new TextEncoder().encode("{}"));
 * ```
 */
export async function writeFileSynced(path: string, bytes: Uint8Array): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(f, bytes);
    await f.sync();
  } finally {
    f.close();
  }
}

/**
 * Replaces `path` atomically: writes `path.tmp-<pid>`, fsyncs it, renames it over `path` and
 * fsyncs the directory. A reader sees the old content or the new, never a mix.
 *
 * @param path The file to replace.
 * @param bytes The new content.
 * @throws {Error} naming `path` when it cannot be written (the partial temporary file is removed).
 * @example
 * ```ts
 * await atomicWriteFile("runs/demo/latest.json", new TextEncoder().encode('{"step":1}'));
 * ```
 */
export async function atomicWriteFile(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await writeFileSynced(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    // A full disk must not keep the partial copy holding the space it ran out of.
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`${path}: cannot write it (${(e as Error).message}); it was left unchanged`, {
      cause: e,
    });
  }
  await syncDir(dirname(path));
}

/**
 * Writes every byte of `bytes` to `f` (a single `write` may write fewer).
 *
 * @param f An open file.
 * @param bytes The bytes to write.
 * @example
 * ```ts
 * await writeAll(file, new Uint8Array([1, 2, 3]));
 * ```
 */
export async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await f.write(bytes.subarray(done));
}

/**
 * Reads exactly `buf.length` bytes from `f`'s current position.
 *
 * @param f An open file.
 * @param buf Where to put the bytes.
 * @returns The number of bytes read: less than `buf.length` only at end of file.
 * @example
 * ```ts
 * const n = await readFull(file, new Uint8Array(32));
 * ```
 */
export async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const n = await f.read(buf.subarray(done));
    if (n === null) break;
    done += n;
  }
  return done;
}

/**
 * The directory part of a path ("." for a bare name), for either separator.
 *
 * @param path A file path.
 * @returns Its parent directory.
 * @example
 * ```ts
 * dirname("runs/demo/latest.json"); // "runs/demo"
 * ```
 */
export function dirname(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  if (i < 0) return ".";
  return i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/**
 * Joins path parts with "/" (Deno accepts it on every OS).
 *
 * @param parts Path parts; empty ones are skipped.
 * @returns The joined path.
 * @example
 * ```ts
 * join("runs", "demo", "latest.json"); // "runs/demo/latest.json"
 * ```
 */
export function join(...parts: string[]): string {
  return parts.filter((p) => p.length > 0).join("/").replace(/\/{2,}/g, "/");
}

/**
 * Whether a path exists (file or directory).
 *
 * @param path The path to test.
 * @returns True when `stat` succeeds.
 * @example
 * ```ts
 * if (await exists("runs/demo/latest.json")) console.log("resume");
 * ```
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
