#!/usr/bin/env python3
"""Mixture-of-experts balancing options against plain Python references of their rules: DeepSeek-V3's
auxiliary-loss-free balancing (moe_router_enable_expert_bias / moe_router_bias_update_rate) and Megatron-core's token
dropping (moe_expert_capacity_factor / moe_token_drop_policy), and the bias across layouts.

  expert_bias: a tiny DeepSeek-V3 (train_parity's: sigmoid routing with a random correction bias, n_group 4,
           topk_group 2, a shared expert, one dense layer) fine-tuned in full for 10 steps (2 micro-batches of 4
           rows a step, evaluation every 5 steps on the same rows) with rate 0.05. The reference is HF transformers'
           model + torch.optim.AdamW with the rule written out here: after each optimizer step, load_e = the token
           slots (padding left out) its router sent to expert e in that step's forward, and
           bias += rate * sign(mean(load) - load). The per-step losses and the exported
           mlp.gate.e_score_correction_bias equal the reference's (losses rel < 1e-4, bias abs < 1e-6); the
           reference's bias moved by several steps and its losses differ from a run without the update (so the
           comparison can fail). Evaluation and a checkpoint's recomputation must not count (the unit test
           CausalLMExpertLoad.EachTrainingForwardCountsOnce checks the recomputation directly).
  expert_bias_layouts: `model init --arch deepseek_v3` (2 layers) fine-tuned in full with the update on one
           process, with (dp 2) and with (dp 2, ep 2): the same losses, eval losses and exported weights (the bias
           included: abs < 1e-6); the one-process checkpoint at step 5 resumes under (dp 2, ep 2) and continues with
           the same losses and final bias.
  expert_bias_refusals: the key on a softmax router (qwen3_moe), on a dense model, with LoRA, with stage dpo, and
           a non-positive rate are refused, each by name; so is a capacity factor on a dense model.
  capacity: train_parity's tiny Qwen3-MoE (4 experts, top-2, its load-balancing loss) fine-tuned in full for 10
           steps with capacity factor 0.5, policy probs and then position. The reference is HF's model whose experts
           get the routing weights masked by Megatron-core's rule written out here (topk_softmax_with_capacity:
           capacity = ceil(N * k / E * factor); torch.topk down the tokens of the dense weights or of the routing
           map; kept = routed and picked): per-step losses (rel < 1e-4) and the dropped slots per step
           (moe_dropped_slots in trainer_log.jsonl) equal; slots are dropped and the losses differ from the run
           without capacity.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "parallel"))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from expert_parity import copy_at_step_5, moe_model  # noqa: E402
from expert_parity import train as train_layout  # noqa: E402
from parallel_parity import compare, losses  # noqa: E402
from testlib import expect_refused, run, run_cases  # noqa: E402
from train_parity import MOE_BATCH, deepseek_v3_config, job_yaml, moe_config, our_losses, padded_batch, setup  # noqa

torch.set_num_threads(1)
STEPS, RATE = 10, 0.05
BIAS = "e_score_correction_bias"


def capacity_mask(selected, weights, num_experts, factor, policy):
    """Megatron-core's topk_softmax_with_capacity (moe_utils.py) on one forward's routing: selected, weights [N, k]
    -> [N, k] bool, the slots within their expert's capacity."""
    n, k = selected.shape
    topk_masked_gates = torch.zeros(n, num_experts, dtype=weights.dtype).scatter(1, selected, weights)
    topk_map = torch.zeros(n, num_experts).int().scatter(1, selected, 1).bool()
    expert_capacity = math.ceil((n * k / num_experts) * factor)  # get_capacity(num_tokens=n * k, ...)
    if policy == "probs":
        _, capacity_indices = torch.topk(topk_masked_gates, k=expert_capacity, dim=0, sorted=False)
    else:
        _, capacity_indices = torch.topk(topk_map.int(), k=expert_capacity, dim=0, sorted=False)
    capacity_mask = torch.zeros(n, num_experts).scatter(0, capacity_indices, 1).bool()
    return torch.logical_and(topk_map, capacity_mask).gather(1, selected)


