#!/usr/bin/env python3
"""Reward modeling (stage rm) of anneal-train against LLaMA-Factory's own reward trainer code, HF transformers,
peft and torch.optim.AdamW (peers nobody here wrote).

The reference runs LLaMA-Factory v0.9.5 where it can: its PairwiseDatasetProcessor encodes the ranking rows (as in
dpo_parity.py), its PairwiseTrainer.compute_loss computes each micro-batch's loss and scores, and its
ComputeAccuracy the eval accuracy. The model it calls is TRL's AutoModelForCausalLMWithValueHead (TRL <= 0.24;
gone from the installed trl 1.16), transcribed below in a few lines: ValueHead = dropout(summary_dropout_prob) +
Linear(hidden, 1) in fp32 on the last hidden state, forward returning (logits, loss, values). The value head's
initial weights are anneal-train's documented initialisation (trainer/train/reward.h: nn.Linear's bounds, drawn
from torch.Generator().manual_seed(seed), weight then bias); the test model's config.json sets
summary_dropout_prob 0 so both sides are deterministic. The step is HF Trainer's: the micro-batch loss /
gradient_accumulation_steps, clip 1.0, AdamW, the cosine schedule with warmup.

Cases (one ctest each); every step's batch is the whole dataset of 4 pairs, so the data order cannot matter:
  lora   : alpaca ranking rows, qwen template, LoRA from a random adapter + the value head: per-step losses equal;
           eval loss and eval_accuracy (ComputeAccuracy) on eval_dataset sharegpt + alpaca (8 pairs, batches of 3)
           every 2 steps equal; the
           exported adapter + value_head.safetensors (peft + the transcribed head) score pairs as the trained
           reference does.
  full   : full fine-tuning, weight decay 0.01, 2 micro-batches of 2 pairs (accumulation): losses equal (lm_head,
           without a gradient, is skipped by torch's AdamW as by ours); the exported model + value head rank pairs
           as the reference.
  freeze : the last layer trained next to the value head, as full otherwise.
  lora_dp2 : the lora case as data parallel 2 with ZeRO-2 (anneal-train launch, 2 pairs per rank; the value head
           sharded with the adapters) equals the reference.
  lora_dp2_zero3 : the same with ZeRO-3 (the adapters stored as shards and gathered per layer, the value head in
           the root unit) equals the reference, and so does the exported value head.
  resume : checkpoint-5 (with its value_head.safetensors) resumed in a fresh output directory: steps 6-10 and the
           final value head bit-identical to the uninterrupted run.
  keep_best : checkpoints record eval_accuracy: keep_best 1 by it keeps the best evaluated checkpoint and the last.
  lf_example : LLaMA-Factory's examples/train_lora/qwen3_lora_reward.yaml (v0.9.5, copied into
           llamafactory_examples/: the wheel does not ship examples/) runs unchanged but for the model path and
           a dpo_en_demo of ranking rows:
           the adapter, value_head.safetensors and checkpoint-3 with its value head are written.
  lora_tp2 : the lora case under tensor parallel 2 (the value head whole on both ranks) equals the reference,
           evals and export included.
  full_tp2_sp : the full case under tensor parallel 2 with sequence parallelism (values gathered along the
           sequence, the head's gradient summed over the group) equals the reference, export included.
  lora_tp2_dp2 : the lora case on 4 ranks, tp 2 x dp 2 (2 pairs per replica), equals the reference.
  lora_pp2 : the lora case under pipeline parallel 2 (1F1B; the value head on the last stage), 2 micro-batches of 2
           pairs, evaluation through the pipeline and the export (the last stage's value head) included.
  full_pp2_gpipe : the full case under pp 2 with the GPipe schedule, export included.
  refusals : a plain dataset under rm, train_on_prompt with rm, each refused naming the problem.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import types

import torch
from transformers import AutoModelForCausalLM
from transformers.optimization import get_scheduler

torch.set_num_threads(1)
os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
os.environ["DISABLE_VERSION_CHECK"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import expect_refused, import_stubbing, run, run_cases  # noqa: E402
import dpo_parity as dpo  # noqa: E402  (the data, the tiny model, LLaMA-Factory's pair encoding and collator)

STEPS = dpo.STEPS
PAIRS = dpo.PAIRS
SEED = 3


def import_llamafactory():
    """LLaMA-Factory's PairwiseTrainer and ComputeAccuracy (testlib.import_stubbing, as dpo_parity)."""
    def do_import():
        from llamafactory.train.rm.metric import ComputeAccuracy
        from llamafactory.train.rm.trainer import PairwiseTrainer
        return PairwiseTrainer, ComputeAccuracy
    return import_stubbing(do_import)


