#!/usr/bin/env python3
"""LLaMA-Factory's tuning-method keys in anneal-train against the peers that define them.

Cases (one ctest each), on train_parity.py's tiny llama, tokenizer and 8 pre-tokenized rows:
  loraplus : loraplus_lr_ratio 16 with weight decay: 20 per-step losses equal peft + the optimizer that
             LLaMA-Factory's own _create_loraplus_optimizer builds (its parameter groups, HF's AdamW kwargs) +
             transformers' cosine schedule; and differ from plain LoRA (the ratio matters).
  neftune  : neftune_noise_alpha 5 on one row per step: 20 per-step losses equal peft + transformers' own
             activate_neftune hook, both drawing the noise from the default generator seeded with the job's seed;
             and differ from the run without noise. The eval loss is noise-free (HF's hook checks training).
  dora     : use_dora from a peft DoRA adapter (random B, perturbed magnitudes): 20 losses equal peft's DoRA; the
             trained adapter (use_dora, lora_magnitude_vector) loads in peft and our merged export in HF with our
             logits; a fresh DoRA adapter's magnitudes equal peft's ||W||_row.
  modules_to_save : additional_target embed_tokens,lm_head (peft's modules_to_save): from a peft adapter with
             them (perturbed copies), 20 losses equal peft with weight decay; the adapter saves them under peft's
             keys and loads in peft with our logits, the merged export too; from scratch likewise.
  refusals : loraplus_lr_ratio with full tuning, neftune_noise_alpha with sequence_parallel, DoRA under tensor
             parallelism and additional_target lm_head on a model with tied embeddings are refused naming the key.
"""
import json
import os
import subprocess
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import train_parity as tp  # noqa: E402
from testlib import import_stubbing, run, run_cases  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.optimization import get_scheduler  # noqa: E402

os.environ["DISABLE_VERSION_CHECK"] = "1"


def lora_model(model_dir, adapter):
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter,
                                      is_trainable=True)
    return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def loss_of(model, ids, labels, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum") / \
        (shift_labels != -100).sum()


def train_reference(model, params, opt, rows, steps, seed=None):
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=steps)
    batch = tp.padded_batch(rows)
    if seed is not None:
        torch.manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_of(model, *batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def import_loraplus():
    from transformers import Trainer  # noqa: F401 (LLaMA-Factory's module imports it)

    def do_import():
        from llamafactory.train.trainer_utils import _create_loraplus_optimizer
        return _create_loraplus_optimizer
    return import_stubbing(do_import)


def case_loraplus(binary, tmp):
    from transformers import TrainingArguments
    model_dir, data, rows = tp.setup(tmp, binary)
    adapter = tp.initial_adapter(model_dir, tmp)
    common = ["finetuning_type: lora", f"adapter_name_or_path: {adapter}", "weight_decay: 0.01"]
    runs = {}
    for name, extra in (("plus", ["loraplus_lr_ratio: 16"]), ("plain", [])):
        out = os.path.join(tmp, name)
        run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, name + ".yaml"), model_dir, data, out,
                                                      common + extra)])
        runs[name] = tp.our_losses(out)
    model, params = lora_model(model_dir, adapter)
    args = TrainingArguments(output_dir=os.path.join(tmp, "hf"), learning_rate=1e-3, weight_decay=0.01,
                             optim="adamw_torch", report_to=[], use_cpu=True)
    finetuning = types.SimpleNamespace(loraplus_lr_ratio=16.0, loraplus_lr_embedding=1e-6)
    opt = import_loraplus()(model, args, finetuning)
    assert [len(g["params"]) for g in opt.param_groups][:2] == [len(params) // 2] * 2, "lora_A / lora_B groups"
    ref = train_reference(model, params, opt, rows, tp.STEPS)
    worst = tp.compare_losses(runs["plus"], ref)
    gap = max(abs(a - b) / abs(b) for a, b in zip(runs["plain"], runs["plus"]))
    assert gap > 1e-3, f"loraplus_lr_ratio changed nothing (max rel {gap:.2e}): the test would prove nothing"
    print(f"loraplus: {tp.STEPS} losses equal peft + LLaMA-Factory's LoRA+ optimizer (max rel {worst:.2e}); "
          f"plain LoRA differs by up to {gap:.2e}")


def case_neftune(binary, tmp):
    from transformers.integrations.neftune import activate_neftune
    model_dir, data, rows = tp.setup(tmp, binary)
    adapter = tp.initial_adapter(model_dir, tmp)
    one = rows[3:4]
    with open(os.path.join(data, "one.jsonl"), "w") as f:
        f.write(json.dumps(one[0]) + "\n")
    info = json.load(open(os.path.join(data, "dataset_info.json")))
    info["one"] = {"file_name": "one.jsonl", "formatting": "tokenized"}
    json.dump(info, open(os.path.join(data, "dataset_info.json"), "w"))
    common = ["finetuning_type: lora", f"adapter_name_or_path: {adapter}", "dataset: one",
              "per_device_train_batch_size: 1", "gradient_accumulation_steps: 1", "eval_dataset: one",
              "eval_strategy: steps", "eval_steps: 10"]
    runs, evals = {}, {}
    for name, extra in (("noisy", ["neftune_noise_alpha: 5"]), ("plain", [])):
        out = os.path.join(tmp, name)
        run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, name + ".yaml"), model_dir, data, out,
                                                      common + extra)])
        runs[name] = tp.our_losses(out)
        with open(os.path.join(out, "trainer_log.jsonl")) as f:
            evals[name] = [json.loads(l)["eval_loss"] for l in f if "eval_loss" in json.loads(l)]
    model, params = lora_model(model_dir, adapter)
    activate_neftune(model, 5.0)
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            foreach=False)
    ref = train_reference(model, params, opt, one, tp.STEPS, seed=3)  # the job's seed: 3
    worst = tp.compare_losses(runs["noisy"], ref)
    gap = max(abs(a - b) / abs(b) for a, b in zip(runs["plain"], runs["noisy"]))
    assert gap > 1e-3, f"neftune_noise_alpha changed nothing (max rel {gap:.2e})"
    # Evaluation sees no noise: the eval loss of the noisy model equals HF's forward in eval mode.
    model.eval()
    with torch.no_grad():
        want = loss_of(model, *tp.padded_batch(one)).item()
    got = evals["noisy"][-1]
    assert abs(got - want) / abs(want) < 1e-4, f"eval loss {got} vs noise-free reference {want}"
    print(f"neftune: {tp.STEPS} losses equal peft + transformers' NEFTune hook on the same generator "
          f"(max rel {worst:.2e}); without noise they differ by up to {gap:.2e}; eval is noise-free ({got:.5f})")


