#!/usr/bin/env bash
# The worker's and the gateway's added TTFT (issues 5 and 6: `make bench-serve`, `make bench-gateway`) in one command on
# a many-core machine without Node.js or node_modules (the GPU machine's 16 CPU cores; its GPU is not used): on the
# 2-core development machine the engine, the worker's event loop, the gateway and the load generator share two cores.
# Run hack/gpu/worker-bench-prepare.sh here first and carry `.gpu` (node, its headers, the bundled worker, gateway and
# both benches, the o200k vocabulary). Then, each part under its own `timeout`, with its elapsed time printed:
#   build    the N-API addon and make_checkpoint, CPU only, against the carried node headers (cmake + ninja, nproc
#            jobs), and the tiny-harmony checkpoint (seed 1) both benches serve;
#   serve    hack/bench/compare.ts: engine-direct vs the worker over HTTP, at --concurrency (1,32), the CPU backend
#            with --threads engine threads (8: the other cores stay for node);
#   gateway  operator/test/gateway-bench.ts: 200 streams through the gateway, probe pairs direct vs via the gateway,
#            the worker with --worker-threads engine threads.
# Writes into $OUT (or /tmp/ms-latency-bench): build.log, serve.log, serve.json, gateway.md, gateway.log,
# gateway-runs.tgz (the worker's and gateway's logs), summary.md (both results tables, printed last).
#
#   hack/gpu/latency-bench.sh [--threads 8] [--worker-threads 8] [--concurrency 1,32] [--streams 200] [--jobs N]
#     [--serve-args '...'] [--gateway-args '...'] [--build DIR] [--only serve|gateway]
#     [--build-timeout 150] [--serve-timeout 140] [--gateway-timeout 180]
# --serve-args / --gateway-args are appended to compare.mjs / gateway-bench.mjs's arguments (a later flag wins), e.g.
# fewer samples for a quick check of the chain on a small machine:
#   hack/gpu/latency-bench.sh --jobs 2 --threads 1 --worker-threads 1 --concurrency 1,4 --streams 20 \
#     --serve-args '--num-prompts 8 --warmup-requests 8' --gateway-args '--probes 4 --samples 40 --rounds 1'
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-latency-bench}
mkdir -p "$out"
threads=8 worker_threads=8 concurrency=1,32 streams=200 jobs=$(nproc) serve_args='' gateway_args='' build='' only=''
build_timeout=150 serve_timeout=140 gateway_timeout=180
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads=$2; shift ;;
    --worker-threads) worker_threads=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --streams) streams=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --serve-args) serve_args=$2; shift ;;
    --gateway-args) gateway_args=$2; shift ;;
    --build) build=$2; shift ;;
    --only) only=$2; shift ;;
    --build-timeout) build_timeout=$2; shift ;;
    --serve-timeout) serve_timeout=$2; shift ;;
    --gateway-timeout) gateway_timeout=$2; shift ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
  esac
  shift
done
[[ -z $only || $only == serve || $only == gateway ]] || { echo "--only must be serve or gateway" >&2; exit 2; }
build=${build:-worker/native/build-latency-cpu}
for f in .gpu/unpack.sh .gpu/bench/worker.mjs .gpu/bench/compare.mjs .gpu/bench/gateway.mjs \
  .gpu/bench/gateway-bench.mjs .gpu/bench/o200k_base.tiktoken; do
  [[ -e $f ]] || { echo "no $f: run hack/gpu/worker-bench-prepare.sh first and carry .gpu" >&2; exit 1; }
done
# Scratch outside $OUT: only a few files come back from there.
work=$(mktemp -d "${TMPDIR:-/tmp}/ms-latency-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Each file of an earlier run with the same $OUT goes (the parts append to theirs).
rm -f "$out"/{build.log,serve.log,serve.json,gateway.md,gateway.log,gateway-runs.tgz,summary.md}

# Node from .gpu (the GPU machine has none; elsewhere this checks that the carried copy is what runs).
eval "$(.gpu/unpack.sh)"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain 2>/dev/null | head -1) ]] && commit="$commit+dirty"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
summary=$out/summary.md
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ)  $(nproc) × ${cpu:-unknown CPU}  commit $commit"
  echo "node $(node --version) ($(command -v node)), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo
} >"$summary"

