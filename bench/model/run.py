#!/usr/bin/env python3
"""Decoder forward+backward tokens/s: anneal vs HF transformers, same model, batch, sequence and threads.

CPU (default):  .venv/bin/python bench/model/run.py
GPU (a ~1B LLaMA shape, bf16, seq 2048):  python3 bench/model/run.py --device cuda --preset 1b --dtype bfloat16 \
                                              --batch 1 --seq 2048
Prints a table with the ratio ours / HF (goal >= 1.0). The two alternate for --rounds rounds and each keeps its
best round, so a load spike on a shared machine (another build) does not decide the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hf_tokens_per_s(model_dir, args):
    dev = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(dev).train()
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=dev)
    total = 0.0
    for i in range(args.warmup + args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            total += time.perf_counter() - t0
    return args.batch * args.seq * args.steps / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/bench_model_fwd_bwd"))
    ap.add_argument("--init-bin", default=os.path.join(ROOT, "build/bin/anneal-train"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3, help="alternate ours / HF this many times, keep each best")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        subprocess.run([args.init_bin, "model", "init", "--arch", args.arch, "--preset", args.preset, "--out",
                        model_dir, "--dtype", args.dtype, "--vocab-size", "32000"], check=True, capture_output=True)
        ours_runs, hf_runs = [], []
        for _ in range(args.rounds):
            ours_runs.append(json.loads(subprocess.run(
                [args.bin, "--model", model_dir, "--batch", str(args.batch), "--seq", str(args.seq), "--steps",
                 str(args.steps), "--warmup", str(args.warmup), "--device", args.device, "--dtype", args.dtype],
                check=True, capture_output=True, text=True, env=env).stdout)["tokens_per_s"])
            hf_runs.append(hf_tokens_per_s(model_dir, args))
        ours, hf = max(ours_runs), max(hf_runs)
    print(f"\nDecoder forward+backward, {args.arch}/{args.preset}, {args.device} {args.dtype}, "
          f"batch {args.batch} x seq {args.seq}, {args.threads} threads, best of {args.rounds} alternated rounds")
    print(f"| {'implementation':<22} | {'tokens/s':>10} |")
    print(f"|{'-' * 24}|{'-' * 12}|")
    print(f"| {'anneal (LibTorch C++)':<22} | {ours:>10.0f} |")
    print(f"| {'HF transformers ' + __import__('transformers').__version__:<22} | {hf:>10.0f} |")
    print(f"| {'ratio anneal / HF':<22} | {ours / hf:>10.2f} |")


if __name__ == "__main__":
    sys.exit(main())
