#!/usr/bin/env python3
"""Training parity of anneal-train with HF transformers + peft + torch.optim.AdamW (peers nobody here wrote).

Cases (one ctest each):
  lora   : the same PEFT adapter (random, non-zero B) loaded on both sides; 20 steps; per-step losses equal
           (rel < 1e-4); our exported adapter loads in peft and reproduces our logits; `anneal-train export`
           (merged) loads in HF and reproduces them too.
  full   : full fine-tuning with weight decay (no decay on norms/biases); 20 steps; losses equal; the exported
           model loads in HF and equals the reference model's logits after training.
  resume : kill -9 at a checkpoint, resume from latest: final weights bit-identical to an uninterrupted run;
           then a corrupted checkpoint is refused with a message naming the file and offering the previous one.
  eval   : eval job loss/perplexity and MMLU-style accuracy equal references computed with HF here.
  moe_lora / moe_full : a tiny Qwen3-MoE (4 experts, top-2): LoRA on attention and expert projections (peft's
           per-expert module names) and full fine-tuning; per-step losses include router_aux_loss_coef * the
           load-balancing loss as HF adds it; the LoRA case also runs with activation checkpointing and checks
           the exported adapter in peft.
  deepseek_lora / deepseek_full : tiny DeepSeek-V3 (MLA with q_lora_rank, sigmoid routing with a correction bias,
           n_group, shared expert, one dense layer) under LoRA on every MLA and routed-expert projection (peft's
           module names; peft on transformers 5 adapts neither the dense MLP nor the shared experts, and neither
           do we), and a tiny DeepSeek-V2-Lite shape (plain q_proj, group-limited softmax routing) under full
           fine-tuning; 20 per-step losses equal (HF's DeepSeek models add no aux loss); the adapter loads in
           peft, the merged and the full exports load in HF.

Each step's batch is the whole 8-example dataset (global batch = 8), so the data order cannot matter.
"""
import json
import math
import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config, LlamaConfig, Qwen3MoeConfig
from transformers.optimization import get_scheduler

torch.set_num_threads(1)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import make_tokenizer, run, run_cases  # noqa: E402

STEPS = 20


def moe_config(vocab_size):
    # Every layer sparse (peft maps gate_proj/up_proj/down_proj targets onto the experts only); an aux loss
    # coefficient large enough to move the losses.
    return Qwen3MoeConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                          rms_norm_eps=1e-6, tie_word_embeddings=False, num_experts=4, num_experts_per_tok=2,
                          moe_intermediate_size=32, norm_topk_prob=True, router_aux_loss_coef=0.05,
                          output_router_logits=True)


DEEPSEEK = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, moe_intermediate_size=32,
                first_k_dense_replace=1)


def deepseek_v3_config(vocab_size):
    return DeepseekV3Config(vocab_size=vocab_size, **DEEPSEEK, q_lora_rank=48, n_routed_experts=8,
                            num_experts_per_tok=2, n_group=4, topk_group=2, n_shared_experts=1,
                            routed_scaling_factor=2.5, norm_topk_prob=True)


def deepseek_v2_lite_config(vocab_size):
    return DeepseekV2Config(vocab_size=vocab_size, **DEEPSEEK, q_lora_rank=None, n_routed_experts=8,
                            num_experts_per_tok=2, n_group=4, topk_group=2, topk_method="group_limited_greedy",
                            n_shared_experts=2, routed_scaling_factor=1.0)


