#!/usr/bin/env python3
"""QLoRA (quantization_bit: 4) against bitsandbytes, peft and transformers (peers nobody here wrote).

Cases (one ctest each):
  quant4  : `anneal-train model quantize` on fp32 and bf16 tensors (NF4 and FP4, with and without double
            quantization; a partial last block, an odd size, an all-zero block, several 256-block groups) gives
            bitsandbytes.functional.quantize_4bit's packed bytes, absmax (the 8-bit absmax, the second-level
            absmax and the offset with double quantization) and dequantize_4bit's values, bit for bit. bnb 0.50
            runs quantize_4bit (torch code) and its blockwise 8-bit and 4-bit dequantization (its C++ CPU kernels)
            on the CPU, so nothing is compared with a re-implementation.
  qlora   : 20 QLoRA steps (NF4, double quantization; every projection of a llama model 4-bit, the head not)
            equal (rel < 1e-5) a peft LoRA run on a base whose linear weights are bitsandbytes' dequantized values
            (the math QLoRA does) and a genuine peft QLoRA run (transformers' BitsAndBytesConfig, bnb's
            Linear4bit, peft's lora.bnb.Linear4bit, on the CPU); FP4 without double quantization equals its
            reference too. The exported adapter loads in peft on the unquantized base and reproduces our logits
            there. The holdings line and the memory plan count the 4-bit bytes.
  qlora_bf16: bf16: true follows peft's bf16 QLoRA (bnb_4bit_compute_dtype bf16) to bf16 rounding (rel < 2e-3).
  qlora_parallel: tensor parallel 2, pipeline parallel 2 and data parallel 2 QLoRA runs give the single-process QLoRA losses
            (rel < 1e-5): every rank keeps its piece of the whole tensor's quantization.
  qlora_resume: a QLoRA checkpoint holds the adapter and optimizer state only; resuming from it gives the
            uninterrupted run's adapter bit for bit.
  qlora_flat: a width that is not a multiple of 64 (bnb's blocks across rows) trains to peft's losses too.
  qlora_eval_refusals: kind: eval with quantization_bit gives peft's loss on bnb's dequantized base; tensor
            parallelism cutting a row-parallel layer's 64-blocks and a mixture-of-experts model are refused
            (8-bit QLoRA: qlora8_parity.py).
"""
import json
import math
import os
import re
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from testlib import run, run_cases  # noqa: E402
from train_parity import (STEPS, compare_losses, initial_adapter, job_yaml, our_logits, our_losses,  # noqa: E402
                          reference_losses, rel, setup)


def bnb_functional():
    import bitsandbytes.functional as F  # noqa: E402 (imported late: it logs on import)
    return F


def bnb_dequantize(packed, state):
    """bnb's dequantize_4bit. For a width that is not a multiple of 64 (blocks across rows) this is bnb's own torch
    implementation of it (its default backend; the flat block layout its quantizer and CUDA kernel use): bnb
    0.50.2's AVX-512 CPU kernel indexes the absmax by row there and returns other values (its NEON kernel guards
    against that case; this machine's CPU takes the AVX-512 path)."""
    F = bnb_functional()
    if state.shape[-1] % 64 == 0 or state.shape[-1] % 2 != 0:  # odd widths take that torch code in bnb too
        return F.dequantize_4bit(packed, state)
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    absmax = state.absmax
    if state.state2 is not None:
        absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
    return _dequantize_4bit_compute(packed.reshape(-1), absmax.float(), _get_4bit_code(state.quant_type, packed.device),
                                    state.blocksize, state.shape, state.dtype)


def qlora_config(vocab_size):
    # Every linear's input width a multiple of 64 (bnb's block) also per tensor-parallel rank: o_proj reads
    # hidden/tp = 64 columns under tp 2, down_proj 256/2.
    return LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, initializer_range=0.1)  # weights large enough for 4 bits to show


