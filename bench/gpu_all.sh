#!/usr/bin/env bash
# Every benchmark of this project in one time-boxed run, for the lent GPU machine (one H200, no
# network), with the PyTorch peer on the same shapes in the same run. See bench/README.md.
#
#   here, once:     bash bench/gpu_all.sh pack   # .gpu/: Deno, Vulkan loaders, the npm cache
#   on the device:  bash bench/gpu_all.sh        # everything; log and results under $OUT
#   here, a test:   GPU_BENCH_QUICK=1 bash bench/gpu_all.sh          # lavapipe, small sizes
#                   GPU_BENCH_QUICK=1 GPU_BENCH_OFFLINE=1 unshare -n bash bench/gpu_all.sh
#   parity:         bash bench/gpu_all.sh parity # torch peer == model/reference.ts (CPU, f64)
#
# Device call (the `run` tool): command "bash bench/gpu_all.sh", carry [".gpu"], timeout_s 600.
#
# Parts, in order, each under `timeout` and inside a total budget (GPU_BENCH_BUDGET seconds,
# default 480): nvidia-smi; `cli.ts info`; torch.mm fp32 ceiling; bench/matmul.ts (ours vs
# tfjs); bench/attention.ts (fused vs unfused) and torch SDPA at its shapes; bench/train.ts for
# mini and small, each followed by bench/torch_peer.py train on the same config; bench/decode.ts;
# the torch peer's parity check; then a summary table (also $OUT/summary.txt, $OUT/results.json).
#
# Environment: OUT (default runs/gpu_bench), GPU_BENCH_QUICK=1 (small sizes, for lavapipe),
# GPU_BENCH_BUDGET (seconds), GPU_BENCH_PYTHON (default python3), GPU_BENCH_DEVICE=0/1 (force
# the device mode off/on: Deno through .gpu/run.sh), GPU_BENCH_OFFLINE=1 (use
# .gpu/deno_dir.tar.xz and --cached-only even off the device), GPU_BENCH_PEAK_GFLOPS (FP32
# peak the matmul rate is compared to; default 67000: the H200's plain FP32 rate, "dense bf16
# about 990 TFLOP/s, plain fp32 about 67", /work/.library/device/H200.md, from NVIDIA's
# H100/H200 SXM datasheet).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

