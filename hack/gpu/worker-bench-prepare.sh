#!/usr/bin/env bash
# Run here (not on the GPU machine) before hack/gpu/worker-bench.sh or hack/gpu/latency-bench.sh: packs what that
# machine lacks into .gpu/ (ignored by git), the only folder the run tool then needs to carry:
#   .gpu/node.xz, node-include.tgz, node-addon-api.tgz, unpack.sh   node and its headers (../shared/gpu/pack-node.sh)
#   .gpu/bench/worker.mjs    the worker (worker/src/main.ts) bundled with esbuild: every JS dependency inside, so no
#                            node_modules goes along (a production install of the worker's dependencies is ≈ 60 MB:
#                            gpt-tokenizer 30 MB, @opentelemetry 18 MB, zod 8 MB; the bundle is a few MB)
#   .gpu/bench/compare.mjs   hack/bench/compare.ts bundled: the load generator (HTTP) and the engine-direct runner
#   .gpu/bench/gateway.mjs   the gateway (operator/src/gateway/main.ts) bundled (@kubernetes/client-node and ioredis
#                            inside)
#   .gpu/bench/gateway-bench.mjs  operator/test/gateway-bench.ts bundled (`make bench-gateway`'s client)
#   .gpu/bench/o200k_base.tiktoken  the o200k vocabulary (gpt-oss's harmony tokenizer; worker/src/o200k.ts reads it
#                            from gpt-tokenizer's data folder, or from MODELSERVE_O200K_VOCAB, which worker-bench.sh sets)
# The tiny-harmony checkpoint both benches serve is not carried (50 MB of random weights; 39 MB with zstd): the
# GPU machine builds make_checkpoint with the addon and makes it there (latency-bench.sh).
# Prints the carry list and its total size (the run tool carries at most 64 MiB in all, working tree included).
#   hack/gpu/worker-bench-prepare.sh [--pack-node PATH]
set -euo pipefail
cd "$(dirname "$0")/../.."
pack_node=../shared/gpu/pack-node.sh
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pack-node) pack_node=$2; shift ;;
    *) echo "usage: $0 [--pack-node PATH]" >&2; exit 2 ;;
  esac
  shift
done

[[ -x $pack_node ]] || { echo "worker-bench-prepare: no $pack_node (see ../shared/gpu/README.md)" >&2; exit 1; }
"$pack_node" >/dev/null
[[ -f .gpu/node.xz && -f .gpu/node-include.tgz && -f .gpu/node-addon-api.tgz && -x .gpu/unpack.sh ]] ||
  { echo "worker-bench-prepare: $pack_node left .gpu/ incomplete" >&2; exit 1; }

# ESM bundles for node 20; packages that still call require() get one through createRequire.
mkdir -p .gpu/bench
banner="import { createRequire as __msCreateRequire } from 'node:module'; const require = __msCreateRequire(import.meta.url);"
for entry in worker/src/main.ts:worker.mjs hack/bench/compare.ts:compare.mjs \
  operator/src/gateway/main.ts:gateway.mjs operator/test/gateway-bench.ts:gateway-bench.mjs; do
  npx esbuild "${entry%%:*}" --bundle --platform=node --target=node20 --format=esm --minify-whitespace \
    --log-level=warning --outfile=".gpu/bench/${entry##*:}" --banner:js="$banner"
done

vocab=$(node -p "require.resolve('gpt-tokenizer/data/o200k_base.tiktoken')")
cp "$vocab" .gpu/bench/o200k_base.tiktoken

echo "carry: .gpu"
# Everything in .gpu travels, files other tools left there too.
find .gpu -type f -exec du -sh {} + | sort -k2 | sed 's/^/  /'
# The working tree travels too (tracked and untracked, not ignored, files).
tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null |
  awk '{ s += $1 } END { print s + 0 }')
carry=$(du -sb .gpu | cut -f1)
total=$((tree + carry))
echo "total: .gpu $((carry / 1024 / 1024)) MiB + working tree $((tree / 1024 / 1024)) MiB of the run tool's 64 MiB"
((total < 64 * 1024 * 1024)) || { echo "worker-bench-prepare: .gpu and the working tree are over 64 MiB" >&2; exit 1; }
