#!/usr/bin/env bash
# Builds the CUDA MoE kernels with nvcc directly (no CMake needed), then, when a GPU is present, runs their GoogleTest
# suite against the CPU engine's MoE math and the micro-benchmark. Used on the GPU machine in one call:
#   bash hack/gpu/moe-check.sh            # build + test + bench; logs and results under $OUT (default build dir)
#   MOE_CHECK_COMPILE_ONLY=1 bash hack/gpu/moe-check.sh   # what a CPU-only machine can do
# GoogleTest: the system's (libgtest-dev) when installed, else built from sources in $GTEST_SRC
# (default worker/native/build-moe/googletest, a copy of /usr/src/googletest sent along with the run).
set -euo pipefail
cd "$(dirname "$0")/../../worker/native"
NVCC="${NVCC:-$(command -v nvcc || bash ../../hack/install-nvcc.sh)}"
B="${MOE_BUILD_DIR:-build-moe}"
OUT_DIR="${OUT:-$B}"
JOBS="${JOBS:-$(nproc)}"
ARCH="${CUDA_ARCH:--gencode arch=compute_90,code=sm_90}"
mkdir -p "$B/obj" "$OUT_DIR"
NVFLAGS="$ARCH -std=c++17 -O3 -Isrc -Itests -Xcompiler -Wall,-Wextra,-Wno-unused-parameter"
CXXFLAGS="-std=c++17 -O2 -Isrc -Wall -Wextra -Wno-unused-parameter"
# The CPU engine's MoE math: the tests' reference.
CPU_SRCS="src/cpu/router.cc src/cpu/matmul_mxfp4.cc src/cpu/swiglu.cc src/cpu/bf16.cc src/cpu/matmul_bf16.cc"
CPU_SRCS+=" src/cpu/simd.cc"

GTEST_INC="" GTEST_OBJS="" GTEST_LIBS=""
if [[ -f /usr/include/gtest/gtest.h ]] && ls /usr/lib/*/libgtest.a /usr/lib/libgtest.a >/dev/null 2>&1; then
  GTEST_LIBS="-lgtest -lgtest_main"
else
  GTEST_SRC="${GTEST_SRC:-$B/googletest}"
  if [[ ! -f "$GTEST_SRC/googletest/src/gtest-all.cc" ]]; then
    echo "moe-check: no GoogleTest (install libgtest-dev or send $GTEST_SRC)" >&2
    exit 1
  fi
  GTEST_INC="-I$GTEST_SRC/googletest/include"
  GTEST_OBJS="$B/obj/gtest-all.o $B/obj/gtest_main.o"
fi

compile() {  # one job per line: "<compiler> <flags...> -c <src> -o <obj>"
  local jobs=()
  for src in src/cuda/moe/*.cu; do jobs+=("$NVCC $NVFLAGS $GTEST_INC -c $src -o $B/obj/$(basename "$src" .cu).o"); done
  jobs+=("$NVCC $NVFLAGS $GTEST_INC -c tests/cuda/moe_test.cu -o $B/obj/moe_test.o")
  jobs+=("$NVCC $NVFLAGS -c tools/bench_cuda_moe.cu -o $B/obj/bench_cuda_moe.o")
  for src in $CPU_SRCS; do jobs+=("${CXX:-g++} $CXXFLAGS -c $src -o $B/obj/cpu_$(basename "$src" .cc).o"); done
  if [[ -n "$GTEST_OBJS" ]]; then
    local gt="$GTEST_SRC/googletest" gflags="-std=c++17 -O1 -I$GTEST_SRC/googletest/include"
    jobs+=("${CXX:-g++} $gflags -I$gt -c $gt/src/gtest-all.cc -o $B/obj/gtest-all.o")
    jobs+=("${CXX:-g++} $gflags -c $gt/src/gtest_main.cc -o $B/obj/gtest_main.o")
  fi
  printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c '{}'
}

echo "moe-check: compiling with $NVCC ($JOBS jobs)" >&2
compile
MOE_OBJS=$(ls $B/obj/moe*.o | grep -v moe_test.o)
CPU_OBJS=$(ls $B/obj/cpu_*.o)
$NVCC $ARCH -o "$B/moe_tests" $B/obj/moe_test.o $MOE_OBJS $CPU_OBJS $GTEST_OBJS $GTEST_LIBS -lpthread
$NVCC $ARCH -o "$B/bench_cuda_moe" $B/obj/bench_cuda_moe.o $MOE_OBJS
echo "moe-check: built $B/moe_tests and $B/bench_cuda_moe" >&2
[[ "${MOE_CHECK_COMPILE_ONLY:-0}" == 1 ]] && exit 0

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
status=0
timeout "${MOE_TEST_TIMEOUT:-150}" "$B/moe_tests" ${MOE_TEST_FILTER:+--gtest_filter=$MOE_TEST_FILTER} 2>&1 |
  tee "$OUT_DIR/moe_tests.log" || status=$?
timeout "${MOE_BENCH_TIMEOUT:-120}" "$B/bench_cuda_moe" "$@" 2>&1 | tee "$OUT_DIR/bench_cuda_moe.log" || status=$?
exit $status
