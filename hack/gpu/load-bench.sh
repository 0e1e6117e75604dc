#!/usr/bin/env bash
# One command on the GPU machine for the CUDA weight loader (worker/native/src/cuda/loader.cu): build the engine with
# the CUDA backend, run the loader's correctness tests and the whole-model tests that go through the upload path, then
# bench_cuda_load (pinned H2D peak, a 12.8 GiB gpt-oss-20b-shaped checkpoint loaded from page cache and from disk,
# fresh process to first token), and print a table. Logs go to $OUT (the run tool's folder) or /tmp/ms-gpu-load.
#   hack/gpu/prepare.sh here once, then with the run tool (carry worker/native/build-gpu-deps):
#   hack/gpu/load-bench.sh [--no-bench] [--dir DIR]
# The checkpoint goes to --dir (default: /var/tmp/ms-load-bench, or ./.tmp/ms-load-bench when that is tmpfs): it must be
# on a real disk, or the "from disk" figure measures memory.
set -uo pipefail
start_all=$(date +%s)
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu-load}
mkdir -p "$out"
bench=1
dir=/var/tmp/ms-load-bench
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-bench) bench=0 ;;
    --dir) dir=$2; shift ;;
    *) echo "usage: $0 [--no-bench] [--dir DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$dir"
if [[ $(stat -f -c %T "$dir") == tmpfs ]]; then
  dir=$PWD/.tmp/ms-load-bench
  mkdir -p "$dir"
fi
native=worker/native
build=$native/build-gpu-load
jobs=$(nproc)
status_build=FAIL status_tests=SKIPPED status_bench=SKIPPED

nvcc_path=$(hack/install-nvcc.sh 2>>"$out/build.log") || { echo "no nvcc" | tee -a "$out/build.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
{ uname -r; nproc; free -g | head -2; df -hT "$dir" | tail -1; } > "$out/machine.txt" 2>&1

cmake_extra=()
if [[ -f $native/build-gpu-deps/googletest/CMakeLists.txt ]]; then
  cmake -S $native/build-gpu-deps/googletest -B /tmp/ms-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/ms-gtest >>"$out/build.log" 2>&1 &&
    cmake --build /tmp/ms-gtest-build -j "$jobs" >>"$out/build.log" 2>&1 &&
    cmake --install /tmp/ms-gtest-build >>"$out/build.log" 2>&1
  cmake_extra+=(-DCMAKE_PREFIX_PATH=/tmp/ms-gtest)
fi

t0=$(date +%s)
if cmake -S $native -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_ADDON=OFF \
     -DCMAKE_CUDA_COMPILER="$nvcc_path" "${cmake_extra[@]}" >>"$out/build.log" 2>&1 &&
   cmake --build $build -j "$jobs" --target engine_cuda_tests bench_cuda_load >>"$out/build.log" 2>&1; then
  status_build="ok ($(($(date +%s) - t0)) s)"
else
  tail -30 "$out/build.log"
fi

# A time budget (the run tool's limit): the loader tests first, then the benchmark, then the slower model tests.
budget=${LOAD_BENCH_BUDGET_S:-400}
left() { echo $((budget - ($(date +%s) - start_all))); }
status_model=SKIPPED
if [[ -x $build/engine_cuda_tests && $status_build == ok* ]]; then
  timeout 60 $build/engine_cuda_tests --gtest_filter='CudaLoader.*' >"$out/tests-loader.log" 2>&1
  rc=$?
  status_tests="$(grep -E '^\[  PASSED  \]' "$out/tests-loader.log" | head -1) $(grep -E '^\[  FAILED  \] [0-9]+ tests?,' "$out/tests-loader.log" | head -1) (rc $rc)"
  grep -E '^\[  FAILED  \]|Failure|error' "$out/tests-loader.log" | head -30
fi

if [[ $bench == 1 && -x $build/bench_cuda_load && $status_build == ok* ]]; then
  if timeout $(( $(left) - 45 )) $build/bench_cuda_load --dir "$dir" --out "$out/load-bench.md" >"$out/load-bench.log" 2>&1; then
    status_bench=ok
  else
    status_bench="FAIL (rc $?)"
    tail -8 "$out/load-bench.log"
  fi
fi

if [[ -x $build/engine_cuda_tests && $status_build == ok* && $(left) -gt 20 ]]; then
  # Every test that uploads a model through the loader: vs the CPU model, vs transformers' vectors, the C API.
  timeout $(( $(left) - 10 )) $build/engine_cuda_tests --gtest_filter='*CudaVsCpu.*:*CudaReference.*:CudaEngine.*' \
    >"$out/tests-model.log" 2>&1
  rc=$?
  status_model="$(grep -E '^\[  PASSED  \]' "$out/tests-model.log" | head -1) $(grep -E '^\[  FAILED  \] [0-9]+ tests?,' "$out/tests-model.log" | head -1) (rc $rc)"
  grep -E '^\[  FAILED  \]|Failure' "$out/tests-model.log" | head -20
fi

echo
echo "| step | result |"
echo "|---|---|"
echo "| GPU | $(head -1 "$out/gpu.txt" 2>/dev/null) |"
echo "| machine | $(tr '\n' ' ' < "$out/machine.txt" | tr -s ' ') |"
echo "| build (cmake + ninja, ENGINE_CUDA=ON) | $status_build |"
echo "| engine_cuda_tests CudaLoader.* (bytes on device = file bytes) | $status_tests |"
echo "| engine_cuda_tests model vs CPU / transformers / C API (through the loader) | $status_model |"
echo "| bench_cuda_load | $status_bench |"
echo
grep -E '^\[' "$out/load-bench.log" 2>/dev/null
echo
cat "$out/load-bench.md" 2>/dev/null
