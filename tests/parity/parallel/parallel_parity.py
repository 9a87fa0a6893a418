#!/usr/bin/env python3
"""Parallel layouts against the single-process run, resharding on resume, and dead-peer detection.

  dp     : LoRA and full runs with world 2 (tp=1, pp=1, dp=2, Gloo on CPU) give the per-step losses of the
           single-process run (rel < 1e-5) and the same exported weights; with small buckets every bucket's
           all-reduce starts during backward.
  layouts_lora / layouts_full: (tp, pp, dp) = (2,1,1), (1,2,1), (1,1,2), (2,2,1), (2,2,2), (1,4,2) on a 4-layer
           model give the single-process losses for 10 steps (rel < 1e-5), eval losses, and exported weights;
           plus GPipe against 1F1B, ZeRO-1 and sequence parallelism.
  bad_layouts: impossible layouts (sizes that do not divide the world, heads, MLP, vocabulary or layers;
           micro-batches that do not divide the rows) stop before training with one line naming each problem.
  tied_gqa: a qwen2 model (tied head, biases) with pp 2 and 4, and tp 4 over 2 kv heads.
  reshard: a run saved at step 5 with tp2 pp2 dp2 resumes with tp1 pp4 dp2 (and tp2 pp1 dp1) and continues
           with the single-process losses.
  Short and long: with ANNEAL_TEST_LONG=1 (ctest label `long`, scripts/test-long.sh) the layout cases run every
           layout above; without it (the README's test command, CI) each runs the subset that still covers every
           feature at once: (2,2,2) with sequence parallelism and ZeRO-1, (1,4,2), GPipe; tied_gqa (2,2,1) and tp 4
           with sequence parallelism; reshard (2,2,2) -> (1,4,2) for both fine-tuning types.
  zero2: ZeRO-2 (gradients reduce-scattered into each rank's flat shard, AdamW on the shard, parameters
           all-gathered) under dp 2, tp 2 x dp 2 and pp 2 x dp 2 gives the single-process losses, eval losses and
           exported weights (full fine-tuning; LoRA under dp 2; with ANNEAL_TEST_LONG=1 LoRA on every layout and
           dp 4 for both); every bucket's reduce-scatter starts during backward; each rank holds about 1/dp of the
           optimizer state.
  zero3: ZeRO-3 (the trainable parameters stored as flat shards, each decoder layer gathered around its forward
           and its recomputing backward, the next layer's gather prefetched while one computes, the root unit around
           the step) under dp 2 and dp 4 gives the single-process
           losses, eval losses and exported weights (full fine-tuning; LoRA under dp 2; with ANNEAL_TEST_LONG=1 LoRA
           at dp 4 and tp 2 x dp 2, pp 2 x dp 2 for both); at dp 4 each rank holds a quarter of stage 0's parameters
           and optimizer state, and its memory plan under a third of the gradients.
  zero_resume: a ZeRO-2 checkpoint resumes under ZeRO-1 and under stage 0, a ZeRO-1 checkpoint under ZeRO-2, and
           ZeRO-3 under 1 and 0 and 1 under 3, with the losses of the uninterrupted single-process run (full; LoRA
           ZeRO-2 -> ZeRO-1 and ZeRO-3 -> ZeRO-1, every pair long).
  zero_offload: CPU offload (AdamW's state and step in host memory; under ZeRO-3 the parameter shards too) gives the
           single-process losses, eval losses and exported weights: LLaMA-Factory's ds_z2_offload_config.json and
           ds_z3_offload_config.json unchanged at dp 2 (full; LoRA the z3 one, with ANNEAL_TEST_LONG=1 both), and
           with ANNEAL_TEST_LONG=1 `zero_stage: 3` with `offload: optimizer` at dp 4 (full) and the z3 JSON at dp 4
           (LoRA); the holdings line shows the host bytes (full fine-tuning
           with the parameters offloaded keeps no parameter bytes on the device) and the memory plan marks the
           optimizer state as host memory. A checkpoint of an offloaded ZeRO-3 run resumes under ZeRO-1.
  qwen3: a qwen3 model (per-head q/k RMSNorm, replicated over tensor-parallel ranks with partial gradients)
           with tp 2 x pp 2 and tp 2 with sequence parallelism gives the single-process run (full fine-tuning;
           LoRA too with ANNEAL_TEST_LONG=1); a qwen3_moe model under pp 2 (1F1B and GPipe, and 1F1B with
           activation checkpointing), its load-balancing loss summed over both stages, gives the single-process
           run; with ANNEAL_TEST_LONG=1 also pp 2 x dp 2 under zero_stage 3 against dp 2 (MoE under tp / pp / ep:
           expert_parity.py).
  deepseek_layouts: a 4-layer deepseek_v2 (MLA replicated over tp, experts and shared experts split over tp)
           under tp 2 and pp 2 gives the single-process run, full and LoRA.
  deadpeer: ranks started directly (no launcher to clean up), dp 2 and then tp 2 x pp 2; one is killed with
           SIGKILL mid-run; every other rank must exit with an error within the configured collective timeout
           (comm_timeout_s) plus slack.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, make_tokenizer, run, run_cases  # noqa: E402


def setup(tmp, binary, layers=2, arch="llama"):
    tok = make_tokenizer(os.path.join(tmp, "tok"), 400)
    model = os.path.join(tmp, "model")
    run([binary, "model", "init", "--arch", arch, "--preset", "tiny", "--tokenizer", tok, "--out", model, "--seed", "3",
         "--layers", str(layers)])
    return model


def job(tmp, model, out, ft, extra=()):
    path = os.path.join(tmp, f"{os.path.basename(out)}.yaml")
    lines = [f"model_name_or_path: {model}", "stage: sft", f"finetuning_type: {ft}", "lora_rank: 4",
             "dataset: demo_train", f"dataset_dir: {ROOT}/examples/data", "template: qwen", "cutoff_len: 96",
             "max_samples: 64", f"output_dir: {out}", "gradient_accumulation_steps: 2", "learning_rate: 2.0e-3",
             "max_steps: 8", "logging_steps: 1", "save_steps: 0", "overwrite_output_dir: true",
             "val_size: 8", "eval_strategy: steps", "eval_steps: 4",
             f"tokenized_cache_dir: {tmp}/cache",
             # CPU (Gloo) unless told otherwise: scripts/device-bench.sh runs them on GPUs (NCCL) where there are
             # enough of them for the layouts.
             f"device: {os.environ.get('ANNEAL_PARITY_DEVICE', 'cpu')}"]
    keys = {e.split(":")[0] for e in extra}
    lines = [l for l in lines if l.split(":")[0] not in keys] + list(extra)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def losses(out):
    return [json.loads(l)["loss"] for l in open(os.path.join(out, "trainer_log.jsonl")) if '"loss"' in l]


def eval_losses(out):
    return [json.loads(l)["eval_loss"] for l in open(os.path.join(out, "trainer_log.jsonl")) if "eval_loss" in l]


def weights(out, ft):
    f = "adapter_model.safetensors" if ft == "lora" else "model.safetensors"
    return load_file(os.path.join(out, f))


def case_dp(binary, tmp):
    model = setup(tmp, binary)
    for ft in ("lora", "full"):
        single = os.path.join(tmp, f"{ft}-1")
        run([binary, "train", "--config", job(tmp, model, single, ft, ["per_device_train_batch_size: 8"])])
        dp2 = os.path.join(tmp, f"{ft}-dp2")
        # Small buckets (10 KiB) so the all-reduce runs in several pieces, started while backward goes on.
        p = run([binary, "launch", "--nproc-per-node", "2", "--", "train", "--config",
                 job(tmp, model, dp2, ft, ["per_device_train_batch_size: 4", "ddp_bucket_cap_mb: 0.01"])])
        m = re.search(r"data-parallel all-reduce: (\d+) bucket\(s\), (\d+) started during backward", p.stderr)
        assert m, p.stderr[-2000:]
        buckets, early = int(m.group(1)), int(m.group(2))
        assert buckets > 1 and early == buckets, (ft, buckets, early)
        a, b = losses(single), losses(dp2)
        assert len(a) == len(b) == 8, (a, b)
        worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        assert worst < 1e-5, f"{ft}: dp=2 losses differ from one process (max rel {worst:.2e})\n{a}\n{b}"
        ea, eb = eval_losses(single), eval_losses(dp2)
        assert len(ea) == len(eb) == 2 and max(abs(x - y) / x for x, y in zip(ea, eb)) < 1e-5, (ea, eb)
        wa, wb = weights(single, ft), weights(dp2, ft)
        # Adam divides by sqrt(v): an element whose gradient is at the level of summation-order rounding moves
        # by about +-lr either way, so single elements can differ; the tensors as a whole must not (relative
        # Frobenius norm of the difference, per tensor).
        werr = max(((wa[k] - wb[k]).norm() / wa[k].norm().clamp(min=1e-12)).item() for k in wa)
        assert werr < 1e-3, f"{ft}: exported weights differ (relative Frobenius {werr:.2e})"
        print(f"dp: {ft} world 2 (tp1 pp1 dp2) equals one process: losses max rel {worst:.1e}, weights {werr:.1e}; "
              f"all-reduce in {buckets} buckets, {early} started during backward")


GLOBAL_BATCH = 8  # rows per micro-batch over all data-parallel replicas


def train_layout(binary, tmp, model, ft, tp, pp, dp, name, extra=()):
    out = os.path.join(tmp, name)
    world = tp * pp * dp
    # World 8 names no resource keys, as a LLaMA-Factory YAML started by torchrun: the launcher's WORLD_SIZE decides.
    resources = [] if world == 8 else [f"gpus_per_node: {world}"]
    cfg = job(tmp, model, out, ft, [f"per_device_train_batch_size: {GLOBAL_BATCH // dp}", "max_steps: 10",
                                    "eval_steps: 5", f"tensor_model_parallel_size: {tp}",
                                    f"pipeline_model_parallel_size: {pp}"] + resources + list(extra))
    cmd = [binary, "train", "--config", cfg] if world == 1 else \
        [binary, "launch", "--nproc-per-node", str(world), "--", "train", "--config", cfg]
    with open(f"{out}.log", "w") as f:  # the trainer's log, for cases that read it
        f.write(run(cmd).stderr)
    return out


def compare(ft, ref, out, label, first_step=1):
    a, b = losses(ref)[first_step - 1:], losses(out)
    b = b[-len(a):]
    assert len(a) == len(b) and a, (label, a, b)
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    assert worst < 1e-5, f"{ft} {label}: losses differ from one process (max rel {worst:.2e})\n{a}\n{b}"
    ea, eb = eval_losses(ref)[-1], eval_losses(out)[-1]
    assert abs(ea - eb) / ea < 1e-5, (label, ea, eb)
    wa, wb = weights(ref, ft), weights(out, ft)
    assert sorted(wa) == sorted(wb), (label, sorted(set(wa) ^ set(wb)))
    werr = max(((wa[k] - wb[k]).norm() / wa[k].norm().clamp(min=1e-12)).item() for k in wa)
    assert werr < 1e-3, f"{ft} {label}: exported weights differ (relative Frobenius {werr:.2e})"
    print(f"{ft} {label}: equals one process: losses max rel {worst:.1e}, weights {werr:.1e}")


LONG = os.environ.get("ANNEAL_TEST_LONG") == "1"
LAYOUTS = [(2, 1, 1), (1, 2, 1), (1, 1, 2), (2, 2, 1), (2, 2, 2), (1, 4, 2)] if LONG else [(1, 4, 2)]


def layouts(binary, tmp, ft):
    model = setup(tmp, binary, layers=4)
    ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
    for tp, pp, dp in LAYOUTS:
        out = train_layout(binary, tmp, model, ft, tp, pp, dp, f"{ft}-tp{tp}-pp{pp}-dp{dp}")
        compare(ft, ref, out, f"(tp {tp}, pp {pp}, dp {dp})")
    out = train_layout(binary, tmp, model, ft, 1, 2, 1, f"{ft}-gpipe", ["pipeline_schedule: gpipe"])
    compare(ft, ref, out, "(tp 1, pp 2, dp 1) with the GPipe schedule")
    if LONG:
        out = train_layout(binary, tmp, model, ft, 2, 1, 2, f"{ft}-zero", ["zero_stage: 1"])
        compare(ft, ref, out, "(tp 2, pp 1, dp 2) with ZeRO-1")
        out = train_layout(binary, tmp, model, ft, 2, 1, 1, f"{ft}-sp-tp2-pp1-dp1", ["sequence_parallel: true"])
        compare(ft, ref, out, "(tp 2, pp 1, dp 1) with sequence parallelism")
    # Every feature at once: tensor + sequence + pipeline + data parallelism with ZeRO-1.
    out = train_layout(binary, tmp, model, ft, 2, 2, 2, f"{ft}-sp-tp2-pp2-dp2",
                       ["sequence_parallel: true", "zero_stage: 1"])
    compare(ft, ref, out, "(tp 2, pp 2, dp 2) with sequence parallelism and ZeRO-1")


def case_layouts_lora(binary, tmp):
    layouts(binary, tmp, "lora")


def case_layouts_full(binary, tmp):
    layouts(binary, tmp, "full")


def case_tied_gqa(binary, tmp):
    # qwen2: the head tied to the embedding (split over pipeline stages: two copies whose gradients are summed),
    # q/k/v biases, and tp 4 over 2 kv heads (each kv head replicated on two ranks).
    model = setup(tmp, binary, layers=4, arch="qwen2")
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        for tp, pp, dp in [(2, 2, 1), (4, 1, 1), (1, 4, 1)] if LONG else [(2, 2, 1)]:
            out = train_layout(binary, tmp, model, ft, tp, pp, dp, f"{ft}-tp{tp}-pp{pp}-dp{dp}")
            compare(ft, ref, out, f"qwen2 tied (tp {tp}, pp {pp}, dp {dp})")
        out = train_layout(binary, tmp, model, ft, 4, 1, 1, f"{ft}-sp", ["sequence_parallel: true"])
        compare(ft, ref, out, "qwen2 tied (tp 4, pp 1, dp 1) with sequence parallelism")


def case_reshard(binary, tmp):
    model = setup(tmp, binary, layers=4)
    for ft in ("lora", "full"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single", ["save_steps: 5"])
        saved = train_layout(binary, tmp, model, ft, 2, 2, 2, f"{ft}-saved", ["save_steps: 5", "zero_stage: 1"])
        manifest = json.load(open(os.path.join(saved, "checkpoint-5", "manifest.json")))
        assert manifest["metadata"]["layout"]["tensor_parallel"] == 2, manifest["metadata"]["layout"]
        # Any checkpoint exports to one HF model (the last one equals the run's own export); a LoRA checkpoint
        # carries a PEFT copy of its adapter.
        merged = os.path.join(tmp, f"{ft}-from-checkpoint")
        run([binary, "export", "--model", model, "--adapter", os.path.join(saved, "checkpoint-10"), "--out", merged])
        if ft == "full":
            final, exported = weights(saved, ft), load_file(os.path.join(merged, "model.safetensors"))
            assert sorted(exported) == sorted(final), sorted(set(exported) ^ set(final))
            assert all(torch.equal(exported[k], final[k]) for k in final), "checkpoint export differs from the run's"
            print("reshard: full checkpoint-10 of (tp 2, pp 2, dp 2) exports to the run's final HF model exactly")
        for tp, pp, dp in [(1, 4, 2), (2, 1, 1)] if LONG else [(1, 4, 2)]:
            out = os.path.join(tmp, f"{ft}-resumed-tp{tp}-pp{pp}-dp{dp}")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(saved, out)
            shutil.rmtree(os.path.join(out, "checkpoint-10"))
            os.remove(os.path.join(out, "trainer_log.jsonl"))
            train_layout(binary, tmp, model, ft, tp, pp, dp, os.path.basename(out),
                         ["resume_from_checkpoint: " + os.path.join(out, "checkpoint-5"), "save_steps: 5"])
            compare(ft, ref, out, f"saved with (tp 2, pp 2, dp 2, ZeRO-1), resumed with (tp {tp}, pp {pp}, dp {dp})",
                    first_step=6)


def state_kib(stderr):
    """Optimizer state KiB per global rank from the trainer's holdings lines."""
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(r"\[train\] rank (\d+) .*optimizer state (\d+) KiB", stderr)}


