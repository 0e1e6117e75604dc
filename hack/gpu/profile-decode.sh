#!/usr/bin/env bash
# Nsight Compute on the kernels of a 20b batch-1 decode step (GPU machine; $B built with bench_cuda): per kernel its
# duration, DRAM bytes and throughput against peak, SM and issue activity, the main stall reasons, grid and block,
# one line each (hack/gpu/summarize_ncu.py). Only the timed, graph-replayed steps are profiled (bench_cuda brackets
# them with cudaProfilerStart/Stop); SKIP of their kernel launches are skipped, then COUNT profiled (one layer is 8).
# ncu runs kernels one at a time with caches flushed and clocks at base: durations are longer than in the step, and
# PDL overlap is not in them.
#   hack/gpu/profile-decode.sh [> report.md]     env: B, SKIP (40), COUNT (8), NCU_TIMEOUT (200), OUT (raw CSV there)
set -u
cd "$(dirname "$0")/../.."
B=${B:-worker/native/build-gpu}
out=${OUT:-/tmp/ms-gpu-out}
mkdir -p "$out"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio
metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__block_size
timeout "${NCU_TIMEOUT:-200}" "$ncu" --profile-from-start off --launch-skip "${SKIP:-40}" --launch-count "${COUNT:-8}" \
  --metrics "$metrics" --csv --page raw "$B/bench_cuda" --shape 20b --only-batch1 --decode-steps 4 \
  > "$out/ncu.csv" 2> "$out/ncu.err"
rc=$?
echo "== ncu rc $rc"
python3 hack/gpu/summarize_ncu.py "$out/ncu.csv" || tail -20 "$out/ncu.err"
exit $rc