def setup(tmp, binary, make_config=None):
    """A tokenizer, a random llama model (HF writes it; `make_config(vocab)` for another), and a pre-tokenized
    dataset of 8 rows."""
    tok = make_tokenizer(os.path.join(tmp, "tok"), 300)
    vocab = json.load(open(os.path.join(tok, "tokenizer.json")))
    vocab_size = max(vocab["model"]["vocab"].values()) + 1
    vocab_size = max([vocab_size] + [t["id"] + 1 for t in vocab["added_tokens"]])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    if make_config is not None:
        cfg = make_config(vocab_size)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
            if n.endswith("mlp.gate.weight"):
                p.copy_(torch.randn_like(p))  # decisive routing: no near-ties for rounding to flip
        for n, b in model.named_buffers():
            if n.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.2)
    model_dir = os.path.join(tmp, "base")
    model.save_pretrained(model_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.link(os.path.join(tok, f), os.path.join(model_dir, f))
    g = torch.Generator().manual_seed(5)
    rows = []
    for i in range(8):
        n = 12 + 3 * i
        ids = torch.randint(3, vocab_size, (n,), generator=g).tolist()
        labels = [-100] * 5 + ids[5:]  # a masked "prompt" of 5 tokens
        rows.append({"input_ids": ids, "labels": labels})
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    with open(os.path.join(data, "toy.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    json.dump({"toy": {"file_name": "toy.jsonl", "formatting": "tokenized"}}, open(os.path.join(data, "dataset_info.json"), "w"))
    return model_dir, data, rows


def job_yaml(path, model_dir, data, out, extra):
    lines = [f"model_name_or_path: {model_dir}", "stage: sft", "dataset: toy", f"dataset_dir: {data}",
             "template: empty", "cutoff_len: 256", f"output_dir: {out}", "per_device_train_batch_size: 4",
             "gradient_accumulation_steps: 2", "learning_rate: 1.0e-3", f"max_steps: {STEPS}",
             "lr_scheduler_type: cosine", "warmup_steps: 2", "max_grad_norm: 1.0", "logging_steps: 1",
             "save_strategy: \"no\"", "seed: 3", "overwrite_output_dir: true"]
    keys = {e.split(":")[0] for e in extra}
    lines = [l for l in lines if l.split(":")[0] not in keys] + extra
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def padded_batch(rows):
    """input_ids, labels (-100 on padding), attention_mask [B, T] of rows right-padded to the longest."""
    T = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return ids, labels, mask


def reference_losses(model, rows, params, weight_decay=0.0, decay_names=None, schedule="cosine", aux=False):
    """HF-style loop: sum of token CE over the whole batch / label tokens; clip 1.0; AdamW; cosine + warmup.
    aux: + router_aux_loss_coef * the model's load-balancing loss (padding masked), as Qwen3MoeForCausalLM adds
    it to its loss."""
    groups = [{"params": [p for n, p in params if decay_names is None or n in decay_names], "weight_decay": weight_decay},
              {"params": [p for n, p in params if decay_names is not None and n not in decay_names], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = get_scheduler(schedule, opt, num_warmup_steps=2, num_training_steps=STEPS)
    ids, labels, mask = padded_batch(rows)
    losses = []
    model.train()
    for _ in range(STEPS):
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits.float()
        shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        n_tok = (shift_labels != -100).sum()
        loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum") / n_tok
        if aux:
            loss = loss + model.config.router_aux_loss_coef * out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def our_losses(out):
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        return [json.loads(l)["loss"] for l in f if "loss" in json.loads(l)]


def compare_losses(ours, ref, tol=1e-4):
    assert len(ours) == len(ref) == STEPS, f"{len(ours)} vs {len(ref)} steps"
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, ref))
    assert worst < tol, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nref  {ref}"
    assert ref[-1] < ref[0], "the reference loss did not fall: the test would prove nothing"
    return worst


def our_logits(binary, model_dir, ids, tmp, adapter=None):
    inp = os.path.join(tmp, "in.safetensors")
    save_file({"input_ids": ids.contiguous()}, inp)
    cmd = [binary, "model", "logits", "--model", model_dir, "--inputs", inp, "--out", os.path.join(tmp, "lo.safetensors")]
    if adapter:
        cmd += ["--adapter", adapter]
    run(cmd)
    return load_file(os.path.join(tmp, "lo.safetensors"))["logits"]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def adapter_reproduces_logits(binary, model_dir, rows, out, tmp, what, merged=True):
    """The adapter in `out` loaded in peft on the base gives our logits (with it) on a row, and, with `merged`, so
    does our merged export loaded in HF transformers. Returns (peft rel, merged rel or None)."""
    from peft import PeftModel
    ids = torch.tensor([rows[7]["input_ids"]])
    mine = our_logits(binary, model_dir, ids, tmp, adapter=out)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=ids).logits.float()
    err = rel(mine, theirs)
    assert err < 1e-5, f"peft-loaded {what} adapter logits differ from ours: rel {err:.2e}"
    if not merged:
        return err, None
    merged_dir = os.path.join(tmp, "merged")
    run([binary, "export", "--model", model_dir, "--adapter", out, "--out", merged_dir])
    hf_merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        err2 = rel(hf_merged(input_ids=ids).logits.float(), mine)
    assert err2 < 1e-5, f"merged {what} export logits differ: rel {err2:.2e}"
    return err, err2


def initial_adapter(model_dir, tmp, rslora=False):
    """A peft adapter on every projection with random non-zero B (so it matters from step 1), saved for both
    sides to start from."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                           use_rslora=rslora,
                                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    path = os.path.join(tmp, "init_adapter")
    peft_model.save_pretrained(path)
    return path


def case_lora(binary, tmp, rslora=False, schedule="cosine", quick=False):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary)
    init_adapter = initial_adapter(model_dir, tmp, rslora)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", f"lr_scheduler_type: {schedule}"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    if quick:
        ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                              init_adapter, is_trainable=True)
        params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
        worst = compare_losses(ours, reference_losses(ref_model, rows, params, schedule=schedule))
        print(f"lora with the {schedule} schedule: {STEPS} losses equal peft + transformers' scheduler "
              f"(max rel {worst:.2e})")
        return
    # Activation checkpointing recomputes the layers in backward: the same losses to rounding. This flat config
    # checkpoints by default (LLaMA-Factory's rule); the comparison run turns it off.
    out_ckpt = os.path.join(tmp, "out-ckpt")
    run([binary, "train", "--config", cfg, "--set", f"output_dir={out_ckpt}", "--set",
         "disable_gradient_checkpointing=true"])
    ckpt_losses = our_losses(out_ckpt)
    ckpt_err = max(abs(a - b) / abs(b) for a, b in zip(ckpt_losses, ours))
    assert len(ckpt_losses) == STEPS and ckpt_err < 1e-6, f"gradient_checkpointing changes the losses ({ckpt_err:.2e})"
    ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                          init_adapter, is_trainable=True)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    ref = reference_losses(ref_model, rows, params, schedule=schedule)
    worst = compare_losses(ours, ref)
    if rslora:
        print(f"lora_rslora: use_rslora (alpha/sqrt(r)) with the {schedule} schedule: {STEPS} losses equal peft "
              f"(max rel {worst:.2e})")
        return
    print(f"lora: {STEPS} per-step losses equal peft + torch.optim.AdamW (max rel diff {worst:.2e}); "
          f"with activation checkpointing too (rel {ckpt_err:.1e})")
    # The exported adapter loads in peft unchanged and reproduces our logits; so does the merged export in HF.
    err, err2 = adapter_reproduces_logits(binary, model_dir, rows, out, tmp, "LoRA")
    print(f"lora: exported adapter in peft (rel {err:.1e}) and merged model in HF (rel {err2:.1e}) reproduce our logits")


def case_lora_rslora(binary, tmp):
    case_lora(binary, tmp, rslora=True, schedule="linear")


def case_schedules(binary, tmp):
    for schedule in ("constant", "constant_with_warmup"):
        sub = os.path.join(tmp, schedule)
        os.makedirs(sub)
        case_lora(binary, sub, schedule=schedule, quick=True)


def case_bf16(binary, tmp):
    """bf16 base weights, fp32 LoRA adapters (peft's autocast_adapter_dtype) and fp32 optimizer state: both
    start from the same adapter; the per-step losses follow peft's bf16 run to bf16 rounding."""
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary)
    init_adapter = initial_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", "bf16: true"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16),
                                          init_adapter, is_trainable=True)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for _, p in params), "peft did not keep the adapters in fp32"
    worst = compare_losses(ours, reference_losses(ref_model, rows, params), tol=2e-3)
    print(f"bf16: {STEPS} per-step losses follow peft's bf16 run (max rel {worst:.2e})")