def case_zero2(binary, tmp):
    model = setup(tmp, binary, layers=4)
    zero0_state = None
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        layouts = [(1, 1, 2), (2, 1, 2), (1, 2, 2)] if ft == "full" or LONG else [(1, 1, 2)]
        if LONG:
            layouts.append((1, 1, 4))
        for tp, pp, dp in layouts:
            # Small buckets (10 KiB): the reduce-scatter runs in several pieces, each started during backward.
            out = train_layout(binary, tmp, model, ft, tp, pp, dp, f"{ft}-zero2-tp{tp}-pp{pp}-dp{dp}",
                               ["zero_stage: 2", "ddp_bucket_cap_mb: 0.01"])
            compare(ft, ref, out, f"(tp {tp}, pp {pp}, dp {dp}) with ZeRO-2")
        if ft == "full":
            # The same job at stage 0 and stage 2 on dp 2: the logs show the reduce-scatter overlapping backward and
            # each rank's optimizer state at about half of the replicated one.
            cfg = job(tmp, model, os.path.join(tmp, "full-z0"), ft, ["per_device_train_batch_size: 4", "max_steps: 1"])
            p0 = run([binary, "launch", "--nproc-per-node", "2", "--", "train", "--config", cfg])
            cfg = job(tmp, model, os.path.join(tmp, "full-z2"), ft,
                      ["per_device_train_batch_size: 4", "max_steps: 1", "zero_stage: 2", "ddp_bucket_cap_mb: 0.01"])
            p2 = run([binary, "launch", "--nproc-per-node", "2", "--", "train", "--config", cfg])
            m = re.search(r"data-parallel reduce-scatter: (\d+) bucket\(s\), (\d+) started during backward", p2.stderr)
            assert m, p2.stderr[-2000:]
            buckets, early = int(m.group(1)), int(m.group(2))
            assert buckets > 1 and early == buckets, (buckets, early)
            assert "(ZeRO-2 share)" in p2.stderr, p2.stderr[-2000:]
            zero0_state, zero2_state = state_kib(p0.stderr), state_kib(p2.stderr)
            assert sorted(zero0_state) == sorted(zero2_state) == [0, 1], (zero0_state, zero2_state)
            for r in (0, 1):
                share = zero2_state[r] / zero0_state[r]
                assert 0.45 < share < 0.55, f"rank {r}: ZeRO-2 state {zero2_state[r]} KiB of {zero0_state[r]} KiB"
            print(f"zero2: reduce-scatter in {buckets} buckets, {early} started during backward; optimizer state per "
                  f"rank {zero2_state} KiB under ZeRO-2 against {zero0_state} KiB replicated")
            # DeepSpeed's bucket sizes (elements, fp32 here): 2560 = 10 KiB reduce-scatter buckets, 1000 = 4000-byte
            # gathers after the step; the losses stay those of one process and the log shows the sizes in bytes.
            ds = os.path.join(tmp, "ds_z2_buckets.json")
            with open(ds, "w") as f:
                json.dump({"zero_optimization": {"stage": 2, "reduce_bucket_size": 2560,
                                                 "allgather_bucket_size": 1000}}, f)
            out = train_layout(binary, tmp, model, ft, 1, 1, 2, "full-zero2-ds-buckets", [f"deepspeed: {ds}"])
            compare(ft, ref, out, "(dp 2) with ZeRO-2 and DeepSpeed's reduce/allgather_bucket_size")
            with open(f"{out}.log") as f:
                log = f.read()
            m = re.search(r"reduce-scatter: (\d+) bucket\(s\), (\d+) started during backward; buckets of at most "
                          r"10240 bytes, parameter gathers of at most 4000 bytes", log)
            assert m and int(m.group(1)) > 1, log[-2000:]
            print(f"zero2: DeepSpeed's bucket sizes give {m.group(1)} reduce-scatter buckets of <= 10240 bytes")