class ValueHead(torch.nn.Module):
    """TRL's ValueHead (trl/models/modeling_value_head.py, <= 0.24): dropout, then an fp32 Linear(hidden, 1)."""

    def __init__(self, config):
        super().__init__()
        p = getattr(config, "summary_dropout_prob", 0.1)
        self.dropout = torch.nn.Dropout(p) if p else torch.nn.Identity()
        self.summary = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states):
        output = self.dropout(hidden_states)
        if output.dtype != self.summary.weight.dtype:
            output = output.to(self.summary.weight.dtype)
        return self.summary(output)


class WithValueHead(torch.nn.Module):
    """TRL's AutoModelForCausalLMWithValueHead.forward: (lm_logits, loss, value) from the last hidden state."""

    def __init__(self, pretrained_model, config):
        super().__init__()
        self.pretrained_model = pretrained_model
        self.v_head = ValueHead(config)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        kwargs["output_hidden_states"] = True
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        value = self.v_head(out.hidden_states[-1]).squeeze(-1)
        return out.logits.float(), out.loss, value


def initial_value_head(module, hidden, seed=SEED):
    """anneal-train's documented initialisation (reward.h): U(-1/sqrt(H), 1/sqrt(H)), weight then bias."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(hidden)
    with torch.no_grad():
        module.summary.weight.copy_(torch.empty(1, hidden).uniform_(-bound, bound, generator=g))
        module.summary.bias.copy_(torch.empty(1).uniform_(-bound, bound, generator=g))


def setup(tmp):
    model_dir, data = dpo.setup(tmp)
    cfg_path = os.path.join(model_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["summary_dropout_prob"] = 0.0  # TRL's ValueHead reads it from the model config (default 0.1)
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    return model_dir, data


def job_yaml(path, model_dir, data, out, extra):
    return dpo.job_yaml(path, model_dir, data, out, ["stage: rm"] + list(extra))


def compute_loss(model, inputs):
    trainer_cls, _ = import_llamafactory()
    return trainer_cls.compute_loss(types.SimpleNamespace(), model, inputs, return_outputs=True)


def reference_run(model, params, features, pad_id, micro_pairs, lr, weight_decay=0.0, evaluate=None):
    """HF Trainer's steps over the whole dataset with LLaMA-Factory's compute_loss; HF's decay groups (no decay for
    biases and norms). evaluate: (every, features, batch): HF's evaluation loop (model.eval(), `batch` pairs per
    batch; each batch's loss weighted by its size; ComputeAccuracy over the gathered scores)."""
    decay = [p for n, p in params if not ("bias" in n or "norm" in n)]
    no_decay = [p for n, p in params if "bias" in n or "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=STEPS)
    groups = [list(range(k, min(k + micro_pairs, PAIRS))) for k in range(0, PAIRS, micro_pairs)]
    losses = []
    model.train()
    for _ in range(STEPS):
        total = 0.0
        for g in groups:
            loss, _ = compute_loss(model, dpo.collate(features, g, pad_id))
            (loss / len(groups)).backward()
            total += loss.item() / len(groups)
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        if evaluate and len(losses) % evaluate["every"] == 0:
            evaluate["results"].append(evaluate_reference(model, evaluate["features"], pad_id, evaluate["batch"]))
    return losses


def evaluate_reference(model, features, pad_id, batch):
    _, accuracy_cls = import_llamafactory()
    model.eval()
    pairs = len(features["chosen_input_ids"])
    loss_sum, chosen, rejected = 0.0, [], []
    with torch.no_grad():
        for k in range(0, pairs, batch):
            idx = list(range(k, min(k + batch, pairs)))
            loss, (_, c, r) = compute_loss(model, dpo.collate(features, idx, pad_id))
            loss_sum += loss.item() * len(idx)
            chosen.append(c.reshape(-1))
            rejected.append(r.reshape(-1))
    model.train()
    metric = accuracy_cls()
    result = metric(types.SimpleNamespace(predictions=(torch.cat(chosen).numpy(), torch.cat(rejected).numpy())))
    return loss_sum / pairs, result["accuracy"]


def train_with_events(cmd, out):
    dpo.train_with_events(cmd, out)


def our_losses(out):
    return [e["loss"] for e in dpo.our_log(out)]


def our_evals(out):
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        return [(e["eval_loss"], e["eval_accuracy"]) for e in map(json.loads, f) if "eval_loss" in e]


def compare_losses(ours, ref, tol=1e-4):
    assert len(ours) == len(ref) == STEPS, f"{len(ours)} vs {len(ref)} steps"
    worst = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(ours, ref))
    assert worst < tol, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nref  {ref}"
    assert ref[-1] < ref[0], "the reference loss did not fall: the test would prove nothing"
    return worst