def dora_adapter(model_dir, tmp):
    """A peft DoRA adapter with random B and a perturbed magnitude, so both matter from step 1."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", use_dora=True,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    path = os.path.join(tmp, "dora_init")
    model.save_pretrained(path)
    return path


def case_dora(binary, tmp):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    model_dir, data, rows = tp.setup(tmp, binary)
    adapter = dora_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, "dora.yaml"), model_dir, data, out,
                                                  ["finetuning_type: lora", f"adapter_name_or_path: {adapter}"])])
    model, params = lora_model(model_dir, adapter)
    assert any("lora_magnitude_vector" in n for n, _ in params), "peft's DoRA has no magnitude parameter"
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            foreach=False)
    worst = tp.compare_losses(tp.our_losses(out), train_reference(model, params, opt, rows, tp.STEPS))
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["use_dora"] is True, "adapter_config.json does not say use_dora"
    saved = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert sum("lora_magnitude_vector" in k for k in saved) == 2 * 7, sorted(saved)[:6]
    # The trained adapter in peft (DoRA) and our merged export in HF give our logits.
    err, err_merged = tp.adapter_reproduces_logits(binary, model_dir, rows, out, tmp, "DoRA")
    # A fresh DoRA adapter (use_dora: true, no adapter_name_or_path) starts with peft's magnitude ||W||_row.
    fresh = os.path.join(tmp, "fresh")
    run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, "fresh.yaml"), model_dir, data, fresh,
                                                  ["finetuning_type: lora", "use_dora: true", "lora_rank: 4",
                                                   "max_steps: 1", "learning_rate: 1.0e-12"])])
    init = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", use_dora=True, target_modules="all-linear"))
    want = {n: p for n, p in init.named_parameters() if "lora_magnitude_vector" in n}
    got = load_file(os.path.join(fresh, "adapter_model.safetensors"))
    worst_init = 0.0
    for n, p in want.items():
        key = n.replace(".default.weight", "")
        assert key in got, f"{key} missing from the fresh adapter"
        worst_init = max(worst_init, ((got[key] - p).abs().max() / p.abs().max()).item())
    assert worst_init < 1e-5, f"the initial DoRA magnitudes differ from peft's ||W||: rel {worst_init:.2e}"
    print(f"dora: {tp.STEPS} losses equal peft's DoRA (max rel {worst:.2e}); the adapter loads in peft (rel {err:.1e}) "
          f"and the merged export equals it (rel {err_merged:.1e}); fresh magnitudes equal peft's (rel {worst_init:.1e})")


def case_modules_to_save(binary, tmp):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    model_dir, data, rows = tp.setup(tmp, binary)
    torch.manual_seed(1)
    init = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"],
                                     modules_to_save=["embed_tokens", "lm_head"]))
    with torch.no_grad():
        for n, p in init.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
            if "modules_to_save" in n:  # the trained copies start apart from the base
                p.add_(torch.randn_like(p) * 0.01)
    adapter = os.path.join(tmp, "mts_init")
    init.save_pretrained(adapter)
    out = os.path.join(tmp, "out")
    run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, "mts.yaml"), model_dir, data, out,
                                                  ["finetuning_type: lora", f"adapter_name_or_path: {adapter}",
                                                   "weight_decay: 0.01"])])
    model, params = lora_model(model_dir, adapter)
    assert sum("modules_to_save" in n for n, _ in params) == 2, [n for n, _ in params]
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                            foreach=False)
    worst = tp.compare_losses(tp.our_losses(out), train_reference(model, params, opt, rows, tp.STEPS))
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert sorted(cfg["modules_to_save"] or []) == ["embed_tokens", "lm_head"], cfg["modules_to_save"]
    keys = set(load_file(os.path.join(out, "adapter_model.safetensors")))
    assert {"base_model.model.model.embed_tokens.weight", "base_model.model.lm_head.weight"} <= keys, sorted(keys)[:5]
    err, err_merged = tp.adapter_reproduces_logits(binary, model_dir, rows, out, tmp, "modules_to_save")
    # From scratch: additional_target names them; the adapter saves them as peft does and loads in peft.
    fresh = os.path.join(tmp, "fresh")
    run([binary, "train", "--config", tp.job_yaml(os.path.join(tmp, "fresh.yaml"), model_dir, data, fresh,
                                                  ["finetuning_type: lora", "additional_target: embed_tokens,lm_head",
                                                   "max_steps: 3"])])
    assert sorted(json.load(open(os.path.join(fresh, "adapter_config.json")))["modules_to_save"]) == \
        ["embed_tokens", "lm_head"]
    err_fresh, _ = tp.adapter_reproduces_logits(binary, model_dir, rows, fresh, tmp, "fresh modules_to_save",
                                                merged=False)
    print(f"modules_to_save: embed_tokens and lm_head trained next to LoRA: {tp.STEPS} losses equal peft's "
          f"modules_to_save (max rel {worst:.2e}); the adapter loads in peft (rel {err:.1e}), the merged export "
          f"equals it (rel {err_merged:.1e}); additional_target from scratch loads in peft too (rel {err_fresh:.1e})")


def case_refusals(binary, tmp):
    model_dir, data, _ = tp.setup(tmp, binary)
    out = os.path.join(tmp, "out")
    bad = [(["finetuning_type: full", "loraplus_lr_ratio: 16"], "LoRA+ is only for finetuning_type lora", None),
           (["neftune_noise_alpha: 5", "tensor_model_parallel_size: 2", "sequence_parallel: true"],
            "NEFTune with sequence_parallel is not supported", 2),
           (["finetuning_type: lora", "use_dora: true", "tensor_model_parallel_size: 2"],
            "DoRA under tensor parallelism", 2)]
    # A model whose head is tied to its embedding cannot train lm_head on its own.
    from transformers import LlamaConfig
    os.makedirs(os.path.join(tmp, "tied"))
    tied_dir, _, _ = tp.setup(os.path.join(tmp, "tied"), binary, make_config=lambda v: LlamaConfig(
        vocab_size=v, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True))
    bad.append(([f"model_name_or_path: {tied_dir}", "finetuning_type: lora", "additional_target: lm_head"],
                "lm_head is tied to embed_tokens", None))
    for extra, want, nproc in bad:
        cfg = tp.job_yaml(os.path.join(tmp, "bad.yaml"), model_dir, data, out, extra)
        cmd = [binary, "train", "--config", cfg]
        if nproc:
            cmd = [binary, "launch", "--nproc-per-node", str(nproc), "--"] + cmd[1:]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode != 0, f"{extra} was accepted"
        assert want in p.stderr + p.stdout, f"{extra}: the error does not say '{want}':\n{p.stderr[-2000:]}"
    print(f"refusals: {len(bad)} refused, each naming its key")


if __name__ == "__main__":
    run_cases({"loraplus": case_loraplus, "neftune": case_neftune, "dora": case_dora,
               "modules_to_save": case_modules_to_save, "refusals": case_refusals})
