/**
 * The CPU backend's worker pool: runs a host kernel's loop over an index range on several threads
 * at once. The range is cut into fixed chunks that the threads (the calling one included) take
 * from a shared ticket; the calling thread then blocks until every chunk taken is finished.
 *
 *     defineJob(name, fn)          fn(args, start, end) processes indices [start, end)
 *     runJob(job, n, args, chunk)  runs fn over [0, n) in chunks of `chunk` indices
 *
 * Host memory is `SharedArrayBuffer` (`../cpu.ts`), so a job's arguments are views the workers
 * rebuild from (buffer id, byte offset, length); each buffer is posted to the workers once, on
 * first use, and forgotten when the main thread's buffer is collected. Every index is processed
 * by exactly one thread with the same code, so the results are the same bits whatever the thread
 * count or which thread took a chunk: a job must not combine values across indices (no
 * reductions). Taking chunks from a ticket, rather than one fixed share per thread, means a worker
 * the OS has not scheduled (other jobs on the cores) delays the call by at most the chunk it holds,
 * and a worker that wakes after the calling thread took every chunk costs nothing.
 *
 * The ticket is one 64-bit word, (job number << 32) | next chunk, taken by compare-exchange. A
 * worker reads the job's descriptor after reading the ticket and uses it only if its first
 * compare-exchange succeeds, i.e. the job was still open: the calling thread rewrites the
 * descriptor only after closing the previous job's ticket.
 *
 * Threads: `setPoolThreads(n)` (the CPU backend passes `MINIDEEPSEEK_THREADS`, default the core
 * count), n - 1 workers. They start on the first job of at least two chunks and are `unref`ed, so
 * they never keep a process alive; until a worker reports ready the calling thread works alone.
 * A job smaller than two chunks runs on the calling thread: waking a worker costs tens of
 * microseconds, so a chunk should be worth more than that.
 *
 * @module
 */
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";

/** One argument of a job: a view of host memory, a number, or nothing. */
export type JobArg = Float32Array | Int32Array | number | null;

/** A named loop over `[start, end)`; the same function runs on every thread. */
export interface Job {
  /** The job's name (its key in the workers' table). */
  readonly name: string;
  /** The loop. */
  readonly fn: (args: JobArg[], start: number, end: number) => void;
}

const jobs = new Map<string, Job>();

/**
 * Registers a job under a name unique in the process (the workers import the same modules, so
 * they register the same table).
 * @throws {Error} when the name is taken.
 */
export function defineJob(name: string, fn: Job["fn"]): Job {
  if (jobs.has(name)) throw new Error(`host pool: job ${name} defined twice`);
  const job = { name, fn };
  jobs.set(name, job);
  return job;
}

/** The job registered under `name` (workers). */
export function jobNamed(name: string): Job | undefined {
  return jobs.get(name);
}

/** The shared memory of a pool, as a worker receives it. */
export interface PoolShared {
  /** [1] BigInt64: the ticket, (job number << 32) | next chunk. */
  ticket: SharedArrayBuffer;
  /** Int32: [WAKE, FIN, FAILED], then [READY, TAKEN] per worker from WORKER0. */
  ctl: SharedArrayBuffer;
  /** The job: its name (utf-8, zero-padded, NAME_BYTES), then f64 slots (HEAD, then args). */
  desc: SharedArrayBuffer;
}

/** Int32 slots of `ctl`: bumped to wake the workers; chunks finished; a chunk threw. */
export const WAKE = 0, FIN = 1, FAILED = 2, WORKER0 = 4;
/** Per-worker slots (from WORKER0 + 2 i): started; chunks it ran (tests). */
export const READY = 0, TAKEN = 1;
/** f64 slots of the descriptor head: n, chunk size, chunk count, buffers posted so far. */
export const N = 0, CHUNK = 1, CHUNKS = 2, POSTED = 3, HEAD = 4;
/** Argument slots (4 f64 each: kind, buffer id or value, byte offset, length); kind -1 ends. */
export const MAX_ARGS = 24, NAME_BYTES = 64;
/** Argument kinds in the descriptor. */
export const ARG_NULL = 0, ARG_NUM = 1, ARG_F32 = 2, ARG_I32 = 3;

/** The ticket's chunk field once a job is done: above any chunk count. */
const CLOSED = 0xffffffffn;

/**
 * Takes the next chunk of job `seq` from the ticket.
 * @returns its index, or -1 when the job has no chunk left or is no longer the open one.
 */
export function takeChunk(ticket: BigInt64Array, seq: bigint, chunks: number): number {
  for (;;) {
    const cur = Atomics.load(ticket, 0);
    if (cur >> 32n !== seq) return -1;
    const k = Number(cur & 0xffffffffn);
    if (k >= chunks) return -1;
    if (Atomics.compareExchange(ticket, 0, cur, cur + 1n) === cur) return k;
  }
}

/** Marks one chunk finished; wakes the calling thread when it was the last. */
export function finishChunk(ctl: Int32Array, chunks: number): void {
  if (Atomics.add(ctl, FIN, 1) + 1 === chunks) Atomics.notify(ctl, FIN);
}

let threads = 1;
let workers: { w: Worker; port: MessagePort }[] = [];
const ticket = new BigInt64Array(new SharedArrayBuffer(8));
let ctl = new Int32Array(new SharedArrayBuffer(WORKER0 * 4));
const descBuf = new SharedArrayBuffer(NAME_BYTES + (HEAD + MAX_ARGS * 4) * 8);
const desc = new Float64Array(descBuf, NAME_BYTES),
  descName = new Uint8Array(descBuf, 0, NAME_BYTES);
let seq = 0n, posted = 0, nextId = 1;
let ids = new WeakMap<SharedArrayBuffer, number>();
const dropped: number[] = [];
const collected = new FinalizationRegistry<number>((id) => dropped.push(id));
const encoder = new TextEncoder();

