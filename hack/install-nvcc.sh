#!/usr/bin/env bash
# Installs nvcc (with cicc from nvidia-nvvm) and the CUDA headers/runtime from PyPI wheels into ~/.cache/modelserve/cuda (no root, no NVIDIA
# repository) so that CPU-only machines (CI) can compile the CUDA backend. Idempotent and safe to run concurrently
# (flock). Prints the path of nvcc on stdout; everything else goes to stderr.
# A machine with a real toolkit (nvcc on PATH or /usr/local/cuda) uses that instead unless MODELSERVE_FORCE_WHEEL_NVCC=1.
set -euo pipefail

CUDA_WHEEL_VERSION="${CUDA_WHEEL_VERSION:-13.0}"  # CUDA 13.0.x: sm_90, supports g++ 12 and 13 (wheel patch levels differ)
ROOT="${MODELSERVE_CUDA_HOME:-$HOME/.cache/modelserve/cuda}"
DEST="$ROOT/$CUDA_WHEEL_VERSION"

if [[ "${MODELSERVE_FORCE_WHEEL_NVCC:-0}" != 1 ]]; then
  for candidate in "$(command -v nvcc 2>/dev/null || true)" /usr/local/cuda/bin/nvcc; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      echo "$candidate"
      exit 0
    fi
  done
fi

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9

# The CUDA 13 wheels all unpack into nvidia/cu13/{bin,include,lib}: one toolkit-shaped tree.
TOOLKIT="$DEST/nvidia/cu13"
if [[ ! -f "$DEST/.complete" ]]; then
  echo "install-nvcc: installing CUDA $CUDA_WHEEL_VERSION wheels into $DEST" >&2
  rm -rf "$DEST"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST" \
    "nvidia-cuda-nvcc==$CUDA_WHEEL_VERSION.*" "nvidia-cuda-runtime==$CUDA_WHEEL_VERSION.*" \
    "nvidia-cuda-crt==$CUDA_WHEEL_VERSION.*" "nvidia-cuda-cccl==$CUDA_WHEEL_VERSION.*" \
    "nvidia-nvvm==$CUDA_WHEEL_VERSION.*" >&2
  # The runtime wheel ships libcudart.so.13 only; the linker and CMake look for the unversioned names.
  for lib in "$TOOLKIT"/lib/libcudart.so.*; do
    [[ -e "$lib" ]] && ln -sf "$(basename "$lib")" "$TOOLKIT/lib/libcudart.so" && break
  done
  # nvcc.profile links from lib64 (the toolkit layout); the wheels ship lib.
  [[ -e "$TOOLKIT/lib64" ]] || ln -s lib "$TOOLKIT/lib64"
  chmod +x "$TOOLKIT"/bin/* "$TOOLKIT"/nvvm/bin/* 2>/dev/null || true
  touch "$DEST/.complete"
fi
if [[ ! -x "$TOOLKIT/bin/nvcc" ]]; then
  echo "install-nvcc: $TOOLKIT/bin/nvcc missing after install (wheel layout changed?)" >&2
  exit 1
fi
echo "$TOOLKIT/bin/nvcc"
