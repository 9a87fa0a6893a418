#!/usr/bin/env python3
"""Expert parallelism (expert_model_parallel_size) against the single-process run (Gloo on CPU, fp32).

  qwen3_moe's load-balancing loss is per rank and micro-batch (as under HF's DDP): it depends on the data-parallel
  size but not on ep, so its references are the same dp without expert parallelism; DeepSeek-V3 has none, so its
  reference is one process.
  ep_full: a tiny qwen3_moe (8 routed experts, top-2, 2 layers) fine-tuned in full with (dp 2, ep 2), (dp 4, ep 2)
           and (dp 4, ep 4) gives the losses per step and eval losses (rel < 1e-5) and the exported HF model (every
           expert, by its HF name) of (dp, ep 1); each rank holds fewer parameters. A checkpoint saved at step 5
           with (dp 4, ep 2) resumes with (dp 4, ep 1) and (dp 4, ep 4) and continues with the same losses.
  ep_lora: the same with LoRA on every linear (the routed experts' adapters included) under (dp 2, ep 2) and
           (dp 4, ep 4): losses, eval losses and the exported PEFT adapter; the (dp 4, ep 4) checkpoint resumes
           with (dp 4, ep 1) and (dp 4, ep 2).
  ep_deepseek: a tiny deepseek_v3 (sigmoid group-limited routing, a shared expert, MLA), full and LoRA, with
           (dp 2, ep 2) and (dp 4, ep 4) against one process.
  ep_refused: impossible or unbuilt expert-parallel layouts stop before training with a line naming each problem:
           ep not dividing the data-parallel size or the experts, ep on a dense model, MoE with sequence parallelism, ep with ZeRO, validation rows that give the ranks unequal evaluation batch counts.
  ep_tp: tensor parallel 2 x expert parallel 2 (world 4: dp 2; every expert split over tp like a dense MLP,
           Megatron-core's default expert_tensor_parallel_size = tp): qwen3_moe full and LoRA against (dp 2, ep 1);
           deepseek_v3 (MLA replicated over tp) full and LoRA against one process; the step-5 checkpoints resume
           with (dp 2, ep 1) / one process and continue with the reference's losses (qwen3_moe LoRA and
           deepseek_v3 full only in the .long twin, ANNEAL_TEST_LONG=1).
  moe_zero2: qwen3_moe without load-balancing loss, full, ZeRO-2 and ZeRO-3 at dp 2 without ep (one row per rank
           and micro-batch, so a rank's tokens may miss an expert): the reducer defers its buckets to the end of
           the step (logged) and the run equals one process.
  ep_pp: pipeline parallel 2 x expert parallel 2 (world 4: dp 2): qwen3_moe (its load-balancing loss over both
           stages) against (dp 2, ep 1) and a 4-layer deepseek_v3 against one process, full and LoRA; the full
           checkpoints resume with (dp 2, ep 1) / on one process (qwen3_moe LoRA and deepseek_v3 full only in the
           .long twin).
"""
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from parallel_parity import GLOBAL_BATCH, compare, job, losses, setup, weights  # noqa: E402
from testlib import run, run_cases  # noqa: E402


def moe_model(binary, tmp, arch="qwen3_moe", layers=2, aux_loss=True):
    """A tiny `arch` model; aux_loss=False sets qwen3_moe's router_aux_loss_coef to 0 in its config.json."""
    setup(tmp, binary)  # the tokenizer (and a dense llama model, for the refusals)
    model = os.path.join(tmp, f"{arch}-{layers}" + ("" if aux_loss else "-noaux"))
    if os.path.exists(model):
        return model
    run([binary, "model", "init", "--arch", arch, "--preset", "tiny", "--tokenizer", os.path.join(tmp, "tok"),
         "--out", model, "--seed", "3", "--layers", str(layers)])
    if not aux_loss:
        path = os.path.join(model, "config.json")
        config = json.load(open(path))
        config["router_aux_loss_coef"] = 0.0
        json.dump(config, open(path, "w"), indent=2)
    return model


