#!/usr/bin/env bash
# The CPU backend against what a CPU user would pick instead, in one run on one machine:
# PyTorch CPU eager fp32 with the same thread count (bench/torch_peer.py), training steps at nano
# and mini shapes; GEMM rates against torch.mm and the machine's fp32 peak (bench/cpu_gemm.ts);
# decode tokens/s at batch 1, 4 and 16 (bench/decode.ts). See bench/README.md.
#
#   bash bench/cpu.sh                 # results and a summary under $OUT (default runs/cpu_bench)
#
# Environment: OUT; BENCH_PYTHON (a python with torch 2.x CPU; default: the venv .ci/run makes in
# ~/.cache/minideepseek/venv, else .venv/bin/python from `python3 -m venv .venv && .venv/bin/pip
# install torch`); MINIDEEPSEEK_THREADS (default:
# the core count; torch gets the same); CPU_BENCH_STEPS (timed steps, default 5).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/cpu_bench}
mkdir -p "$OUT"
PY=${BENCH_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/minideepseek/venv/bin/python}
[ -x "$PY" ] || PY=.venv/bin/python
THREADS=${MINIDEEPSEEK_THREADS:-$(nproc)}
STEPS=${CPU_BENCH_STEPS:-5}
export MINIDEEPSEEK_THREADS=$THREADS NO_COLOR=1
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "no torch in $PY: set BENCH_PYTHON to a python with torch (the peer is required)" >&2
  exit 1
fi
{
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "$THREADS threads; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)')"
} | tee "$OUT/machine.txt"

for spec in "nano 8 128" "mini 4 128"; do
  read -r preset B T <<<"$spec"
  echo "::: $preset $B x $T: ours (CPU backend), then torch"
  deno run -A bench/train.ts --device cpu --preset "$preset" --batch "$B" --seq "$T" \
    --steps "$STEPS" --json "$OUT/$preset.json" | tee "$OUT/$preset.txt"
  "$PY" bench/torch_peer.py train --config "$OUT/$preset.json" --device cpu --threads "$THREADS" \
    --json "$OUT/${preset}_torch.json" | tee "$OUT/${preset}_torch.txt"
done

echo "::: GEMM"
deno run -A bench/cpu_gemm.ts --json "$OUT/gemm.json" | tee "$OUT/gemm.txt"
"$PY" bench/torch_peer.py matmul --device cpu --threads "$THREADS" --sizes 512,1024,2048 \
  --json "$OUT/gemm_torch.json" | tee "$OUT/gemm_torch.txt"

echo "::: decode"
MINIDEEPSEEK_DEVICE=cpu deno run -A bench/decode.ts --presets nano --batches 1,4,16 \
  --train-steps 0 --no-cache-tokens 0 | tee "$OUT/decode.txt"

echo "::: summary"
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
print(open(f"{out}/machine.txt").read().strip())
for p in ["nano", "mini"]:
    ours, torch = json.load(open(f"{out}/{p}.json")), json.load(open(f"{out}/{p}_torch.json"))
    print(f"training step {p} {ours['B']}x{ours['T']}: ours {ours['step_ms']:.0f} ms, "
          f"torch {torch['step_ms']:.0f} ms: {torch['step_ms'] / ours['step_ms']:.2f}x torch's speed")
g, gt = json.load(open(f"{out}/gemm.json")), json.load(open(f"{out}/gemm_torch.json"))
for r in gt["rows"]:
    mine = next(x for x in g["rows"] if x["shape"] == f"square {r['n']}^3")
    frac = f", {100 * mine['peak_fraction']:.0f}% of the {g['peak']['gflops']:.0f} GFLOP/s peak" \
        if mine["peak_fraction"] else ""
    print(f"GEMM {r['n']}^3: ours {mine['gflops']:.1f} GFLOP/s{frac}; torch.mm {r['gflops']:.1f}: "
          f"{mine['gflops'] / r['gflops']:.2f}x")
EOF
grep -E "^nano random +(1|4|16) +plain" "$OUT/decode.txt" | awk '{print "decode nano batch " $3 ": " $6 " tok/s"}' | tee -a "$OUT/summary.txt"
