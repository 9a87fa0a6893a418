#!/usr/bin/env python3
"""Parity of anneal-train's decoder with HF transformers (the peer nobody here wrote).

Each case builds a random HF model of one architecture variant, saves it with save_pretrained (so "models saved
by HF load here" is exercised), runs the same padded batch through HF and through `anneal-train model logits`,
and compares logits at every non-padding position (relative error < 1e-5, fp32, CPU). Some cases also compare
greedy generation token for token, or go the other way (`anneal-train model init` -> HF loads it).
deepseek_v3 is saved sharded (several files and model.safetensors.index.json).

Usage: model_parity.py --bin build/bin/anneal-train --case NAME
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config, LlamaConfig, MistralConfig,
                          Qwen2Config, Qwen3Config, Qwen3MoeConfig)

torch.set_num_threads(1)

COMMON = dict(vocab_size=211, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)


def make_config(case):
    if case == "llama_gqa":
        return LlamaConfig(**COMMON, num_key_value_heads=2)
    if case == "llama_mha_bias":
        return LlamaConfig(**COMMON, num_key_value_heads=4, attention_bias=True)
    if case == "llama3_rope_headdim":
        c = dict(COMMON, max_position_embeddings=64)
        return LlamaConfig(**c, num_key_value_heads=1, head_dim=24, rope_theta=500000.0,
                           rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    if case == "llama_linear_rope":
        return LlamaConfig(**COMMON, num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 4.0})
    if case == "llama_dynamic_rope":
        c = dict(COMMON, max_position_embeddings=8)  # sequences of 20 tokens exceed it: the base grows
        return LlamaConfig(**c, num_key_value_heads=2, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    if case == "qwen2_tied":
        c = dict(COMMON, tie_word_embeddings=True)
        return Qwen2Config(**c, num_key_value_heads=2)
    if case == "mistral_window":
        return MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=6)
    if case == "qwen3":
        # head_dim explicit and unlike hidden / heads (16), as in Qwen3's releases.
        return Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=24, rope_theta=1000000.0)
    if case == "qwen3_bias_tied":
        c = dict(COMMON, tie_word_embeddings=True)
        return Qwen3Config(**c, num_key_value_heads=1, head_dim=16, attention_bias=True)
    if case == "qwen3_moe":
        # Three layers: two sparse ones (4 experts, top-2, renormalised weights) around one dense (mlp_only).
        c = dict(COMMON, num_hidden_layers=3)
        return Qwen3MoeConfig(**c, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                              moe_intermediate_size=32, norm_topk_prob=True, mlp_only_layers=[1])
    if case == "qwen3_moe_step":
        # decoder_sparse_step 2: layer 1 sparse, layer 0 dense; raw top-k weights; 6 experts, top-3.
        return Qwen3MoeConfig(**COMMON, num_key_value_heads=4, head_dim=16, num_experts=6, num_experts_per_tok=3,
                              moe_intermediate_size=24, norm_topk_prob=False, decoder_sparse_step=2)
    if case == "llama_yarn":
        # YaRN (factor 4 over 16 original positions; sequences of 20 reach past them), cos/sin scaled by its
        # attention factor.
        c = dict(COMMON, max_position_embeddings=64)
        return LlamaConfig(**c, num_key_value_heads=2, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16, "beta_slow": 2})
    if case == "qwen2_yarn":
        return Qwen2Config(**COMMON, num_key_value_heads=2, rope_scaling={
            "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 12, "attention_factor": 1.2})
    if case.startswith("deepseek"):
        return deepseek_config(case)
    raise SystemExit(f"unknown case {case}")


DEEPSEEK = dict(vocab_size=211, hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, moe_intermediate_size=32,
                first_k_dense_replace=1)


def deepseek_config(case):
    if case == "deepseek_v2":
        # Compressed queries, group-limited softmax routing (8 experts in 4 groups, 2 groups kept, top-3), two
        # shared experts, routed_scaling_factor, attention and MLP biases; one dense layer first.
        return DeepseekV2Config(**DEEPSEEK, q_lora_rank=48, n_routed_experts=8, num_experts_per_tok=3, n_group=4,
                                topk_group=2, topk_method="group_limited_greedy", n_shared_experts=2,
                                routed_scaling_factor=1.5, attention_bias=True, mlp_bias=True)
    if case == "deepseek_v2_lite":
        # DeepSeek-V2-Lite's shape: no q_lora_rank (a plain q_proj), greedy top-k over 6 experts, YaRN with mscale
        # and mscale_all_dim (the softmax scale grows by mscale^2).
        return DeepseekV2Config(**DEEPSEEK, q_lora_rank=None, n_routed_experts=6, num_experts_per_tok=2,
                                topk_method="greedy", n_shared_experts=1, n_group=1, topk_group=1,
                                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                              "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32,
                                              "beta_slow": 1})
    if case == "deepseek_v3":
        # Sigmoid scores with a (random) e_score_correction_bias, 8 experts in 4 groups (2 kept), normalised top-2
        # weights times 2.5, interleaved rope, YaRN whose mscale != mscale_all_dim (cos/sin scaled too).
        return DeepseekV3Config(**DEEPSEEK, q_lora_rank=48, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                                topk_group=2, n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                                rope_scaling={"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                                              "mscale": 1.0, "mscale_all_dim": 0.8, "beta_fast": 32, "beta_slow": 1})
    if case == "deepseek_v3_plain_rope":
        # rope_interleave false, raw (not renormalised) weights, no q_lora_rank, all layers sparse.
        c = dict(DEEPSEEK, first_k_dense_replace=0, num_hidden_layers=2)
        return DeepseekV3Config(**c, q_lora_rank=None, n_routed_experts=6, num_experts_per_tok=2, n_group=2,
                                topk_group=1, n_shared_experts=2, routed_scaling_factor=1.0, norm_topk_prob=False,
                                rope_interleave=False)
    raise SystemExit(f"unknown case {case}")


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def padded_batch(vocab, gen):
    # Right-padded and left-padded rows, lengths 20, 13, 7.
    lengths = [20, 13, 7]
    T = max(lengths)
    ids = torch.randint(3, vocab, (3, T), generator=gen)
    mask = torch.zeros(3, T, dtype=torch.long)
    mask[0, :] = 1
    mask[1, :13] = 1                  # right padding
    mask[2, T - 7:] = 1               # left padding
    ids = ids * mask                  # pad id 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def check_logits(bin_path, model_dir, model, tmp, ids, mask, pos, segments=None, tol=1e-5):
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    if segments is not None:
        inputs = {"input_ids": ids, "position_ids": pos, "segment_ids": segments}
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(tmp, "in.safetensors"))
    run([bin_path, "model", "logits", "--model", model_dir, "--inputs", os.path.join(tmp, "in.safetensors"),
         "--out", os.path.join(tmp, "out.safetensors")])
    ours = load_file(os.path.join(tmp, "out.safetensors"))["logits"]
    with torch.no_grad():
        if segments is None:
            ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
            keep = mask.bool()
            err = rel_err(ours[keep], ref[keep])
        else:
            # Reference: each packed sequence run on its own.
            errs = []
            for b in range(ids.shape[0]):
                for s in segments[b].unique().tolist():
                    sel = (segments[b] == s).nonzero().flatten()
                    ref = model(input_ids=ids[b, sel][None]).logits.float()[0]
                    errs.append(rel_err(ours[b, sel], ref))
            err = max(errs)
    assert err < tol, f"logits relative error {err:.3e} >= {tol}"
    return err


def check_generate(bin_path, model_dir, model, vocab, gen):
    prompt = torch.randint(3, vocab, (1, 9), generator=gen)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        ref = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False,
                             min_new_tokens=32)[0, 9:].tolist()
    out = json.loads(run([bin_path, "generate", "--model", model_dir, "--prompt-ids",
                          ",".join(map(str, prompt[0].tolist())), "--max-new-tokens", "32", "--json"]))
    assert out["ids"] == ref, f"greedy tokens differ:\nours {out['ids']}\nhf   {ref}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--case", required=True)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(1234)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        if args.case.startswith("init_"):
            # anneal-train model init -> HF loads it -> same logits both ways.
            arch = args.case[len("init_"):]
            run([args.bin, "model", "init", "--arch", arch, "--preset", "tiny", "--out", model_dir,
                 "--vocab-size", "300", "--seed", "7"])
            model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
            ids, mask, pos = padded_batch(300, gen)
            err = check_logits(args.bin, model_dir, model, tmp, ids, mask, pos)
            print(f"{args.case}: HF loads our model; logits rel err {err:.2e}")
            return
        torch.manual_seed(42)
        config = make_config(args.case)
        config._attn_implementation = "sdpa"
        # No end-of-sequence token: HF's greedy generation below ignores it, so ours must not stop at it either
        # (DeepSeek-V3's default eos id 1 comes up within 32 tokens of a tiny random model).
        config.eos_token_id = None
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
        # Random norms and biases too, so a mistake in their handling cannot hide behind ones and zeros.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
                elif name.endswith("mlp.gate.weight"):
                    p.copy_(torch.randn_like(p))  # a router that routes (HF starts it at zero: all ties)
            for name, b in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    b.copy_(torch.randn_like(b) * 0.2)  # DeepSeek-V3: the bias changes which experts win
        # DeepSeek-V3 is saved in shards with an index file (as its releases ship), the others in one file.
        shard = "60KB" if args.case == "deepseek_v3" else "5GB"
        model.save_pretrained(model_dir, safe_serialization=True, max_shard_size=shard)
        if args.case == "deepseek_v3":
            assert os.path.exists(os.path.join(model_dir, "model.safetensors.index.json")), os.listdir(model_dir)
        vocab = config.vocab_size
        ids, mask, pos = padded_batch(vocab, gen)
        err = check_logits(args.bin, model_dir, model, tmp, ids, mask, pos)
        print(f"{args.case}: padded batch logits rel err {err:.2e}")
        deepseek = ("deepseek_v2", "deepseek_v2_lite", "deepseek_v3", "deepseek_v3_plain_rope")
        if args.case in ("llama_gqa", "qwen2_tied", "qwen3", "qwen3_moe", "llama_yarn") + deepseek:
            # Packing: two rows, each holding 2-3 sequences; attention confined to each, positions restart.
            seg = torch.tensor([[0] * 7 + [1] * 9 + [2] * 4, [0] * 12 + [1] * 8])
            pos_p = torch.cat([torch.arange((seg[b] == s).sum()) for b in range(2) for s in seg[b].unique()]).view(2, 20)
            ids_p = torch.randint(3, vocab, (2, 20), generator=gen)
            err = check_logits(args.bin, model_dir, model, tmp, ids_p, None, pos_p, segments=seg)
            print(f"{args.case}: packed segments logits rel err {err:.2e}")
        if args.case in ("llama_gqa", "qwen2_tied", "mistral_window", "llama3_rope_headdim", "qwen3", "qwen3_moe",
                         "llama_yarn", "qwen2_yarn") + deepseek:
            check_generate(args.bin, model_dir, model, vocab, gen)
            print(f"{args.case}: greedy generation of 32 tokens equals HF generate")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