def train(binary, tmp, model, ft, dp, ep, name, extra=(), tp=1, pp=1):
    out = os.path.join(tmp, name)
    world = dp * tp * pp
    cfg = job(tmp, model, out, ft, [f"per_device_train_batch_size: {GLOBAL_BATCH // dp}", "max_steps: 10",
                                    "eval_steps: 5", f"expert_model_parallel_size: {ep}", f"gpus_per_node: {world}",
                                    f"tensor_model_parallel_size: {tp}", f"pipeline_model_parallel_size: {pp}"]
              + list(extra))
    cmd = [binary, "train", "--config", cfg] if world == 1 else \
        [binary, "launch", "--nproc-per-node", str(world), "--", "train", "--config", cfg]
    return out, run(cmd)


def held_parameters(stderr):
    """Parameters per global rank from the trainer's holdings lines."""
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(r"\[train\] rank (\d+) .*?\), (\d+) parameters", stderr)}


def layouts(binary, tmp, ft, arch="qwen3_moe", pairs=((2, 2), (4, 2), (4, 4)), single=False):
    """Each (dp, ep) against (dp, ep 1), or against one process when `single` (a model without load-balancing
    loss: qwen3_moe's is per rank and micro-batch, as under HF's DDP, so it depends on dp but not on ep)."""
    model = moe_model(binary, tmp, arch)
    refs, whole = {}, {}
    for dp in sorted({1 if single else dp for dp, _ in pairs}):
        refs[dp], p = train(binary, tmp, model, ft, dp, 1, f"{arch}-{ft}-dp{dp}-ep1", ["save_steps: 5"])
        whole[dp] = held_parameters(p.stderr)[0]
    for dp, ep in pairs:
        ref = refs[1 if single else dp]
        out, p = train(binary, tmp, model, ft, dp, ep, f"{arch}-{ft}-dp{dp}-ep{ep}", ["save_steps: 5"])
        compare(ft, ref, out, f"{arch} (dp {dp}, ep {ep}) against {os.path.basename(ref)}")
        experts = {int(m.group(1)) for k in weights(out, ft) for m in [re.search(r"\.mlp\.experts\.(\d+)\.", k)] if m}
        assert experts == set(range(8)), f"the export holds experts {sorted(experts)}, not all 8"
        held = held_parameters(p.stderr)
        assert len(held) == dp and all(h < whole[1 if single else dp] for h in held.values()), (whole, held)
    return model, refs


