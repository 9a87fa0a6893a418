#!/usr/bin/env python3
"""Preference steps of anneal-train against TRL 1.16's own trainers with peft (issue 21's proof), per step:
DPOTrainer (trl_peft, 20 sigmoid steps) and trl.experimental's ORPOTrainer (trl_orpo_peft) and CPOTrainer with
loss_type "simpo" (trl_simpo_peft: pure SimPO, cpo_alpha 0; trl_cpo_simpo_peft: with the NLL term).

TRL's side is each trainer itself, unmodified but for the one method that turns text into token ids: a fresh
LoRA adapter from a peft LoraConfig (peft_config=; for DPO TRL's reference is then the base model with the adapter
disabled, as Anneal's and LLaMA-Factory's), TRL's collator and log probabilities, HF Trainer's step (AdamW torch,
clip 1.0, cosine with 2 warmup steps, learning rate 5e-3), CPU fp32, dropout off (TRL's disable_dropout). The
adapter TRL initializes is saved before training and is anneal-train's adapter_name_or_path, so both start from
the same weights (B = 0: the first DPO step's policy is the reference).

Token ids: the rows come pre-tokenized by LLaMA-Factory 0.9.5's PairwiseDatasetProcessor (dpo_parity.encode_pairs;
anneal-train's template encoding equals it, which dpo_parity proves), split at the first label that is not -100
into the prompt and the completion. The method replaced is DPOTrainer._prepare_dataset (-> prompt_ids /
chosen_ids / rejected_ids) and ORPOTrainer / CPOTrainer.tokenize_row (-> prompt_input_ids and prompt + answer
input_ids / labels, the prompt's labels -100, as their own tokenize_row lays them out; their bos / eos additions
are not applied: the template put the eos where LLaMA-Factory does). TRL's masks then mark exactly the tokens
Anneal's labels keep. Every step covers the whole dataset of 4 pairs (one micro-batch of 4, or 4 accumulated
micro-batches of 1), so TRL's shuffling cannot matter.

Compared per step at 1e-4 relative: the loss, rewards/chosen, rewards/rejected, rewards/accuracies,
rewards/margins, logps/chosen, logps/rejected; for ORPO also sft_loss (= TRL's nll_loss) and odds_ratio_loss
(= -TRL's log_odds_ratio); and the trained adapters at the end. Where TRL 1.16 differs from LLaMA-Factory (which
Anneal follows), the difference is either neutralized by the case's data (said so) or not compared, and stated:
  - logits/chosen, logits/rejected (all trainers): TRL's DPO averages the mean logit over the completion tokens
    only, its ORPO / CPO over every position but the last of the padded block; LLaMA-Factory (and Anneal) over
    the whole padded [n, T, V] block (its get_batch_loss_metrics). Not compared.
  - ORPO's NLL term: TRL's is the token mean of the cross entropy over prompt and completion of all chosen rows
    in the micro-batch; LLaMA-Factory's sft_loss the mean over pairs of each chosen completion's per-token mean
    NLL. trl_orpo_peft makes them the same quantity: the `empty` template with one-token prompts (the first token
    is never predicted, so the prompt adds no term) and one pair per micro-batch (4 accumulated). With a longer
    prompt or several pairs per micro-batch they differ, by definition.
  - ORPO's log(1 - p): TRL's log1mexp branches at -ln 2, LLaMA-Factory's log1p(-exp(x)) does not (equal within
    fp32 rounding). TRL's log_odds_chosen metric has no LLaMA-Factory counterpart; not compared.
  - SimPO: TRL's simpo_gamma is LLaMA-Factory's simpo_gamma (logits - gamma / beta, both); with cpo_alpha 0 TRL's
    CPOTrainer is exactly LLaMA-Factory's simpo (trl_simpo_peft, qwen template, 4 pairs per micro-batch). TRL's
    cpo_alpha x NLL is the counterpart of LLaMA-Factory's pref_ftx with simpo, with the same prompt / token-mean
    difference as ORPO's NLL term, neutralized the same way in trl_cpo_simpo_peft. TRL's CPO losses other than
    simpo (sigmoid / hinge / ipo without a reference) and AlphaPO (alpha != 0) have no LLaMA-Factory stage
    (pref_loss offers them only with a reference model): refused or absent, not compared.
  - pref_ftx with DPO: LLaMA-Factory adds ftx * the mean over pairs of each chosen answer's per-token mean NLL;
    TRL's nearest ("sft" in loss_type with loss_weights) is the NLL mean over all chosen tokens of the batch, which
    differs when the answers' lengths differ. trl_peft runs pref_ftx 0.
  - an adapter that already holds trained weights (a PeftModel passed in): TRL 1.16's DPO copies it as a "ref"
    adapter and uses that as the reference; LLaMA-Factory and Anneal use the base model. A fresh adapter (B = 0)
    makes both the same, which is what trl_peft runs (ORPO / SimPO have no reference).
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
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

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


def lora_config():
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def trl_trainer(model_dir, rows, out):
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    args = DPOConfig(output_dir=out, per_device_train_batch_size=len(rows), gradient_accumulation_steps=1,
                     learning_rate=5e-3, max_steps=STEPS, lr_scheduler_type="cosine", warmup_steps=2,
                     max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch", logging_steps=1, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, fp16=False, seed=3, beta=BETA, loss_type=["sigmoid"],
                     max_length=None, disable_dropout=True, dataloader_drop_last=False, remove_unused_columns=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PreTokenizedDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                  peft_config=lora_config())


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
    worst, worst_metric, ref = compare_steps(ours, mine, theirs, {k: (k, 1) for k in KEYS})
    werr = compare_adapters(out, trainer, tmp)
    accuracies = [t["rewards/accuracies"] for t in theirs]
    assert ref[-1] < 0.5 * ref[0], f"TRL's loss did not halve ({ref[0]} -> {ref[-1]}): the test would prove little"
    assert min(accuracies) < max(accuracies), f"rewards/accuracies never moved: {accuracies}"
    print(f"trl_peft: {STEPS} DPO steps equal TRL {__import__('trl').__version__}'s DPOTrainer with peft: losses max "
          f"rel {worst:.2e} ({ref[0]:.4f} -> {ref[-1]:.4f}), {len(KEYS)} metrics per step max rel "
          f"{worst_metric:.2e}, accuracies {accuracies[0]:.2f} -> {accuracies[-1]:.2f}; adapters max rel {werr:.1e}")


def compare_steps(ours, mine, theirs, keys, tol=1e-4):
    """ours: our per-step losses; mine / theirs: per-step metrics (ours from the events, TRL's log_history);
    keys: our metric name -> (TRL's name, sign). Asserts each within tol relative; (worst loss, worst metric,
    TRL's losses)."""
    ref = [h["loss"] for h in theirs]
    assert len(ours) == len(ref) == len(mine) == STEPS, f"steps: ours {len(ours)}/{len(mine)}, TRL {len(ref)}"
    worst = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(ours, ref))
    assert worst < tol, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nTRL  {ref}"
    margins = [t["rewards/margins"] for t in theirs]
    assert ref[-1] < ref[0] and margins[-1] > margins[0] + 0.05, \
        f"TRL's loss did not fall ({ref[0]} -> {ref[-1]}) or margins not grow ({margins}): the test would prove little"
    worst_metric = 0.0
    for step, (m, t) in enumerate(zip(mine, theirs)):
        for k, (trl_key, sign) in keys.items():
            err = abs(m[k] - sign * t[trl_key]) / max(abs(t[trl_key]), 1e-2)
            worst_metric = max(worst_metric, err)
            assert err < tol, f"step {step + 1}: {k} ours {m[k]} TRL's {trl_key} {t[trl_key]} (sign {sign})"
    return worst, worst_metric, ref


def compare_adapters(out, trainer, tmp, tol=1e-3):
    """The adapter anneal-train saved in out equals the one TRL trained (a last check that the updates were the
    same); its max relative difference."""
    from safetensors.torch import load_file
    final = os.path.join(tmp, "trl_final")
    trainer.model.save_pretrained(final)
    a, b = load_file(os.path.join(out, "adapter_model.safetensors")), load_file(
        os.path.join(final, "adapter_model.safetensors"))
    assert sorted(a) == sorted(b), f"adapter tensors differ in names: {sorted(set(a) ^ set(b))[:4]}"
    werr = max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-6)).item() for k in b)
    assert werr < tol, f"the trained adapters differ (max rel {werr:.2e})"
    return werr