def case_quant4(binary, tmp):
    F = bnb_functional()
    g = torch.Generator().manual_seed(0)
    zeros_block = torch.randn(8, 128, generator=g)
    zeros_block[2, :64] = 0  # an all-zero block: absmax 0 (bnb clamps it to 1e-38)
    tensors = {
        "fp32": torch.randn(64, 256, generator=g) * 0.02,
        "groups": torch.randn(256, 1024, generator=g),  # 4096 blocks: 16 second-level blocks
        "bf16": (torch.randn(128, 512, generator=g) * 0.05).to(torch.bfloat16),
        "partial": torch.randn(3, 33, generator=g),  # 99 elements: a partial last block, an odd count
        "zeros_block": zeros_block,
        "outliers": torch.randn(64, 192, generator=g) * torch.where(torch.rand(64, 192, generator=g) < 0.01, 50.0, 1.0),
        "rows96": torch.randn(64, 96, generator=g),  # blocks across rows
    }
    inp = os.path.join(tmp, "in.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, inp)
    checked = 0
    for qtype in ("nf4", "fp4"):
        for dq in (True, False):
            out = os.path.join(tmp, f"{qtype}-{dq}.safetensors")
            run([binary, "model", "quantize", "--in", inp, "--out", out, "--type", qtype]
                + ([] if dq else ["--no-double-quant"]))
            ours = load_file(out)
            for name, t in tensors.items():
                where = f"{name} ({qtype}, double_quant={dq})"
                packed, state = F.quantize_4bit(t, blocksize=64, compress_statistics=dq, quant_type=qtype)
                assert torch.equal(ours[f"{name}.packed"], packed.reshape(-1)), f"{where}: packed bytes differ"
                assert torch.equal(ours[f"{name}.absmax"], state.absmax), f"{where}: absmax differs"
                if dq:
                    assert torch.equal(ours[f"{name}.absmax2"], state.state2.absmax), f"{where}: absmax2 differs"
                    assert ours[f"{name}.offset"].item() == state.offset.item(), f"{where}: offset differs"
                theirs = bnb_dequantize(packed, state)  # in the input's dtype, as bnb keeps it
                assert theirs.dtype == t.dtype
                assert torch.equal(ours[f"{name}.dequantized_own"], theirs), f"{where}: dequantized values differ"
                if t.dtype == torch.float32:
                    assert torch.equal(ours[f"{name}.dequantized"], theirs), where
                checked += 1
    print(f"quant4: {checked} tensors (nf4/fp4 x double quantization x fp32/bf16 shapes) equal bitsandbytes "
          f"{__import__('bitsandbytes').__version__}: packed bytes, absmax, absmax2, offset, dequantized values")


def dequantized_base(model_dir, qtype, double_quant):
    """The unquantized model with every linear but the head replaced by bnb's quantize -> dequantize values."""
    F = bnb_functional()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                packed, state = F.quantize_4bit(mod.weight.data, blocksize=64, compress_statistics=double_quant,
                                                quant_type=qtype)
                mod.weight.copy_(bnb_dequantize(packed, state))
    return model


def bnb_qlora_base(model_dir, qtype, double_quant, dtype=torch.float32):
    """transformers' bitsandbytes 4-bit model (Linear4bit layers), as LLaMA-Factory's QLoRA loads it (compute and
    storage dtype = the run's dtype)."""
    from transformers import BitsAndBytesConfig
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=double_quant,
                            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=qc, dtype=dtype, device_map="cpu")


