#!/usr/bin/env bash
# On the GPU machine: hack/gpu/check-and-bench.sh --shape 20b, then A/B figures for the CUDA performance switches in the
# same run (same GPU): the committed baseline's bench_cuda / bench_cuda_moe (if a copy of it was carried), the MoE
# micro-benchmark per decode-kernel variant, the MoE tests per variant, and bench_cuda with each switch turned off.
# Here, before the run tool:
#   hack/gpu/prepare.sh
#   rm -rf worker/native/build-perf-base && mkdir -p worker/native/build-perf-base &&
#     git archive HEAD worker/native | tar -x -C worker/native/build-perf-base      # optional baseline (ignored dir)
# then run `hack/gpu/perf-ab.sh` with carry ["worker/native/build-gpu-deps", "worker/native/build-perf-base"].
# BENCH_VARIANTS (env assignments, space-separated) picks the bench_cuda variants; about 6-8 minutes in all.
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu}; mkdir -p "$out"
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s]"; }
hack/gpu/check-and-bench.sh --shape 20b > "$out/main.txt" 2>&1
tail -34 "$out/main.txt"; grep -E '^\[20b\] (decode|prefill)' "$out/bench.log"; el
B=worker/native/build-gpu
cmake --build $B -j "$(nproc)" --target bench_cuda_moe >> "$out/build.log" 2>&1
P=worker/native/build-perf-base/worker/native
if [[ -f $P/CMakeLists.txt ]]; then
  nvcc_path=$(hack/install-nvcc.sh 2>/dev/null)
  ( cmake -S $P -B /tmp/base-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_ADDON=OFF \
      -DCMAKE_CUDA_COMPILER="$nvcc_path" -DCMAKE_PREFIX_PATH=/tmp/ms-gtest &&
    cmake --build /tmp/base-build -j "$(nproc)" --target bench_cuda bench_cuda_moe ) > "$out/base-build.log" 2>&1 ||
    tail -5 "$out/base-build.log"
  if [[ -x /tmp/base-build/bench_cuda ]]; then
    timeout 70 /tmp/base-build/bench_cuda --shape 20b --out "$out/base.md" > "$out/base.log" 2>&1
    echo "== baseline bench_cuda 20b"; grep '^| 20b' "$out/base.md"; grep -E '^\[20b\] (decode|prefill)' "$out/base.log"
  fi
  el
fi
run_moe() { # label binary [VAR=value ...]
  local label=$1 bin=$2; shift 2
  env "$@" timeout 45 "$bin" --iters 20 > "$out/moe-$label.log" 2>&1
  echo "== bench_cuda_moe $label"; grep -E '^(1|8|64|1024) ' "$out/moe-$label.log"
}
[[ -x /tmp/base-build/bench_cuda_moe ]] && run_moe base /tmp/base-build/bench_cuda_moe
run_moe new $B/bench_cuda_moe
run_moe warps4 $B/bench_cuda_moe MODELSERVE_MOE_DECODE_WARPS=4
run_moe bufs3 $B/bench_cuda_moe MODELSERVE_MOE_DECODE_BUFS=3
run_moe nomid $B/bench_cuda_moe MODELSERVE_MOE_MID_TILE=0
el
for v in MODELSERVE_MOE_DECODE_WARPS=4 MODELSERVE_MOE_DECODE_BUFS=3; do
  env $v timeout 40 $B/engine_cuda_tests --gtest_filter='*Moe*' > "$out/tests-$v.log" 2>&1
  echo "== *Moe* tests with $v: $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/tests-$v.log" | head -2 | tr '\n' ' ')"
done
el
for v in ${BENCH_VARIANTS:-MODELSERVE_CUDA_PDL=0 MODELSERVE_CUDA_ATTN_PLAN=0 MODELSERVE_CUDA_GEMM_SPLIT=0}; do
  env $v timeout 60 $B/bench_cuda --shape 20b --out "$out/b-$v.md" > "$out/b-$v.log" 2>&1
  echo "== bench_cuda 20b with $v"; grep '^| 20b' "$out/b-$v.md"; el
done
