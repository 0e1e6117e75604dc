#!/usr/bin/env bash
# Where a graph-replayed batch-1 decode step of the 20b shape goes (GPU machine). Builds bench_cuda and
# bench_cuda_moe, prints bench_cuda's batch-1 figure, then:
#  - Nsight Systems, when installed, over the timed steps only (bench_cuda brackets them with cudaProfilerStart/Stop;
#    graph nodes traced one by one): per kernel its launches and mean duration per step, the GPU's busy time per step
#    against the step's span (the difference is launch gaps and host time), and one layer's kernels in order with
#    their start offsets, so that PDL overlap and idle gaps are visible;
#  - Nsight Compute on the first COUNT kernels of those steps (hack/gpu/profile-decode.sh): duration, DRAM bytes and
#    throughput against peak, stall reasons. ncu serialises kernels, so its durations exclude overlap.
# Here first: hack/gpu/prepare.sh; carry ["worker/native/build-gpu-deps"]. Logs and reports under $OUT.
# With TEST_VARIANTS (space-separated VAR=value) it also builds engine_cuda_tests and runs the MoE and model tests
# under each (a new kernel behind a switch is checked against the CPU engine before its timing counts), and the whole
# suite once with the defaults at the end.
#   hack/gpu/decode-timeline.sh   env: STEPS (32), COUNT (8), VARIANTS, TEST_VARIANTS, NSYS_VARIANT (VAR=value)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu-out}
mkdir -p "$out"
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
B=worker/native/build-gpu
tests=OFF targets="bench_cuda bench_cuda_moe"
[[ -n ${TEST_VARIANTS:-} && -f worker/native/build-gpu-deps/googletest/CMakeLists.txt ]] &&
  tests=ON targets="$targets engine_cuda_tests"
hack/gpu/build.sh $tests $targets > "$out/build.log" 2>&1 || { echo "build failed"; grep -E 'error' "$out/build.log" | head; tail -30 "$out/build.log"; exit 1; }
el "built"
steps=${STEPS:-32}
timeout 120 $B/bench_cuda --shape 20b --only-batch1 --decode-steps 128 > "$out/bench-b1.log" 2>&1
echo "== bench_cuda 20b batch 1 (defaults): $(grep '| 20b' "$out/bench-b1.log")"
grep -E 'per step' "$out/bench-b1.log"
for v in ${VARIANTS:-}; do
  env "$v" timeout 60 $B/bench_cuda --shape 20b --only-batch1 --decode-steps 128 > "$out/bench-b1-v.log" 2>&1
  echo "== with $v: $(grep '| 20b' "$out/bench-b1-v.log")"
done
timeout 60 $B/bench_cuda_moe > "$out/moe.log" 2>&1
echo "== bench_cuda_moe"; grep -vE '^\s*$' "$out/moe.log" | tail -12
for v in ${VARIANTS:-}; do
  [[ $v == MODELSERVE_MOE_* ]] || continue
  env "$v" timeout 60 $B/bench_cuda_moe > "$out/moe-v.log" 2>&1
  echo "== bench_cuda_moe with $v"; grep -vE '^\s*$' "$out/moe-v.log" | tail -6
done
el "benchmarks done"
for v in ${TEST_VARIANTS:-}; do
  [[ $tests == ON ]] || break
  env "$v" timeout 120 $B/engine_cuda_tests --gtest_filter='*Moe*:*CudaVsCpu*:*CudaReference*:*CudaExecutor*:*CudaEngine*' \
    > "$out/tests-v.log" 2>&1
  echo "== MoE and model tests with $v (rc $?): $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ tests?,' "$out/tests-v.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Z]' "$out/tests-v.log" | head -10
  cp "$out/tests-v.log" "$out/tests-${v//=/-}.log"
done

nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
if [[ -n "$nsys" ]]; then
  env ${NSYS_VARIANT:-MS_NONE=0} timeout 150 "$nsys" profile -o /tmp/ms-b1 --force-overwrite true --capture-range=cudaProfilerApi \
    --capture-range-end=stop --cuda-graph-trace=node --trace=cuda --sample=none --cpuctxsw=none \
    $B/bench_cuda --shape 20b --only-batch1 --decode-steps "$steps" > "$out/nsys.log" 2>&1
  echo "== nsys rc $?"
  "$nsys" stats --report cuda_gpu_trace --format csv --output /tmp/ms-b1-trace /tmp/ms-b1.nsys-rep > /dev/null 2>&1
  trace=$(ls /tmp/ms-b1-trace*.csv 2>/dev/null | head -1)
  if [[ -n "$trace" ]]; then
    cp "$trace" "$out/b1-trace.csv"
    python3 hack/gpu/summarize_trace.py "$trace" "$steps"
  else
    echo "no nsys trace"; tail -20 "$out/nsys.log"
  fi
else
  echo "== no nsys on this machine"
fi
el "nsys done"
OUT=$out B=$B COUNT=${COUNT:-8} hack/gpu/profile-decode.sh
if [[ $tests == ON ]]; then
  timeout 200 $B/engine_cuda_tests > "$out/tests.log" 2>&1
  echo "== engine_cuda_tests, defaults (rc $?): $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ tests?,' "$out/tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Z]' "$out/tests.log" | head -10
fi
el "end"
