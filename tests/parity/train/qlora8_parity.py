#!/usr/bin/env python3
"""8-bit QLoRA (quantization_bit: 8, LLaMA-Factory's BitsAndBytesConfig(load_in_8bit=True)) against bitsandbytes'
own Int8Params / Linear8bitLt and peft on transformers' bitsandbytes 8-bit model (peers nobody here wrote).

bitsandbytes 0.50's bnb.matmul runs MatMul8bitFp (the int8 weight dequantized, then one matmul) when the layer is
in training mode on a CPU, and MatMul8bitLt (LLM.int8: fp16 activations quantized row-wise to int8, outlier
columns |x| >= 6 in full precision) otherwise; Anneal makes the same choice, so on this CPU training runs the
dequantized matmul and evaluation runs LLM.int8, both compared with bnb running them.

Cases (one ctest each):
  quant8  : `anneal-train model quantize --bits 8` gives bnb's Int8Params CB (int8) and SCB (fp32) bit for bit
            (fp32 and bf16 weights, rows of very different scales, a 1-row tensor), and the
            dequantized weight of Linear8bitLt's training forward. On layer inputs with outlier columns, our
            LLM.int8 forward equals Linear8bitLt's eval forward (MatMul8bitLt on the CPU) and our dequantized
            forward its training forward (MatMul8bitFp), both to 1e-6 relative (seen: bit-equal), fast and
            reference paths equal, and the input gradient equals bnb's.
  qlora8  : 20 QLoRA steps (every projection of a llama model 8-bit, the head not) equal peft's run on
            transformers' 8-bit model (bnb Linear8bitLt, peft's lora.bnb.Linear8bitLt, CPU) per step to 1e-5;
            plain LoRA on the unquantized base is further away than that; the holdings line and memory plan count
            1 byte a weight + 4 a row; the adapter loads in peft on the unquantized base with our logits.
  qlora8_eval: kind: eval with quantization_bit: 8 (LLM.int8; a hidden feature planted large enough to make
            outlier columns) gives peft's eval loss on bnb's 8-bit model in eval mode (1e-5); the dequantized
            matmul gives another.
  qlora8_parallel: tensor parallel 2 and data parallel 2 give the single-process 8-bit losses (1e-5).
"""
import json
import os
import re
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from testlib import run, run_cases  # noqa: E402
from train_parity import (STEPS, compare_losses, initial_adapter, job_yaml, our_logits, our_losses,  # noqa: E402
                          reference_losses, rel, setup)
from qlora_parity import qlora_config, quantized_eval_loss  # noqa: E402


def bnb_linear8(w):
    """bitsandbytes' Linear8bitLt with LLaMA-Factory's (transformers') settings holding w [out, in]."""
    import bitsandbytes as bnb
    lin = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False, threshold=6.0)
    lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    return lin.to("cpu")  # Int8Params quantizes on the move (int8_vectorwise_quant of the fp16 weight)