def copy_at_step_5(run_dir, copy):
    """`run_dir` copied to `copy` as it stood after step 5 (checkpoint-10 and the log gone): its checkpoint-5."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoint-10"))
    os.remove(os.path.join(copy, "trainer_log.jsonl"))
    return os.path.join(copy, "checkpoint-5")


def resume(binary, tmp, model, ft, ref, saved_as, onto):
    """The step-5 checkpoint of the run saved with (dp, ep) `saved_as` resumes with each (dp, ep) of `onto` and
    continues with the losses of `ref`."""
    saved = os.path.join(tmp, f"qwen3_moe-{ft}-dp{saved_as[0]}-ep{saved_as[1]}")
    for dp, ep in onto:
        out = os.path.join(tmp, f"{ft}-resumed-dp{dp}-ep{ep}")
        train(binary, tmp, model, ft, dp, ep, os.path.basename(out),
              ["resume_from_checkpoint: " + copy_at_step_5(saved, out), "save_steps: 5"])
        assert len(losses(out)) == 5, losses(out)
        compare(ft, ref, out, f"saved with (dp {saved_as[0]}, ep {saved_as[1]}), resumed with (dp {dp}, ep {ep})",
                first_step=6)


def case_ep_full(binary, tmp):
    model, refs = layouts(binary, tmp, "full")
    # A checkpoint of (dp 4, ep 2) holds every expert: it resumes without expert parallelism and with ep 4.
    resume(binary, tmp, model, "full", refs[4], (4, 2), ((4, 1), (4, 4)))


def case_ep_lora(binary, tmp):
    model, refs = layouts(binary, tmp, "lora", pairs=((2, 2), (4, 4)))
    resume(binary, tmp, model, "lora", refs[4], (4, 4), ((4, 1), (4, 2)))


def case_ep_deepseek(binary, tmp):
    # No load-balancing loss in DeepSeek-V3: every layout equals one process.
    for ft in ("full", "lora"):
        layouts(binary, tmp, ft, arch="deepseek_v3", pairs=((2, 2), (4, 4)), single=True)


def composed(binary, tmp, arch, ft, ref_dp, tp, pp, layers=2, aux_loss=True, resume_onto=None, extra=()):
    """(tp, pp, dp 2, ep 2) against (dp ref_dp, ep 1) without tp or pp: per-step losses, eval losses, the export
    (every expert); with resume_onto (dp, ep) the step-5 checkpoint continues there with the reference's losses."""
    model = moe_model(binary, tmp, arch, layers, aux_loss)
    tag = f"{os.path.basename(model)}-{ft}"
    extra = ["save_steps: 5"] + list(extra)
    ref, _ = train(binary, tmp, model, ft, ref_dp, 1, f"{tag}-dp{ref_dp}", extra)
    out, p = train(binary, tmp, model, ft, 2, 2, f"{tag}-tp{tp}-pp{pp}-ep2", extra, tp=tp, pp=pp)
    compare(ft, ref, out, f"{arch} (tp {tp}, pp {pp}, dp 2, ep 2) against {os.path.basename(ref)}")
    experts = {int(m.group(1)) for k in weights(out, ft) for m in [re.search(r"\.mlp\.experts\.(\d+)\.", k)] if m}
    assert experts == set(range(8)), f"the export holds experts {sorted(experts)}, not all 8"
    if resume_onto:
        dp, ep = resume_onto
        resumed = os.path.join(tmp, f"{tag}-tp{tp}-pp{pp}-ep2-resumed-dp{dp}-ep{ep}")
        train(binary, tmp, model, ft, dp, ep, os.path.basename(resumed),
              ["resume_from_checkpoint: " + copy_at_step_5(out, resumed)] + extra)
        assert len(losses(resumed)) == 5, losses(resumed)
        compare(ft, ref, resumed, f"{arch} saved with (tp {tp}, pp {pp}, dp 2, ep 2), resumed with (dp {dp}, ep {ep})",
                first_step=6)


LONG = os.environ.get("ANNEAL_TEST_LONG") == "1"


def case_ep_tp(binary, tmp):
    # Experts split over tp like dense MLPs (Megatron-core's default expert tensor parallel size = tp). qwen3_moe's
    # load-balancing loss is per data-parallel rank, so its reference is dp 2; DeepSeek-V3 (none) equals one process.
    # By default qwen3_moe full and deepseek_v3 LoRA; the .long twin adds the other two.
    composed(binary, tmp, "qwen3_moe", "full", 2, tp=2, pp=1, resume_onto=(2, 1))
    composed(binary, tmp, "deepseek_v3", "lora", 1, tp=2, pp=1, resume_onto=(1, 1))
    if LONG:
        composed(binary, tmp, "qwen3_moe", "lora", 2, tp=2, pp=1)
        composed(binary, tmp, "deepseek_v3", "full", 1, tp=2, pp=1, resume_onto=(1, 1))


def case_ep_pp(binary, tmp):
    # Each stage's MoE layers use its own expert groups; qwen3_moe's load-balancing loss spans both stages (its parts
    # travel with the activations and gradients), per data-parallel rank as ever, so its reference is dp 2. A
    # 4-layer DeepSeek-V3 (stage 0 holds the dense layer 0 and the sparse layer 1) equals one process.
    # (qwen3_moe with activation checkpointing under pp: parallel_parity.py qwen3.)
    no_ckpt = ["gradient_checkpointing: false"]
    composed(binary, tmp, "qwen3_moe", "full", 2, tp=1, pp=2, resume_onto=(2, 1), extra=no_ckpt)
    composed(binary, tmp, "deepseek_v3", "lora", 1, tp=1, pp=2, layers=4, resume_onto=(1, 1))
    if LONG:
        composed(binary, tmp, "qwen3_moe", "lora", 2, tp=1, pp=2, extra=no_ckpt)
        composed(binary, tmp, "deepseek_v3", "full", 1, tp=1, pp=2, layers=4)


