#!/usr/bin/env bash
# One device call after the kernels' defaults changed: build, every CUDA test, a determinism check of the synthetic
# 20b engine test repeated under each MoE switch, bench_cuda for both shapes (the headline table), an Nsight Compute
# profile of one batch-1 decode layer (hack/gpu/profile-decode.sh) and bench_cuda_serve with the time left.
# Here first: hack/gpu/prepare.sh; carry ["worker/native/build-gpu-deps"].   hack/gpu/defaults-run.sh [--budget S]
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu-out}; logs=/tmp/ms-gpu; mkdir -p "$out" "$logs"
budget=540; [[ ${1:-} == --budget ]] && budget=$2
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
B=worker/native/build-gpu
(
  nvcc_path=$(hack/install-nvcc.sh) || exit 1
  cmake -S worker/native/build-gpu-deps/googletest -B /tmp/ms-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/ms-gtest && cmake --build /tmp/ms-gtest-build -j "$(nproc)" &&
    cmake --install /tmp/ms-gtest-build &&
    cmake -S worker/native -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_ADDON=OFF \
      -DCMAKE_CUDA_COMPILER="$nvcc_path" -DCMAKE_PREFIX_PATH=/tmp/ms-gtest &&
    cmake --build $B -j "$(nproc)" --target engine_cuda_tests bench_cuda bench_cuda_serve
) > "$logs/build.log" 2>&1 || { echo "build failed"; tail -30 "$logs/build.log"; exit 1; }
el "built"
timeout 240 $B/engine_cuda_tests > "$out/tests.log" 2>&1
echo "== engine_cuda_tests rc $?: $(grep -E '^\[  PASSED  \]' "$out/tests.log") $(grep -E '^\[  FAILED  \] [0-9]+ tests?,' "$out/tests.log")"
grep -E '^\[  FAILED  \]|cuda reference|cuda moe options' "$out/tests.log" | head -20
for v in NONE MODELSERVE_CUDA_MOE_NORM_FUSED=0 MODELSERVE_CUDA_ATTN_PLAN=0; do
  env ${v/NONE/X_UNUSED=1} timeout 60 $B/engine_cuda_tests --gtest_filter='CudaSynthetic*' --gtest_repeat=4 \
    > "$logs/synth.log" 2>&1
  echo "== CudaSynthetic x4 with $v: $(grep -c '^\[       OK \]' "$logs/synth.log") ok, $(grep -c '^\[  FAILED  \] Cuda' "$logs/synth.log") failed"
done
el "tests done"
timeout 150 $B/bench_cuda --shape all --out "$out/bench.md" > "$logs/bench.log" 2>&1
echo "== bench_cuda all (rc $?)"; grep -E '^\[|device-to-device' "$logs/bench.log"; cat "$out/bench.md"
el "bench done"
OUT=$out B=$B hack/gpu/profile-decode.sh > "$out/ncu.md" 2>&1
cat "$out/ncu.md"
el "profile done"
left=$(( budget - ($(date +%s) - T0) - 25 ))
if (( left > 40 )); then
  timeout $((left + 20)) $B/bench_cuda_serve --shape 20b --max-seconds "$left" --out "$out/serve.md" > "$logs/serve.log" 2>&1
  echo "== bench_cuda_serve (rc $?, ${left} s allowed)"
  grep -E '^(KV |wall |TTFT |peak |accounting)' "$logs/serve.log"; cat "$out/serve.md" 2>/dev/null; tail -3 "$logs/serve.log"
fi
el "end"
