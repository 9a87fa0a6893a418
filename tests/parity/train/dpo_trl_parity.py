#!/usr/bin/env python3
"""20 DPO steps of anneal-train against TRL 1.16's own DPOTrainer with peft (issue 21's proof), per step.

TRL's side is trl.DPOTrainer itself, unmodified but for one method: a fresh LoRA adapter from a peft LoraConfig
(peft_config=, so TRL's reference is the base model with the adapter disabled, as Anneal's and LLaMA-Factory's),
sigmoid loss, beta 0.2, TRL's DataCollatorForPreference, its fused LM head log probabilities, HF Trainer's step
(AdamW torch, clip 1.0, cosine with 2 warmup steps, learning rate 5e-3), CPU fp32, dropout off (TRL's
disable_dropout). The adapter TRL initializes is saved before training and is anneal-train's
adapter_name_or_path, so both start from the same weights (B = 0: the first step's policy is the reference).

Token ids: the method replaced is DPOTrainer._prepare_dataset (text -> prompt_ids / chosen_ids / rejected_ids):
the rows come pre-tokenized by LLaMA-Factory 0.9.5's PairwiseDatasetProcessor with the qwen template
(dpo_parity.encode_pairs; anneal-train's template encoding equals it, which dpo_parity proves), split at the
first label that is not -100 into the prompt and the completion. TRL's completion_mask then marks exactly the
tokens Anneal's labels keep. Every step's batch is the whole dataset of 4 pairs, so TRL's shuffling cannot matter.

Compared per step at 1e-4 relative: the loss, rewards/chosen, rewards/rejected, rewards/accuracies,
rewards/margins, logps/chosen, logps/rejected. Where TRL 1.16 differs from LLaMA-Factory (which Anneal follows),
the difference is not compared, and is stated here:
  - logits/chosen, logits/rejected: TRL 1.16 averages the mean logit over the completion tokens only;
    LLaMA-Factory (and Anneal) over the whole padded [n, T, V] block (its get_batch_loss_metrics).
  - pref_ftx: LLaMA-Factory adds ftx * the mean over pairs of each chosen answer's per-token mean NLL; TRL's
    nearest ("sft" in loss_type with loss_weights) is the NLL mean over all chosen tokens of the batch, which
    differs when the answers' lengths differ. This case runs pref_ftx 0.
  - an adapter that already holds trained weights (a PeftModel passed in): TRL 1.16 copies it as a "ref" adapter
    and uses that as the reference; LLaMA-Factory and Anneal use the base model. A fresh adapter (B = 0) makes
    both the same, which is what this case runs.
  - ipo: TRL 1.16 divides the summed log-ratios by the completion lengths; LLaMA-Factory averages the log
    probabilities first (the same quotient). Not run here; dpo_parity.full_ipo covers LLaMA-Factory's ipo.
"""
import json
import os
import sys

import torch

torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")
# TRL before LLaMA-Factory: dpo_parity's import of LLaMA-Factory stubs optional modules TRL must see as absent.
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dpo_parity  # noqa: E402
from dpo_parity import encode_pairs, job_yaml, our_log, our_metrics, setup, train_with_events  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import run_cases  # noqa: E402

STEPS = 20
BETA = 0.2
KEYS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
        "logps/rejected"]