def case_quant8(binary, tmp):
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 1, 48).unsqueeze(1)
    tensors = {
        "fp32": torch.randn(64, 128, generator=g) * 0.05,
        "scales": torch.randn(48, 96, generator=g) * scales,  # rows of very different scales
        "bf16": (torch.randn(32, 64, generator=g) * 0.1).to(torch.bfloat16),
        "one_row": torch.randn(1, 40, generator=g),
    }
    x = torch.randn(9, 128, generator=g)
    x[2, 5], x[7, 100], x[0, 5] = 9.0, -6.5, 7.0  # two outlier columns
    inputs = {"fp32": x, "scales": torch.randn(5, 96, generator=g) * 3}  # ~4% of |x| >= 6: many outlier columns
    inp, xin, out = (os.path.join(tmp, n) for n in ("w.safetensors", "x.safetensors", "q.safetensors"))
    save_file(tensors, inp)
    save_file(inputs, xin)
    run([binary, "model", "quantize", "--bits", "8", "--in", inp, "--inputs", xin, "--out", out])
    ours = load_file(out)
    for name, w in tensors.items():
        lin = bnb_linear8(w)
        assert torch.equal(ours[f"{name}.CB"], lin.weight.CB), f"{name}: CB differs from bnb's Int8Params"
        assert torch.equal(ours[f"{name}.SCB"], lin.weight.SCB), f"{name}: SCB differs from bnb's Int8Params"
        lin.train()  # MatMul8bitFp: linear(I, W') = W'^T exactly
        with torch.no_grad():
            deq = lin(torch.eye(w.shape[1])).t()
        assert torch.equal(ours[f"{name}.dequantized"], deq), f"{name}: dequantized weight differs"
        if name not in inputs:
            continue
        x = inputs[name]
        results = {}
        for mode, key in (("eval", "llm_int8"), ("train", "dequant")):
            lin.train(mode == "train")
            xi = x.clone().requires_grad_(True)
            y = lin(xi)
            y.sum().backward()
            for suffix in ("", "_reference"):
                err = rel(ours[f"{name}.{key}{suffix}"], y.detach())
                assert err < 1e-6, f"{name}: our {key}{suffix} forward differs from bnb's {mode} forward: rel {err:.1e}"
                results[key + suffix] = err
            if mode == "eval":
                err = rel(ours[f"{name}.grad"], xi.grad)
                assert err < 1e-6, f"{name}: the input gradient differs from bnb's MatMul8bitLt: rel {err:.1e}"
                results["grad"] = err
        # The comparison can fail: LLM.int8 is not the dequantized matmul on these inputs.
        gap = rel(ours[f"{name}.llm_int8"], ours[f"{name}.dequant"])
        assert gap > 1e-4, f"{name}: LLM.int8 and the dequantized matmul agree to {gap:.1e}: nothing shown"
        print(f"quant8: {name}: layer outputs vs bnb Linear8bitLt " +
              ", ".join(f"{k} rel {v:.1e}" for k, v in results.items()) + f" (the two matmuls differ by {gap:.1e})")
    print(f"quant8: {len(tensors)} tensors: CB, SCB and the dequantized weight equal bitsandbytes "
          f"{__import__('bitsandbytes').__version__}'s Int8Params / Linear8bitLt bit for bit")


def bnb_8bit_base(model_dir):
    """transformers' bitsandbytes 8-bit model (Linear8bitLt), as LLaMA-Factory loads quantization_bit: 8."""
    from transformers import BitsAndBytesConfig
    return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                dtype=torch.float32, device_map="cpu")


def qlora8_run(binary, tmp, model_dir, data, adapter, name, extra, launch=None):
    out = os.path.join(tmp, name)
    cfg = job_yaml(os.path.join(tmp, f"{name}.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", "quantization_bit: 8", f"adapter_name_or_path: {adapter}"] + extra)
    cmd = [binary, "train", "--config", cfg, "--set", "disable_gradient_checkpointing=true"]
    if launch:
        cmd = [binary, "launch", "--nproc-per-node", str(launch), "--"] + cmd[1:]
    return out, run(cmd).stderr


def expected_8bit_bytes(config):
    C, I = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (C // config.num_attention_heads)
    shapes = [(C, C), (kv, C), (kv, C), (C, C), (I, C), (I, C), (C, I)]
    return sum(o * i + 4 * o for o, i in shapes) * config.num_hidden_layers


def case_qlora8(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    out, stderr = qlora8_run(binary, tmp, model_dir, data, adapter, "out", [])
    ours = our_losses(out)
    bnb_model = PeftModel.from_pretrained(bnb_8bit_base(model_dir), adapter, is_trainable=True)
    assert "Linear8bitLt" in type(bnb_model.base_model.model.model.layers[0].self_attn.q_proj).__name__
    params = [(n, p) for n, p in bnb_model.named_parameters() if p.requires_grad]
    worst = compare_losses(ours, reference_losses(bnb_model, rows, params), tol=1e-5)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter,
                                      is_trainable=True)
    params = [(n, p) for n, p in plain.named_parameters() if p.requires_grad]
    gap = max(abs(a - b) / abs(b) for a, b in zip(ours, reference_losses(plain, rows, params)))
    assert gap > 1e-5, f"the 8-bit base changed the losses by only {gap:.1e}: the comparison proves nothing"
    print(f"qlora8: {STEPS} per-step losses equal peft's QLoRA on bnb Linear8bitLt (max rel {worst:.1e}); plain LoRA "
          f"on the unquantized base differs by {gap:.1e}")
    want = expected_8bit_bytes(qlora_config(0))
    m = re.search(r"\+ 8-bit base (\d+) KiB \(LLM\.int8\)", stderr)
    assert m and int(m.group(1)) == want >> 10, f"holdings line: want {want >> 10} KiB\n{stderr[-3000:]}"
    assert re.search(r"memory plan \(ZeRO-0\): parameters [0-9.]+ MiB \(8-bit base [0-9.]+ MiB\)", stderr), \
        stderr[-3000:]
    ids = torch.tensor([rows[7]["input_ids"]])
    mine = our_logits(binary, model_dir, ids, tmp, adapter=out)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                       out).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=ids).logits.float()
    err = rel(mine, theirs)
    assert err < 1e-5, f"the 8-bit QLoRA adapter in peft on the unquantized base differs from ours: rel {err:.2e}"
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["r"] == 4, cfg
    print(f"qlora8: holdings count {want >> 10} KiB of 8-bit base; the adapter loads in peft on the unquantized "
          f"base (logits rel {err:.1e})")