def pretokenized(trainer_cls, features):
    """trl.experimental's ORPOTrainer / CPOTrainer for rows that hold only their index "row": the one method
    replaced, tokenize_row (prompt / chosen / rejected text -> ids), returns LLaMA-Factory's ids for that row instead
    (prompt ids, then prompt + answer ids with the prompt's labels -100, as TRL's own tokenize_row lays them out;
    LLaMA-Factory's template already put the eos where it belongs, so TRL's bos / eos additions are not applied)."""
    rows = []
    for r in split_rows(features):
        p = r["prompt_ids"]
        row = {"prompt_input_ids": p, "prompt_attention_mask": [1] * len(p)}
        for side in ("chosen", "rejected"):
            ids = p + r[f"{side}_ids"]
            row.update({f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                        f"{side}_labels": [-100] * len(p) + r[f"{side}_ids"]})
        rows.append(row)

    class PreTokenized(trainer_cls):
        def tokenize_row(self, feature, model=None):
            return rows[feature["row"]]

    return PreTokenized, Dataset.from_list([{"row": i} for i in range(len(rows))])


def reference_free_run(binary, tmp, trainer_cls, config_cls, trl_args, dataset, template, micro_pairs, ours_extra):
    """anneal-train and TRL's trainer (peft LoRA, HF Trainer's step as trl_peft's) on the same LLaMA-Factory ids;
    (our losses, our metrics, TRL's logged steps, out dir, TRL's trainer)."""
    dpo_parity.STEPS = STEPS
    model_dir, data = setup(tmp)
    features, _ = encode_pairs(model_dir, dataset, template)
    cls, train_rows = pretokenized(trainer_cls, features)
    accumulation = len(train_rows) // micro_pairs
    args = config_cls(output_dir=os.path.join(tmp, "trl"), per_device_train_batch_size=micro_pairs,
                      gradient_accumulation_steps=accumulation, learning_rate=5e-3, max_steps=STEPS,
                      lr_scheduler_type="cosine", warmup_steps=2, max_grad_norm=1.0, weight_decay=0.0,
                      optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                      fp16=False, seed=3, max_length=512, disable_dropout=True, dataloader_drop_last=False,
                      remove_unused_columns=False, **trl_args)
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    trainer = cls(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), args=args,
                  train_dataset=train_rows, processing_class=tok, peft_config=lora_config())
    init_adapter = os.path.join(tmp, "init_adapter")
    trainer.model.save_pretrained(init_adapter)

    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", f"dataset: {dataset}",
                    f"template: {template}", f"per_device_train_batch_size: {micro_pairs}",
                    f"gradient_accumulation_steps: {accumulation}", f"max_steps: {STEPS}"] + ours_extra)
    train_with_events([binary, "train", "--config", cfg], out)
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h and "rewards/chosen" in h]
    return [e["loss"] for e in our_log(out)], our_metrics(out), theirs, out, trainer