def holdings(stderr):
    """(resident parameter KiB, optimizer state KiB) per global rank from the trainer's holdings lines."""
    return {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"\[train\] rank (\d+) .*parameter bytes (\d+) KiB resident, optimizer state (\d+) KiB", stderr)}


def plans(stderr):
    """The memory plan's MiB per global rank: {rank: (stage, parameters, gradients, optimizer)}."""
    return {int(m.group(1)): (int(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5)))
            for m in re.finditer(r"\[train\] rank (\d+) memory plan \(ZeRO-(\d)\): parameters ([\d.]+) MiB, "
                                 r"gradients ([\d.]+) MiB, optimizer state ([\d.]+) MiB", stderr)}


def case_zero3(binary, tmp):
    model = setup(tmp, binary, layers=4)
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        layouts = [(1, 1, 2), (1, 1, 4)] if ft == "full" or LONG else [(1, 1, 2)]
        if LONG:
            layouts += [(2, 1, 2), (1, 2, 2)]
        for tp, pp, dp in layouts:
            # Small buckets (10 KiB): the reduce-scatter runs in several pieces, each started during backward.
            out = train_layout(binary, tmp, model, ft, tp, pp, dp, f"{ft}-zero3-tp{tp}-pp{pp}-dp{dp}",
                               ["zero_stage: 3", "ddp_bucket_cap_mb: 0.01"])
            compare(ft, ref, out, f"(tp {tp}, pp {pp}, dp {dp}) with ZeRO-3")
    # Full fine-tuning at dp 4, stage 0 against stage 3: each rank keeps a quarter of the parameters (the shards;
    # every unit freed between uses) and of the optimizer state, and its plan a quarter of the gradients (one
    # micro-batch: with accumulation the full gradients live across the micro-batches, as under ZeRO-2).
    runs = {}
    for stage in (0, 3):
        cfg = job(tmp, model, os.path.join(tmp, f"full-dp4-z{stage}"), "full",
                  ["per_device_train_batch_size: 2", "gradient_accumulation_steps: 1", "max_steps: 1",
                   f"zero_stage: {stage}", "ddp_bucket_cap_mb: 0.01"])
        runs[stage] = run([binary, "launch", "--nproc-per-node", "4", "--", "train", "--config", cfg]).stderr
    h0, h3 = holdings(runs[0]), holdings(runs[3])
    p0, p3 = plans(runs[0]), plans(runs[3])
    assert sorted(h0) == sorted(h3) == sorted(p0) == sorted(p3) == [0, 1, 2, 3], (h0, h3, p0, p3)
    assert "(ZeRO-3 share)" in runs[3], runs[3][-2000:]
    m = re.search(r"data-parallel reduce-scatter: (\d+) bucket\(s\), (\d+) started during backward", runs[3])
    assert m and int(m.group(1)) > 1 and int(m.group(2)) == int(m.group(1)), runs[3][-2000:]
    for r in range(4):
        params = h3[r][0] / h0[r][0]
        state = h3[r][1] / h0[r][1]
        assert 0.23 < params < 0.27, f"rank {r}: ZeRO-3 holds {h3[r][0]} KiB of parameters against {h0[r][0]} KiB"
        assert 0.23 < state < 0.27, f"rank {r}: ZeRO-3 optimizer state {h3[r][1]} KiB against {h0[r][1]} KiB"
        assert p3[r][0] == 3 and p0[r][0] == 0, (p0[r], p3[r])
        # The plan: parameters are the shards plus the root unit and two layers gathered (one computing, the next
        # prefetched); gradients the shards plus three 10 KiB buckets; optimizer state a quarter.
        assert p3[r][1] < p0[r][1] and p3[r][2] < 0.5 * p0[r][2] and p3[r][3] < 0.3 * p0[r][3], (p0[r], p3[r])
    # Prefetch: each layer's gather started the next one's (forward up, backward down): of the 8 decoder-layer
    # gathers of the first step (4 layers, forward and recomputing backward) 6 found their layer prefetched.
    m = re.search(r"ZeRO-3 prefetch: (\d+) of (\d+) decoder-layer gathers found their layer prefetched", runs[3])
    assert m and (int(m.group(1)), int(m.group(2))) == (6, 8), runs[3][-2000:]
    print(f"zero3: prefetch {m.group(1)} of {m.group(2)} layer gathers in the first step; parameters resident per rank {[h3[r][0] for r in range(4)]} KiB against "
          f"{[h0[r][0] for r in range(4)]} KiB at stage 0; optimizer state {[h3[r][1] for r in range(4)]} KiB against "
          f"{[h0[r][1] for r in range(4)]} KiB; plans (stage, params, grads, optimizer MiB) {p3[0]} vs {p0[0]}")