def case_moe_zero2(binary, tmp):
    """A tiny qwen3_moe without load-balancing loss (so one process is the reference), full fine-tuning under
    ZeRO-2 and ZeRO-3 at dp 2 without expert parallelism, one row per rank and micro-batch: a rank whose tokens miss
    an expert gets no gradient for it, and the reducer defers its buckets to the end of the step so both ranks issue
    the same collectives; losses, eval losses and the export equal one process."""
    model = moe_model(binary, tmp, aux_loss=False)

    def run_dp(dp, name, extra=()):
        out = os.path.join(tmp, name)
        cfg = job(tmp, model, out, "full", [f"per_device_train_batch_size: {2 // dp}", "max_steps: 6",
                                            "eval_steps: 3", f"gpus_per_node: {dp}"] + list(extra))
        cmd = [binary, "train", "--config", cfg] if dp == 1 else \
            [binary, "launch", "--nproc-per-node", str(dp), "--", "train", "--config", cfg]
        return out, run(cmd)

    ref, _ = run_dp(1, "moe-full-single")
    for stage in (2, 3):
        out, p = run_dp(2, f"moe-full-zero{stage}", [f"zero_stage: {stage}"])
        assert "(routed experts: every bucket after backward)" in p.stderr, p.stderr[-2000:]
        compare("full", ref, out, f"qwen3_moe (dp 2, ZeRO-{stage}, no ep) against one process")


def case_ep_refused(binary, tmp):
    moe = moe_model(binary, tmp)
    dense = os.path.join(tmp, "model")
    cases = [
        (moe, 2, ["expert_model_parallel_size: 4"],
         ["invalid parallel layout (tp=1, pp=1, ep=4, world=2)",
          "expert parallel 4 does not divide the data parallel size 2"]),
        (moe, 3, ["expert_model_parallel_size: 3"],
         ["expert parallel 3 does not divide the 8 routed experts"]),
        (dense, 2, ["expert_model_parallel_size: 2"],
         ["expert parallel 2 needs a mixture-of-experts model (this one is dense)"]),
        (moe, 4, ["expert_model_parallel_size: 2", "tensor_model_parallel_size: 2", "sequence_parallel: true"],
         ["qwen3_moe (mixture of experts): sequence_parallel is not built"]),
        (moe, 2, ["expert_model_parallel_size: 2", "zero_stage: 1"],
         ["expert_model_parallel_size 2 with zero_stage 1 is not built"]),
        # Every forward is a collective over the expert-parallel group: ranks with unequal evaluation batch counts
        # (3 and 2 validation rows in batches of 2) would wait on each other forever.
        (moe, 2, ["expert_model_parallel_size: 2", "val_size: 5", "per_device_eval_batch_size: 2"],
         ["the 5 validation rows give the 2 data-parallel ranks unequal numbers of evaluation batches"]),
    ]
    for i, (model, world, extra, expected) in enumerate(cases):
        out = os.path.join(tmp, f"bad{i}")
        p = run([binary, "launch", "--nproc-per-node", str(world), "--", "train", "--config",
                 job(tmp, model, out, "full", extra + [f"gpus_per_node: {world}"])], check=False)
        assert p.returncode != 0, (extra, p.stdout[-500:], p.stderr[-1500:])
        for e in expected:
            assert e in p.stderr, f"{extra}: missing '{e}' in:\n{p.stderr[-1500:]}"
        assert not os.path.exists(os.path.join(out, "trainer_log.jsonl")), f"{extra}: training started"
        print(f"refused {extra}: {expected[-1]}")


if __name__ == "__main__":
    run_cases({"ep_full": case_ep_full, "ep_lora": case_ep_lora, "ep_deepseek": case_ep_deepseek,
               "ep_tp": case_ep_tp, "ep_pp": case_ep_pp, "ep_refused": case_ep_refused, "moe_zero2": case_moe_zero2})
