#!/usr/bin/env python3
"""PiSSA (LLaMA-Factory's pissa_init / pissa_iter / pissa_convert) against peft 0.21's init_lora_weights "pissa" /
"pissa_niter_N" and its conversion (save_pretrained with path_initial_model_for_weight_conversion), on
train_parity.py's tiny llama and rows.

Cases (one ctest each):
  pissa   : pissa_iter -1 (full SVD): the initial adapter our run saves (pissa_init/) equals peft's A and B, and the
            base's residual W - s B A equals peft's (both within 1e-5 of their size: one LAPACK, one arithmetic);
            20 per-step losses equal peft's PiSSA run (1e-5); the converted adapter (pissa_converted/, rank 2r,
            alpha doubled) equals peft's converted one, and loaded in peft on the original base gives our trained
            model's logits; our final adapter (init_lora_weights "pissa") loads in peft, which recomputes the
            residual, with our logits too.
  pissa_fast: pissa_iter 4 (randomized SVD, peft's pissa_niter_4): the random start is ours (a generator seeded
            by the module's name, so every load of the adapter recomputes the same residual), peft's comes from
            torch's global generator; so, on weights with a planted, well separated rank-4 part, what does not
            depend on the start is compared: the adapter's row space is peft's (projectors within 1e-3) and
            diag(A A^T) = S_r / s equals peft's (1e-3); the run trains 20 finite steps and the converted adapter
            on the original base gives our logits (W = residual + s B A held through training).
  pissa_parallel: data parallel 2 and pipeline parallel 2 give the single-process losses (1e-5) and converted
            adapter (1e-4).
  pissa_refusals: pissa_init with finetuning_type full, stage kto, quantization_bit, DoRA and tensor
            parallelism is refused naming the keys.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from testlib import run, run_cases  # noqa: E402
from train_parity import (STEPS, compare_losses, job_yaml, our_logits, our_losses, reference_losses, rel,  # noqa: E402
                          setup)
from transformers import AutoModelForCausalLM  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PREFIX = "base_model.model."


def our_run(binary, tmp, model_dir, data, name, extra, launch=None):
    out = os.path.join(tmp, name)
    cfg = job_yaml(os.path.join(tmp, f"{name}.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", "lora_rank: 4", "lora_alpha: 8", "lora_target: all", "pissa_init: true",
                    "pissa_convert: true"] + extra)
    cmd = [binary, "train", "--config", cfg, "--set", "disable_gradient_checkpointing=true"]
    if launch:
        cmd = [binary, "launch", "--nproc-per-node", str(launch), "--"] + cmd[1:]
    run(cmd)
    return out


def peft_pissa(model_dir, init):
    from peft import LoraConfig, get_peft_model
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                           target_modules=TARGETS, init_lora_weights=init))


def layers(model):
    """module name (HF, as in adapter files) -> peft LoRA layer"""
    out = {}
    for n, m in model.named_modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            out[n[len(PREFIX):] if n.startswith(PREFIX) else n] = m
    return out


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def case_pissa(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary)
    out = our_run(binary, tmp, model_dir, data, "out", ["pissa_iter: -1"])
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    w0 = {n + ".weight": m.weight.detach().clone() for n, m in original.named_modules()
          if isinstance(m, torch.nn.Linear)}
    model = peft_pissa(model_dir, "pissa")
    initial = load_file(os.path.join(out, "pissa_init", "adapter_model.safetensors"))
    cfg = json.load(open(os.path.join(out, "pissa_init", "adapter_config.json")))
    assert cfg["init_lora_weights"] is True and cfg["r"] == 4, cfg
    worst = {"A": 0.0, "B": 0.0, "residual": 0.0}
    for name, layer in layers(model).items():
        a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
        ours_a, ours_b = initial[f"{PREFIX}{name}.lora_A.weight"], initial[f"{PREFIX}{name}.lora_B.weight"]
        worst["A"] = max(worst["A"], max_rel(ours_a, a))
        worst["B"] = max(worst["B"], max_rel(ours_b, b))
        # Our residual is W - s B A from our factors, as peft computes it from its own.
        residual = w0[name + ".weight"] - (2.0 * ours_b) @ ours_a
        worst["residual"] = max(worst["residual"], max_rel(residual, layer.base_layer.weight.detach()))
    assert all(v < 1e-5 for v in worst.values()), f"PiSSA start differs from peft's: {worst}"
    print("pissa: full SVD: initial A, B and residual equal peft's (max rel " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + ")")

    # peft's own conversion needs its initial adapter saved as LLaMA-Factory's callback saves it.
    peft_init = os.path.join(tmp, "peft_pissa_init")
    model.peft_config["default"].init_lora_weights = True
    model.save_pretrained(peft_init)
    model.peft_config["default"].init_lora_weights = "pissa"
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ours = our_losses(out)
    worst_loss = compare_losses(ours, reference_losses(model, rows, params), tol=1e-5)
    plain = peft_pissa(model_dir, True)  # a plain LoRA start trains differently
    torch.manual_seed(0)
    assert abs(ours[-1] - reference_losses(plain, rows, [(n, p) for n, p in plain.named_parameters()
                                                          if p.requires_grad])[-1]) > 1e-4
    print(f"pissa: {STEPS} per-step losses equal peft's PiSSA run (max rel {worst_loss:.1e})")

    peft_conv = os.path.join(tmp, "peft_converted")
    model.save_pretrained(peft_conv, path_initial_model_for_weight_conversion=peft_init)
    theirs = load_file(os.path.join(peft_conv, "adapter_model.safetensors"))
    mine = load_file(os.path.join(out, "pissa_converted", "adapter_model.safetensors"))
    assert mine.keys() == theirs.keys(), sorted(set(mine) ^ set(theirs))[:4]
    conv_err = max(max_rel(mine[k], theirs[k]) for k in mine)
    assert conv_err < 1e-4, f"the converted adapter differs from peft's: rel {conv_err:.1e}"
    ccfg = json.load(open(os.path.join(out, "pissa_converted", "adapter_config.json")))
    pcfg = json.load(open(os.path.join(peft_conv, "adapter_config.json")))
    assert (ccfg["r"], ccfg["lora_alpha"], ccfg["init_lora_weights"]) == (pcfg["r"], pcfg["lora_alpha"], True), (ccfg, pcfg)
    ids = torch.tensor([rows[7]["input_ids"]])
    ours_logits = our_logits(binary, model_dir, ids, tmp, adapter=out)
    for what, adapter in (("converted", os.path.join(out, "pissa_converted")), ("PiSSA", out)):
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                           adapter).eval()
        with torch.no_grad():
            err = rel(ours_logits, loaded(input_ids=ids).logits.float())
        assert err < 1e-4, f"our {what} adapter in peft on the original base: logits rel {err:.1e}"
        print(f"pissa: our {what} adapter loads in peft on the original base with our logits (rel {err:.1e})")
    print(f"pissa: the converted adapter (r {ccfg['r']}, alpha {ccfg['lora_alpha']}) equals peft's (rel {conv_err:.1e})")


def plant_low_rank(model_dir):
    """Adds a rank-4 component with well separated singular values to every projection, so the randomized SVD's
    top-4 subspace converges whatever its random start (on the random weights alone it would not in 4 steps)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
                out_f, in_f = m.weight.shape
                u, _ = torch.linalg.qr(torch.randn(out_f, 4, generator=g))
                v, _ = torch.linalg.qr(torch.randn(in_f, 4, generator=g))
                m.weight += u @ torch.diag(torch.tensor([8.0, 6.0, 4.5, 3.0])) @ v.t()
    model.save_pretrained(model_dir)


