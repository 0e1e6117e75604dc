#!/usr/bin/env bash
# Nsight Compute on the kernels of a 20b batch-1 decode step (GPU machine; worker/native/build-gpu built with
# bench_cuda): per kernel its duration, DRAM throughput against peak, SM throughput and the main warp stall reasons,
# kernel by kernel (ncu runs them one at a time, so PDL overlap is not in these durations). Skips the first SKIP
# matching launches (weight generation and warm-up), then profiles COUNT (one layer is ~8 kernels).
#   hack/gpu/profile-decode.sh [> report.txt]     env: B, KERNELS (regex), SKIP, COUNT, NCU_TIMEOUT
set -u
cd "$(dirname "$0")/../.."
B=${B:-worker/native/build-gpu}
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__issue_active.avg.pct_of_peak_sustained_active
timeout "${NCU_TIMEOUT:-150}" "$ncu" -k "regex:${KERNELS:-mxfp4_decode|router_topk|gemv_kernel|combine|attention|rope_kv|rmsnorm}" \
  --launch-skip "${SKIP:-400}" --launch-count "${COUNT:-16}" --metrics "$metrics" \
  "$B/bench_cuda" --shape 20b --decode-steps 8 2>&1 | grep -vE '^==PROF==|^\s*$' | grep -vE '^\[20b\]|^\|' | head -400