def check_exported_scores(model, exported, features, pad_id, what, lr):
    """The exported model + value_head.safetensors rank every pair as the trained reference does: the margins
    score(chosen) - score(rejected) equal to 1e-4. The bias is compared within lr x steps only: the pairwise loss
    does not depend on it (its exact gradient is 0), so both AdamWs move it by the sign of their rounding noise,
    at most about lr per step; the margins, the loss and the weight do not see it."""
    from safetensors.torch import load_file
    head = load_file(os.path.join(exported.out, "value_head.safetensors"))
    assert sorted(head) == ["v_head.summary.bias", "v_head.summary.weight"], sorted(head)
    assert head["v_head.summary.weight"].shape == (1, 64) and head["v_head.summary.bias"].shape == (1,)
    ref_w, ref_b = model.v_head.summary.weight.detach(), model.v_head.summary.bias.detach()
    w_err = ((head["v_head.summary.weight"] - ref_w).abs().max() / ref_w.abs().max()).item()
    assert w_err < 1e-4, f"{what}: v_head.summary.weight differs from the reference's (rel {w_err:.2e})"
    b_err = (head["v_head.summary.bias"] - ref_b).abs().max().item()
    assert b_err <= lr * STEPS, f"{what}: v_head.summary.bias moved {b_err} from the reference's (bound {lr * STEPS})"
    loaded = WithValueHead(exported.model, exported.model.config)
    loaded.v_head.load_state_dict({"summary.weight": head["v_head.summary.weight"],
                                   "summary.bias": head["v_head.summary.bias"]})
    inputs = dpo.collate(features, list(range(PAIRS)), pad_id)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        _, (_, c_ref, r_ref) = compute_loss(model, inputs)
        _, (_, c_out, r_out) = compute_loss(loaded, inputs)
    margin_ref, margin_out = c_ref - r_ref, c_out - r_out
    err = ((margin_out - margin_ref).abs().max() / margin_ref.abs().max()).item()
    assert err < 1e-4, f"{what}: the exported model's margins differ from the reference's (rel {err:.2e}):\n" \
                       f"{margin_out}\n{margin_ref}"
    return err