def case_pissa_fast(binary, tmp):
    from peft import PeftModel
    model_dir, data, rows = setup(tmp, binary)
    plant_low_rank(model_dir)
    out = our_run(binary, tmp, model_dir, data, "out", ["pissa_iter: 4"])
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["init_lora_weights"] == "pissa_niter_4", cfg
    initial = load_file(os.path.join(out, "pissa_init", "adapter_model.safetensors"))
    torch.manual_seed(0)
    model = peft_pissa(model_dir, "pissa_niter_4")
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    w0 = {n: m.weight.detach() for n, m in original.named_modules() if isinstance(m, torch.nn.Linear)}
    worst_proj = worst_sv = 0.0
    for name, layer in layers(model).items():
        a = initial[f"{PREFIX}{name}.lora_A.weight"]
        pa = layer.lora_A["default"].weight.detach()
        # Row space of A = the top-r right singular subspace: compare the projectors.
        q, _ = torch.linalg.qr(a.t())
        pq, _ = torch.linalg.qr(pa.t())
        worst_proj = max(worst_proj, (q @ q.t() - pq @ pq.t()).abs().max().item())
        # diag(A A^T) = S_r / s
        worst_sv = max(worst_sv, max_rel(torch.sort((a * a).sum(1)).values, torch.sort((pa * pa).sum(1)).values))
        assert name in w0
    assert worst_proj < 1e-3 and worst_sv < 1e-3, (worst_proj, worst_sv)
    print(f"pissa_fast: randomized SVD (4 iterations): the adapters span peft's subspaces (projectors max diff "
          f"{worst_proj:.1e}) with its singular values (rel {worst_sv:.1e})")
    # W = residual + s B A: the first loss is the original model's.
    ids, labels = torch.tensor([r["input_ids"] for r in rows[:1]]), torch.tensor([r["labels"] for r in rows[:1]])
    losses = our_losses(out)
    assert len(losses) == STEPS and all(l == l for l in losses), losses
    ours_logits = our_logits(binary, model_dir, ids, tmp, adapter=out)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                       os.path.join(out, "pissa_converted")).eval()
    with torch.no_grad():
        err = rel(ours_logits, loaded(input_ids=ids).logits.float())
    assert err < 1e-4, f"the converted adapter in peft on the original base: logits rel {err:.1e}"
    untrained = our_logits(binary, model_dir, ids, tmp, adapter=os.path.join(out, "pissa_init"))
    with torch.no_grad():
        base = original(input_ids=ids).logits.float()
    # pissa_init/ is a plain adapter (init_lora_weights true): on the original base it is W + s B0 A0, not W.
    assert rel(untrained, base) > 1e-3
    print(f"pissa_fast: the converted adapter gives our logits on the original base (rel {err:.1e})")
    del labels


