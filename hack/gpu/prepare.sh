#!/usr/bin/env bash
# Run here (not on the GPU machine) before hack/gpu/check-and-bench.sh: copies GoogleTest's sources into
# worker/native/build-gpu-deps/ (ignored by git), which the run tool then carries along — the GPU machine has no
# network and may have no GoogleTest.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=worker/native/build-gpu-deps/googletest
src=${GTEST_SOURCE_DIR:-/usr/src/googletest}
if [[ ! -f "$dest/CMakeLists.txt" ]]; then
  [[ -f "$src/CMakeLists.txt" ]] || { echo "prepare.sh: no GoogleTest sources at $src (apt-get install googletest)" >&2; exit 1; }
  mkdir -p "$(dirname "$dest")"
  cp -r "$src" "$dest"
fi
echo "carry: worker/native/build-gpu-deps"