def anneal_order(n, seed, epoch):
    """trainer/data/sampler.cc's ShuffledIndices: the rows of epoch `epoch` in the order anneal-train feeds them
    (Fisher-Yates driven by splitmix64). Megatron-core's position policy keeps the earliest tokens, so its reference
    must see the rows in the trainer's order."""
    mask = (1 << 64) - 1

    class SplitMix64:
        def __init__(self, state):
            self.state = state & mask

        def next(self):
            self.state = (self.state + 0x9e3779b97f4a7c15) & mask
            z = self.state
            z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & mask
            z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & mask
            return z ^ (z >> 31)

        def below(self, bound):
            limit = mask - (mask % bound)
            while True:
                x = self.next()
                if x < limit:
                    return x % bound

    perm = list(range(n))
    rng = SplitMix64(SplitMix64(seed ^ ((epoch * 0xd1342543de82ef95) & mask)).next())
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def reference(model, rows, rate=0.0, capacity=None, aux=False, seed=None):
    """HF's model trained as train_parity's reference_losses (whole batch, clip 1.0, AdamW, cosine with 2 warmup
    steps). rate: the bias rule after each optimizer step (0: off). capacity (factor, policy): every MoE block's
    experts get the weights of the dropped slots zeroed (as Megatron-core's routing_probs * routing_map). aux: +
    router_aux_loss_coef * HF's load-balancing loss. seed: each step's batch holds the rows in anneal-train's order
    for that epoch (one step = one epoch of the 8 rows). Returns (losses, {bias name: bias}, dropped slots per step)."""
    from transformers.optimization import get_scheduler
    params = [p for _, p in model.named_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=STEPS)
    ids, labels, mask = padded_batch(rows)
    gates = {n: m for n, m in model.named_modules() if n.endswith("mlp.gate") and hasattr(m, BIAS)}
    picked, dropped, hooks = {}, [0], []
    for n, m in gates.items():
        hooks.append(m.register_forward_hook(lambda mod, args, out, n=n: picked.__setitem__(n, out[2])))
    if capacity:
        def drop(mod, args):
            hidden, selected, weights = args
            kept = capacity_mask(selected, weights, mod.num_experts, *capacity)
            dropped[0] += int((~kept).sum())
            return hidden, selected, weights * kept
        blocks = [m for n, m in model.named_modules() if n.endswith("mlp.experts")]
        assert blocks, "the reference model has no experts"
        hooks += [m.register_forward_pre_hook(drop) for m in blocks]
    out_losses, out_dropped = [], []
    model.train()
    for step in range(STEPS):
        dropped[0] = 0
        if seed is not None:
            ids, labels, mask = padded_batch([rows[i] for i in anneal_order(len(rows), seed, step)])
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits.float()
        shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum") / \
            (shift_labels != -100).sum()
        if aux:
            loss = loss + model.config.router_aux_loss_coef * out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        out_losses.append(loss.item())
        out_dropped.append(dropped[0])
        if rate:
            with torch.no_grad():
                for n, gate in gates.items():
                    experts = picked[n]                                      # [N, k] of this step's tokens
                    weight = mask.reshape(-1, 1).expand_as(experts).float()  # padding tokens count 0
                    load = torch.zeros(gate.e_score_correction_bias.numel()).index_add_(
                        0, experts.reshape(-1), weight.reshape(-1))
                    gate.e_score_correction_bias += rate * torch.sign(load.mean() - load)
    for h in hooks:
        h.remove()
    biases = {n + "." + BIAS: g.e_score_correction_bias.detach().clone() for n, g in gates.items()}
    return out_losses, biases, out_dropped


