"""Reference logits for synthetic gpt-oss checkpoints from transformers' GptOssForCausalLM.

For each case: make_checkpoint writes the checkpoint; transformers loads it (MXFP4 experts dequantized; the whole
model then cast to float32, since the dequantized experts arrive as bf16; TF32 disabled); the script checks that transformers' dequantized expert weights equal an independent
numpy dequantization of the blocks/scales; it then decodes greedily (full recompute each step, no cache) and records,
for every position of prompt + continuation, the top-20 ids and logits and the logits of 64 fixed probe ids.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import torch

CASES = [
    # name, make_checkpoint options, prompt length, tokens to generate
    ("tiny-1shard", ["--preset", "tiny", "--seed", "1"], 40, 64),
    ("tiny-window-3shards", ["--preset", "tiny", "--seed", "2", "--shards", "3"], 180, 64),
    (
        "wide-2shards",
        ["--preset", "tiny", "--seed", "3", "--hidden", "96", "--intermediate", "128", "--heads", "6", "--kv-heads", "2",
         "--head-dim", "32", "--experts", "12", "--layers", "3", "--vocab", "3000", "--shards", "2"],
        64,
        64,
    ),
]
BASE = ["--preset", "tiny", "--seed", "1"]
DIAG_CASES = [
    ("d-base", BASE, 16, 2),
    ("d-inter96", BASE + ["--intermediate", "96"], 16, 2),
    ("d-layers3", BASE + ["--layers", "3"], 16, 2),
    ("d-layers1", BASE + ["--layers", "1"], 16, 2),
    ("d-experts12", BASE + ["--experts", "12"], 16, 2),
    ("d-hd32", BASE + ["--head-dim", "32", "--heads", "2", "--kv-heads", "1"], 16, 2),
    ("d-vocab3000", BASE + ["--vocab", "3000"], 16, 2),
]
TOP_K = 20
N_PROBES = 64
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def fnv1a64(path):
    h = 0xCBF29CE484222325
    with open(path, "rb") as f:
        data = f.read()
    # Vectorising FNV is not possible; process in Python (the files are small).
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(h, "016x")


def prompt_tokens(n, vocab, seed):
    state = seed * 2654435761 + 12345
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append(int((state >> 33) % vocab))
    return out


def dequant_numpy(blocks, scales):
    lo = blocks & 15
    hi = blocks >> 4
    nib = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)  # element 2j = low nibble of byte j
    vals = E2M1[nib] * np.ldexp(np.float32(1), scales.astype(np.int32) - 127)[..., None]
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1)


def check_dequant(model, ckpt_dir):
    from safetensors.torch import load_file

    files = [f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors")]
    tensors = {}
    for f in files:
        for k, v in load_file(os.path.join(ckpt_dir, f)).items():
            if v.dtype == torch.uint8:  # numpy has no bfloat16; only the MXFP4 blocks/scales are needed
                tensors[k] = v.numpy()
    worst = 0.0
    notes = []
    for l, layer in enumerate(model.model.layers):
        for proj in ("gate_up_proj", "down_proj"):
            prefix = f"model.layers.{l}.mlp.experts.{proj}"
            mine = dequant_numpy(tensors[prefix + "_blocks"], tensors[prefix + "_scales"])  # [E, out, in]
            theirs = getattr(layer.mlp.experts, proj).detach().float().cpu().numpy()
            # Square matrices (hidden == intermediate) fit both orientations: take the one that matches.
            cands = []
            if theirs.shape == mine.shape:
                cands.append((float(np.abs(theirs - mine).max()), "[E,out,in]"))
            if theirs.shape == mine.transpose(0, 2, 1).shape:
                cands.append((float(np.abs(theirs - mine.transpose(0, 2, 1)).max()), "[E,in,out]"))
            if not cands:
                raise RuntimeError(f"{prefix}: transformers shape {theirs.shape} vs ours {mine.shape}")
            d, orient = min(cands)
            worst = max(worst, d)
            if l == 0:
                notes.append(f"{proj} {orient}")
    return worst, ", ".join(notes)


def load(ckpt_dir, device):
    from transformers import GptOssForCausalLM

    kwargs = dict(dtype=torch.float32, attn_implementation="eager", device_map=device)
    try:
        from transformers import Mxfp4Config

        return GptOssForCausalLM.from_pretrained(ckpt_dir, quantization_config=Mxfp4Config(dequantize=True), **kwargs)
    except Exception as e:  # fall back on the automatic dequantization
        print(f"  explicit Mxfp4Config(dequantize=True) failed ({e}); loading with defaults")
        return GptOssForCausalLM.from_pretrained(ckpt_dir, **kwargs)


def run_case(name, opts, n_prompt, n_gen, args, device):
    ckpt = os.path.join(args.work, name)
    subprocess.run([args.make_checkpoint, *opts, "--out", ckpt], check=True)
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    vocab = cfg["vocab_size"]
    model = load(ckpt, device)
    # The dequantized experts come back as bf16 parameters even with dtype=float32 (the rest is fp32), which would
    # run the expert matmuls in bf16: cast everything to fp32 (exact: every dequantized value fits in bf16).
    dtypes_loaded = sorted({str(p.dtype) for p in model.parameters()})
    model = model.to(torch.float32).eval()
    deq_err, orient = check_dequant(model, ckpt)
    prompt = prompt_tokens(n_prompt, vocab, len(name))
    ids = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(n_gen):
            logits = model(torch.tensor([ids], device=device)).logits[0, -1].float()
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
        full = model(torch.tensor([ids[:-1]], device=device)).logits[0].float().cpu()
    probes = [(i * vocab) // N_PROBES for i in range(N_PROBES)]
    positions = []
    for p in range(full.shape[0]):
        row = full[p]
        tv, ti = torch.topk(row, TOP_K)
        positions.append({
            "top_ids": [int(i) for i in ti],
            "top_logits": [float(f"{v:.7g}") for v in tv.tolist()],
            "probe_logits": [float(f"{row[i].item():.7g}") for i in probes],
        })
    files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    import transformers

    doc = {
        "name": name,
        "make_checkpoint_args": opts,
        "files_fnv1a64": {f: fnv1a64(os.path.join(ckpt, f)) for f in files},
        "reference": f"transformers {transformers.__version__} GptOssForCausalLM, torch {torch.__version__}, "
        f"all parameters cast to float32 (TF32 off), eager attention, on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}",
        "dtypes_as_loaded": dtypes_loaded,
        "dequant_max_abs_diff": deq_err,
        "dequant_layout": orient,
        "prompt": prompt,
        "generated": ids[len(prompt):],
        "greedy_margins": [float(f"{m:.5g}") for m in margins],
        "probe_ids": probes,
        "positions": positions,
    }
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    spread = float(full.max() - full.min())
    return f"{name:22s} prompt {n_prompt:4d} gen {n_gen:3d} dequant_diff {deq_err:.1e} min_margin {min(margins):.4f} logit_spread {spread:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-checkpoint", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--diag", action="store_true", help="short runs of shape variants, to locate a mismatch")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, failed = [], 0
    cases = DIAG_CASES if args.diag else CASES
    for name, opts, n_prompt, n_gen in cases:
        t0 = time.time()
        try:
            rows.append(run_case(name, opts, n_prompt, n_gen, args, device) + f" ({time.time() - t0:.1f} s)")
        except Exception:
            traceback.print_exc()
            rows.append(f"{name:22s} FAILED")
            failed += 1
    print("\n".join(["", "case                   result"] + rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