def case_zero_resume(binary, tmp):
    model = setup(tmp, binary, layers=4)
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single", ["save_steps: 5"])
        pairs = [(2, 1), (2, 0), (1, 2), (3, 1), (1, 3), (3, 0)] if ft == "full" or LONG else [(2, 1), (3, 1)]
        for saved_stage, resumed_stage in pairs:
            saved = train_layout(binary, tmp, model, ft, 1, 1, 2, f"{ft}-saved-z{saved_stage}-{resumed_stage}",
                                 ["save_steps: 5", f"zero_stage: {saved_stage}"])
            manifest = json.load(open(os.path.join(saved, "checkpoint-5", "manifest.json")))
            assert manifest["metadata"]["layout"]["zero_stage"] == saved_stage, manifest["metadata"]["layout"]
            out = os.path.join(tmp, f"{ft}-z{saved_stage}-resumed-z{resumed_stage}")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(saved, out)
            shutil.rmtree(os.path.join(out, "checkpoint-10"))
            os.remove(os.path.join(out, "trainer_log.jsonl"))
            train_layout(binary, tmp, model, ft, 1, 1, 2, os.path.basename(out),
                         ["resume_from_checkpoint: " + os.path.join(out, "checkpoint-5"), "save_steps: 5",
                          f"zero_stage: {resumed_stage}"])
            compare(ft, ref, out, f"saved with ZeRO-{saved_stage} (dp 2), resumed with ZeRO-{resumed_stage} (dp 2)",
                    first_step=6)