def case_trl_orpo_peft(binary, tmp):
    ours, mine, theirs, out, trainer = reference_free_run(
        binary, tmp, ORPOTrainer, ORPOConfig, {"beta": BETA}, "pairs_short", "empty", 1,
        ["pref_loss: orpo", f"pref_beta: {BETA}", "pref_ftx: 0"])
    keys = {k: (k, 1) for k in KEYS}
    keys.update({"sft_loss": ("nll_loss", 1), "odds_ratio_loss": ("log_odds_ratio", -1)})
    worst, worst_metric, ref = compare_steps(ours, mine, theirs, keys)
    werr = compare_adapters(out, trainer, tmp)
    print(f"trl_orpo_peft: {STEPS} ORPO steps (1 pair x 4 accumulated) equal trl {__import__('trl').__version__}'s "
          f"experimental ORPOTrainer with peft: losses max rel {worst:.2e} ({ref[0]:.4f} -> {ref[-1]:.4f}), "
          f"{len(keys)} metrics per step (sft_loss = TRL's nll_loss, odds_ratio_loss = -log_odds_ratio) max rel "
          f"{worst_metric:.2e}; adapters max rel {werr:.1e}")


def case_trl_simpo_peft(binary, tmp):
    gamma = 0.8
    ours, mine, theirs, out, trainer = reference_free_run(
        binary, tmp, CPOTrainer, CPOConfig, {"beta": BETA, "loss_type": "simpo", "cpo_alpha": 0.0,
                                             "simpo_gamma": gamma}, "pairs_alpaca", "qwen", 4,
        ["pref_loss: simpo", f"pref_beta: {BETA}", f"simpo_gamma: {gamma}", "pref_ftx: 0"])
    worst, worst_metric, ref = compare_steps(ours, mine, theirs, {k: (k, 1) for k in KEYS})
    werr = compare_adapters(out, trainer, tmp)
    print(f"trl_simpo_peft: {STEPS} SimPO steps (4 pairs, qwen template) equal trl {__import__('trl').__version__}'s "
          f"experimental CPOTrainer (loss_type simpo, cpo_alpha 0) with peft: losses max rel {worst:.2e} "
          f"({ref[0]:.4f} -> {ref[-1]:.4f}), {len(KEYS)} metrics per step max rel {worst_metric:.2e}; adapters max "
          f"rel {werr:.1e}")


