#!/usr/bin/env python3
"""make bench-slm: prefill and decode tokens/s of our engine (build/bench_slm) and of llama.cpp (llama-cpp-python
from the cached venv) on the same GGUF model, prompt tokens and thread count, in one run; prints a table with ratios.

  $(hack/slm/ensure-llama-cpp.sh | tail -1) hack/slm/bench.py --model M.gguf --ours build/bench_slm [--threads 2]
"""
import argparse
import subprocess
import time

import llama_cpp
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--ours", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--decode", type=int, default=64)
ap.add_argument("--reps", type=int, default=3)
args = ap.parse_args()

TEXT = ("The history of computing is a story of abstraction: each generation of engineers hides the details of the "
        "last behind a simpler interface, so that the next can build higher. ")
llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=args.threads,
                      n_threads_batch=args.threads, verbose=False)


def last_logits():
    # The last evaluated token's logits straight from llama.cpp's output buffer (llama-cpp-python keeps .scores only
    # with logits_all=True, which would make llama.cpp compute the unembedding for every prompt token).
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def bench_llama(prompt):
    best_p, best_d = 1e30, 1e30
    for r in range(args.reps + 1):  # first run is a warm-up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = int(np.argmax(last_logits()))
        t1 = time.perf_counter()
        for _ in range(args.decode):
            llm.eval([tok])
            tok = int(np.argmax(last_logits()))
        t2 = time.perf_counter()
        if r:
            best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
    return len(prompt) / best_p, args.decode / best_d


def bench_ours(prompt):
    out = subprocess.run([args.ours, args.model, "--threads", str(args.threads), "--decode", str(args.decode),
                          "--reps", str(args.reps), "--tokens", " ".join(map(str, prompt))],
                         check=True, capture_output=True, text=True).stdout
    kv = dict(x.split("=") for x in out.split())
    return float(kv["prefill_tok_s"]), float(kv["decode_tok_s"]), kv["simd"]


print(f"model {args.model}\nthreads {args.threads}, decode {args.decode} tokens after the prompt, best of {args.reps}; "
      f"llama-cpp-python {llama_cpp.__version__}")
# Which SIMD llama.cpp's CPU backend was built with (GGML_NATIVE: this machine's), e.g. "CPU : SSE3 = 1 | AVX2 = 1 | ...".
print(f"llama.cpp system info: {llama_cpp.llama_print_system_info().decode().strip()}")
print(f"{'prompt':>7} | {'prefill tok/s ours':>18} {'llama.cpp':>10} {'ratio':>6} | "
      f"{'decode tok/s ours':>17} {'llama.cpp':>10} {'ratio':>6}")
for n in (32, 128, 512):
    ids = llm.tokenize((TEXT * 40).encode(), add_bos=False)[:n]
    # Interleave (ours, theirs, ours) so drift on a shared machine hits both sides alike; keep the best of each.
    o1p, o1d, simd = bench_ours(ids)
    lp, ld = bench_llama(ids)
    o2p, o2d, _ = bench_ours(ids)
    op, od = max(o1p, o2p), max(o1d, o2d)
    print(f"{n:>7} | {op:>18.1f} {lp:>10.1f} {op / lp:>5.2f}x | {od:>17.1f} {ld:>10.1f} {od / ld:>5.2f}x", flush=True)
print(f"ours: simd={simd}")