def lora_reference(model_dir, init_adapter):
    from peft import PeftModel
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
    model = WithValueHead(peft_model, base.config)
    initial_value_head(model.v_head, base.config.hidden_size)
    return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def initial_adapter(model_dir, tmp):
    """dpo_parity's random adapter, with lora_dropout 0 (reward training keeps dropout on, as LLaMA-Factory)."""
    path = dpo.initial_adapter(model_dir, tmp)
    cfg_path = os.path.join(path, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["lora_dropout"] = 0.0
    json.dump(cfg, open(cfg_path, "w"))
    return path


def run_lora(binary, tmp, launch=None, extra=(), micro_pairs=None):
    model_dir, data = setup(tmp)
    init = initial_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init}",
                    "eval_dataset: pairs_sharegpt,pairs_alpaca", "eval_strategy: steps", "eval_steps: 2",
                    "per_device_eval_batch_size: 3"] + list(extra))
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = dpo.encode_pairs(model_dir, "pairs_alpaca", "qwen")
    eval_features, _ = dpo.encode_pairs(model_dir, "pairs_sharegpt", "qwen")
    more, _ = dpo.encode_pairs(model_dir, "pairs_alpaca", "qwen")
    eval_features = {k: list(eval_features[k]) + list(more[k]) for k in eval_features}  # the merged eval set
    model, params = lora_reference(model_dir, init)
    evaluate = {"every": 2, "features": eval_features, "batch": 3, "results": []}
    micro_pairs = micro_pairs or (PAIRS if not launch else 2)
    ref = reference_run(model, params, features, pad_id, micro_pairs, lr=5e-3, evaluate=evaluate)
    worst = compare_losses(our_losses(out), ref)
    ours_eval = our_evals(out)
    assert len(ours_eval) == STEPS // 2, f"expected evals every 2 steps: {ours_eval}"
    accuracies = [a for _, a in evaluate["results"]]
    assert len(set(accuracies)) > 1, f"eval_accuracy never moved ({accuracies}): the test would prove little"
    for (ol, oa), (rl, ra) in zip(ours_eval, evaluate["results"]):
        assert abs(ol - rl) / abs(rl) < 1e-4, f"eval_loss ours {ol}, LLaMA-Factory {rl}"
        assert abs(oa - ra) < 1e-9, f"eval_accuracy ours {oa}, LLaMA-Factory's ComputeAccuracy {ra}"
    from peft import PeftModel
    exported = types.SimpleNamespace(out=out, model=PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out))
    err = check_exported_scores(model, exported, features, pad_id, "lora", 5e-3)
    return worst, ours_eval, evaluate["results"], err, ref


def case_lora(binary, tmp):
    worst, ours_eval, ref_eval, err, ref = run_lora(binary, tmp)
    print(f"lora: {STEPS} losses equal LLaMA-Factory's PairwiseTrainer (max rel {worst:.2e}); loss {ref[0]:.4f} -> "
          f"{ref[-1]:.4f}; eval (loss, accuracy) every 2 steps equal: {ours_eval} vs {ref_eval}; the exported "
          f"adapter + value head rank pairs with the reference's margins (rel {err:.1e})")
    # LLaMA-Factory's export (merge_lora with stage: rm) copies the value head next to the merged model.
    from peft import PeftModel
    from safetensors.torch import load_file
    model_dir, out, merged = os.path.join(tmp, "base"), os.path.join(tmp, "out"), os.path.join(tmp, "merged")
    cfg = os.path.join(tmp, "export.yaml")
    with open(cfg, "w") as f:
        f.write(f"model_name_or_path: {model_dir}\nadapter_name_or_path: {out}\ntemplate: qwen\nstage: rm\n"
                f"export_dir: {merged}\nexport_size: 5\n")
    p = run([binary, "export", "--config", cfg])
    assert "value head copied to" in p.stdout, p.stdout
    assert load_file(os.path.join(merged, "value_head.safetensors")).keys() == \
        load_file(os.path.join(out, "value_head.safetensors")).keys()
    features, pad_id = dpo.encode_pairs(model_dir, "pairs_alpaca", "qwen")
    inputs = dpo.collate(features, list(range(PAIRS)), pad_id)
    scores = []
    for m in (PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out),
              AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)):
        wrapped = WithValueHead(m, m.config).eval()
        head = load_file(os.path.join(merged, "value_head.safetensors"))
        wrapped.v_head.load_state_dict({"summary.weight": head["v_head.summary.weight"],
                                        "summary.bias": head["v_head.summary.bias"]})
        with torch.no_grad():
            scores.append(torch.cat(compute_loss(wrapped, inputs)[1][1:]))
    merr = ((scores[1] - scores[0]).abs().max() / scores[0].abs().max()).item()
    assert merr < 1e-5, f"the merged model + value head score differently from the adapter: rel {merr:.2e}"
    print(f"lora: export with stage: rm merges the adapter and copies value_head.safetensors; the scores agree "
          f"(rel {merr:.1e})")


