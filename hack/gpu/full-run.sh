#!/usr/bin/env bash
# Everything issue 10 measures, in one call of the run tool (one GPU, ≤ 10 minutes), most important first so that a
# cut-off run still has the check and the headline figures:
#   1. hack/gpu/check-and-bench.sh --shape all --no-serve: build, engine_cuda_tests, bench_cuda 20b and 120b;
#   2. A/B of the CUDA kernel switches on the same GPU (bench_cuda --shape 20b with each one off; bench_cuda_moe)
#      — 1 and 2 are hack/gpu/kernel-check.sh;
#   3. the worker over HTTP (hack/gpu/worker-bench.sh: CUDA addon, synthetic 20b, load generator at c=1 and 32), its
#      addon built in the background while 1-2 run;
#   4. bench_cuda_serve (1,000 x 1,024 in / 256 out) with the time left.
# Here first: hack/gpu/prepare.sh and hack/gpu/worker-bench-prepare.sh; carry ["worker/native/build-gpu-deps", ".gpu"].
#   hack/gpu/full-run.sh [--budget SECONDS]   (default 560: the whole script's wall-clock target)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu}; mkdir -p "$out"
budget=560
[[ ${1:-} == --budget ]] && budget=$2
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
B=worker/native/build-gpu  # built by check-and-bench.sh

# 3 (background): the addon with CUDA, in worker-bench.sh's own build directory and with its exact options.
(
  eval "$(.gpu/unpack.sh)" >/dev/null 2>&1
  nvcc_path=$(hack/install-nvcc.sh 2>/dev/null)
  cmake -S worker/native -B worker/native/build-h5-worker-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_TESTS=OFF \
    -DENGINE_ADDON=ON -DENGINE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path" &&
    nice cmake --build worker/native/build-h5-worker-cuda -j 8 --target ms_addon
) > "$out/addon-prebuild.log" 2>&1 &
prebuild=$!

# 1 and 2.
SHAPE=all hack/gpu/kernel-check.sh

# 3.
wait $prebuild; tail -2 "$out/addon-prebuild.log"
timeout 150 hack/gpu/worker-bench.sh > "$out/worker-bench.txt" 2>&1
echo "== worker over HTTP (rc $?)"; tail -20 "$out/worker-bench.txt"
el "worker bench done"

# 4.
left=$(( budget - ($(date +%s) - T0) - 30 ))
if (( left > 40 )); then
  timeout $((left + 20)) $B/bench_cuda_serve --shape 20b --max-seconds "$left" --out "$out/serve.md" > "$out/serve.log" 2>&1
  echo "== bench_cuda_serve (rc $?, ${left} s allowed)"
  grep -E '^(KV |wall |TTFT |peak |accounting)' "$out/serve.log"; cat "$out/serve.md" 2>/dev/null; tail -3 "$out/serve.log"
fi
el "end"
