#!/usr/bin/env python3
"""ZeRO stages 0-3 on CPU at dp 4 (anneal-train launch, Gloo): training tokens/s, rank 0's resident parameter bytes
and optimizer state (the trainer's holdings line), its memory plan (parameters, gradients, optimizer state, total)
and the peak RSS of the largest process (Linux ru_maxrss over the launcher and its ranks), for full fine-tuning
of the same model and data; the final loss column shows every stage computes the same run. One micro-batch per
step. Besides stages 0-3: stage 3 without its prefetch of the next layer's gather (ANNEAL_ZERO3_PREFETCH=0), and
CPU offload (offload: optimizer under stages 2 and 3, optimizer+params under 3), whose host bytes the holdings line
gives.

    .venv/bin/python bench/parallel/zero.py [--preset small] [--layers 4] [--steps 6] [--global-batch 8] [--dp 4]
        [--bucket-mb 1]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the command in a fresh process and prints the largest RSS among its descendants (KiB) last.
PEAK = ("import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stderr)\n"
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/anneal-train"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--dp", type=int, default=4)
    # Small buckets for a small model: ZeRO-2/3 hold their gradient shards plus a few buckets in flight.
    ap.add_argument("--bucket-mb", type=float, default=1.0)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, f"{ROOT}/scripts/make_tokenizer.py", "--out", f"{tmp}/tok"], check=True,
                       capture_output=True)
        subprocess.run([args.bin, "model", "init", "--arch", "llama", "--preset", args.preset, "--tokenizer",
                        f"{tmp}/tok", "--out", f"{tmp}/m", "--layers", str(args.layers)],
                       check=True, capture_output=True)
        variants = [(str(s), s, "none", {}) for s in range(4)]
        variants += [("3, no prefetch", 3, "none", {"ANNEAL_ZERO3_PREFETCH": "0"}),
                     ("2 + offload optimizer", 2, "optimizer", {}), ("3 + offload optimizer", 3, "optimizer", {}),
                     ("3 + offload optimizer+params", 3, "optimizer+params", {})]
        for k, (label, stage, offload, env) in enumerate(variants):
            out = f"{tmp}/out-{k}"
            cfg = f"{tmp}/job-{k}.yaml"
            with open(cfg, "w") as f:
                f.write(f"model_name_or_path: {tmp}/m\nfinetuning_type: full\ndataset: demo_train\n"
                        f"dataset_dir: {ROOT}/examples/data\ntemplate: qwen\ncutoff_len: 128\noutput_dir: {out}\n"
                        f"max_steps: {args.steps + 2}\nlogging_steps: 1\nsave_steps: 0\n"
                        f"tokenized_cache_dir: {tmp}/cache\ngradient_accumulation_steps: 1\n"
                        f"per_device_train_batch_size: {args.global_batch // args.dp}\nzero_stage: {stage}\n"
                        f"ddp_bucket_cap_mb: {args.bucket_mb}\noffload: {offload}\n")
            p = subprocess.run([sys.executable, "-c", PEAK, args.bin, "launch", "--nproc-per-node", str(args.dp), "--",
                                "train", "--config", cfg], check=True, capture_output=True, text=True,
                               env=dict(os.environ, **env))
            peak = re.search(r"PEAK_RSS_KIB (\d+) (\d+)", p.stdout)
            assert peak and peak.group(2) == "0", p.stdout[-3000:]
            held = re.search(r"\[train\] rank 0 .*parameter bytes (\d+) KiB resident, optimizer state (\d+) KiB",
                             p.stdout)
            plan = re.search(r"\[train\] rank 0 memory plan \(ZeRO-\d\): parameters ([\d.]+) MiB, gradients ([\d.]+) "
                             r"MiB, optimizer state ([\d.]+) MiB(?: \(host\))?, activations ~([\d.]+) MiB, total ~([\d.]+) MiB",
                             p.stdout)
            log = [json.loads(l) for l in open(f"{out}/trainer_log.jsonl")]
            t = lambda e: e["total_tokens"] / e["throughput"]
            tok_s = (log[-1]["total_tokens"] - log[1]["total_tokens"]) / (t(log[-1]) - t(log[1]))
            host = re.search(r"\[train\] rank 0 .*offloaded to host memory \([a-z+]+\): (\d+) KiB", p.stdout)
            rows.append((label, tok_s, int(held.group(1)), int(held.group(2)), plan.groups(),
                         int(host.group(1)) if host else 0, int(peak.group(1)) // 1024, log[-1]["loss"]))
    print(f"\nZeRO stages on CPU ({os.cpu_count()} cores), dp {args.dp}: llama/{args.preset} ({args.layers} layers), "
          f"full fine-tuning fp32, global batch {args.global_batch} x <=128 tokens, {args.steps} measured steps, "
          f"ddp_bucket_cap_mb {args.bucket_mb}")
    print("| stage | tokens/s | rank 0 parameters resident | rank 0 optimizer state | rank 0 host (offload) | plan: "
          "params / grads / optimizer / device total (MiB) | peak RSS, largest process | final loss |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for label, tok_s, params, state, plan, host, rss, loss in rows:
        print(f"| {label} | {tok_s:.0f} | {params} KiB | {state} KiB | {host} KiB | {plan[0]} / {plan[1]} / {plan[2]} / "
              f"{plan[4]} | {rss} MiB | {loss:.5f} |")


if __name__ == "__main__":
    main()
