#!/usr/bin/env python3
"""The QLoRA base linear layer: tokens/s of forward + input gradient and the bytes it holds, for a frozen fp32
nn.Linear, Anneal's 4-bit reference (dequantize all, then matmul) and fused (a tile of rows at a time) matmuls,
and bitsandbytes' Linear4bit (NF4, double quantization, fp32 compute) on the same shape, tokens and threads.

  .venv/bin/python bench/model/quant_linear.py [--bin build/bin/bench_model_quant_linear] [--in 2048 --out 2048]
"""
import argparse
import json
import os
import subprocess
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bnb_row(args):
    import bitsandbytes as bnb
    torch.manual_seed(0)
    dense = torch.nn.Linear(args.in_f, args.out_f, bias=False)
    with torch.no_grad():
        dense.weight.normal_(0, 0.02)
    layer = bnb.nn.Linear4bit(args.in_f, args.out_f, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=True)
    layer.weight = bnb.nn.Params4bit(dense.weight.data, requires_grad=False, quant_type="nf4",
                                     compress_statistics=True)
    layer = layer.to("cpu")  # quantizes
    state = layer.weight.quant_state
    weight_bytes = layer.weight.numel() + state.absmax.numel() * state.absmax.element_size() + \
        state.state2.absmax.numel() * 4
    x0 = torch.randn(args.tokens, args.in_f)
    total = 0.0
    for i in range(args.warmup + args.steps):
        x = x0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        layer(x).sum().backward()
        if i >= args.warmup:
            total += time.perf_counter() - t0
    return {"impl": f"bitsandbytes {bnb.__version__} Linear4bit", "tokens_per_s": args.tokens * args.steps / total,
            "weight_bytes": weight_bytes, "temporary_bytes": args.out_f * args.in_f * 4,
            "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bench_model_quant_linear"))
    ap.add_argument("--in", dest="in_f", type=int, default=2048)
    ap.add_argument("--out", dest="out_f", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    p = subprocess.run([args.bin, "--in", str(args.in_f), "--out", str(args.out_f), "--tokens", str(args.tokens),
                        "--steps", str(args.steps), "--warmup", str(args.warmup)],
                       capture_output=True, text=True, env=env, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    dequant = [r for r in rows if "seconds" in r]
    rows = [r for r in rows if "tokens_per_s" in r]
    rows.append(bnb_row(args))
    dense = rows[0]["tokens_per_s"]
    print(f"linear {args.out_f} x {args.in_f}, {args.tokens} tokens, forward + input gradient, "
          f"{args.threads} threads, fp32 compute")
    print(f"| impl | tokens/s | vs dense | weight MiB | temporary MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / dense:.2f} | "
              f"{r['weight_bytes'] / 2**20:.2f} | {r['temporary_bytes'] / 2**20:.2f} |")
    for r in dequant:
        print(f"(Anneal's dequantization of the whole weight alone: {r['seconds'] * 1e3:.1f} ms, "
              f"{r['elements_per_s'] / 1e6:.0f} M weights/s; the fused matmul dequantizes twice per step, in forward "
              f"and in backward, where the reference keeps the dequantized weight for backward)")


if __name__ == "__main__":
    main()