def case_expert_bias(binary, tmp):
    model_dir, data, rows = setup(tmp, binary, deepseek_v3_config)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: full", f"max_steps: {STEPS}", "moe_router_enable_expert_bias: true",
                    f"moe_router_bias_update_rate: {RATE}", "eval_dataset: toy", "eval_strategy: steps",
                    "eval_steps: 5", "per_device_eval_batch_size: 3", "gradient_checkpointing: true"])
    p = run([binary, "train", "--config", cfg])
    assert "auxiliary-loss-free balancing: e_score_correction_bias of 1 sparse layer(s)" in p.stderr, p.stderr[-2000:]
    ours = our_losses(out)
    initial = load_file(os.path.join(model_dir, "model.safetensors"))
    ref_losses, ref_bias, _ = reference(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), rows,
                                        rate=RATE)
    assert ref_bias, "the reference model has no biased routers"
    plain_losses, _, _ = reference(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), rows)
    assert len(ours) == STEPS, ours
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, ref_losses))
    assert worst < 1e-4, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nref  {ref_losses}"
    effect = max(abs(a - b) / abs(b) for a, b in zip(plain_losses, ref_losses))
    assert effect > 5e-4, f"the bias update hardly moves the reference's losses ({effect:.1e}): the test proves nothing"
    exported = load_file(os.path.join(out, "model.safetensors"))
    for name, want in ref_bias.items():
        moved = (want - initial[name]).abs().max().item()
        assert moved >= 3 * RATE - 1e-6, f"{name}: the reference bias moved only {moved:.3g}"
        err = (exported[name] - want).abs().max().item()
        assert err < 1e-6, f"{name}: exported {exported[name].tolist()}\nreference {want.tolist()} (max abs {err:.2e})"
    print(f"expert_bias: {STEPS} losses equal HF + AdamW + the bias rule (max rel {worst:.1e}; without the update "
          f"they differ by {effect:.1e}); the exported biases equal the reference's (moved up to "
          f"{max((b - initial[n]).abs().max().item() for n, b in ref_bias.items()):.2f})")


def biases(out):
    return {k: v for k, v in load_file(os.path.join(out, "model.safetensors")).items() if k.endswith(BIAS)}


def same_biases(a, b, label):
    ba, bb = biases(a), biases(b)
    assert sorted(ba) == sorted(bb) and ba, (label, sorted(ba), sorted(bb))
    err = max((ba[k] - bb[k]).abs().max().item() for k in ba)
    assert err < 1e-6, f"{label}: the biases differ (max abs {err:.2e})"
    return err


def case_expert_bias_layouts(binary, tmp):
    model = moe_model(binary, tmp, "deepseek_v3")
    on = ["moe_router_enable_expert_bias: true", f"moe_router_bias_update_rate: {RATE}", "save_steps: 5"]
    ref, _ = train_layout(binary, tmp, model, "full", 1, 1, "bias-single", on)
    initial = {k: v for k, v in load_file(os.path.join(model, "model.safetensors")).items() if k.endswith(BIAS)}
    moved = max((biases(ref)[k] - initial[k]).abs().max().item() for k in initial)
    assert moved >= 2 * RATE - 1e-6, f"the biases moved only {moved:.3g}"  # loads swing: biases go back and forth
    for dp, ep in ((2, 1), (2, 2)):
        out, _ = train_layout(binary, tmp, model, "full", dp, ep, f"bias-dp{dp}-ep{ep}", on)
        compare("full", ref, out, f"expert bias (dp {dp}, ep {ep})")
        err = same_biases(ref, out, f"(dp {dp}, ep {ep})")
        print(f"expert_bias_layouts: (dp {dp}, ep {ep}) biases equal one process (max abs {err:.1e})")
    resumed = os.path.join(tmp, "bias-resumed-dp2-ep2")
    train_layout(binary, tmp, model, "full", 2, 2, os.path.basename(resumed),
                 ["resume_from_checkpoint: " + copy_at_step_5(ref, resumed)] + on)
    assert len(losses(resumed)) == 5, losses(resumed)
    compare("full", ref, resumed, "expert bias saved on one process, resumed with (dp 2, ep 2)", first_step=6)
    err = same_biases(ref, resumed, "resumed")
    print(f"expert_bias_layouts: resumed at step 5 with (dp 2, ep 2): the final biases equal (max abs {err:.1e}); "
          f"they moved up to {moved:.2f}")