def offload_holdings(stderr):
    """{rank: (resident parameter KiB, offload, host KiB)} from the trainer's holdings lines."""
    return {int(m.group(1)): (int(m.group(2)), m.group(3), int(m.group(4))) for m in re.finditer(
        r"\[train\] rank (\d+) .*parameter bytes (\d+) KiB resident, .*offloaded to host memory \(([a-z+]+)\): "
        r"(\d+) KiB", stderr)}


def case_zero_offload(binary, tmp):
    model = setup(tmp, binary, layers=4)
    z2 = os.path.join(ROOT, "examples", "deepspeed", "ds_z2_offload_config.json")
    z3 = os.path.join(ROOT, "examples", "deepspeed", "ds_z3_offload_config.json")
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        runs = [(2, [f"deepspeed: {z2}"], "optimizer")] if ft == "full" or LONG else []
        runs.append((2, [f"deepspeed: {z3}"], "optimizer+params"))
        if LONG:
            runs.append((4, ["zero_stage: 3", "offload: optimizer"], "optimizer") if ft == "full" else
                        (4, [f"deepspeed: {z3}"], "optimizer+params"))
        for dp, extra, offload in runs:
            name = f"{ft}-offload-dp{dp}-" + os.path.basename(extra[0].split(": ")[1]).split(".")[0]
            out = os.path.join(tmp, name)
            world = dp
            cfg = job(tmp, model, out, ft, [f"per_device_train_batch_size: {GLOBAL_BATCH // dp}", "max_steps: 10",
                                            "eval_steps: 5", f"gpus_per_node: {world}", "ddp_bucket_cap_mb: 0.01"]
                      + extra)
            p = run([binary, "launch", "--nproc-per-node", str(world), "--", "train", "--config", cfg])
            compare(ft, ref, out, f"(dp {dp}) with {' '.join(extra)} (offload {offload})")
            held = offload_holdings(p.stderr)
            assert sorted(held) == list(range(world)), p.stderr[-3000:]
            for r, (resident, where, host_kib) in held.items():
                assert where == offload and host_kib > 0, (r, held[r])
                if ft == "full" and offload == "optimizer+params":
                    assert resident == 0, f"rank {r}: {resident} KiB of parameters on the device with offload_param"
            plan = re.search(r"\[train\] rank 0 memory plan .*optimizer state [\d.]+ MiB \(host\).*host memory", p.stderr)
            assert plan, p.stderr[-3000:]
            print(f"{ft} dp {dp} {offload}: host KiB per rank {[held[r][2] for r in sorted(held)]}, device-resident "
                  f"parameter KiB {[held[r][0] for r in sorted(held)]}")
    # An offloaded ZeRO-3 checkpoint (state gathered from host tensors) resumes under ZeRO-1 without offload.
    ref = train_layout(binary, tmp, model, "full", 1, 1, 1, "full-single-saved", ["save_steps: 5"])
    saved = train_layout(binary, tmp, model, "full", 1, 1, 2, "full-saved-offload",
                         ["save_steps: 5", f"deepspeed: {z3}"])
    out = os.path.join(tmp, "full-offload-resumed-z1")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(saved, out)
    shutil.rmtree(os.path.join(out, "checkpoint-10"))
    os.remove(os.path.join(out, "trainer_log.jsonl"))
    train_layout(binary, tmp, model, "full", 1, 1, 2, os.path.basename(out),
                 ["resume_from_checkpoint: " + os.path.join(out, "checkpoint-5"), "save_steps: 5", "zero_stage: 1"])
    compare("full", ref, out, "saved with ZeRO-3 + offload (dp 2), resumed with ZeRO-1 (dp 2)", first_step=6)


