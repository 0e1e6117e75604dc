#!/usr/bin/env bash
# The CUDA kernels' check and figures only (no serving benchmarks), for a short device call:
# hack/gpu/check-and-bench.sh --shape $SHAPE (default 20b) --no-serve, bench_cuda_moe, and bench_cuda 20b with each switch in
# BENCH_VARIANTS (each kernel switch turned off, for an A/B on the same GPU). Carry ["worker/native/build-gpu-deps"] (hack/gpu/prepare.sh first).
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu}; mkdir -p "$out"
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
B=worker/native/build-gpu
hack/gpu/check-and-bench.sh --shape ${SHAPE:-20b} --no-serve > "$out/main.txt" 2>&1
tail -40 "$out/main.txt"; el "check and bench done"
grep -E '^\[  (FAILED|PASSED)|^\[ RUN.*(Prefill|V2|MoePrefill|Synthetic)' "$out/tests.log" | head -30
cmake --build $B -j "$(nproc)" --target bench_cuda_moe >> "$out/build.log" 2>&1
timeout 60 $B/bench_cuda_moe --iters 20 > "$out/moe.log" 2>&1
echo "== bench_cuda_moe"; grep -vE '^\s*$' "$out/moe.log" | tail -28
el "moe bench done"
for v in ${BENCH_VARIANTS:-MODELSERVE_MOE_PREFILL_V2=0 MODELSERVE_CUDA_PREFILL_ATTN=0}; do
  name=${v//=/-}
  env "$v" timeout 50 $B/bench_cuda --shape 20b --out "$out/b-$name.md" > "$out/b-$name.log" 2>&1
  echo "== bench_cuda 20b with $v"; grep '^| 20b' "$out/b-$name.md"; grep -E 'per step' "$out/b-$name.log"
done
el "end"