def expected_4bit_bytes(config, double_quant):
    C, I = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (C // config.num_attention_heads)
    total = 0
    for out_f, in_f in [(C, C), (kv, C), (kv, C), (C, C), (I, C), (I, C), (C, I)]:
        n = out_f * in_f
        blocks = n // 64
        total += n // 2 + (blocks + 4 * math.ceil(blocks / 256) if double_quant else 4 * blocks)
    return total * config.num_hidden_layers


def qlora_run(binary, tmp, model_dir, data, adapter, name, extra, launch=None):
    out = os.path.join(tmp, name)
    start = [f"adapter_name_or_path: {adapter}"] if adapter else ["lora_rank: 4", "lora_alpha: 8"]
    cfg = job_yaml(os.path.join(tmp, f"{name}.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", "quantization_bit: 4"] + start + extra)
    cmd = [binary, "train", "--config", cfg, "--set", "disable_gradient_checkpointing=true"]
    if launch:
        cmd = [binary, "launch", "--nproc-per-node", str(launch), "--"] + cmd[1:]
    p = run(cmd)
    return out, p.stderr


def case_qlora(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    config = qlora_config(0)
    for qtype, dq in (("nf4", True), ("fp4", False)):
        out, stderr = qlora_run(binary, tmp, model_dir, data, adapter, f"out-{qtype}",
                                [f"quantization_type: {qtype}", f"double_quantization: {str(dq).lower()}"])
        ours = our_losses(out)
        ref_model = PeftModel.from_pretrained(dequantized_base(model_dir, qtype, dq), adapter, is_trainable=True)
        params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
        worst = compare_losses(ours, reference_losses(ref_model, rows, params), tol=1e-5)
        gap = None
        if qtype == "nf4":
            # The comparison can fail: plain LoRA on the unquantized base is far from these losses.
            plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                              adapter, is_trainable=True)
            params = [(n, p) for n, p in plain.named_parameters() if p.requires_grad]
            unquantized = reference_losses(plain, rows, params)
            gap = max(abs(a - b) / abs(b) for a, b in zip(ours, unquantized))
            assert gap > 1e-3, f"the 4-bit base changed the losses by only {gap:.1e}: the test proves nothing"
        bnb_model = PeftModel.from_pretrained(bnb_qlora_base(model_dir, qtype, dq), adapter, is_trainable=True)
        assert "Linear4bit" in type(bnb_model.base_model.model.model.layers[0].self_attn.q_proj).__name__
        params = [(n, p) for n, p in bnb_model.named_parameters() if p.requires_grad]
        worst_bnb = compare_losses(ours, reference_losses(bnb_model, rows, params), tol=1e-5)
        print(f"qlora: {qtype}, double quantization {dq}: {STEPS} per-step losses equal peft on bnb's dequantized "
              f"base (max rel {worst:.1e}) and peft's QLoRA on bnb Linear4bit (max rel {worst_bnb:.1e})"
              + (f"; plain LoRA on the unquantized base differs by {gap:.1e}" if gap else ""))
        # The holdings line and the memory plan count the 4-bit bytes.
        want = expected_4bit_bytes(config, dq)
        m = re.search(r"\+ 4-bit base (\d+) KiB \(" + qtype, stderr)
        assert m and int(m.group(1)) == want >> 10, f"holdings line: want {want >> 10} KiB\n{stderr[-3000:]}"
        assert re.search(r"memory plan \(ZeRO-0\): parameters [0-9.]+ MiB \(4-bit base [0-9.]+ MiB\)", stderr), \
            stderr[-3000:]
        # The adapter trained on the quantized base loads in peft on the unquantized base.
        cfg = json.load(open(os.path.join(out, "adapter_config.json")))
        assert cfg["base_model_name_or_path"] and cfg["r"] == 4, cfg
        ids = torch.tensor([rows[7]["input_ids"]])
        mine = our_logits(binary, model_dir, ids, tmp, adapter=out)
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                           out).eval()
        with torch.no_grad():
            theirs = loaded(input_ids=ids).logits.float()
        err = rel(mine, theirs)
        assert err < 1e-5, f"the QLoRA adapter in peft on the unquantized base differs from ours: rel {err:.2e}"
        print(f"qlora: {qtype}: holdings count {want >> 10} KiB of 4-bit base; the adapter loads in peft on the "
              f"unquantized base (logits rel {err:.1e})")


def case_qlora_bf16(binary, tmp):
    """bf16: true, as LLaMA-Factory's QLoRA examples: the base quantized from its bf16 values and dequantized to
    bf16, fp32 adapters; the per-step losses follow peft's QLoRA with bnb_4bit_compute_dtype bf16 to bf16
    rounding (the tolerance of the plain LoRA bf16 case)."""
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    out, _ = qlora_run(binary, tmp, model_dir, data, adapter, "out", ["bf16: true"])
    ours = our_losses(out)
    bnb_model = PeftModel.from_pretrained(bnb_qlora_base(model_dir, "nf4", True, torch.bfloat16), adapter,
                                          is_trainable=True)
    params = [(n, p) for n, p in bnb_model.named_parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for _, p in params), "peft did not keep the adapters in fp32"
    worst = compare_losses(ours, reference_losses(bnb_model, rows, params), tol=2e-3)
    print(f"qlora_bf16: {STEPS} per-step losses follow peft's bf16 QLoRA on bnb Linear4bit (max rel {worst:.2e})")


