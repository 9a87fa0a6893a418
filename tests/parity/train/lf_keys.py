#!/usr/bin/env python3
"""LLaMA-Factory keys behave in anneal-train as in LLaMA-Factory / HF's Trainer (docs/job-spec.md, "LLaMA-Factory
keys"), one case per key (one ctest each):

  save_strategy   : epoch saves at each epoch's end, "no" never, steps with save_steps 0 only at the end, steps
                    with save_steps 3 at 3 and at the end (HF's DefaultFlowCallback)
  eval_strategy   : epoch evaluates at each epoch's end, on eval_dataset (no val_size split); steps with
                    eval_steps 0 every logging_steps and at the end
  stage_pt        : raw text, no template: one optimizer step per cutoff_len block (the total computed here with
                    HF tokenizers: sum of (tokens + eos) // cutoff_len), or per text with packing: false
  gradient_ckpt   : a flat config checkpoints activations (LLaMA-Factory's default), disable_gradient_checkpointing
                    turns it off, and the losses are the same
  deepspeed       : a ZeRO-1 DeepSpeed JSON shards the optimizer state; LLaMA-Factory's ZeRO-3 JSON is stage 3;
                    its CPU offload JSONs run unchanged (one rank: the optimizer on the host); NVMe offload is
                    refused naming it
  refusals        : fp16, optim adamw_8bit, flash_attn disabled, stage ppo: exit 2 with what to use instead

The model is `anneal-train model init --preset tiny`; data are 8 pre-tokenized rows (4 per step: 2 steps an
epoch) or a small text file.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, make_tokenizer, run, run_cases  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello there", "Anneal trains models on a cluster.",
         "a b c d e f g h i j k l m n o p", "Short one.", "Another line of plain pre-training text here.",
         "The end of the corpus, with a few more words to make a block."]


def setup(tmp, binary):
    tok = make_tokenizer(os.path.join(tmp, "tok"), 300)
    model = os.path.join(tmp, "m")
    run([binary, "model", "init", "--arch", "llama", "--preset", "tiny", "--tokenizer", tok, "--out", model])
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    for name, seed in (("toy", 1), ("held", 2)):
        with open(os.path.join(data, f"{name}.jsonl"), "w") as f:
            for i in range(8):
                ids = [3 + (seed * 31 + i * 7 + k * 13) % 250 for k in range(10 + i)]
                f.write(json.dumps({"input_ids": ids}) + "\n")
    with open(os.path.join(data, "texts.jsonl"), "w") as f:
        for t in TEXTS:
            f.write(json.dumps({"text": t}) + "\n")
    json.dump({"toy": {"file_name": "toy.jsonl", "formatting": "tokenized"},
               "held": {"file_name": "held.jsonl", "formatting": "tokenized"},
               "texts": {"file_name": "texts.jsonl", "columns": {"prompt": "text"}}},
              open(os.path.join(data, "dataset_info.json"), "w"))
    return model, data


def train(binary, tmp, name, model, data, extra, check=True):
    out = os.path.join(tmp, name)
    lines = [f"model_name_or_path: {model}", "dataset: toy", f"dataset_dir: {data}", "template: empty",
             "cutoff_len: 64", f"output_dir: {out}", "per_device_train_batch_size: 4", "num_train_epochs: 2",
             "learning_rate: 1.0e-3", "logging_steps: 1", "seed: 3", f"tokenized_cache_dir: {tmp}/cache"]
    keys = {e.split(":")[0] for e in extra}
    lines = [l for l in lines if l.split(":")[0] not in keys] + extra
    cfg = os.path.join(tmp, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out, run([binary, "train", "--config", cfg], check=check)


def checkpoints(out):
    return sorted(int(d.split("-")[1]) for d in os.listdir(out) if d.startswith("checkpoint-") and d[11:].isdigit())


def log(out, key):
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        return [json.loads(l) for l in f if key in json.loads(l)]


def case_save_strategy(binary, tmp):
    model, data = setup(tmp, binary)
    cases = {"epoch": (["save_strategy: epoch"], [2, 4]), "no": (["save_strategy: \"no\""], []),
             "end": (["save_strategy: steps", "save_steps: 0"], [4]), "steps": (["save_steps: 3"], [3, 4])}
    for name, (extra, want) in cases.items():
        out, _ = train(binary, tmp, name, model, data, extra)
        assert checkpoints(out) == want, f"{extra}: checkpoints at {checkpoints(out)}, expected {want}"
        assert os.path.exists(os.path.join(out, "model.safetensors")) or os.path.exists(
            os.path.join(out, "adapter_model.safetensors")), f"{extra}: no exported result"


def case_eval_strategy(binary, tmp):
    model, data = setup(tmp, binary)
    out, _ = train(binary, tmp, "epoch", model, data, ["eval_dataset: held", "eval_strategy: epoch", "save_steps: 0"])
    steps = [e["current_steps"] for e in log(out, "eval_loss")]
    assert steps == [2, 4], f"eval_strategy epoch with eval_dataset evaluated at {steps}, expected [2, 4]"
    out2, _ = train(binary, tmp, "logging", model, data, ["val_size: 2", "eval_strategy: steps", "eval_steps: 0",
                                                         "logging_steps: 3", "num_train_epochs: 4"])
    total = log(out2, "loss")[-1]["total_steps"]
    steps = [e["current_steps"] for e in log(out2, "eval_loss")]
    want = sorted(set(list(range(3, total + 1, 3)) + [total]))
    assert steps == want, f"eval_steps 0 (= logging_steps 3) evaluated at {steps}, expected {want}"


def case_stage_pt(binary, tmp):
    model, data = setup(tmp, binary)
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(tmp, "tok"))
    cutoff = 8
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in TEXTS)  # + eos
    blocks = tokens // cutoff
    base = ["stage: pt", "dataset: texts", "template: default", f"cutoff_len: {cutoff}",
            "per_device_train_batch_size: 1", "num_train_epochs: 1"]
    out, _ = train(binary, tmp, "pt", model, data, base)
    total = log(out, "loss")[-1]["total_steps"]
    assert total == blocks, f"stage pt trained {total} steps, expected one per block: {tokens} tokens // {cutoff}"
    out, _ = train(binary, tmp, "pt-unpacked", model, data, base + ["packing: false"])
    total = log(out, "loss")[-1]["total_steps"]
    assert total == len(TEXTS), f"stage pt without packing trained {total} steps, expected {len(TEXTS)} texts"


def case_gradient_ckpt(binary, tmp):
    model, data = setup(tmp, binary)
    on, r_on = train(binary, tmp, "on", model, data, ["save_strategy: \"no\""])
    off, r_off = train(binary, tmp, "off", model, data, ["save_strategy: \"no\"", "disable_gradient_checkpointing: true"])
    assert "activation checkpointing on" in r_on.stderr, r_on.stderr[-2000:]
    assert "activation checkpointing off" in r_off.stderr, r_off.stderr[-2000:]
    a = [e["loss"] for e in log(on, "loss")]
    b = [e["loss"] for e in log(off, "loss")]
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    assert len(a) == len(b) and worst < 1e-6, f"activation checkpointing changes the losses ({worst:.2e})"


def case_deepspeed(binary, tmp):
    model, data = setup(tmp, binary)
    ds1, ds3 = os.path.join(tmp, "ds_z1.json"), os.path.join(tmp, "ds_z3.json")
    json.dump({"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 1}}, open(ds1, "w"))
    json.dump({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}, open(ds3, "w"))
    _, r = train(binary, tmp, "z1", model, data, [f"deepspeed: {ds1}", "save_strategy: \"no\""])
    # One rank: the stage the JSON asked for is reported, with nothing to shard.
    assert "zero_stage 1 asked" in r.stderr, r.stderr[-2000:]
    # LLaMA-Factory's ZeRO-3 config unchanged: stage 3 (nothing to shard on one rank).
    _, r = train(binary, tmp, "z3", model, data,
                 [f"deepspeed: {os.path.join(ROOT, 'examples/deepspeed/ds_z3_config.json')}", "save_strategy: \"no\""])
    assert "zero_stage 3 asked" in r.stderr, r.stderr[-2000:]
    _, r = train(binary, tmp, "z3-nvme", model, data, [f"deepspeed: {ds3}"], check=False)
    assert r.returncode == 2 and "offloads to nvme (zero_optimization.offload_param.device), which is not built" in \
        r.stderr, (r.returncode, r.stderr)
    # LLaMA-Factory's CPU offload configs unchanged: on one rank nothing is sharded, so only the optimizer moves to
    # the host (its state and step), whichever file asked.
    for name in ("ds_z2_offload_config.json", "ds_z3_offload_config.json"):
        _, r = train(binary, tmp, name.split(".")[0], model, data,
                     [f"deepspeed: {os.path.join(ROOT, 'examples/deepspeed', name)}", "save_strategy: \"no\""])
        assert "offloaded to host memory (optimizer): " in r.stderr, r.stderr[-2000:]


def case_refusals(binary, tmp):
    model, data = setup(tmp, binary)
    cases = [("fp16: true", "use bf16: true"), ("optim: adamw_8bit", "use adamw_torch"),
             ("flash_attn: disabled", "use auto"), ("stage: ppo", "use sft, pt, dpo, rm or kto")]
    for line, want in cases:
        _, r = train(binary, tmp, "refused", model, data, [line], check=False)
        key = line.split(":")[0]
        assert r.returncode == 2 and f"'{key}'" in r.stderr and want in r.stderr, (line, r.returncode, r.stderr[-800:])


if __name__ == "__main__":
    run_cases({"save_strategy": case_save_strategy, "eval_strategy": case_eval_strategy, "stage_pt": case_stage_pt,
               "gradient_ckpt": case_gradient_ckpt, "deepspeed": case_deepspeed, "refusals": case_refusals})
