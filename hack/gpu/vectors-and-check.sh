#!/usr/bin/env bash
# One device call for a change that touches both the reference vectors and the CUDA kernels:
#   1. new transformers reference vectors (hack/gpu/make-test-vectors.sh: 64 greedy steps per case) into $OUT/vectors,
#      while the CUDA build (the targets of check-and-bench.sh) runs beside it;
#   2. the vectors copied into worker/native/testdata/reference/ of this copy, then hack/gpu/kernel-check.sh: the CUDA
#      tests (kernels vs CPU, model vs the new vectors), bench_cuda 20b and the A/B of BENCH_VARIANTS.
# Copy $OUT/vectors/*.json to worker/native/testdata/reference/ here afterwards and run the CPU reference tests.
# Here first: hack/gpu/prepare.sh; carry ["worker/native/build-gpu-deps"].
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-gpu-out}
logs=/tmp/ms-gpu
mkdir -p "$out/vectors" "$logs"
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }

OUT=$out/vectors hack/gpu/make-test-vectors.sh > "$logs/vectors.log" 2>&1 &
vectors=$!
(
  nvcc_path=$(hack/install-nvcc.sh) || exit 1
  if [[ -f worker/native/build-gpu-deps/googletest/CMakeLists.txt ]]; then
    cmake -S worker/native/build-gpu-deps/googletest -B /tmp/ms-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/ms-gtest && cmake --build /tmp/ms-gtest-build -j "$(nproc)" &&
      cmake --install /tmp/ms-gtest-build
  fi
  cmake -S worker/native -B worker/native/build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON \
    -DENGINE_ADDON=OFF -DCMAKE_CUDA_COMPILER="$nvcc_path" -DCMAKE_PREFIX_PATH=/tmp/ms-gtest &&
    cmake --build worker/native/build-gpu -j "$(nproc)" --target engine_cuda_tests bench_cuda bench_cuda_serve bench_cuda_moe
) > "$logs/prebuild.log" 2>&1
echo "== CUDA build rc $?"; tail -3 "$logs/prebuild.log"
wait $vectors
echo "== reference vectors rc $?"; tail -8 "$out/vectors/make-test-vectors.log" 2>/dev/null || tail -20 "$logs/vectors.log"
el "vectors and build done"
if ls "$out"/vectors/*.json >/dev/null 2>&1; then
  cp "$out"/vectors/*.json worker/native/testdata/reference/
else
  echo "no new vectors: the CUDA tests run against the committed ones"
fi

OUT=$logs SHAPE=${SHAPE:-20b} hack/gpu/kernel-check.sh
grep -E 'cuda reference' "$logs/tests.log" | head -20
cp "$logs/tests.log" "$out/tests.log"
el "end"