def case_lora_dp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    extra = ["per_device_train_batch_size: 2", "zero_stage: 2"]
    worst, ours_eval, _, err, _ = run_lora(binary, tmp, launch=launch, extra=extra)
    print(f"lora_dp2: 2 ranks x 2 pairs, ZeRO-2: {STEPS} losses equal the single-process reference "
          f"(max rel {worst:.2e}); "
          f"evals {ours_eval}; export rel {err:.1e}")


def case_lora_dp2_zero3(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    worst, ours_eval, _, err, _ = run_lora(binary, tmp, launch=launch,
                                           extra=["per_device_train_batch_size: 2", "zero_stage: 3"])
    print(f"lora_dp2_zero3: 2 ranks x 2 pairs, ZeRO-3: {STEPS} losses equal the single-process reference "
          f"(max rel {worst:.2e}); evals {ours_eval}; export rel {err:.1e}")


def run_base_tuning(binary, tmp, finetuning, trainable, extra, launch=None):
    """Full or freeze tuning of the base next to the value head, 2 micro-batches of 2 pairs, weight decay 0.01
    (anneal-train under `launch` when given; the reference is one process)."""
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   [f"finetuning_type: {finetuning}", "learning_rate: 1.0e-3", "weight_decay: 0.01",
                    "per_device_train_batch_size: 2", "gradient_accumulation_steps: 2"] + extra)
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = dpo.encode_pairs(model_dir, "pairs_alpaca", "qwen")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for n, p in base.named_parameters():
        p.requires_grad_(trainable(n))
    model = WithValueHead(base, base.config)
    initial_value_head(model.v_head, base.config.hidden_size)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    lm_head_before = base.lm_head.weight.detach().clone()
    ref = reference_run(model, params, features, pad_id, 2, lr=1e-3, weight_decay=0.01)
    assert torch.equal(base.lm_head.weight, lm_head_before), "the reference's lm_head moved without a gradient"
    worst = compare_losses(our_losses(out), ref)
    exported = types.SimpleNamespace(out=out, model=AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32))
    err = check_exported_scores(model, exported, features, pad_id, finetuning, 1e-3)
    return worst, err, ref


def case_full(binary, tmp):
    worst, err, ref = run_base_tuning(binary, tmp, "full", lambda n: True, [])
    print(f"full: weight decay 0.01, 2 micro-batches of 2 pairs: {STEPS} losses equal LLaMA-Factory's "
          f"PairwiseTrainer (max rel {worst:.2e}); loss {ref[0]:.4f} -> {ref[-1]:.4f}; the exported model + value "
          f"head rank pairs with the reference's margins (rel {err:.1e})")


def case_freeze(binary, tmp):
    worst, err, ref = run_base_tuning(binary, tmp, "freeze", lambda n: ".layers.1." in n,
                                      ["freeze_trainable_layers: 1"])
    print(f"freeze: the last layer + the value head: {STEPS} losses equal LLaMA-Factory's PairwiseTrainer "
          f"(max rel {worst:.2e}); loss {ref[0]:.4f} -> {ref[-1]:.4f}; export rel {err:.1e}")


def case_lora_tp2(binary, tmp):
    """Tensor parallel 2: the final hidden states and the value head whole on both ranks (its gradient whole too)."""
    launch = [binary, "launch", "--nproc-per-node", "2"]
    worst, ours_eval, _, err, _ = run_lora(binary, tmp, launch=launch, extra=["tensor_model_parallel_size: 2"],
                                           micro_pairs=PAIRS)
    print(f"lora_tp2: tensor parallel 2, 4 pairs per step: {STEPS} losses equal the single-process reference "
          f"(max rel {worst:.2e}); evals {ours_eval}; the exported adapter + value head rank pairs as the reference "
          f"(rel {err:.1e})")


