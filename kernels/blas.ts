/**
 * The BLAS library of the CPU backend: `cblas_sgemm` loaded with `Deno.dlopen`.
 *
 * Which library: the path in `MINIDEEPSEEK_BLAS` when set, else Apple Accelerate on macOS, else
 * OpenBLAS (Debian/Ubuntu `libopenblas0-pthread`) on Linux. The thread count is set once, from
 * `MINIDEEPSEEK_THREADS` or the core count; OpenBLAS splits a GEMM over M and N, never K, so a
 * fixed thread count gives the same bits on every run.
 *
 * @module
 */

/** Thrown when no BLAS library loads; the message says what to install. */
export class NoBlasError extends Error {
  /**
   * Creates the error.
   * @param tried The library files tried.
   * @param reasons Why each failed to load.
   */
  constructor(tried: string[], reasons: string[]) {
    super(
      `no BLAS library could be loaded (tried ${tried.join(", ")}: ${reasons.join("; ")}). ` +
        "The CPU backend needs cblas_sgemm: on Debian/Ubuntu `apt-get install " +
        "libopenblas0-pthread`, on macOS Accelerate is built in; or set MINIDEEPSEEK_BLAS to the " +
        "path of any library exporting cblas_sgemm.",
    );
    this.name = "NoBlasError";
  }
}

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32", // order (101 = row major)
      "i32", // transA (111 no, 112 yes)
      "i32", // transB
      "i32", // M
      "i32", // N
      "i32", // K
      "f32", // alpha
      "pointer", // A
      "i32", // lda
      "pointer", // B
      "i32", // ldb
      "f32", // beta
      "pointer", // C
      "i32", // ldc
    ],
    result: "void",
  },
} as const;

const THREAD_SYMBOLS = {
  openblas_set_num_threads: { parameters: ["i32"], result: "void" },
  openblas_get_num_threads: { parameters: [], result: "i32" },
  openblas_get_corename: { parameters: [], result: "pointer" },
} as const;

/** Row-major single-precision GEMM over host memory. */
export interface Blas {
  /** The library file that was loaded. */
  readonly path: string;
  /** Threads the library uses (1 when it cannot be told). */
  readonly threads: number;
  /** The CPU kernel family OpenBLAS picked (e.g. "Haswell"), or "". */
  readonly core: string;
  /**
   * `C = alpha op(A) op(B) + beta C`, row major. Pointers are `Deno.UnsafePointer`s to host
   * memory: use {@linkcode ptrOf} for an array and an element offset.
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    a: Deno.PointerValue,
    lda: number,
    b: Deno.PointerValue,
    ldb: number,
    beta: number,
    c: Deno.PointerValue,
    ldc: number,
  ): void;
}

/** A pointer to element `offset` of a host array (which must stay alive during the call). */
export function ptrOf(a: Float32Array, offset = 0): Deno.PointerValue {
  const p = Deno.UnsafePointer.of(a);
  return offset === 0 ? p : Deno.UnsafePointer.offset(p!, offset * 4);
}

/** Library files tried, in order, on this platform. */
export function blasCandidates(): string[] {
  const env = Deno.env.get("MINIDEEPSEEK_BLAS");
  if (env) return [env];
  if (Deno.build.os === "darwin") {
    return ["/System/Library/Frameworks/Accelerate.framework/Accelerate"];
  }
  if (Deno.build.os === "windows") return ["libopenblas.dll", "openblas.dll"];
  return [
    "libopenblas.so.0",
    "libopenblasp.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libopenblas.so",
  ];
}

/** Default thread count: `MINIDEEPSEEK_THREADS`, else the number of cores. */
export function defaultThreads(): number {
  const env = Deno.env.get("MINIDEEPSEEK_THREADS");
  if (env !== undefined) {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1 || n > 1024) {
      throw new Error(`MINIDEEPSEEK_THREADS must be a whole number from 1 to 1024, got '${env}'`);
    }
    return n;
  }
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

let loaded: Blas | null = null;

/**
 * Loads the BLAS library once per process and sets its thread count.
 * @throws {NoBlasError} when none of {@linkcode blasCandidates} loads.
 * @example const blas = loadBlas(); console.log(blas.path, blas.threads);
 */
export function loadBlas(threads: number = defaultThreads()): Blas {
  if (loaded) return loaded;
  const tried = blasCandidates(), reasons: string[] = [];
  for (const path of tried) {
    let lib;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (e) {
      reasons.push(e instanceof Error ? e.message.split("\n")[0] : String(e));
      continue;
    }
    let got = 1, core = "";
    try {
      const t = Deno.dlopen(path, THREAD_SYMBOLS);
      t.symbols.openblas_set_num_threads(threads);
      got = t.symbols.openblas_get_num_threads();
      const p = t.symbols.openblas_get_corename();
      core = p ? Deno.UnsafePointerView.getCString(p) : "";
    } catch {
      // not OpenBLAS (Accelerate, a reference BLAS): it picks its own threads
      got = Deno.build.os === "darwin" ? threads : 1;
    }
    const sg = lib.symbols.cblas_sgemm;
    loaded = {
      path,
      threads: got,
      core,
      sgemm(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc) {
        sg(101, ta ? 112 : 111, tb ? 112 : 111, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
      },
    };
    return loaded;
  }
  throw new NoBlasError(tried, reasons);
}