def case_expert_bias_refusals(binary, tmp):
    model_dir, data, _ = setup(tmp, binary, deepseek_v3_config)
    qwen = moe_model(binary, os.path.join(tmp, "ep"), "qwen3_moe")
    dense = os.path.join(tmp, "ep", "model")  # expert_parity's setup writes a dense llama next to it
    n = [0]

    def write(extra):
        n[0] += 1
        given = {e.split(":")[0] for e in extra}
        defaults = [d for d in ("finetuning_type: full", "moe_router_enable_expert_bias: true")
                    if d.split(":")[0] not in given]
        return job_yaml(os.path.join(tmp, f"bad{n[0]}.yaml"), model_dir, data, os.path.join(tmp, f"bad{n[0]}"),
                        defaults + extra)
    bad = [
        ([f"model_name_or_path: {qwen}"], "qwen3_moe routes by softmax scores, without an e_score_correction_bias"),
        ([f"model_name_or_path: {dense}"], "has no mixture-of-experts layers"),
        (["finetuning_type: lora"], "lora is not built: the bias it trains is a buffer of the base model"),
        (["stage: dpo"], "dpo is not built (stages sft and pt count the routed tokens)"),
        (["moe_router_bias_update_rate: 0"], "moe_router_bias_update_rate"),
    ]
    expect_refused(binary, bad, write, "expert-bias settings")
    capacity_on_dense = [([f"model_name_or_path: {dense}", "moe_router_enable_expert_bias: false",
                           "moe_expert_capacity_factor: 1.0"], "moe_expert_capacity_factor: llama has no mixture-of-experts")]
    expect_refused(binary, capacity_on_dense, write, "capacity settings")


def case_capacity(binary, tmp):
    model_dir, data, rows = setup(tmp, binary, moe_config)
    fresh = lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # noqa: E731
    plain, _, none_dropped = reference(fresh(), rows, aux=True)
    assert none_dropped == [0] * STEPS
    for policy in ("probs", "position"):
        out = os.path.join(tmp, f"out-{policy}")
        cfg = job_yaml(os.path.join(tmp, f"{policy}.yaml"), model_dir, data, out,
                       MOE_BATCH + ["finetuning_type: full", f"max_steps: {STEPS}", "moe_expert_capacity_factor: 0.5",
                                    f"moe_token_drop_policy: {policy}", "moe_pad_expert_input_to_capacity: true"])
        p = run([binary, "train", "--config", cfg])
        assert f"expert capacity: factor 0.5, drop policy {policy}" in p.stderr, p.stderr[-2000:]
        ours = our_losses(out)
        log = [json.loads(l) for l in open(os.path.join(out, "trainer_log.jsonl")) if '"loss"' in l]
        our_dropped = [round(e["moe_dropped_slots"]) for e in log]
        ref, _, ref_dropped = reference(fresh(), rows, capacity=(0.5, policy), aux=True, seed=3)
        assert our_dropped == ref_dropped, f"{policy}: dropped slots per step {our_dropped}, reference {ref_dropped}"
        assert min(ref_dropped) > 0, ref_dropped
        assert len(ours) == STEPS, ours
        worst = max(abs(a - b) / abs(b) for a, b in zip(ours, ref))
        assert worst < 1e-4, f"{policy}: per-step losses differ (max rel {worst:.2e}):\nours {ours}\nref  {ref}"
        effect = max(abs(a - b) / abs(b) for a, b in zip(plain, ref))
        assert effect > 5e-4, f"{policy}: dropping hardly moves the losses ({effect:.1e}): the test proves nothing"
        print(f"capacity ({policy}): {STEPS} losses equal HF with Megatron-core's drop rule (max rel {worst:.1e}; "
              f"without capacity they differ by {effect:.1e}); dropped slots per step {our_dropped}")


if __name__ == "__main__":
    run_cases({"expert_bias": case_expert_bias, "expert_bias_layouts": case_expert_bias_layouts,
               "expert_bias_refusals": case_expert_bias_refusals, "capacity": case_capacity})