pack() {
  # Deno (xz), the Vulkan/EGL loader debs and .gpu/run.sh come from the shared packer.
  if [ ! -f .gpu/run.sh ] || [ ! -f .gpu/deno.xz ]; then
    bash ../shared/device/pack.sh || return 1
  fi
  # The npm packages the benches import, as a fresh DENO_DIR holding only those (tfjs, commander,
  # ... about 140 MB unpacked, 12 MB as .tar.xz). Deno on the device then runs with
  # DENO_DIR pointing at its extraction and --cached-only: no registry needed.
  local dd
  dd=$(mktemp -d)
  DENO_DIR=$dd deno cache cli.ts bench/matmul.ts bench/attention.ts bench/train.ts \
    bench/decode.ts || return 1
  tar -C "$dd" -cf - npm | xz -T2 -6 > .gpu/deno_dir.tar.xz
  rm -rf "$dd"
  du -sh .gpu .gpu/*
  local tree
  tree=$( (git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -n 1 |
    cut -f1) || echo 0)
  echo "working tree $((tree / 1024 / 1024)) MiB + .gpu $(du -sm .gpu | cut -f1) MiB (limit 64 MiB)"
}

parity() {
  # The reference (model/reference.ts, f64) on the tiny preset, with a nonzero balancing bias;
  # bench/torch_peer.py loads the same parameters by HF name and compares in float64.
  local py=${GPU_BENCH_PYTHON:-python3} ref=${1:-/tmp/gpu_bench_parity.json}
  local script
  script=$(mktemp --suffix .ts)
  cat > "$script" <<'TS'
import { resolveConfig } from "ROOT/model/config.ts";
import { initParameters } from "ROOT/model/params.ts";
import { referenceForwardBackward } from "ROOT/model/reference.ts";
const cfg = resolveConfig("tiny");
const params = initParameters(cfg, 7);
for (const [k, v] of params) {
  if (k.endsWith("e_score_correction_bias")) v.forEach((_, i) => v[i] = 0.05 * Math.sin(3 * i));
}
const B = 2, T = 16, N = B * T;
let s = 12345;
const r = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
const tokens = Int32Array.from({ length: N }, () => Math.floor(r() * cfg.vocab_size));
const targets = Int32Array.from({ length: N }, (_, i) =>
  i % 7 === 3 ? -1 : Math.floor(r() * cfg.vocab_size));
const res = referenceForwardBackward(cfg, { params, tokens, targets, shape: { B, T } });
const arr = (m: Map<string, ArrayLike<number>>) =>
  Object.fromEntries([...m].map(([k, v]) => [k, Array.from(v)]));
Deno.writeTextFileSync(Deno.args[0], JSON.stringify({
  config: cfg, B, T, tokens: [...tokens], targets: [...targets], params: arr(params),
  losses: res.losses, grads: arr(res.grads), loads: res.moe.map((m) => [...m.loads]),
}));
TS
  sed -i "s#\"ROOT/#\"$ROOT/#" "$script"
  $DENO run $DENO_FLAGS "$script" "$ref"
  local rc=$?
  rm -f "$script"
  [ $rc -eq 0 ] || return $rc
  "$py" bench/torch_peer.py parity --ref "$ref"
}

# ----------------------------------------------------------------------------------------------
# Where Deno and its packages come from.

# Device mode: the packed Deno and loaders (.gpu/run.sh) on a machine with an NVIDIA driver, or
# wherever no Deno is installed; GPU_BENCH_DEVICE=0/1 overrides.
ON_DEVICE=${GPU_BENCH_DEVICE:-0}
if [ -z "${GPU_BENCH_DEVICE:-}" ] && [ -f .gpu/run.sh ] &&
  { command -v nvidia-smi > /dev/null 2>&1 || ! command -v deno > /dev/null; }; then
  ON_DEVICE=1
fi
DENO=deno
DENO_FLAGS="-A"
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
setup_deno() {
  # .gpu/run.sh unpacks the loaders and Deno and points Vulkan at the NVIDIA driver, then runs
  # its arguments: every Deno call goes through it on the device.
  if [ $ON_DEVICE = 1 ]; then
    DENO="bash $ROOT/.gpu/run.sh deno"
    # run.sh points Vulkan at /usr/local/nvidia's ICD; elsewhere, name the first one found
    if [ ! -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
      local f
      for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
        if [ -f $f ]; then export VK_DRIVER_FILES=$f; break; fi
      done
    fi
    # the ICD's driver library, for Deno only (torch finds its own)
    if [ -d /usr/local/nvidia/lib64 ] && ! ldconfig -p | grep -q libGLX_nvidia; then
      DENO="env LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64 $DENO"
    fi
  fi
  if [ $ON_DEVICE = 1 ] || [ "${GPU_BENCH_OFFLINE:-0}" = 1 ]; then
    if [ ! -f .gpu/deno_dir.tar.xz ]; then
      echo "no .gpu/deno_dir.tar.xz: run 'bash bench/gpu_all.sh pack' here and carry .gpu" >&2
      return 1
    fi
    export DENO_DIR=/tmp/gpu_bench_deno_dir
    if [ ! -d $DENO_DIR/npm ]; then
      mkdir -p $DENO_DIR && xz -dc .gpu/deno_dir.tar.xz | tar -C $DENO_DIR -xf - || return 1
    fi
    DENO_FLAGS="-A --cached-only"
  fi
  export DENO DENO_FLAGS
}

case "${1:-}" in
  pack)
    pack
    exit $?
    ;;
  parity)
    setup_deno || exit 1
    parity "${2:-/tmp/gpu_bench_parity.json}"
    exit $?
    ;;
  "") ;;
  *)
    echo "usage: bash bench/gpu_all.sh [pack|parity]" >&2
    exit 2
    ;;
esac

# ----------------------------------------------------------------------------------------------
# The run.

QUICK=${GPU_BENCH_QUICK:-0}
BUDGET=${GPU_BENCH_BUDGET:-480}
PY=${GPU_BENCH_PYTHON:-python3}
PEAK=${GPU_BENCH_PEAK_GFLOPS:-67000}
OUT=${OUT:-$ROOT/runs/gpu_bench}
WORK=$(mktemp -d /tmp/gpu_bench.XXXX) # per-part JSON; $OUT keeps at most a few files
mkdir -p "$OUT"
export PY WORK QUICK

START=$SECONDS
# part NAME LIMIT COMMAND: runs COMMAND (a bash string) under `timeout`, inside the budget
part() {
  local name=$1 limit=$2 cmd=$3
  local left=$((BUDGET - (SECONDS - START)))
  if [ $left -lt 20 ]; then
    echo "== $name: SKIPPED, the ${BUDGET} s budget is spent"
    echo "$name skipped 0" >> "$WORK/parts.txt"
    return
  fi
  [ "$limit" -gt $left ] && limit=$left
  echo
  echo "== $name (limit ${limit} s; $(date +%T); load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "\$ $cmd"
  local t0=$SECONDS
  timeout -k 10 "$limit" bash -c "set -o pipefail; $cmd"
  local rc=$?
  [ $rc = 124 ] && echo "== $name: TIMED OUT after $limit s"
  echo "== $name: rc $rc, $((SECONDS - t0)) s"
  echo "$name $rc $((SECONDS - t0))" >> "$WORK/parts.txt"
}

HAVE_TORCH=0
have_torch() { [ $HAVE_TORCH = 1 ]; }

main() {
  echo "gpu_all.sh: $(date -u +%FT%TZ) on $(hostname); device mode $ON_DEVICE, quick $QUICK," \
    "budget $BUDGET s; git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  setup_deno || return 1
  # find_spec, not an import: a CUDA torch takes seconds to import, and each part imports it anyway
  if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"; then
    HAVE_TORCH=1
  else
    echo "no torch for $PY: the PyTorch parts are skipped"
  fi
  if [ $QUICK = 1 ]; then
    PRESETS="nano mini"
    local shape="--batch 1 --seq 32 --steps 1" tshape="--warmup 1"
    local mm="--sizes 256,512" attn="--presets nano --T 64,128 --tokens 256 --rounds 1 --target 0.05 --check --profile"
    local dec="--presets nano --prompt 8 --tokens 4 --batches 1 --train-steps 0 --no-cache-tokens 2 --repeat 1"
    local tmm="--sizes 256,512 --reps 3" treps="--reps 3"
  else
    PRESETS="mini small"
    local shape="--steps 5" tshape="--warmup 2"
    local mm="--sizes 1024,2048,4096,8192x512x1408,8192x1408x512,1408x8192x512:ta,8192"
    local attn="--presets nano,mini,small --T 128,256,512,1024 --target 0.15 --check --profile"
    local dec="--presets nano,mini --mini-tokens 32"
    local tmm="--sizes 2048,4096,8192" treps="--reps 10"
  fi
  if [ $ON_DEVICE = 1 ]; then
    part nvidia-smi 30 "nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv; ls /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1; echo VK_DRIVER_FILES=\${VK_DRIVER_FILES:-}; uname -r; nproc"
  fi
  part info 60 "$DENO run $DENO_FLAGS cli.ts info --all"
  if [ $ON_DEVICE = 1 ] && grep -q -i -E "llvmpipe|lavapipe|No WebGPU adapter" "$OUT/gpu_bench.log"; then
    echo "WARNING: no NVIDIA adapter (software or none): the figures below are not the GPU's"
  fi
  if have_torch; then
    part torch-matmul 60 "'$PY' bench/torch_peer.py matmul $tmm --json '$WORK/torch_matmul.json'"
  else
    echo "== torch-matmul: SKIPPED, no torch for $PY"
  fi
  part matmul 150 "$DENO run $DENO_FLAGS bench/matmul.ts $mm | tee '$WORK/matmul.txt'"
  part attention 150 "$DENO run $DENO_FLAGS bench/attention.ts $attn --json '$WORK/attention.json'"
  if have_torch && [ -f "$WORK/attention.json" ]; then
    part torch-attention 60 "'$PY' bench/torch_peer.py attention --from '$WORK/attention.json' $treps --json '$WORK/torch_attention.json'"
  fi
  for p in $PRESETS; do
    part "train-$p" 150 "$DENO run $DENO_FLAGS bench/train.ts --preset $p $shape --json '$WORK/train_$p.json'"
    if have_torch && [ -f "$WORK/train_$p.json" ]; then
      part "torch-train-$p" 120 "'$PY' bench/torch_peer.py train --config '$WORK/train_$p.json' $tshape --json '$WORK/torch_train_$p.json'"
    fi
  done
  part decode 90 "$DENO run $DENO_FLAGS bench/decode.ts $dec | tee '$WORK/decode.txt'"
  if have_torch; then
    part parity 60 "bash bench/gpu_all.sh parity '$WORK/parity.json'"
  fi
  if [ $ON_DEVICE = 1 ]; then
    part nvidia-smi-after 20 "nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,memory.used --format=csv"
  fi
  echo
  echo "== total $((SECONDS - START)) s"
  summary
}

summary() {
  # Only the standard library: python3 is on the device (with torch) and here.
  python3 - "$WORK" "$OUT" "$PEAK" <<'PY'
import glob, json, os, re, sys

work, out, peak = sys.argv[1], sys.argv[2], float(sys.argv[3])
res = {}
for f in sorted(glob.glob(os.path.join(work, "*.json"))):
    name = os.path.basename(f)[:-5]
    if name == "parity":
        continue
    try:
        res[name] = json.load(open(f))
    except Exception as e:  # a part cut off mid-write
        res[name] = {"error": str(e)}
parts = []
if os.path.exists(os.path.join(work, "parts.txt")):
    for line in open(os.path.join(work, "parts.txt")):
        n, rc, s = line.split()
        parts.append({"part": n, "rc": rc, "seconds": int(s)})
res["parts"] = parts
for txt in ("matmul", "decode"):
    p = os.path.join(work, txt + ".txt")
    if os.path.exists(p):
        res[txt + "_log"] = open(p).read()
lines = []
w = lines.append
w("SUMMARY (ours = WGSL kernels through Deno's WebGPU; peer named per row)")
w(f"FP32 peak used: {peak / 1000:.0f} TFLOP/s")
adapter = next((v["adapter"] for v in res.values() if isinstance(v, dict) and "adapter" in v), None)
if adapter:
    w(f"adapter: {adapter}")

# matmul: the final table of bench/matmul.ts
best = None
mm = re.findall(r"^(\S.*?)\s{2,}([\d.]+)\s+([\d.]+|-)\s+([\d.]+x|-)\s+(\S+)\s*$", res.get("matmul_log", ""), re.M)
rows, seen = [], set()
for label, ours, tfjs, ratio, diff in mm:
    if label in seen or label == "shape":
        continue
    seen.add(label)
    rows.append((label, float(ours), tfjs, ratio))
    if best is None or float(ours) > best[1]:
        best = (label, float(ours), tfjs, ratio)
tm = res.get("torch_matmul", {}).get("rows", [])
tbest = max((r["gflops"] for r in tm), default=None)
w("")
w("matmul (fp32)          ours GFLOP/s   % of peak   tfjs GFLOP/s   ours/tfjs")
for label, ours, tfjs, ratio in rows:
    w(f"  {label:28} {ours:10.0f}   {100 * ours / peak:8.1f}%   {tfjs:>12}   {ratio:>9}")
if tbest:
    w(f"  torch.mm fp32 (TF32 off) best {tbest:.0f} GFLOP/s = {100 * tbest / peak:.0f}% of peak"
      + (f"; ours best / torch = {best[1] / tbest:.3f}" if best else ""))

att = res.get("attention", {}).get("rows", [])
tatt = {(r["preset"], r["T"], r["mode"]): r for r in res.get("torch_attention", {}).get("rows", [])}
if att:
    w("")
    w("attention              B     T  mode      fused ms  unfused ms  ratio  gpu-ratio  torch SDPA ms  ours/torch  max|diff|  fused-vs-CPU")
    for r in att:
        t = tatt.get((r["preset"], r["T"], r["mode"]))
        gr = f"{r['gpu_speedup']:.2f}x" if r.get("gpu_speedup") else "-"
        w(f"  {r['preset']:6} {r['B']:14} {r['T']:5}  {r['mode']:8} {r['fused_ms']:9.3f} {r['unfused_ms']:11.3f} "
          f"{r['speedup']:5.2f}x {gr:>10} {(t['torch_ms'] if t else float('nan')):14.3f} "
          f"{(t['ours_over_torch'] if t else float('nan')):10.2f}x  {r['max_abs_diff']:.1e}"
          + (f"    {r['cpu_check']['fused']:.1e}" + ("  WRONG" if not r['cpu_check']['fused'] <= 1e-3 else "")
             if r.get("cpu_check") else ""))
    w("  (ratio = unfused / fused wall ms, goal >= 3x at T=512; gpu-ratio from kernel timestamps;"
      " ours/torch = our fused GPU ms / SDPA ms; fused-vs-CPU = max|err| of out, dq, dk, dv against"
      " the f64 CPU twin at B=1, H=2)")

# presets in the order they ran
trains = [p["part"][len("train-"):] for p in parts if p["part"].startswith("train-")]
trains = [t for t in trains if "train_" + t in res]
if trains:
    w("")
    w("training step          B x T       ours tok/s  efficiency  GFLOP/s  % peak   torch tok/s  torch/ours")
    for p in trains:
        r = res["train_" + p]
        t = res.get("torch_train_" + p, {})
        if r.get("status") != "done":
            w(f"  {p:20} {r.get('B')} x {r.get('T')}: ours did not finish ({r.get('status', r.get('error'))})"
              + (f"; torch {t['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in t else ""))
            continue
        tt = t.get("tokens_per_s")
        w(f"  {p:20} {r['B']:4} x {r['T']:<5} {r['tokens_per_s']:10.0f}  {r['efficiency']:10.3f}  "
          f"{r['achieved_gflops']:7.0f}  {100 * r['achieved_gflops'] / peak:5.1f}%  "
          + (f"{tt:11.0f}  {tt / r['tokens_per_s']:9.1f}x" if tt else "          -          -"))
    w("  (efficiency = GEMM-bound step time at our measured matmul rate / measured step; goal 0.6)")
dl = [l for l in res.get("decode_log", "").splitlines()
      if re.match(r"^(nano|mini|small|tiny) (random|trained)", l) or "peer: no cache" in l or "SKIPPED" in l]
if dl:
    w("")
    w("decode                 batch  mode         TTFT ms  decode tok/s  total tok/s  steps  accepted")
    w("\n".join("  " + l for l in dl))
w("")
w("parts: " + ", ".join(f"{p['part']} {'ok' if p['rc'] == '0' else 'rc ' + p['rc']} {p['seconds']}s" for p in parts))
text = "\n".join(lines)
print(text)
open(os.path.join(out, "summary.txt"), "w").write(text + "\n")
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
PY
}

main 2>&1 | tee "$OUT/gpu_bench.log"