def case_full_tp2_sp(binary, tmp):
    """Tensor parallel 2 with sequence parallelism: each rank scores its half of the sequence, the values are
    gathered, the value head's gradient halves summed over the group (reward.h)."""
    launch = [binary, "launch", "--nproc-per-node", "2"]
    worst, err, ref = run_base_tuning(binary, tmp, "full", lambda n: True,
                                      ["tensor_model_parallel_size: 2", "sequence_parallel: true"], launch=launch)
    print(f"full_tp2_sp: tensor parallel 2 with sequence parallelism, 2 micro-batches of 2 pairs: {STEPS} losses "
          f"equal the single-process reference (max rel {worst:.2e}); loss {ref[0]:.4f} -> {ref[-1]:.4f}; the "
          f"exported model + value head rank pairs as the reference (rel {err:.1e})")


def case_lora_tp2_dp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "4"]
    worst, ours_eval, _, err, _ = run_lora(binary, tmp, launch=launch, micro_pairs=2,
                                           extra=["tensor_model_parallel_size: 2", "per_device_train_batch_size: 2"])
    print(f"lora_tp2_dp2: 4 ranks (tp 2 x dp 2, 2 pairs per replica): {STEPS} losses equal the single-process "
          f"reference (max rel {worst:.2e}); evals {ours_eval}; export rel {err:.1e}")


PP2 = ["pipeline_model_parallel_size: 2", "per_device_train_batch_size: 2", "gradient_accumulation_steps: 2"]


def case_lora_pp2(binary, tmp):
    """Pipeline parallel 2 (1F1B): the value head on the last stage scores the final hidden states; the exported
    value head is the last stage's."""
    launch = [binary, "launch", "--nproc-per-node", "2"]
    worst, ours_eval, _, err, _ = run_lora(binary, tmp, launch=launch, extra=PP2, micro_pairs=2)
    print(f"lora_pp2: 2 stages (1F1B), 2 micro-batches of 2 pairs: {STEPS} losses equal the single-process reference "
          f"(max rel {worst:.2e}); evals through the pipeline {ours_eval}; the exported adapter + value head rank "
          f"pairs as the reference (rel {err:.1e})")