def case_trl_cpo_simpo_peft(binary, tmp):
    """CPO-SimPO: LLaMA-Factory's pref_ftx with simpo adds ftx x each chosen answer's mean NLL; TRL's cpo_alpha adds
    alpha x the chosen NLL over prompt and answer tokens of the micro-batch. One-token prompts and one pair per
    micro-batch make them the same quantity (as trl_orpo_peft)."""
    gamma, alpha = 0.8, 0.5
    ours, mine, theirs, out, trainer = reference_free_run(
        binary, tmp, CPOTrainer, CPOConfig, {"beta": BETA, "loss_type": "simpo", "cpo_alpha": alpha,
                                             "simpo_gamma": gamma}, "pairs_short", "empty", 1,
        ["pref_loss: simpo", f"pref_beta: {BETA}", f"simpo_gamma: {gamma}", f"pref_ftx: {alpha}"])
    worst, worst_metric, ref = compare_steps(ours, mine, theirs, {k: (k, 1) for k in KEYS})
    werr = compare_adapters(out, trainer, tmp)
    print(f"trl_cpo_simpo_peft: {STEPS} SimPO steps with pref_ftx {alpha} equal CPOTrainer's simpo with cpo_alpha "
          f"{alpha}: losses max rel {worst:.2e} ({ref[0]:.4f} -> {ref[-1]:.4f}), metrics max rel {worst_metric:.2e}; "
          f"adapters max rel {werr:.1e}")


if __name__ == "__main__":
    run_cases({"trl_peft": case_trl_peft, "trl_orpo_peft": case_trl_orpo_peft, "trl_simpo_peft": case_trl_simpo_peft,
               "trl_cpo_simpo_peft": case_trl_cpo_simpo_peft})
