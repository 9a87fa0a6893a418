#!/usr/bin/env python3
"""ZeRO-3 against torch's own FSDP2 (torch.distributed.fsdp.fully_shard, Gloo on CPU, fp32), peers nobody here
wrote.

  zero3_fsdp2: the same random llama model (HF writes it) and 8 pre-tokenized rows as parity.train.full
           (train_parity.py's setup), full fine-tuning with weight decay on 4 data-parallel ranks for 20 steps:
           anneal-train with zero_stage 3, and HF transformers under FSDP2 (every decoder layer and the root
           fully_shard-ed, torch.optim.AdamW with the same decay groups, clip 1.0, HF's cosine schedule), each
           rank on 2 of the rows. The per-step losses are equal (rel < 1e-4), and each rank's sharded state
           after a step (parameters + gradients + optimizer state: what both keep between steps, the gathered
           units freed) is within 10% of FSDP2's.
"""
import json
import os
import re
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import train_parity as tp  # noqa: E402
from testlib import run, run_cases  # noqa: E402

WORLD = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_bytes(t):
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def fsdp2_rank(rank, port, model_dir, rows, result_path):
    """One FSDP2 rank: rows [2 rank, 2 rank + 2) of the 8; the loss is this rank's token CE sum over the global
    label-token count, times the world size (FSDP2 averages the gradients over the ranks)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from transformers.optimization import get_scheduler

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    params = list(model.named_parameters())
    decay = [p for n, p in params if not any(k in n for k in ("bias", "norm"))]
    no_decay = [p for n, p in params if any(k in n for k in ("bias", "norm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=tp.STEPS)
    _, all_labels, _ = tp.padded_batch(rows)
    label_tokens = (all_labels[:, 1:] != -100).sum()
    ids, labels, mask = tp.padded_batch(rows[2 * rank:2 * rank + 2])
    losses, state = [], None
    model.train()
    for _ in range(tp.STEPS):
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        part = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100,
                                                 reduction="sum") / label_tokens
        (part * WORLD).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        # What the rank keeps between steps: its parameter, gradient and optimizer-state shards.
        state = {"parameters": sum(local_bytes(p) for p in model.parameters()),
                 "gradients": sum(local_bytes(p.grad) for p in model.parameters() if p.grad is not None),
                 "optimizer": sum(local_bytes(v) for s in opt.state.values() for k, v in s.items()
                                  if k != "step" and torch.is_tensor(v))}
        opt.zero_grad()
        total = part.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item())
    with open(f"{result_path}.{rank}", "w") as f:
        json.dump({"losses": losses, "state": state}, f)
    dist.destroy_process_group()


def case_zero3_fsdp2(binary, tmp):
    model_dir, data, rows = tp.setup(tmp, binary)
    out = os.path.join(tmp, "out")
    cfg = tp.job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                      ["finetuning_type: full", "weight_decay: 0.01", "per_device_train_batch_size: 2",
                       "gradient_accumulation_steps: 1", "zero_stage: 3", "ddp_bucket_cap_mb: 0.01"])
    p = run([binary, "launch", "--nproc-per-node", str(WORLD), "--", "train", "--config", cfg])
    ours = tp.our_losses(out)
    held = {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"\[train\] rank (\d+) .*parameter bytes (\d+) KiB resident, optimizer state (\d+) KiB \(ZeRO-3 share\)",
        p.stderr)}
    assert sorted(held) == list(range(WORLD)), p.stderr[-3000:]
    result = os.path.join(tmp, "fsdp2")
    mp.spawn(fsdp2_rank, args=(free_port(), model_dir, rows, result), nprocs=WORLD, join=True)
    ranks = [json.load(open(f"{result}.{r}")) for r in range(WORLD)]
    worst = tp.compare_losses(ours, ranks[0]["losses"])
    for r in range(WORLD):
        s = ranks[r]["state"]
        theirs = s["parameters"] + s["gradients"] + s["optimizer"]
        # fp32 full fine-tuning: the shard gradients are as large as the parameter shards.
        mine = (2 * held[r][0] + held[r][1]) * 1024
        assert abs(mine - theirs) <= 0.1 * theirs, f"rank {r}: {mine} bytes against FSDP2's {theirs} ({s})"
    print(f"zero3_fsdp2: {tp.STEPS} per-step losses equal FSDP2's at dp {WORLD} (max rel {worst:.2e}); sharded "
          f"state per rank {[(2 * held[r][0] + held[r][1]) for r in range(WORLD)]} KiB against FSDP2's "
          f"{[sum(ranks[r]['state'].values()) >> 10 for r in range(WORLD)]} KiB")


if __name__ == "__main__":
    run_cases({"zero3_fsdp2": case_zero3_fsdp2})