def case_full_pp2_gpipe(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    worst, err, ref = run_base_tuning(binary, tmp, "full", lambda n: True,
                                      ["pipeline_model_parallel_size: 2", "pipeline_schedule: gpipe"], launch=launch)
    print(f"full_pp2_gpipe: 2 stages (GPipe), 2 micro-batches of 2 pairs: {STEPS} losses equal the single-process "
          f"reference (max rel {worst:.2e}); the exported model + value head rank pairs as the reference "
          f"(rel {err:.1e})")


def case_resume(binary, tmp):
    from safetensors.torch import load_file
    model_dir, data = setup(tmp)
    init = initial_adapter(model_dir, tmp)
    common = ["finetuning_type: lora", f"adapter_name_or_path: {init}", "save_strategy: steps", "save_steps: 5"]
    straight = os.path.join(tmp, "straight")
    run([binary, "train", "--config", job_yaml(os.path.join(tmp, "a.yaml"), model_dir, data, straight, common)])
    ck = os.path.join(straight, "checkpoint-5")
    head5 = load_file(os.path.join(ck, "value_head.safetensors"))
    assert sorted(head5) == ["v_head.summary.bias", "v_head.summary.weight"], sorted(head5)
    final = load_file(os.path.join(straight, "value_head.safetensors"))
    assert not torch.equal(head5["v_head.summary.weight"], final["v_head.summary.weight"]), "the head did not train"
    resumed = os.path.join(tmp, "resumed")
    os.makedirs(resumed)
    shutil.copytree(ck, os.path.join(resumed, "checkpoint-5"))
    cfg = job_yaml(os.path.join(tmp, "b.yaml"), model_dir, data, resumed, common)
    run([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"])
    again = load_file(os.path.join(resumed, "value_head.safetensors"))
    for k in final:
        assert torch.equal(final[k], again[k]), f"{k} differs after resuming from checkpoint-5"
    a, b = our_losses(straight)[5:], our_losses(resumed)
    assert a == b, f"steps 6-10 differ after resume:\n{a}\n{b}"
    print(f"resume: checkpoint-5 holds value_head.safetensors; resumed in a fresh directory, steps 6-10 and the final "
          f"value head are bit-identical ({len(b)} losses)")




def case_lf_example(binary, tmp):
    model_dir, data = setup(tmp)
    info = json.load(open(os.path.join(data, "dataset_info.json")))
    info["dpo_en_demo"] = info["pairs_sharegpt"]  # LLaMA-Factory's demo is sharegpt ranking rows too
    json.dump(info, open(os.path.join(data, "dataset_info.json"), "w"))
    assert data == os.path.join(tmp, "data")  # LLaMA-Factory's default dataset_dir "data", from the working dir
    here = os.path.dirname(os.path.abspath(__file__))
    example = os.path.join(here, "llamafactory_examples", "qwen3_lora_reward.yaml")
    cfg = os.path.join(tmp, "qwen3_lora_reward.yaml")
    with open(example) as f, open(cfg, "w") as g:
        g.write(f.read().replace("{model}", model_dir))
    p = subprocess.run([binary, "train", "--config", cfg], capture_output=True, text=True, timeout=600, cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    out = os.path.join(tmp, "saves", "qwen3-4b", "lora", "reward")
    for f in ("adapter_model.safetensors", "adapter_config.json", "value_head.safetensors",
              "checkpoint-3/value_head.safetensors", "trainer_log.jsonl"):
        assert os.path.exists(os.path.join(out, f)), f"{f} missing from {sorted(os.listdir(out))}"
    print(f"lf_example: LLaMA-Factory's qwen3_lora_reward.yaml ran unchanged but for the model path: "
          f"{sorted(os.listdir(out))}")


def case_keep_best(binary, tmp):
    """Checkpoints record eval_accuracy, so retention can keep the best by it (load_best_model_at_end is refused
    under stage rm, as LLaMA-Factory)."""
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", "eval_dataset: pairs_sharegpt,pairs_alpaca", "eval_strategy: steps",
                    "eval_steps: 2", "save_strategy: steps", "save_steps: 2", "keep_best: 1", "save_total_limit: 1",
                    "metric_for_best_model: eval_accuracy", "greater_is_better: true"])
    run([binary, "train", "--config", cfg])
    evals = {s: a for s, (_, a) in zip(range(2, STEPS + 1, 2), our_evals(out))}
    best = min(s for s, a in evals.items() if a == max(evals.values()))  # the earliest of equals
    kept = sorted(int(d.split("-")[1]) for d in os.listdir(out) if d.startswith("checkpoint-"))
    assert kept == sorted({best, STEPS}), f"eval_accuracy by step {evals}: kept {kept}, expected the best {best} " \
                                          f"and the last {STEPS}"
    assert len(set(evals.values())) > 1, f"eval_accuracy never moved: {evals}"
    with open(os.path.join(out, f"checkpoint-{best}", "manifest.json")) as f:
        assert json.load(f)["metadata"]["metrics"]["eval_accuracy"] == evals[best]
    print(f"keep_best: eval_accuracy by step {evals}: checkpoint-{best} (the best) and checkpoint-{STEPS} kept")


def case_refusals(binary, tmp):
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    bad = [
        (["dataset: plain"], "is not a ranking dataset"),
        (["train_on_prompt: true"], "is rm (rm scores the answers of preference pairs)"),
        (["load_best_model_at_end: true", "eval_dataset: pairs_sharegpt", "eval_strategy: steps", "eval_steps: 5",
          "save_strategy: steps", "save_steps: 5"], "stage rm does not support load_best_model_at_end"),
    ]
    expect_refused(binary, bad, lambda extra: job_yaml(os.path.join(tmp, "bad.yaml"), model_dir, data, out, extra),
                   "reward-model jobs")


if __name__ == "__main__":
    run_cases({"lora": case_lora, "full": case_full, "freeze": case_freeze, "lora_dp2": case_lora_dp2,
               "lora_dp2_zero3": case_lora_dp2_zero3, "resume": case_resume, "keep_best": case_keep_best, "lf_example": case_lf_example, "refusals": case_refusals,
               "lora_tp2": case_lora_tp2, "full_tp2_sp": case_full_tp2_sp, "lora_tp2_dp2": case_lora_tp2_dp2,
               "lora_pp2": case_lora_pp2, "full_pp2_gpipe": case_full_pp2_gpipe})
