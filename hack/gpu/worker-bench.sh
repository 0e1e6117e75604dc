#!/usr/bin/env bash
# The worker over HTTP, measured by the repo's load generator (hack/bench/compare.ts: the same requests straight into
# the engine, then through the worker process over HTTP), in one command on the GPU machine. Run
# hack/gpu/worker-bench-prepare.sh here first and carry `.gpu` (node, its headers, the bundled worker and load
# generator, the o200k vocabulary). Builds the N-API addon against the carried node headers (cmake + ninja; with
# ENGINE_CUDA=ON for --backend cuda), starts the worker on the model, runs fixed-length prompts at each concurrency and
# prints TTFT / ITL p50 and p99 and output tok/s for both paths. Logs and the JSON go to $OUT (or /tmp/ms-worker-bench).
#
#   hack/gpu/worker-bench.sh [--backend cuda|cpu] [--model synthetic:gpt-oss-20b|DIR] [--concurrency 1,32]
#                            [--input-len 512] [--output-len 128] [--num-prompts 32] [--max-context 1024]
#                            [--kv-memory-mb 4096] [--threads N] [--build DIR]
# The same script on a CPU machine: --backend cpu --model DIR (a checkpoint, e.g. make_checkpoint --preset
# tiny-harmony) checks the node bundle → addon → worker → load generator chain without a GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/ms-worker-bench}
mkdir -p "$out"
backend=cuda model=synthetic:gpt-oss-20b concurrency=1,32 input_len=512 output_len=128 num_prompts=32
max_context=1024 kv_mb=4096 threads='' build=''
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend) backend=$2; shift ;;
    --model) model=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --input-len) input_len=$2; shift ;;
    --output-len) output_len=$2; shift ;;
    --num-prompts) num_prompts=$2; shift ;;
    --max-context) max_context=$2; shift ;;
    --kv-memory-mb) kv_mb=$2; shift ;;
    --threads) threads=$2; shift ;;
    --build) build=$2; shift ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
  shift
done
[[ $backend == cuda || $backend == cpu ]] || { echo "--backend must be cuda or cpu" >&2; exit 2; }
build=${build:-worker/native/build-h5-worker-$backend}
for f in .gpu/unpack.sh .gpu/bench/worker.mjs .gpu/bench/compare.mjs .gpu/bench/o200k_base.tiktoken; do
  [[ -e $f ]] || { echo "no $f: run hack/gpu/worker-bench-prepare.sh first and carry .gpu" >&2; exit 1; }
done

# Node from .gpu (the GPU machine has none; here it checks the carried copy is what runs).
eval "$(.gpu/unpack.sh)"
echo "node $(node --version) from $(command -v node)" | tee "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/env.txt" 2>/dev/null || true
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain 2>/dev/null | head -1) ]] && commit="$commit+dirty"

cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_TESTS=OFF -DENGINE_ADDON=ON)
if [[ $backend == cuda ]]; then
  nvcc_path=$(hack/install-nvcc.sh 2>>"$out/build.log") || { echo "no nvcc" | tee -a "$out/build.log"; exit 1; }
  cmake_args+=(-DENGINE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path")
else
  cmake_args+=(-DENGINE_CUDA=OFF)
fi
t0=$(date +%s)
if ! { cmake -S worker/native -B "$build" "${cmake_args[@]}" &&
       cmake --build "$build" -j "$(nproc)" --target ms_addon; } >>"$out/build.log" 2>&1; then
  tail -30 "$out/build.log"
  echo "addon build FAILED (log: $out/build.log)"
  exit 1
fi
addon=$(find "$build" -maxdepth 2 -name 'modelserve_engine.node' | head -1)
[[ -n $addon ]] || { echo "no modelserve_engine.node under $build" >&2; exit 1; }
echo "addon built in $(($(date +%s) - t0)) s: $addon"

export MODELSERVE_ENGINE_ADDON=$PWD/$addon MODELSERVE_O200K_VOCAB=$PWD/.gpu/bench/o200k_base.tiktoken
args=(--model "$model" --backend "$backend" --concurrency "$concurrency" --num-prompts "$num_prompts"
  --input-len "$input_len" --output-len "$output_len" --max-context "$max_context" --kv-memory-mb "$kv_mb"
  --worker-entry .gpu/bench/worker.mjs --out "$out/worker-bench.json")
[[ -n $threads ]] && args+=(--threads "$threads")
t0=$(date +%s)
if ! node .gpu/bench/compare.mjs "${args[@]}" >"$out/compare.log" 2>&1; then
  tail -40 "$out/compare.log"
  echo "load generator FAILED (log: $out/compare.log)"
  exit 1
fi
echo "engine-direct and HTTP runs took $(($(date +%s) - t0)) s (log: $out/compare.log)"

node - "$out/worker-bench.json" "$backend" "$model" "$commit" "$input_len" "$output_len" "$(sed -n 2p "$out/env.txt")" <<'EOF'
const [file, backend, model, commit, inLen, outLen, gpu] = process.argv.slice(2);
const r = JSON.parse(require('fs').readFileSync(file, 'utf8'));
const f = (x, d = 2) => (typeof x === 'number' ? x.toFixed(d) : '-');
console.log(`\n${new Date().toISOString().slice(0, 16)}Z  ${gpu || 'no GPU'}  backend ${backend}  model ${model}  commit ${commit}`);
console.log(`${inLen} prompt tokens, ${outLen} output tokens per request (greedy, random prompts)\n`);
console.log('| path | concurrency | requests ok | output tokens / request | TTFT p50 (ms) | TTFT p99 (ms) | ITL p50 (ms) | ITL p99 (ms) | output tok/s |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const [path, runs] of [['engine-direct', r.direct], ['worker HTTP', r.http]]) {
  for (const [c, s] of Object.entries(runs)) {
    const perReq = s.completed ? s.total_output_tokens / s.completed : 0;
    console.log(`| ${path} | ${c} | ${s.completed}/${s.completed + s.failed} | ${f(perReq, 1)} | ${f(s.p50_ttft_ms)} | ${f(s.p99_ttft_ms)} | ` +
      `${f(s.p50_itl_ms)} | ${f(s.p99_itl_ms)} | ${f(s.output_throughput, 1)} |`);
  }
}
EOF
