#!/usr/bin/env bash
# One command on the GPU machine: build the engine with the CUDA backend (cmake + ninja), run the CUDA kernel tests and
# the whole-model check against the transformers reference vectors (engine_cuda_tests), run bench_cuda (20b and 120b
# synthetic shapes) and, with --shape all (the default) or --serve, bench_cuda_serve (the serving engine on 20b:
# 1,000 requests of 1,024 in / 256 out at once, cut off after --serve-seconds with a partial figure), and print a
# table. Logs go to $OUT (the run tool's folder) or /tmp/ms-gpu.
#   hack/gpu/check-and-bench.sh [--no-bench] [--shape 20b|120b|all] [--serve|--no-serve] [--serve-seconds 200]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu}
mkdir -p "$out"
bench=1
shape=all
serve=
serve_seconds=200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-bench) bench=0 ;;
    --shape) shape=$2; shift ;;
    --serve) serve=1 ;;
    --no-serve) serve=0 ;;
    --serve-seconds) serve_seconds=$2; shift ;;
    *) echo "usage: $0 [--no-bench] [--shape 20b|120b|all] [--serve|--no-serve] [--serve-seconds N]" >&2; exit 2 ;;
  esac
  shift
done
native=worker/native
build=$native/build-gpu
jobs=$(nproc)
[[ -z $serve ]] && { [[ $shape == all ]] && serve=1 || serve=0; }
status_build=FAIL status_tests=SKIPPED status_bench=SKIPPED status_serve=SKIPPED

nvcc_path=$(hack/install-nvcc.sh 2>>"$out/build.log") || { echo "no nvcc" | tee -a "$out/build.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true

cmake_extra=()
if [[ -f $native/build-gpu-deps/googletest/CMakeLists.txt ]]; then
  # GoogleTest from the carried sources (the machine has no network).
  cmake -S $native/build-gpu-deps/googletest -B /tmp/ms-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/ms-gtest >>"$out/build.log" 2>&1 &&
    cmake --build /tmp/ms-gtest-build -j "$jobs" >>"$out/build.log" 2>&1 &&
    cmake --install /tmp/ms-gtest-build >>"$out/build.log" 2>&1
  cmake_extra+=(-DCMAKE_PREFIX_PATH=/tmp/ms-gtest)
fi

t0=$(date +%s)
if cmake -S $native -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_ADDON=OFF \
     -DCMAKE_CUDA_COMPILER="$nvcc_path" "${cmake_extra[@]}" >>"$out/build.log" 2>&1 &&
   cmake --build $build -j "$jobs" --target engine_cuda_tests bench_cuda bench_cuda_serve >>"$out/build.log" 2>&1; then
  status_build="ok ($(($(date +%s) - t0)) s)"
else
  tail -30 "$out/build.log"
fi

if [[ -x $build/engine_cuda_tests && $status_build == ok* ]]; then
  timeout 240 $build/engine_cuda_tests >"$out/tests.log" 2>&1
  rc=$?
  status_tests="$(grep -E '^\[  PASSED  \]' "$out/tests.log" | head -1) $(grep -E '^\[  FAILED  \] [0-9]+ tests?,' "$out/tests.log" | head -1) (rc $rc)"
  grep -E '^\[  FAILED  \]|cuda reference|Failure|error' "$out/tests.log" | head -40
fi

if [[ $bench == 1 && -x $build/bench_cuda && $status_build == ok* ]]; then
  if timeout 200 $build/bench_cuda --shape "$shape" --out "$out/bench.md" >"$out/bench.log" 2>&1; then
    status_bench=ok
  else
    status_bench="FAIL (rc $?)"
    tail -5 "$out/bench.log"
  fi
fi

if [[ $bench == 1 && $serve == 1 && -x $build/bench_cuda_serve && $status_build == ok* ]]; then
  t0=$(date +%s)
  timeout $((serve_seconds + 90)) $build/bench_cuda_serve --shape 20b --max-seconds "$serve_seconds" \
    --out "$out/serve.md" >"$out/serve.log" 2>&1
  rc=$?
  case $rc in
    0) status_serve="ok ($(($(date +%s) - t0)) s)" ;;
    3) status_serve="PARTIAL: cut off after $serve_seconds s ($(($(date +%s) - t0)) s)" ;;
    *) status_serve="FAIL (rc $rc)"; tail -5 "$out/serve.log" ;;
  esac
fi

echo
echo "| step | result |"
echo "|---|---|"
echo "| GPU | $(cat "$out/gpu.txt" 2>/dev/null | head -1) |"
echo "| build (cmake + ninja, ENGINE_CUDA=ON) | $status_build |"
echo "| engine_cuda_tests (kernels vs CPU, model vs transformers) | $status_tests |"
echo "| bench_cuda | $status_bench |"
echo "| bench_cuda_serve (20b, 1,000 x 1,024 in / 256 out) | $status_serve |"
if [[ -f "$out/bench.md" ]]; then
  echo
  grep -E '^\[|device-to-device' "$out/bench.log"
  echo
  cat "$out/bench.md"
fi
if [[ -f "$out/serve.md" ]]; then
  echo
  grep -E '^(KV |wall |TTFT |peak |accounting)' "$out/serve.log"
  echo
  cat "$out/serve.md"
fi
