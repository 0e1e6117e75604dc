#!/usr/bin/env bash
# What each kernel of a graph-replayed batch-1 decode step costs (GPU machine): builds bench_cuda, then runs its
# batch-1 decode with the defaults and with each stage left out (MODELSERVE_CUDA_DEBUG_SKIP, cuda/debug_skip.cuh:
# the outputs are wrong, the timing is what matters), alternating rounds, and prints ms per token and what leaving the
# stage out saved. Launch gaps and PDL overlap are included, which Nsight Compute's serialised kernels are not.
# Here first: hack/gpu/prepare.sh; carry ["worker/native/build-gpu-deps"].
#   hack/gpu/ablation.sh   env: SHAPES (20b), ROUNDS (2), STAGES (the list below), EXTRA (runs to add: VAR=value, or VAR=a+VAR2=b),
#                          TESTS (gtest filter)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu-out}
mkdir -p "$out"
B=worker/native/build-gpu
# TESTS (a gtest filter): also build engine_cuda_tests and run those first, so that a new kernel's timing only counts
# once it is shown correct in the same call.
targets=bench_cuda tests=OFF
if [[ -n ${TESTS:-} && -f worker/native/build-gpu-deps/googletest/CMakeLists.txt ]]; then targets="$targets engine_cuda_tests" tests=ON; fi
hack/gpu/build.sh $tests $targets > "$out/ablation-build.log" 2>&1 || { echo "build failed"; grep -E 'error' "$out/ablation-build.log" | head; exit 1; }
if [[ $tests == ON ]]; then
  timeout 300 $B/engine_cuda_tests --gtest_filter="$TESTS" > "$out/ablation-tests.log" 2>&1
  echo "== engine_cuda_tests '$TESTS' (rc $?): $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ tests?,' "$out/ablation-tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Z]|Failure|differs|diff' "$out/ablation-tests.log" | head -20
fi
stages=${STAGES:-"qkv rope attn o router gate_up down combine lm_head router,gate_up,down,combine qkv,rope,attn,o"}
rounds=${ROUNDS:-2}
for shape in ${SHAPES:-20b}; do
  declare -A sum=() cnt=()
  for ((r = 0; r < rounds; ++r)); do
    for v in none $stages ${EXTRA:-}; do
      if [[ $v == none ]]; then envs=(MS_NONE=0)
      elif [[ $v == *=* ]]; then envs=(${v//+/ })  # VAR=a+VAR2=b: both
      else envs=(MODELSERVE_CUDA_DEBUG_SKIP=$v); fi
      ms=$(env "${envs[@]}" timeout 90 $B/bench_cuda --shape "$shape" --only-batch1 --decode-steps 128 2>&1 |
        grep "^| $shape" | grep -oE '\(([0-9.]+) ms/token' | grep -oE '[0-9.]+' | head -1)
      [[ -n $ms ]] || { echo "$shape $v: no figure"; continue; }
      sum[$v]=$(python3 -c "print(${sum[$v]:-0} + $ms)"); cnt[$v]=$(( ${cnt[$v]:-0} + 1 ))
    done
  done
  base=$(python3 -c "print(${sum[none]} / ${cnt[none]})")
  echo "| $shape: left out | ms/token (mean of $rounds) | saved ms/token | saved µs/layer |"
  echo "|---|---:|---:|---:|"
  layers=$([[ $shape == 120b ]] && echo 36 || echo 24)
  for v in none $stages ${EXTRA:-}; do
    [[ -n ${cnt[$v]:-} ]] || continue
    python3 -c "m=${sum[$v]}/${cnt[$v]}; d=$base-m; print('| $v | %.3f | %.3f | %.1f |' % (m, d, 1000*d/$layers))"
  done
  unset sum cnt
done
