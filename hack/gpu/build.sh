#!/usr/bin/env bash
# The GPU machine's build of the CUDA engine into worker/native/build-gpu, shared by the hack/gpu scripts:
#   hack/gpu/build.sh TESTS(ON|OFF) TARGET...
# With ON it first builds and installs GoogleTest from worker/native/build-gpu-deps (hack/gpu/prepare.sh put it there;
# the machine has no network) into /tmp/ms-gtest, once. Output goes to the caller's stdout/stderr.
set -u
cd "$(dirname "$0")/../.."
tests=$1; shift
nvcc_path=$(hack/install-nvcc.sh) || exit 1
if [[ $tests == ON && ! -d /tmp/ms-gtest ]]; then
  cmake -S worker/native/build-gpu-deps/googletest -B /tmp/ms-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=/tmp/ms-gtest && cmake --build /tmp/ms-gtest-build -j "$(nproc)" &&
    cmake --install /tmp/ms-gtest-build || exit 1
fi
cmake -S worker/native -B worker/native/build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON \
  -DENGINE_ADDON=OFF -DENGINE_TESTS="$tests" -DCMAKE_PREFIX_PATH=/tmp/ms-gtest -DCMAKE_CUDA_COMPILER="$nvcc_path" &&
  cmake --build worker/native/build-gpu -j "$(nproc)" --target "$@"
