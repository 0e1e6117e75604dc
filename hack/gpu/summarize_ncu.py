#!/usr/bin/env python3
"""Prints an Nsight Compute `--csv --page raw` report (hack/gpu/decode-timeline.sh) as one line per kernel:
duration, DRAM bytes read, DRAM throughput (% of peak), the achieved read bandwidth, SM throughput, warps active,
issue active, long-scoreboard and barrier stalls per issue, grid and block size."""
import csv
import re
import sys

COLS = [("gpu__time_duration.sum", "us"), ("dram__bytes_read.sum", "MB"),
        ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram%"),
        ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "sm%"),
        ("sm__warps_active.avg.pct_of_peak_sustained_active", "warps%"),
        ("smsp__issue_active.avg.pct_of_peak_sustained_active", "issue%"),
        ("smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio", "lsb"),
        ("smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio", "bar"),
        ("launch__grid_size", "grid"), ("launch__block_size", "block")]
SCALE = {"ns": 1e-3, "us": 1, "usecond": 1, "msecond": 1e3, "ms": 1e3, "nsecond": 1e-3,
         "byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1, "Gbyte": 1e3, "KB": 1e-3, "MB": 1, "B": 1e-6}


def main(path):
    lines = [l for l in open(path) if l.startswith('"')]
    rows = list(csv.reader(lines))
    head, units = rows[0], rows[1]
    idx = {h: i for i, h in enumerate(head)}
    name_i = idx.get("Kernel Name")
    print("| kernel | " + " | ".join(c[1] for c in COLS) + " | GB/s read |")
    print("|---" * (len(COLS) + 2) + "|")
    for r in rows[2:]:
        vals = []
        us = mb = None
        for key, label in COLS:
            i = idx.get(key)
            v = r[i].replace(",", "") if i is not None and i < len(r) else ""
            try:
                x = float(v) * SCALE.get(units[i], 1) if label in ("us", "MB") else float(v)
            except ValueError:
                vals.append(v or "-")
                continue
            if label == "us":
                us = x
            if label == "MB":
                mb = x
            vals.append(f"{x:.2f}" if x < 1000 else f"{x:.0f}")
        gbs = f"{mb / us * 1e3:.0f}" if us and mb is not None else "-"
        name = re.sub(r"\(.*", "", r[name_i]) if name_i is not None else "?"
        name = re.sub(r"<.*>", "<>", name).replace("void ", "").split("::")[-1][:40]
        print(f"| {name} | " + " | ".join(vals) + f" | {gbs} |")


if __name__ == "__main__":
    main(sys.argv[1])