def case_full(binary, tmp):
    model_dir, data, rows = setup(tmp, binary)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out, ["finetuning_type: full", "weight_decay: 0.01"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = list(ref_model.named_parameters())
    decay = {n for n, _ in params if not any(k in n for k in ("bias", "norm"))}
    ref = reference_losses(ref_model, rows, params, weight_decay=0.01, decay_names=decay)
    worst = compare_losses(ours, ref)
    err = exported_error(out, ref_model, rows)
    assert err < 1e-3, f"exported model differs from the reference-trained one: rel {err:.2e}"
    print(f"full: {STEPS} per-step losses equal torch.optim.AdamW with decay groups (max rel {worst:.2e}); "
          f"the exported model loads in HF (rel {err:.1e} to the reference model)")


def exported_error(out, ref_model, rows):
    """Relative error between the logits of the HF model we exported to `out` and the reference-trained one."""
    ids = torch.tensor([rows[3]["input_ids"]])
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref_model.eval()
    with torch.no_grad():
        return rel(exported(input_ids=ids).logits, ref_model(input_ids=ids).logits)


def case_freeze(binary, tmp):
    model_dir, data, rows = setup(tmp, binary)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: freeze", "freeze_trainable_layers: 1", "freeze_trainable_modules: mlp"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for n, p in ref_model.named_parameters():
        p.requires_grad_(n.startswith("model.layers.1.mlp."))
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    assert len(params) == 3, [n for n, _ in params]
    ref = reference_losses(ref_model, rows, params)
    worst = compare_losses(ours, ref)
    exported = load_file(os.path.join(out, "model.safetensors"))
    base = load_file(os.path.join(model_dir, "model.safetensors"))
    changed = sorted(k for k in base if not torch.equal(base[k], exported[k]))
    assert changed == sorted(n + "" for n, _ in params), f"freeze changed {changed}"
    print(f"freeze: last layer's MLP trained ({len(changed)} tensors changed, the rest bit-identical); "
          f"{STEPS} losses equal torch.optim.AdamW (max rel {worst:.2e})")


def case_resume(binary, tmp):
    model_dir, data, rows = setup(tmp, binary)
    common = ["finetuning_type: lora", "lora_rank: 4", "lora_target: all", "save_strategy: steps", "save_steps: 5"]
    straight = os.path.join(tmp, "straight")
    run([binary, "train", "--config", job_yaml(os.path.join(tmp, "a.yaml"), model_dir, data, straight, common)])
    out = os.path.join(tmp, "killed")
    cfg = job_yaml(os.path.join(tmp, "b.yaml"), model_dir, data, out, common)
    r, w = os.pipe()
    proc = subprocess.Popen([binary, "train", "--config", cfg], pass_fds=(w,), env=dict(os.environ, ANNEAL_EVENTS_FD=str(w)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    killed_at = None
    with os.fdopen(r) as events:
        for line in events:
            ev = json.loads(line)
            if ev["type"] == "checkpoint" and ev["step"] == 10:
                proc.send_signal(signal.SIGKILL)
                killed_at = ev["step"]
                break
    proc.wait()
    assert killed_at == 10 and proc.returncode == -signal.SIGKILL, f"trainer not killed mid-run (rc {proc.returncode})"
    run([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"])
    a = load_file(os.path.join(straight, "adapter_model.safetensors"))
    b = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill -9 and resume"
    assert our_losses(straight) == our_losses(out), "loss curves differ after resume"
    print("resume: kill -9 at step 10, resume from latest -> final adapter bit-identical, same loss curve")
    # A corrupted checkpoint is refused, naming the file and offering the previous one.
    victim = os.path.join(out, "checkpoint-20", "adapter_model.safetensors")
    with open(victim, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    p = run([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"], check=False)
    assert p.returncode == 1, p.stderr
    assert "file adapter_model.safetensors fails its sha256 checksum (corrupt)" in p.stderr, p.stderr
    assert "checkpoint-15 is offered" in p.stderr, p.stderr
    print("resume: a corrupted checkpoint is refused and the previous one is offered:", p.stderr.strip().splitlines()[-1])


def case_eval(binary, tmp):
    model_dir, data, rows = setup(tmp, binary)
    task_dir = os.path.join(tmp, "mmlu")
    os.makedirs(task_dir)
    qs = [["What is 2+2?", "3", "4", "5", "6", "B"], ["Colour of the sky?", "green", "red", "blue", "black", "C"],
          ["Largest planet?", "Jupiter", "Mars", "Venus", "Earth", "A"], ["Opposite of up?", "left", "right", "in", "down", "D"]]
    with open(os.path.join(task_dir, "toy_test.csv"), "w") as f:
        for q in qs:
            f.write(",".join(f'"{x}"' for x in q) + "\n")
    with open(os.path.join(task_dir, "toy_dev.csv"), "w") as f:
        f.write('"1+1?","2","3","4","5","A"\n')
    out = os.path.join(tmp, "eval")
    cfg = os.path.join(tmp, "eval.yaml")
    with open(cfg, "w") as f:
        f.write(f"kind: eval\nmodel_name_or_path: {model_dir}\ndataset: toy\ndataset_dir: {data}\ntemplate: empty\n"
                f"output_dir: {out}\ncutoff_len: 256\neval:\n  tasks: [loss, mmlu]\n  task_dir: {task_dir}\n  n_shot: 1\n")
    run([binary, "eval", "--config", cfg])
    res = json.load(open(os.path.join(out, "eval_results.json")))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            lab = torch.tensor([r["labels"]])
            lg = model(input_ids=ids).logits.float()[0, :-1]
            tgt = lab[0, 1:]
            total += torch.nn.functional.cross_entropy(lg, tgt, ignore_index=-100, reduction="sum").item()
            n += (tgt != -100).sum().item()
    ref_loss = total / n
    got = res["loss"]["eval_loss"]
    assert abs(got - ref_loss) / ref_loss < 1e-5, f"eval loss {got} vs HF {ref_loss}"
    assert abs(res["loss"]["perplexity"] - math.exp(ref_loss)) / math.exp(ref_loss) < 1e-5
    # MMLU reference with the HF tokenizer and model.
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    choice = [tok.encode(c, add_special_tokens=False)[-1] for c in (" A", " B", " C", " D")]
    fmt = lambda q, ans: q[0] + "".join(f"\n{l}. {x}" for l, x in zip("ABCD", q[1:5])) + "\nAnswer:" + (f" {q[5]}\n\n" if ans else "")
    header = "The following are multiple choice questions (with answers) about toy.\n\n" + fmt(["1+1?", "2", "3", "4", "5", "A"], True)
    correct = 0
    with torch.no_grad():
        for q in qs:
            ids = torch.tensor([tok.encode(header + fmt(q, False), add_special_tokens=False)])
            last = model(input_ids=ids).logits[0, -1]
            correct += "ABCD"[int(torch.stack([last[c] for c in choice]).argmax())] == q[5]
    assert res["mmlu"]["accuracy"] == correct / len(qs), f"mmlu accuracy {res['mmlu']['accuracy']} vs HF {correct / len(qs)}"
    print(f"eval: loss {got:.6f} = HF {ref_loss:.6f}; perplexity {res['loss']['perplexity']:.3f}; "
          f"mmlu accuracy {res['mmlu']['accuracy']} = HF")


def per_expert_adapter(model_dir, tmp, config):
    """A LoRA adapter in peft's per-module layout (what peft writes for Qwen3-MoE under transformers 4, and what
    peft converts onto transformers 5's fused experts): attention and every expert's gate/up/down projection,
    random A and non-zero B."""
    from peft import LoraConfig
    g = torch.Generator().manual_seed(11)
    r, C, F, D = 4, config.hidden_size, config.moe_intermediate_size, config.head_dim
    shapes = {"self_attn.q_proj": (C, config.num_attention_heads * D), "self_attn.k_proj": (C, config.num_key_value_heads * D),
              "self_attn.v_proj": (C, config.num_key_value_heads * D), "self_attn.o_proj": (config.num_attention_heads * D, C)}
    for e in range(config.num_experts):
        shapes.update({f"mlp.experts.{e}.gate_proj": (C, F), f"mlp.experts.{e}.up_proj": (C, F),
                       f"mlp.experts.{e}.down_proj": (F, C)})
    tensors = {}
    for i in range(config.num_hidden_layers):
        for name, (fan_in, fan_out) in shapes.items():
            key = f"base_model.model.model.layers.{i}.{name}"
            tensors[key + ".lora_A.weight"] = (torch.rand(r, fan_in, generator=g) * 2 - 1) / math.sqrt(fan_in)
            tensors[key + ".lora_B.weight"] = torch.randn(fan_out, r, generator=g) * 0.05
    path = os.path.join(tmp, "init_adapter")
    LoraConfig(r=r, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", base_model_name_or_path=model_dir,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
               ).save_pretrained(path)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    return path


MOE_BATCH = ["per_device_train_batch_size: 8", "gradient_accumulation_steps: 1"]  # the aux loss is per micro-batch


def case_moe_lora(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, moe_config)
    config = moe_config(0)
    adapter = per_expert_adapter(model_dir, tmp, config)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   MOE_BATCH + ["finetuning_type: lora", f"adapter_name_or_path: {adapter}"])
    run([binary, "train", "--config", cfg, "--set", "disable_gradient_checkpointing=true"])
    ours = our_losses(out)
    ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                          adapter, is_trainable=True)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    assert any("experts" in n for n, _ in params), "peft put no adapter on the experts"
    # peft 0.21 loads a per-expert adapter onto transformers 5's fused gate_up_proj as one rank-2r adapter per
    # expert whose B is block-diagonal (gate rows use the gate ranks, up rows the up ranks). Its zero
    # off-diagonal blocks are trainable there, so training would mix gate and up; per-module LoRA (peft on
    # transformers 4, and ours) keeps them zero. Masking their gradients gives the per-module adapter exactly.
    for n, p in params:
        if "experts" in n and "lora_B" in n:
            keep = (p.detach() != 0).to(p.dtype)
            p.register_hook(lambda g, keep=keep: g * keep)
    worst = compare_losses(ours, reference_losses(ref_model, rows, params, aux=True))
    print(f"moe_lora: {STEPS} per-step losses (with the aux loss) equal peft + torch.optim.AdamW (max rel {worst:.2e})")
    out_ckpt = os.path.join(tmp, "out-ckpt")
    run([binary, "train", "--config", cfg, "--set", f"output_dir={out_ckpt}"])
    ckpt_err = max(abs(a - b) / abs(b) for a, b in zip(our_losses(out_ckpt), ours))
    assert ckpt_err < 1e-6, f"gradient_checkpointing changes the MoE losses ({ckpt_err:.2e})"
    print(f"moe_lora: with activation checkpointing the same losses (rel {ckpt_err:.1e})")
    err, _ = adapter_reproduces_logits(binary, model_dir, rows, out, tmp, "MoE", merged=False)
    print(f"moe_lora: the exported adapter loads in peft and reproduces our logits (rel {err:.1e})")


def case_moe_full(binary, tmp):
    model_dir, data, rows = setup(tmp, binary, moe_config)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out, MOE_BATCH + ["finetuning_type: full"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = list(ref_model.named_parameters())
    worst = compare_losses(ours, reference_losses(ref_model, rows, params, aux=True))
    err = exported_error(out, ref_model, rows)
    assert err < 1e-3, f"exported MoE model differs from the reference-trained one: rel {err:.2e}"
    print(f"moe_full: {STEPS} per-step losses (with the aux loss) equal torch.optim.AdamW (max rel {worst:.2e}); "
          f"the export loads in HF (rel {err:.1e})")


def deepseek_adapter(model_dir, tmp, config):
    """A peft adapter (per-module layout) on the projections of a DeepSeek model peft adapts on transformers 5:
    MLA's and every routed expert's (not the dense MLP's or the shared experts'); random A, non-zero B."""
    from peft import LoraConfig
    g = torch.Generator().manual_seed(13)
    r, C, H = 4, config.hidden_size, config.num_attention_heads
    qk = config.qk_nope_head_dim + config.qk_rope_head_dim
    attn = {"self_attn.kv_a_proj_with_mqa": (C, config.kv_lora_rank + config.qk_rope_head_dim),
            "self_attn.kv_b_proj": (config.kv_lora_rank, H * (config.qk_nope_head_dim + config.v_head_dim)),
            "self_attn.o_proj": (H * config.v_head_dim, C)}
    if config.q_lora_rank is None:
        attn["self_attn.q_proj"] = (C, H * qk)
    else:
        attn.update({"self_attn.q_a_proj": (C, config.q_lora_rank), "self_attn.q_b_proj": (config.q_lora_rank, H * qk)})
    tensors = {}
    for i in range(config.num_hidden_layers):
        shapes = dict(attn)
        if i >= config.first_k_dense_replace:
            F = config.moe_intermediate_size
            for e in range(config.n_routed_experts):
                shapes.update({f"mlp.experts.{e}.gate_proj": (C, F), f"mlp.experts.{e}.up_proj": (C, F),
                               f"mlp.experts.{e}.down_proj": (F, C)})
        for name, (fan_in, fan_out) in shapes.items():
            key = f"base_model.model.model.layers.{i}.{name}"
            tensors[key + ".lora_A.weight"] = (torch.rand(r, fan_in, generator=g) * 2 - 1) / math.sqrt(fan_in)
            tensors[key + ".lora_B.weight"] = torch.randn(fan_out, r, generator=g) * 0.05
    path = os.path.join(tmp, "init_adapter")
    LoraConfig(r=r, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", base_model_name_or_path=model_dir,
               target_modules=["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
                               "gate_proj", "up_proj", "down_proj"]).save_pretrained(path)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    return path


def case_deepseek_lora(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, deepseek_v3_config)
    adapter = deepseek_adapter(model_dir, tmp, deepseek_v3_config(0))
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   MOE_BATCH + ["finetuning_type: lora", f"adapter_name_or_path: {adapter}"])
    run([binary, "train", "--config", cfg])  # with activation checkpointing (the default here)
    ours = our_losses(out)
    ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                          adapter, is_trainable=True)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    for needed in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "mlp.experts"):
        assert any(needed in n for n, _ in params), f"peft put no adapter on {needed}"
    for n, p in params:  # peft's fused-expert adapter: keep its zero blocks zero (see case_moe_lora)
        if "experts" in n and "shared_experts" not in n and "lora_B" in n:
            keep = (p.detach() != 0).to(p.dtype)
            p.register_hook(lambda g, keep=keep: g * keep)
    worst = compare_losses(ours, reference_losses(ref_model, rows, params))
    print(f"deepseek_lora: {STEPS} per-step losses equal peft + torch.optim.AdamW (max rel {worst:.2e})")
    # lora_target all (LLaMA-Factory's default) adapts the same modules as peft does on transformers 5.
    out_all = os.path.join(tmp, "out-all")
    run([binary, "train", "--config", job_yaml(os.path.join(tmp, "all.yaml"), model_dir, data, out_all,
                                               MOE_BATCH + ["finetuning_type: lora", "lora_target: all",
                                                            "max_steps: 1"])])
    ours_all = sorted(load_file(os.path.join(out_all, "adapter_model.safetensors")))
    from peft import LoraConfig, get_peft_model
    theirs_all = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), LoraConfig(
        r=8, target_modules=["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj",
                             "up_proj", "down_proj"]))
    peft_modules = {n.split(".lora_")[0].replace("base_model.model.", "").replace(".base_layer", "")
                    for n, _ in theirs_all.named_parameters() if ".lora_" in n}
    our_modules = {n.split(".lora_")[0].replace("base_model.model.", "") for n in ours_all}
    our_fused = {m.rsplit(".experts.", 1)[0] + ".experts" if ".experts." in m else m for m in our_modules}
    assert our_fused == peft_modules, f"lora_target all adapts other modules than peft:\n{our_fused ^ peft_modules}"
    assert not any("shared_experts" in m or ".mlp.gate_proj" in m for m in our_modules), our_modules
    # An adapter that does adapt a shared expert (trained elsewhere) is refused by name, not silently dropped.
    shared = os.path.join(tmp, "shared_adapter")
    os.makedirs(shared)
    for f in ("adapter_config.json",):
        os.link(os.path.join(adapter, f), os.path.join(shared, f))
    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.mlp.shared_experts.up_proj"
    tensors[key + ".lora_A.weight"] = torch.zeros(4, 64)
    tensors[key + ".lora_B.weight"] = torch.zeros(32, 4)
    save_file(tensors, os.path.join(shared, "adapter_model.safetensors"))
    p = subprocess.run([binary, "train", "--config", job_yaml(
        os.path.join(tmp, "shared.yaml"), model_dir, data, os.path.join(tmp, "out-shared"),
        MOE_BATCH + ["finetuning_type: lora", f"adapter_name_or_path: {shared}"])], capture_output=True, text=True)
    assert p.returncode != 0 and "shared_experts.up_proj.lora_A.weight" in p.stderr and \
        "outside the routed experts" in p.stderr, p.stderr[-1500:]
    print("deepseek_lora: lora_target all adapts what peft adapts; an adapter on a shared expert is refused")
    err, err2 = adapter_reproduces_logits(binary, model_dir, rows, out, tmp, "DeepSeek")
    print(f"deepseek_lora: the adapter loads in peft (rel {err:.1e}), the merged export in HF (rel {err2:.1e})")


def case_deepseek_full(binary, tmp):
    model_dir, data, rows = setup(tmp, binary, deepseek_v2_lite_config)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   MOE_BATCH + ["finetuning_type: full", "weight_decay: 0.01"])
    run([binary, "train", "--config", cfg])
    ours = our_losses(out)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = list(ref_model.named_parameters())
    decay = {n for n, _ in params if not any(k in n for k in ("bias", "norm"))}
    worst = compare_losses(ours, reference_losses(ref_model, rows, params, weight_decay=0.01, decay_names=decay))
    err = exported_error(out, ref_model, rows)
    assert err < 1e-3, f"exported DeepSeek model differs from the reference-trained one: rel {err:.2e}"
    print(f"deepseek_full: {STEPS} per-step losses equal torch.optim.AdamW (max rel {worst:.2e}); "
          f"the export loads in HF (rel {err:.1e})")


if __name__ == "__main__":
    run_cases({"lora": case_lora, "lora_rslora": case_lora_rslora, "full": case_full, "freeze": case_freeze,
               "resume": case_resume, "eval": case_eval, "schedules": case_schedules, "bf16": case_bf16,
               "moe_lora": case_moe_lora, "moe_full": case_moe_full, "deepseek_lora": case_deepseek_lora,
               "deepseek_full": case_deepseek_full})