def deadpeer(binary, tmp, model, tp, pp, dp, victim):
    world = tp * pp * dp
    out = os.path.join(tmp, f"dead-tp{tp}-pp{pp}-dp{dp}")
    cfg = job(tmp, model, out, "lora", ["per_device_train_batch_size: 4", "max_steps: 100000", "ddp_timeout: 5",
                                        f"tensor_model_parallel_size: {tp}", f"pipeline_model_parallel_size: {pp}",
                                        f"gpus_per_node: {world}"])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([binary, "train", "--config", cfg], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    # Wait until training is under way (the log has a step), then kill the victim.
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(os.path.join(out, "trainer_log.jsonl"))):
        time.sleep(0.1)
    if not os.path.exists(os.path.join(out, "trainer_log.jsonl")):
        for p in procs:
            p.kill()
        raise AssertionError("training never started: " + " | ".join(p.communicate()[1][-500:] for p in procs))
    procs[victim].send_signal(signal.SIGKILL)
    t0 = time.time()
    for r, p in enumerate(procs):
        if r == victim:
            p.wait()
            continue
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"rank {r} still running 60 s after rank {victim} died: a hang")
        waited = time.time() - t0
        assert p.returncode != 0, f"rank {r} exited 0 although rank {victim} died"
        assert waited < 5 + 20, f"rank {r} took {waited:.1f} s to notice (timeout 5 s)"
        print(f"deadpeer (tp {tp}, pp {pp}, dp {dp}): rank {r} exited with status {p.returncode} {waited:.1f} s after rank "
              f"{victim} was killed: {err.strip().splitlines()[-1][:160]}")


