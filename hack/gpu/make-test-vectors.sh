#!/usr/bin/env bash
# Reference test vectors for the native engine, made on the GPU machine (run from the repository root, e.g. through
# the device tool with OUT set): builds make_checkpoint, writes synthetic gpt-oss checkpoints, runs them through
# transformers' GptOssForCausalLM (MXFP4 dequantized, fp32, TF32 off) and writes one JSON per case into $OUT.
# Copy the JSON files to worker/native/testdata/reference/ to commit them.
set -euo pipefail
OUT=${OUT:-/tmp/ms-test-vectors}
BUILD=${BUILD:-/tmp/ms-vectors-build}
mkdir -p "$OUT"
if ! { cmake -S worker/native -B "$BUILD" -G Ninja -DENGINE_TESTS=OFF -DENGINE_ADDON=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" --target make_checkpoint -j "$(nproc)" >>"$OUT/build.log" 2>&1; }; then
    # The engine library may hold another area's work in progress: the generator needs only these files.
    echo "cmake build failed (see build.log); compiling make_checkpoint directly" | tee -a "$OUT/build.log"
    mkdir -p "$BUILD"
    g++ -O2 -std=gnu++17 -Iworker/native/include -Iworker/native/src -o "$BUILD/make_checkpoint" \
        worker/native/tools/make_checkpoint.cc worker/native/src/model/synthetic_checkpoint.cc \
        worker/native/src/common/error.cc worker/native/src/cpu/bf16.cc worker/native/src/cpu/simd.cc
fi
PYTHONUNBUFFERED=1 python3 hack/gpu/make_test_vectors.py --make-checkpoint "$BUILD/make_checkpoint" \
    --work /tmp/ms-vector-checkpoints --out "$OUT" 2>&1 | tee "$OUT/make-test-vectors.log"