def case_qlora_parallel(binary, tmp):
    # Every layout continues from the same peft adapter (non-zero B), each rank taking its piece.
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    single, _ = qlora_run(binary, tmp, model_dir, data, adapter, "single", [])
    base = our_losses(single)
    layouts = {"tp2": ["tensor_model_parallel_size: 2"],
               "pp2": ["pipeline_model_parallel_size: 2"],
               "dp2": ["per_device_train_batch_size: 2"]}
    for name, extra in layouts.items():
        out, stderr = qlora_run(binary, tmp, model_dir, data, adapter, name, extra, launch=2)
        theirs = our_losses(out)
        assert len(theirs) == len(base) == STEPS, (len(theirs), len(base))
        worst = max(abs(a - b) / abs(b) for a, b in zip(theirs, base))
        assert worst < 1e-5, f"QLoRA {name} differs from one process (max rel {worst:.2e})\n{base}\n{theirs}"
        assert "4-bit base" in stderr, stderr[-2000:]
        print(f"qlora_parallel: {name} gives the single-process QLoRA losses (max rel {worst:.1e})")


def case_qlora_resume(binary, tmp):
    """A QLoRA checkpoint holds the adapter and its optimizer state, never the 4-bit base; resuming from it
    (the base quantized again at load) finishes with the uninterrupted run's adapter bit for bit."""
    import shutil
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    extra = ["save_strategy: steps", "save_steps: 10"]
    straight, _ = qlora_run(binary, tmp, model_dir, data, None, "straight", extra)
    ck = os.path.join(straight, "checkpoint-10")
    names = set()
    for f in os.listdir(ck):
        if f.endswith(".safetensors"):
            names |= set(load_file(os.path.join(ck, f)).keys())
    base = [n for n in names if "lora_" not in n and n != "rng.cpu"]
    assert names and not base, f"checkpoint-10 holds more than the adapter: {sorted(base)[:5]}"
    resumed = os.path.join(tmp, "resumed")
    os.makedirs(resumed)
    shutil.copytree(ck, os.path.join(resumed, "checkpoint-10"))
    qlora_run(binary, tmp, model_dir, data, None, "resumed", extra + ["resume_from_checkpoint: latest"])
    a = load_file(os.path.join(straight, "adapter_model.safetensors"))
    b = load_file(os.path.join(resumed, "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed adapter differs"
    assert our_losses(straight)[10:] == our_losses(resumed)[-10:], "the resumed losses differ"
    print(f"qlora_resume: checkpoint-10 holds {len(names)} tensors, adapter and optimizer state only; resumed from it "
          f"the run ends with the uninterrupted adapter bit for bit")


def quantized_eval_loss(binary, tmp, model_dir, adapter, data, bits):
    """eval_loss of a `kind: eval` job: `adapter` on the `bits`-bit base of `model_dir`, dataset toy of `data`."""
    out = os.path.join(tmp, "eval")
    cfg = os.path.join(tmp, "eval.yaml")
    with open(cfg, "w") as f:
        f.write(f"kind: eval\nmodel_name_or_path: {model_dir}\nadapter_name_or_path: {adapter}\ndataset: toy\n"
                f"dataset_dir: {data}\ntemplate: empty\noutput_dir: {out}\ncutoff_len: 256\n"
                f"quantization_bit: {bits}\neval:\n  tasks: [loss]\n")
    run([binary, "eval", "--config", cfg])
    return json.load(open(os.path.join(out, "eval_results.json")))["loss"]["eval_loss"]


def case_qlora_eval_refusals(binary, tmp):
    """kind: eval with quantization_bit evaluates the adapter on the 4-bit base (loss = peft on bnb's dequantized
    base); what cannot be quantized is refused by the trainer with the layer or model named."""
    from peft import PeftModel
    from train_parity import moe_config
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    got = quantized_eval_loss(binary, tmp, model_dir, adapter, data, bits=4)
    total, n = {}, 0
    for name, base in (("4-bit", dequantized_base(model_dir, "nf4", True)),
                       ("unquantized", AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))):
        model = PeftModel.from_pretrained(base, adapter).eval()
        total[name], n = 0.0, 0
        with torch.no_grad():
            for r in rows:
                lg = model(input_ids=torch.tensor([r["input_ids"]])).logits.float()[0, :-1]
                tgt = torch.tensor(r["labels"][1:])
                total[name] += torch.nn.functional.cross_entropy(lg, tgt, ignore_index=-100, reduction="sum").item()
                n += (tgt != -100).sum().item()
    want, plain = total["4-bit"] / n, total["unquantized"] / n
    assert abs(got - want) / want < 1e-5, f"eval loss {got} vs peft on the 4-bit base {want}"
    assert abs(plain - want) / want > 1e-4, "the 4-bit base does not change the eval loss: the test proves nothing"
    print(f"qlora_eval_refusals: eval on the 4-bit base {got:.6f} = peft on bnb's dequantized base {want:.6f} "
          f"(unquantized {plain:.6f})")

    def refused(sub, make_config, extra, want_text, launch=False):
        d = os.path.join(tmp, sub)
        os.makedirs(d)
        m, dat, _ = setup(d, binary, make_config)
        cfg = job_yaml(os.path.join(d, "job.yaml"), m, dat, os.path.join(d, "out"),
                       ["finetuning_type: lora", "quantization_bit: 4"] + extra)
        cmd = [binary, "train", "--config", cfg]
        if launch:
            cmd = [binary, "launch", "--nproc-per-node", "2", "--"] + cmd[1:]
        p = run(cmd, check=False)
        assert p.returncode != 0 and want_text in p.stderr, f"{sub}: exit {p.returncode}\n{p.stderr[-2000:]}"
        print(f"qlora_eval_refusals: {sub} refused: {want_text}")

    # hidden 64 over tp 2: o_proj's 32 input columns per rank would cut bnb's 64-blocks.
    refused("tp2_width32", None, ["tensor_model_parallel_size: 2"],
            "weight 'model.layers.0.self_attn.o_proj.weight': o_proj: 4-bit quantization needs an even input width, "
            "and under tensor parallelism the input width of the row-parallel layers (o_proj, down_proj) per rank to "
            "be a multiple of 64 (bitsandbytes' block), got 32 of 64", launch=True)
    refused("moe", moe_config, [], "quantized (QLoRA) training of a mixture-of-experts model (qwen3_moe) is not built")


def case_qlora_flat(binary, tmp):
    """intermediate_size 96 (not a multiple of 64): bnb's blocks run across down_proj's rows; 20 QLoRA steps
    equal peft on bnb's dequantized base (bnb_dequantize: its torch code for this layout), single-process and with
    data parallel 2."""
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary)  # train_parity's llama: hidden 64, intermediate 96
    adapter = initial_adapter(model_dir, tmp)
    out, _ = qlora_run(binary, tmp, model_dir, data, adapter, "out", [])
    ours = our_losses(out)
    ref_model = PeftModel.from_pretrained(dequantized_base(model_dir, "nf4", True), adapter, is_trainable=True)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    worst = compare_losses(ours, reference_losses(ref_model, rows, params), tol=1e-5)
    dp2, _ = qlora_run(binary, tmp, model_dir, data, adapter, "dp2", ["per_device_train_batch_size: 2"], launch=2)
    worst_dp = max(abs(a - b) / abs(b) for a, b in zip(our_losses(dp2), ours))
    assert len(our_losses(dp2)) == STEPS and worst_dp < 1e-5, f"dp 2 differs (max rel {worst_dp:.2e})"
    print(f"qlora_flat: width 96 (blocks across rows): {STEPS} losses equal peft on bnb's dequantized base "
          f"(max rel {worst:.1e}); dp 2 equal (max rel {worst_dp:.1e})")


if __name__ == "__main__":
    run_cases({"quant4": case_quant4, "qlora": case_qlora, "qlora_parallel": case_qlora_parallel,
               "qlora_eval_refusals": case_qlora_eval_refusals, "qlora_resume": case_qlora_resume,
               "qlora_bf16": case_qlora_bf16, "qlora_flat": case_qlora_flat})
