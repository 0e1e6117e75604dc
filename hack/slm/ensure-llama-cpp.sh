#!/usr/bin/env bash
# Build llama-cpp-python (which compiles llama.cpp from source) once into a cached venv; it is the reference
# implementation for the SmolLM2 checks (make-reference.py) and the peer in `make bench-slm`.
# Prints the venv's python on the last line. Idempotent; concurrent callers wait on a flock.
set -euo pipefail

CACHE_DIR="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}/slm"
VENV="$CACHE_DIR/venv"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.venv.lock"
flock 9

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
# Native CPU build (GGML_NATIVE: -march=native, the SIMD of the machine that builds it), no GPU backends, two
# compile jobs (the machine is shared).
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=2 \
  "$VENV/bin/python" -m pip install --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$VERSION" >&2
echo "$VENV/bin/python"
