#!/usr/bin/env bash
# One device call for a change that touches both the reference vectors and the CUDA kernels:
#   1. new transformers reference vectors (hack/gpu/make-test-vectors.sh: 64 greedy steps per case) into $OUT/vectors,
#      while the CUDA build (the targets of check-and-bench.sh) runs beside it;
#   2. the vectors copied into worker/native/testdata/reference/ of this copy, then the CUDA tests (kernels vs CPU,
#      model vs the new vectors), bench_cuda 20b, and bench_cuda 20b once per BENCH_VARIANTS entry (a switch, e.g.
#      MODELSERVE_CUDA_L2_PREFETCH=0) for an A/B on the same GPU.
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
    cmake --build worker/native/build-gpu -j "$(nproc)" --target engine_cuda_tests bench_cuda
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

B=worker/native/build-gpu
timeout 240 $B/engine_cuda_tests > "$logs/tests.log" 2>&1
echo "== engine_cuda_tests rc $?: $(grep -E '^\[  PASSED  \]' "$logs/tests.log") $(grep -E '^\[  FAILED  \] [0-9]+ tests?,' "$logs/tests.log")"
grep -E '^\[  FAILED  \]|cuda reference|cuda moe options|Failure' "$logs/tests.log" | head -40
cp "$logs/tests.log" "$out/tests.log"
el "tests done"
timeout 90 $B/bench_cuda --shape 20b --out "$logs/bench.md" > "$logs/bench.log" 2>&1
echo "== bench_cuda 20b (defaults, rc $?)"; grep -E '^\[|device-to-device' "$logs/bench.log"; cat "$logs/bench.md"
for v in ${BENCH_VARIANTS:-}; do
  name=${v//=/-}
  env "$v" timeout 60 $B/bench_cuda --shape 20b --out "$logs/b-$name.md" > "$logs/b-$name.log" 2>&1
  echo "== bench_cuda 20b with $v"; grep '^| 20b' "$logs/b-$name.md"; grep -E 'per step|MoE stages' "$logs/b-$name.log"
done
el "end"