def case_bad_layouts(binary, tmp):
    """Impossible layouts stop before training with one clear line naming each problem."""
    model = setup(tmp, binary)
    cases = [
        # No resource keys: the launcher's world (WORLD_SIZE=1) is checked against the layout and the model.
        (["tensor_model_parallel_size: 3"],
         ["invalid parallel layout (tp=3, pp=1, world=1)", "world size 1 is not divisible by tensor 3",
          "does not divide the 4 attention heads", "intermediate_size 176",
          "does not divide the vocabulary (vocab_size 400)"]),
        (["pipeline_model_parallel_size: 3"], ["pipeline parallel 3 exceeds the 2 layers"]),
        # Resource keys that disagree with the launcher: both named.
        (["gpus_per_node: 3"], ["the spec asks for nodes 1 x gpus_per_node 3 = 3 ranks but the launcher started "
                                "WORLD_SIZE=1"]),
        (["per_device_train_batch_size: 2", "gradient_accumulation_steps: 2", "pipeline_microbatches: 3"],
         ["pipeline_microbatches 3 does not divide the 4 rows per step and rank"]),
    ]
    for i, (extra, expected) in enumerate(cases):
        out = os.path.join(tmp, f"bad{i}")
        env = dict(os.environ, WORLD_SIZE="1", RANK="0")
        p = run([binary, "train", "--config", job(tmp, model, out, "lora", extra)], check=False, env=env)
        assert p.returncode != 0, (extra, p.stdout, p.stderr)
        for e in expected:
            assert e in p.stderr, f"{extra}: missing '{e}' in:\n{p.stderr[-1500:]}"
        assert not os.path.exists(os.path.join(out, "trainer_log.jsonl")), f"{extra}: training started"
        print(f"bad layout {extra}: {p.stderr.strip().splitlines()[-1][:200]}")


