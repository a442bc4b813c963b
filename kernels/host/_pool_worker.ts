/**
 * A worker of the host pool (`_pool.ts`): sleeps until woken, takes chunks of the open job from
 * the ticket with the same job table as the main thread, marks each finished.
 *
 * It imports every module that defines jobs, so its table matches the main thread's.
 *
 * @module
 */
import { type MessagePort, parentPort, receiveMessageOnPort } from "node:worker_threads";
import {
  ARG_F32,
  ARG_NULL,
  ARG_NUM,
  CHUNK,
  CHUNKS,
  FAILED,
  finishChunk,
  HEAD,
  type JobArg,
  jobNamed,
  MAX_ARGS,
  N,
  NAME_BYTES,
  type PoolShared,
  POSTED,
  READY,
  takeChunk,
  TAKEN,
  WAKE,
  WORKER0,
} from "./_pool.ts";
import "./cross_entropy.ts";
import "./elementwise.ts";
import "./optim.ts";

interface Init extends PoolShared {
  slot: number;
  port: MessagePort;
}

parentPort!.once("message", ({ ticket: t, ctl: c, desc: d, slot, port }: Init) => {
  const ticket = new BigInt64Array(t), ctl = new Int32Array(c), mine = WORKER0 + 2 * slot;
  const desc = new Float64Array(d, NAME_BYTES), nameBytes = new Uint8Array(d, 0, NAME_BYTES);
  const buffers = new Map<number, SharedArrayBuffer>(), decoder = new TextDecoder();
  let received = 0;

  /** Reads the posts up to `count` (false when they are not there: a stale descriptor). */
  function receive(count: number): boolean {
    while (received < count) {
      const m = receiveMessageOnPort(port)?.message as
        | { add?: number; buffer?: SharedArrayBuffer; drop?: number[] }
        | undefined;
      if (!m) return false;
      received++;
      if (m.add !== undefined) buffers.set(m.add, m.buffer!);
      for (const id of m.drop ?? []) buffers.delete(id);
    }
    return true;
  }

  /** The job and its arguments from the descriptor (null when they cannot be read). */
  function read(): { fn: (a: JobArg[], s: number, e: number) => void; args: JobArg[] } | null {
    if (!receive(desc[POSTED])) return null;
    const len = nameBytes.indexOf(0);
    const job = jobNamed(decoder.decode(nameBytes.slice(0, len < 0 ? NAME_BYTES : len)));
    if (!job) return null;
    const args: JobArg[] = [];
    for (let i = 0; i < MAX_ARGS && desc[HEAD + i * 4] >= 0; i++) {
      const o = HEAD + i * 4, kind = desc[o];
      if (kind === ARG_NULL) args.push(null);
      else if (kind === ARG_NUM) args.push(desc[o + 1]);
      else {
        const b = buffers.get(desc[o + 1]);
        if (!b) return null;
        const off = desc[o + 2], len = desc[o + 3];
        args.push(kind === ARG_F32 ? new Float32Array(b, off, len) : new Int32Array(b, off, len));
      }
    }
    return { fn: job.fn, args };
  }

  Atomics.store(ctl, mine + READY, 1);
  Atomics.notify(ctl, mine + READY);
  let wake = 0;
  for (;;) {
    Atomics.wait(ctl, WAKE, wake);
    wake = Atomics.load(ctl, WAKE);
    const seq = Atomics.load(ticket, 0) >> 32n;
    // the descriptor is the open job's only if a chunk of that job is taken after reading it
    let job: ReturnType<typeof read> = null;
    try {
      job = read();
    } catch {
      // torn offsets of a descriptor being rewritten: not this worker's job to run
    }
    const n = desc[N], chunk = desc[CHUNK], chunks = desc[CHUNKS];
    // a descriptor that cannot be read is a stale one: the calling thread takes the chunks
    if (!job) continue;
    for (let k; (k = takeChunk(ticket, seq, chunks)) >= 0;) {
      try {
        job.fn(job.args, k * chunk, Math.min((k + 1) * chunk, n));
      } catch (e) {
        console.error(e);
        Atomics.store(ctl, FAILED, 1);
      }
      ctl[mine + TAKEN]++;
      finishChunk(ctl, chunks);
    }
  }
});