def plant_outlier_features(model_dir):
    """One hidden feature scaled up in every layer's norms, so the projections after them meet inputs of magnitude
    >= 6 (LLM.int8's outlier columns), as large models do."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[5] = 14.0
            layer.post_attention_layernorm.weight[17] = -11.0
    model.save_pretrained(model_dir)


def case_qlora8_eval(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    plant_outlier_features(model_dir)
    adapter = initial_adapter(model_dir, tmp)
    got = quantized_eval_loss(binary, tmp, model_dir, adapter, data, bits=8)
    model = PeftModel.from_pretrained(bnb_8bit_base(model_dir), adapter)
    total = {}
    for mode in ("eval", "train"):  # eval: MatMul8bitLt (LLM.int8); train: MatMul8bitFp
        model.train(mode == "train")
        for m in model.modules():
            if hasattr(m, "lora_dropout"):
                for d in m.lora_dropout.values():
                    d.eval()
        loss, n = 0.0, 0
        with torch.no_grad():
            for r in rows:
                lg = model(input_ids=torch.tensor([r["input_ids"]])).logits.float()[0, :-1]
                tgt = torch.tensor(r["labels"][1:])
                loss += torch.nn.functional.cross_entropy(lg, tgt, ignore_index=-100, reduction="sum").item()
                n += (tgt != -100).sum().item()
        total[mode] = loss / n
        if mode == "eval":
            q_proj = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
            assert q_proj.state.idx is not None and q_proj.state.idx.numel() > 0, "no outlier column: nothing shown"
            outlier_cols = q_proj.state.idx.tolist()
    want, dequant = total["eval"], total["train"]
    assert abs(got - want) / want < 1e-5, f"eval loss {got} vs peft on bnb's LLM.int8 model {want}"
    assert abs(dequant - want) / want > 1e-6, "LLM.int8 does not change the eval loss here: nothing shown"
    print(f"qlora8_eval: eval loss {got:.7f} = peft on bnb's 8-bit model in eval mode (MatMul8bitLt, outlier "
          f"columns {outlier_cols} in layer 0's q_proj) {want:.7f}; the dequantized matmul gives {dequant:.7f}")


def case_qlora8_parallel(binary, tmp):
    model_dir, data, rows = setup(tmp, binary, qlora_config)
    adapter = initial_adapter(model_dir, tmp)
    single, _ = qlora8_run(binary, tmp, model_dir, data, adapter, "single", [])
    base = our_losses(single)
    for name, extra in {"tp2": ["tensor_model_parallel_size: 2"], "dp2": ["per_device_train_batch_size: 2"]}.items():
        out, stderr = qlora8_run(binary, tmp, model_dir, data, adapter, name, extra, launch=2)
        theirs = our_losses(out)
        assert len(theirs) == len(base) == STEPS, (len(theirs), len(base))
        worst = max(abs(a - b) / abs(b) for a, b in zip(theirs, base))
        assert worst < 1e-5, f"8-bit QLoRA {name} differs from one process (max rel {worst:.2e})"
        assert "8-bit base" in stderr, stderr[-2000:]
        print(f"qlora8_parallel: {name} gives the single-process 8-bit QLoRA losses (max rel {worst:.1e})")


if __name__ == "__main__":
    run_cases({"quant8": case_quant8, "qlora8": case_qlora8, "qlora8_eval": case_qlora8_eval,
               "qlora8_parallel": case_qlora8_parallel})