def case_qwen3(binary, tmp):
    model = setup(tmp, binary, layers=4, arch="qwen3")
    for ft in ("full", "lora") if LONG else ("full",):  # full trains q_norm / k_norm: the part qwen3 adds
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        out = train_layout(binary, tmp, model, ft, 2, 2, 1, f"{ft}-tp2-pp2-dp1")
        compare(ft, ref, out, "qwen3 (tp 2, pp 2, dp 1)")
        out = train_layout(binary, tmp, model, ft, 2, 1, 1, f"{ft}-sp", ["sequence_parallel: true"])
        compare(ft, ref, out, "qwen3 (tp 2, pp 1, dp 1) with sequence parallelism")
    # qwen3_moe under pp 2: its load-balancing loss spans both stages (the parts travel with the activations and
    # gradients through 1F1B's micro-batches) and equals one process's. Under tp and ep: expert_parity.py.
    moe = os.path.join(tmp, "moe")
    run([binary, "model", "init", "--arch", "qwen3_moe", "--preset", "tiny", "--tokenizer", os.path.join(tmp, "tok"),
         "--out", moe, "--seed", "3"])
    no_ckpt = ["gradient_checkpointing: false"]
    ref = train_layout(binary, tmp, moe, "full", 1, 1, 1, "moe-single", no_ckpt)
    for schedule in ("1f1b", "gpipe"):
        out = train_layout(binary, tmp, moe, "full", 1, 2, 1, f"moe-pp2-{schedule}",
                           [f"pipeline_schedule: {schedule}"] + no_ckpt)
        compare("full", ref, out, f"qwen3_moe (tp 1, pp 2, dp 1, {schedule}) with its load-balancing loss")
    # Recomputed layers (activation checkpointing; ZeRO-3 always recomputes) hand their router logits to the model;
    # each stage takes them from there (CausalLM::TakeRouterLogits) into its parts of the loss.
    out = train_layout(binary, tmp, moe, "full", 1, 2, 1, "moe-pp2-ckpt", ["gradient_checkpointing: true"])
    compare("full", ref, out, "qwen3_moe (tp 1, pp 2, dp 1) with activation checkpointing and its load-balancing loss")
    if LONG:  # the loss is per data-parallel rank (as under HF's DDP): the reference is dp 2
        ref2 = train_layout(binary, tmp, moe, "full", 1, 1, 2, "moe-dp2", no_ckpt)
        out = train_layout(binary, tmp, moe, "full", 1, 2, 2, "moe-pp2-dp2-zero3", ["zero_stage: 3"] + no_ckpt)
        compare("full", ref2, out, "qwen3_moe (tp 1, pp 2, dp 2, zero_stage 3) with its load-balancing loss")


def case_deepseek_layouts(binary, tmp):
    # MLA (replicated over tp) and DeepSeek-V2's MoE (softmax routing, shared experts split over tp like dense
    # MLPs) under tensor and pipeline parallelism without expert parallelism equal one process (DeepSeek adds no
    # load-balancing loss). deepseek_v3 with expert parallelism: expert_parity.py.
    model = setup(tmp, binary, layers=4, arch="deepseek_v2")
    for ft in ("full", "lora"):
        ref = train_layout(binary, tmp, model, ft, 1, 1, 1, f"{ft}-single")
        for tp, pp in ((2, 1), (1, 2)):
            out = train_layout(binary, tmp, model, ft, tp, pp, 1, f"{ft}-tp{tp}-pp{pp}")
            compare(ft, ref, out, f"deepseek_v2 (tp {tp}, pp {pp}, dp 1)")


def case_deadpeer(binary, tmp):
    # Ranks started directly (no launcher to clean up): data parallel 2, then tp 2 x pp 2 where the last
    # stage's second rank dies and its tensor-parallel peer and the first stage (waiting on send/recv) must go.
    model = setup(tmp, binary)
    deadpeer(binary, tmp, model, tp=1, pp=1, dp=2, victim=1)
    deadpeer(binary, tmp, model, tp=2, pp=2, dp=1, victim=3)


if __name__ == "__main__":
    run_cases({"dp": case_dp, "deadpeer": case_deadpeer, "layouts_lora": case_layouts_lora,
               "layouts_full": case_layouts_full, "reshard": case_reshard, "tied_gqa": case_tied_gqa,
               "bad_layouts": case_bad_layouts, "zero2": case_zero2, "zero3": case_zero3,
               "zero_resume": case_zero_resume, "zero_offload": case_zero_offload,
               "qwen3": case_qwen3, "deepseek_layouts": case_deepseek_layouts})