class PreTokenizedDPOTrainer(DPOTrainer):
    """trl.DPOTrainer for rows that already hold prompt_ids / chosen_ids / rejected_ids (LLaMA-Factory's ids)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        assert set(dataset.column_names) == {"prompt_ids", "chosen_ids", "rejected_ids"}, dataset.column_names
        return dataset


def split_rows(features):
    """LLaMA-Factory's pairwise features -> TRL's prompt_ids / chosen_ids / rejected_ids rows."""
    rows = []
    for i in range(len(features["chosen_input_ids"])):
        parts = {}
        for side in ("chosen", "rejected"):
            ids, labels = features[f"{side}_input_ids"][i], features[f"{side}_labels"][i]
            start = next(k for k, l in enumerate(labels) if l != -100)
            assert all(l == -100 for l in labels[:start]) and labels[start:] == ids[start:], "labels are not a suffix"
            parts[side] = (ids[:start], ids[start:])
        assert parts["chosen"][0] == parts["rejected"][0], "chosen and rejected prompts differ"
        rows.append({"prompt_ids": parts["chosen"][0], "chosen_ids": parts["chosen"][1],
                     "rejected_ids": parts["rejected"][1]})
    return rows


def trl_trainer(model_dir, rows, out):
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    args = DPOConfig(output_dir=out, per_device_train_batch_size=len(rows), gradient_accumulation_steps=1,
                     learning_rate=5e-3, max_steps=STEPS, lr_scheduler_type="cosine", warmup_steps=2,
                     max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch", logging_steps=1, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, fp16=False, seed=3, beta=BETA, loss_type=["sigmoid"],
                     max_length=None, disable_dropout=True, dataloader_drop_last=False, remove_unused_columns=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return PreTokenizedDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                  peft_config=lora)


def case_trl_peft(binary, tmp):
    dpo_parity.STEPS = STEPS
    model_dir, data = setup(tmp)
    features, _ = encode_pairs(model_dir, "pairs_alpaca", "qwen")
    rows = split_rows(features)
    trainer = trl_trainer(model_dir, rows, os.path.join(tmp, "trl"))
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config, "TRL's reference is not the base"
    init_adapter = os.path.join(tmp, "init_adapter")
    trainer.model.save_pretrained(init_adapter)

    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", "pref_loss: sigmoid",
                    f"pref_beta: {BETA}", "pref_ftx: 0", f"max_steps: {STEPS}"])
    train_with_events([binary, "train", "--config", cfg], out)
    ours, mine = [e["loss"] for e in our_log(out)], our_metrics(out)

    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h and "rewards/chosen" in h]
    ref = [h["loss"] for h in theirs]
    assert len(ours) == len(ref) == len(mine) == STEPS, f"steps: ours {len(ours)}/{len(mine)}, TRL {len(ref)}"
    worst = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(ours, ref))
    assert worst < 1e-4, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nTRL  {ref}"
    assert ref[-1] < 0.5 * ref[0], f"TRL's loss did not fall ({ref[0]} -> {ref[-1]}): the test would prove little"
    worst_metric = 0.0
    for step, (m, t) in enumerate(zip(mine, theirs)):
        for k in KEYS:
            err = abs(m[k] - t[k]) / max(abs(t[k]), 1e-2)
            worst_metric = max(worst_metric, err)
            assert err < 1e-4, f"step {step + 1}: {k} ours {m[k]} TRL {t[k]}"
    accuracies = [t["rewards/accuracies"] for t in theirs]
    assert min(accuracies) < max(accuracies), f"rewards/accuracies never moved: {accuracies}"
    # The trained adapters agree too (a last check that the 20 updates were the same).
    from safetensors.torch import load_file
    final = os.path.join(tmp, "trl_final")
    trainer.model.save_pretrained(final)
    a, b = load_file(os.path.join(out, "adapter_model.safetensors")), load_file(
        os.path.join(final, "adapter_model.safetensors"))
    assert sorted(a) == sorted(b), f"adapter tensors differ in names: {sorted(set(a) ^ set(b))[:4]}"
    werr = max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-6)).item() for k in b)
    assert werr < 1e-3, f"the trained adapters differ (max rel {werr:.2e})"
    print(f"trl_peft: {STEPS} DPO steps equal TRL {__import__('trl').__version__}'s DPOTrainer with peft: losses max "
          f"rel {worst:.2e} ({ref[0]:.4f} -> {ref[-1]:.4f}), {len(KEYS)} metrics per step max rel "
          f"{worst_metric:.2e}, accuracies {accuracies[0]:.2f} -> {accuracies[-1]:.2f}; adapters max rel {werr:.1e}")


if __name__ == "__main__":
    run_cases({"trl_peft": case_trl_peft})
