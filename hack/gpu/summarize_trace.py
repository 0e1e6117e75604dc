#!/usr/bin/env python3
"""Summarises an Nsight Systems cuda_gpu_trace CSV of graph-replayed decode steps (hack/gpu/decode-timeline.sh).

usage: summarize_trace.py TRACE.csv STEPS
Prints per kernel its launches and GPU time per step, the GPU's busy time per step against the step's span (the
difference is idle: launch gaps, host work, the token copy), and one step's first and last kernels with their start
offsets and the gap to the previous kernel's end (negative: overlapped through programmatic dependent launch).
Steps are delimited by the device-to-host copies (the sampled token, one per step).
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*", "", name)  # parameters
    name = re.sub(r"<.*>", "<>", name)  # template arguments
    return name.replace("void ", "").split("::")[-1][:48]


def main(path, steps):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    col = lambda p: next(i for i, h in enumerate(head) if h.startswith(p))
    s_i, d_i, n_i = col("Start"), col("Duration"), col("Name")
    ev = sorted((int(float(r[s_i])), int(float(r[d_i])), r[n_i]) for r in rows[1:] if len(r) > n_i and r[s_i])
    kernels = [e for e in ev if not e[2].startswith("[")]
    d2h = [e for e in ev if "Device-to-Host" in e[2]]
    if not kernels:
        print("no kernels in the trace")
        return
    span = max(s + d for s, d, _ in ev) - ev[0][0]
    busy, end = 0, -1
    for s, d, _ in kernels:
        if s + d > end:
            busy += s + d - max(s, end)
            end = s + d
    print(f"steps {steps}; per step: span {span / steps / 1e3:.1f} us, kernels busy {busy / steps / 1e3:.1f} us, "
          f"kernel count {len(kernels) / steps:.0f}, token copies {len(d2h) / steps:.2f}")
    per = defaultdict(lambda: [0, 0])
    for s, d, n in kernels:
        per[short(n)][0] += 1
        per[short(n)][1] += d
    print("| kernel | launches/step | mean us | us/step |\n|---|---|---|---|")
    for n, (c, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"| {n} | {c / steps:.1f} | {t / c / 1e3:.2f} | {t / steps / 1e3:.1f} |")
    if len(d2h) >= 3:  # one whole step: between two token copies in the middle
        mid = len(d2h) // 2
        t0, t1 = d2h[mid - 1][0], d2h[mid][0]
        step = [k for k in kernels if t0 <= k[0] < t1]
        print(f"\none step ({len(step)} kernels, {(t1 - t0) / 1e3:.1f} us between token copies): "
              "offset us | duration us | gap to previous end us | kernel")
        prev_end = t0 + d2h[mid - 1][1]
        for i, (s, d, n) in enumerate(step):
            if i < 28 or i >= len(step) - 8:
                print(f"{(s - t0) / 1e3:9.2f} {d / 1e3:8.2f} {(s - prev_end) / 1e3:8.2f}  {short(n)}")
            elif i == 28:
                print("   ...")
            prev_end = max(prev_end, s + d)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