elapsed() { echo "$1: $(($(date +%s) - $2)) s"; }
# Runs a part under `timeout` (which signals its whole process group, so the workers and gateways it started stop too):
# part NAME LIMIT STDOUT STDERR COMMAND...
part() {
  local name=$1 limit=$2 stdout=$3 stderr=$4 t0 rc
  shift 4
  t0=$(date +%s)
  timeout "$limit" "$@" >>"$stdout" 2>>"$stderr"
  rc=$?
  ((rc == 124)) && echo "${name%% *}: TIMED OUT after $limit s" | tee -a "$summary"
  elapsed "$name" "$t0" | tee -a "$summary"
  return "$rc"
}

# 1. The addon and make_checkpoint (one engine library), then the checkpoint.
t0=$(date +%s)
if ! timeout "$build_timeout" bash -c '
  cmake -S worker/native -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_TESTS=OFF -DENGINE_ADDON=ON \
    -DENGINE_CUDA=OFF && cmake --build "$1" -j "$2" --target ms_addon make_checkpoint' _ "$build" "$jobs" \
  >>"$out/build.log" 2>&1; then
  tail -30 "$out/build.log"
  elapsed "build (FAILED or timed out, log: $out/build.log)" "$t0" | tee -a "$summary"
  exit 1
fi
addon=$(find "$build" -maxdepth 2 -name modelserve_engine.node | head -1)
[[ -n $addon && -x $build/make_checkpoint ]] || { echo "no addon or make_checkpoint under $build" >&2; exit 1; }
checkpoint=$work/tiny-harmony-seed1
if ! "$build/make_checkpoint" --preset tiny-harmony --seed 1 --out "$checkpoint" >>"$out/build.log" 2>&1; then
  tail -10 "$out/build.log"
  echo "make_checkpoint FAILED (log: $out/build.log)"
  exit 1
fi
elapsed "build (addon, make_checkpoint, checkpoint; $jobs jobs)" "$t0" | tee -a "$summary"
export MODELSERVE_ENGINE_ADDON=$PWD/$addon MODELSERVE_O200K_VOCAB=$PWD/.gpu/bench/o200k_base.tiktoken

status=0
# 2. bench-serve: engine-direct vs the worker over HTTP. Its JSON goes to the scratch folder first: compare writes an
# HTML plot beside it, which would take one of $OUT's few files.
if [[ $only != gateway ]]; then
  # shellcheck disable=SC2086 # --serve-args is a list of flags
  if part "serve (compare.mjs, concurrency $concurrency, $threads engine threads)" "$serve_timeout" \
    "$out/serve.log" "$out/serve.log" node .gpu/bench/compare.mjs --model "$checkpoint" --backend cpu \
    --concurrency "$concurrency" --threads "$threads" --worker-entry .gpu/bench/worker.mjs \
    --out "$work/serve.json" $serve_args; then
    cp "$work/serve.json" "$out/serve.json"
  else
    tail -20 "$out/serve.log"
    echo "serve FAILED (log: $out/serve.log)" | tee -a "$summary"
    status=1
  fi
fi

# 3. bench-gateway: probe pairs straight to the worker and through the gateway, with --streams streams in it.
if [[ $only != serve ]]; then
  # shellcheck disable=SC2086 # --gateway-args is a list of flags
  part "gateway (gateway-bench.mjs, $streams streams, $worker_threads engine threads)" "$gateway_timeout" \
    "$out/gateway.md" "$out/gateway.log" node .gpu/bench/gateway-bench.mjs --concurrency "$streams" \
    --worker-threads "$worker_threads" --worker-entry .gpu/bench/worker.mjs --gateway-entry .gpu/bench/gateway.mjs \
    --checkpoint "$checkpoint" --run-dir "$work/gateway-runs" $gateway_args
  rc=$?
  [[ -d $work/gateway-runs ]] && tar czf "$out/gateway-runs.tgz" -C "$work" gateway-runs
  if ((rc != 0)); then
    tail -20 "$out/gateway.log"
    echo "gateway FAILED (log: $out/gateway.log)" | tee -a "$summary"
    status=1
  fi
fi

# Both results tables last: compare's (from its first table row on), then gateway-bench's Markdown.
{
  if [[ -s $out/serve.json ]]; then
    printf '\n## bench-serve (worker HTTP vs engine-direct)\n\n'
    awk '/^\|/ { on = 1 } on && !/^wrote / { print }' "$out/serve.log"
  fi
  if [[ -s $out/gateway.md ]]; then
    printf '\n## bench-gateway\n\n'
    cat "$out/gateway.md"
    echo
  fi
} >>"$summary"
echo
cat "$summary"
exit "$status"
