#!/usr/bin/env python3
"""Training throughput and peak memory on CPU: anneal-train vs HF transformers + peft, same model, data,
batch and threads, in one run. LoRA (r=16, all linears), QLoRA (the same LoRA on a 4-bit NF4 base with double
quantization, as LLaMA-Factory's quantization_bit: 4 asks bitsandbytes for) and full fine-tuning.

    .venv/bin/python bench/train/run.py [--preset small] [--steps 20] [--batch 8] [--seq 256] [--modes lora,qlora]
    GPU (bf16, ~1B LLaMA shape, seq 2048):
    python3 bench/train/run.py --device cuda --dtype bfloat16 --preset 1b --batch 1 --seq 2048

Each side runs in its own process (peak RSS from getrusage of that child). Tokens/s counts non-padding input
tokens of the optimizer steps after the warm-up steps. Prints one table with the ratios (goal >= 1.0).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable

HF_SIDE = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM
model_dir, data, ft, steps, warm, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
device, dtype = sys.argv[7], {"float32": torch.float32, "bfloat16": torch.bfloat16}[sys.argv[8]]
torch.set_num_threads(threads)
rows = [json.loads(l) for l in open(data)]
if ft == "qlora":  # LLaMA-Factory's quantization_bit: 4 (model/model_utils/quantization.py)
    from transformers import BitsAndBytesConfig
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa",
                                                 quantization_config=quant, device_map={"": device})
else:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
if ft in ("lora", "qlora"):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM", target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
model.train()
ids = torch.tensor([r["input_ids"] for r in rows], device=device)
tokens, t0 = 0, None
for s in range(warm + steps):
    if s == warm:
        t0 = time.perf_counter()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    if s >= warm:
        tokens += ids.numel()
peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - t0), "gpu_peak_mb": peak}))
'''


def child_peak_rss_mb(cmd, env):
    """Runs cmd; returns (stdout, peak RSS MB of that child alone, from wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed:\n{err.read()[-3000:]}")
        return out.read(), usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/anneal-train"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--modes", default="lora,qlora,full", help="comma-separated: lora, qlora, full")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([PY, os.path.join(ROOT, "scripts/make_tokenizer.py"), "--out", f"{tmp}/tok"], check=True,
                       capture_output=True)
        subprocess.run([args.bin, "model", "init", "--arch", "llama", "--preset", args.preset, "--tokenizer",
                        f"{tmp}/tok", "--out", f"{tmp}/model"], check=True, capture_output=True)
        import torch
        g = torch.Generator().manual_seed(0)
        vocab = json.load(open(f"{tmp}/model/config.json"))["vocab_size"]
        os.makedirs(f"{tmp}/data")
        with open(f"{tmp}/data/bench.jsonl", "w") as f:
            for _ in range(args.batch):
                f.write(json.dumps({"input_ids": torch.randint(3, vocab, (args.seq,), generator=g).tolist()}) + "\n")
        json.dump({"bench": {"file_name": "bench.jsonl", "formatting": "tokenized"}}, open(f"{tmp}/data/dataset_info.json", "w"))
        for ft in args.modes.split(","):
            out = f"{tmp}/out-{ft}"
            cfg = f"{tmp}/{ft}.yaml"
            quant = "quantization_bit: 4\nquantization_type: nf4\ndouble_quantization: true\n" if ft == "qlora" else ""
            with open(cfg, "w") as f:
                f.write(f"model_name_or_path: {tmp}/model\nfinetuning_type: {'lora' if ft == 'qlora' else ft}\n{quant}"
                        f"lora_rank: 16\nlora_target: all\n"
                        f"dataset: bench\ndataset_dir: {tmp}/data\ntemplate: empty\ncutoff_len: {args.seq}\n"
                        f"stage: sft\noutput_dir: {out}\nper_device_train_batch_size: {args.batch}\n"
                        f"max_steps: {args.warmup + args.steps}\nlogging_steps: 1\nsave_steps: 0\nlearning_rate: 1.0e-4\n"
                        f"device: {args.device}\nbf16: {str(args.dtype == 'bfloat16').lower()}\n")
            _, ours_mb = child_peak_rss_mb([args.bin, "train", "--config", cfg], env)
            log = [json.loads(l) for l in open(f"{out}/trainer_log.jsonl")]
            # Elapsed seconds at a logged step = total_tokens / throughput (both exact in the log); measure from
            # the end of the warm-up steps to the last step.
            t = lambda e: e["total_tokens"] / e["throughput"]
            tok = log[-1]["total_tokens"] - log[args.warmup - 1]["total_tokens"]
            ours = tok / (t(log[-1]) - t(log[args.warmup - 1]))
            hf_out, hf_mb = child_peak_rss_mb([PY, "-c", HF_SIDE, f"{tmp}/model", f"{tmp}/data/bench.jsonl", ft,
                                               str(args.steps), str(args.warmup), str(args.threads), args.device,
                                               args.dtype], env)
            hf = json.loads(hf_out.strip().splitlines()[-1])["tokens_per_s"]
            results.append((ft, ours, hf, ours_mb, hf_mb))
    print(f"\nTraining on {args.device}: llama/{args.preset}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"{args.dtype} (peak MB: process RSS; GPU memory is not in it)")
    print(f"| {'mode':<5} | {'anneal tok/s':>12} | {'HF+peft tok/s':>13} | {'speed ratio':>11} | {'anneal peak MB':>14} | {'HF peak MB':>10} |")
    print(f"|{'-'*7}|{'-'*14}|{'-'*15}|{'-'*13}|{'-'*16}|{'-'*12}|")
    for ft, ours, hf, om, hm in results:
        print(f"| {ft:<5} | {ours:>12.0f} | {hf:>13.0f} | {ours / hf:>11.2f} | {om:>14.0f} | {hm:>10.0f} |")


if __name__ == "__main__":
    main()