/**
 * Sets the thread count jobs split over (1: everything on the calling thread). Changing it
 * stops the current workers; the next large job starts new ones.
 */
export function setPoolThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`host pool: threads must be >= 1, got ${n}`);
  if (n === threads) return;
  for (const { w } of workers) w.terminate();
  workers = [];
  threads = n;
}

/** The thread count jobs split over. */
export function poolThreads(): number {
  return threads;
}

function start(): void {
  const n = threads - 1;
  ctl = new Int32Array(new SharedArrayBuffer((WORKER0 + 2 * n) * 4));
  posted = 0;
  ids = new WeakMap(); // the new workers hold no buffers yet
  dropped.length = 0;
  for (let i = 0; i < n; i++) {
    const w = new Worker(new URL("./_pool_worker.ts", import.meta.url));
    w.unref();
    const { port1, port2 } = new MessageChannel();
    const init = { ticket: ticket.buffer, ctl: ctl.buffer, desc: descBuf, slot: i, port: port2 };
    w.postMessage(init, [port2]);
    workers.push({ w, port: port1 });
  }
}

function ready(i: number): boolean {
  return Atomics.load(ctl, WORKER0 + 2 * i + READY) === 1;
}

/**
 * Blocks until every worker has started (tests; jobs never wait for a start).
 * @returns whether all started within `timeoutMs`.
 */
export function waitForWorkers(timeoutMs = 10_000): boolean {
  if (threads > 1 && workers.length === 0) start();
  const until = performance.now() + timeoutMs;
  for (let i = 0; i < workers.length; i++) {
    while (!ready(i)) {
      const left = until - performance.now();
      if (left <= 0) return false;
      Atomics.wait(ctl, WORKER0 + 2 * i + READY, 0, left);
    }
  }
  return true;
}

/** Chunks the current workers have run since they started (tests: did the pool split work?). */
export function workerChunks(): number {
  let sum = 0;
  for (let i = 0; i < workers.length; i++) sum += Atomics.load(ctl, WORKER0 + 2 * i + TAKEN);
  return sum;
}

/** Posts `msg` to every worker; a worker reads the posts a job counts before running it. */
function post(msg: unknown): void {
  for (const { port } of workers) port.postMessage(msg);
  posted++;
}

function bufferId(b: SharedArrayBuffer): number {
  let id = ids.get(b);
  if (id === undefined) {
    id = nextId++;
    ids.set(b, id);
    collected.register(b, id);
    post({ add: id, buffer: b });
  }
  return id;
}

/**
 * Runs `job` over `[0, n)` in chunks of `chunk` indices, taken by the calling thread and the
 * workers that are awake; returns when every chunk is finished.
 * @throws {Error} when a worker's chunk threw (the message says which job).
 */
export function runJob(job: Job, n: number, args: JobArg[], chunk: number): void {
  if (threads < 2 || n < 2 * chunk) return job.fn(args, 0, n);
  if (
    !args.every((a) => typeof a !== "object" || a === null || a.buffer instanceof SharedArrayBuffer)
  ) {
    return job.fn(args, 0, n); // a view of unshared memory: only this thread can see it
  }
  if (workers.length === 0) start();
  let awake = false;
  for (let i = 0; i < workers.length; i++) awake ||= ready(i);
  if (!awake) return job.fn(args, 0, n);
  if (dropped.length) post({ drop: dropped.splice(0) });
  const chunks = Math.ceil(n / chunk);
  describe(job, args, n, chunk, chunks);
  Atomics.store(ctl, FIN, 0);
  Atomics.store(ctl, FAILED, 0);
  seq++;
  Atomics.store(ticket, 0, seq << 32n); // opens the job
  Atomics.add(ctl, WAKE, 1);
  Atomics.notify(ctl, WAKE);
  // a throw is kept until the workers are done: none may still run a chunk of this job later
  let error: unknown = null;
  for (let k; (k = takeChunk(ticket, seq, chunks)) >= 0;) {
    try {
      job.fn(args, k * chunk, Math.min((k + 1) * chunk, n));
    } catch (e) {
      error ??= e;
    }
    finishChunk(ctl, chunks);
  }
  for (let f; (f = Atomics.load(ctl, FIN)) < chunks;) Atomics.wait(ctl, FIN, f);
  Atomics.store(ticket, 0, (seq << 32n) | CLOSED); // no chunk count read later can reopen it
  if (error !== null) throw error;
  if (Atomics.load(ctl, FAILED)) {
    throw new Error(`host pool: job ${job.name} failed on a worker (see its stderr)`);
  }
}

function describe(job: Job, args: JobArg[], n: number, chunk: number, chunks: number): void {
  if (args.length > MAX_ARGS) throw new Error(`host pool: job ${job.name} has > ${MAX_ARGS} args`);
  descName.fill(0);
  encoder.encodeInto(job.name, descName);
  for (let i = 0; i < args.length; i++) {
    const a = args[i], o = HEAD + i * 4;
    if (a === null) {
      desc[o] = ARG_NULL;
    } else if (typeof a === "number") {
      desc[o] = ARG_NUM;
      desc[o + 1] = a;
    } else {
      desc[o] = a instanceof Float32Array ? ARG_F32 : ARG_I32;
      desc[o + 1] = bufferId(a.buffer as SharedArrayBuffer);
      desc[o + 2] = a.byteOffset;
      desc[o + 3] = a.length;
    }
  }
  if (args.length < MAX_ARGS) desc[HEAD + args.length * 4] = -1;
  desc[N] = n;
  desc[CHUNK] = chunk;
  desc[CHUNKS] = chunks;
  desc[POSTED] = posted; // after bufferId's posts
}