def case_pissa_parallel(binary, tmp):
    """Data parallel 2 and pipeline parallel 2 give the single-process PiSSA losses and converted adapter (each
    rank computes the SVD of its own layers' whole weights; pissa_init/ is joined from the stages)."""
    model_dir, data, _ = setup(tmp, binary)
    single = our_run(binary, tmp, model_dir, data, "single", ["pissa_iter: -1"])
    want = load_file(os.path.join(single, "pissa_converted", "adapter_model.safetensors"))
    for name, extra in (("dp2", ["per_device_train_batch_size: 2"]), ("pp2", ["pipeline_model_parallel_size: 2"])):
        out = our_run(binary, tmp, model_dir, data, name, ["pissa_iter: -1"] + extra, launch=2)
        a, b = our_losses(single), our_losses(out)
        worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
        assert len(b) == STEPS and worst < 1e-5, f"PiSSA {name} differs from one process (max rel {worst:.1e})"
        got = load_file(os.path.join(out, "pissa_converted", "adapter_model.safetensors"))
        assert got.keys() == want.keys(), sorted(set(got) ^ set(want))[:4]
        conv = max(max_rel(got[k], want[k]) for k in want)
        assert conv < 1e-4, f"PiSSA {name}: the converted adapter differs from one process's (rel {conv:.1e})"
        print(f"pissa_parallel: {name} gives the single-process losses (max rel {worst:.1e}) and converted adapter "
              f"(rel {conv:.1e})")


def case_pissa_refusals(binary, tmp):
    model_dir, data, _ = setup(tmp, binary)

    def refused(name, extra, want, launch=None):
        out = os.path.join(tmp, name)
        cfg = job_yaml(os.path.join(tmp, f"{name}.yaml"), model_dir, data, out, ["pissa_init: true"] + extra)
        cmd = [binary, "train", "--config", cfg]
        if launch:
            cmd = [binary, "launch", "--nproc-per-node", str(launch), "--"] + cmd[1:]
        p = run(cmd, check=False)
        assert p.returncode != 0 and want in p.stderr, f"{name}: exit {p.returncode}\n{p.stderr[-2000:]}"
        print(f"pissa_refusals: {name}: {want}")

    refused("full", ["finetuning_type: full"], "PiSSA cannot be used with 'finetuning_type'")
    refused("quantized", ["quantization_bit: 4"], "PiSSA cannot be used with 'quantization_bit'")
    refused("dora", ["use_dora: true"], "PiSSA cannot be used with 'use_dora'")
    refused("dpo", ["stage: dpo"], "PiSSA cannot be used with 'stage'")
    refused("tp2", ["tensor_model_parallel_size: 2"], "pissa_init: PiSSA needs each whole dense weight", launch=2)


if __name__ == "__main__":
    run_cases({"pissa": case_pissa, "pissa_fast": case_pissa_fast, "pissa_parallel": case_pissa_parallel,
               "pissa_refusals": case_pissa_refusals})
