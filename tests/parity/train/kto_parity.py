#!/usr/bin/env python3
"""KTO (stage kto) of anneal-train against LLaMA-Factory's own KTO trainer code with TRL 1.16's KTO loss, HF
transformers, peft and torch.optim.AdamW, and against trl 1.16's own KTOTrainer (peers nobody here wrote).

The reference runs LLaMA-Factory v0.9.5 itself where it can: its converter's reading of kto_tag rows is the
(_prompt, _response) built below exactly as converter.py builds it ([answer, ""] for a desirable answer, ["",
answer] for an undesirable one), its FeedbackDatasetProcessor encodes them (the KL completions included: row i's
prompt with row i-1's answer), and its CustomKTOTrainer's forward, concatenated_forward,
compute_reference_log_probs (peft's disable_adapter under LoRA, a frozen copy otherwise) and
get_batch_loss_metrics (pref_ftx with its rescale, and every metric sum) run bound to a stand-in object. kto_loss,
which LLaMA-Factory inherits from TRL <= 0.24 (not installable next to this transformers), is trl 1.16's
KTOTrainer._compute_loss formula written out below (the same formula). The collator pads the target and the KL
batches separately to a multiple of 8, as LLaMA-Factory's KTODataCollatorWithPadding. The step is HF Trainer's:
the micro-batch loss / gradient_accumulation_steps, clip 1.0, AdamW, cosine with warmup. The metrics are
LLaMA-Factory's log(): each sum over the step's micro-batches divided by the count; its kl is the sum of the
micro-batches' kl, Anneal's the mean (trl 1.16 logs the mean): with accumulation the comparison divides.

Cases (one ctest each); every step's batch is the whole dataset of 4 rows (2 desirable, 2 undesirable); with
accumulation the reference groups the micro-batches' rows in anneal-train's sampler order (the KL estimate is per
micro-batch, so the grouping matters; anneal_epoch_order):
  lora      : alpaca kto_tag rows, qwen template, LoRA from a random adapter (so the reference differs from the
              policy at step 1), pref_ftx 0.3, kto_chosen_weight 1.0, kto_rejected_weight 0.7: per-step losses and
              every metric (rewards, margins, logps, logits, kl) equal; every 5 steps the evaluation on a sharegpt
              eval set (batches of 2) equals HF's evaluation loop over LLaMA-Factory's KTO code: eval_loss and
              eval_rewards/*, eval_logps/*, eval_logits/*, eval_kl (evaluate_reference says how kl is logged).
  full      : sharegpt kto_tag rows (system prompt, history), full fine-tuning against a frozen reference, 2
              micro-batches of 2 (accumulation): losses and metrics equal.
  lora_dp2  : the lora case run as dp 2 (anneal-train launch, 2 rows per rank; the KL estimate is the mean of the
              ranks' means, TRL's gather) equals LLaMA-Factory's code on 2 emulated DDP ranks (reference_run_ranks:
              each rank's rows in anneal-train's order, padded on their own; pref_ftx's rescale per rank), every
              metric included.
  lora_tp2  : the lora case under tensor parallel 2 (log probabilities and logits sums combined over the
              vocabulary pieces) equals the single-process reference, every metric included.
  full_tp2_sp : the full case under tensor parallel 2 with sequence parallelism, the frozen reference split the
              same way, equals the single-process reference.
  lora_tp2_dp2 : the lora_dp2 case on 4 ranks, tp 2 x dp 2 (the KL mean over the 2 replicas) equals the
              2-rank emulation.
  lora_pp2  : the lora case under pipeline parallel 2 (1F1B), 2 micro-batches of 2 rows, evaluation through the
              pipeline: every metric and the evaluations equal the single-process reference.
  full_pp2_gpipe : the full case under pp 2 with the GPipe schedule, the frozen reference held per stage.
  resume    : checkpoint-5 resumed in a fresh directory: steps 6-10 and the adapter bit-identical.
  lora_dp2_zero3 : lora_dp2 with ZeRO-3 (the adapters stored as shards, gathered per layer) equals the same
              reference.
  trl_peft  : 10 steps against trl 1.16's own KTOTrainer with peft (case_trl_peft says what is compared).
  lf_example: LLaMA-Factory's examples/train_lora/qwen3_lora_kto.yaml runs unchanged but for the model path.
  refusals  : a kto_tag dataset under stage dpo, a plain dataset under stage kto, kto with pipeline parallelism,
              "ranking" with a kto_tag column, and a row whose kto_tag is not a boolean each fail naming the problem.
"""
import json
import math
import os
import subprocess
import sys
import types

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from transformers.optimization import get_scheduler

torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")
# TRL before LLaMA-Factory: the LLaMA-Factory import stubs optional modules TRL must see as absent.
from datasets import Dataset  # noqa: E402
from trl import KTOConfig, KTOTrainer  # noqa: E402

os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
os.environ["DISABLE_VERSION_CHECK"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dpo_parity  # noqa: E402
from dpo_parity import frozen, initial_adapter, lora_reference, our_log, our_metrics, train_with_events  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import expect_refused, import_stubbing, run_cases  # noqa: E402

STEPS = 10
ROWS = 4

KTO_ALPACA = [
    {"instruction": "Name a color of the sky", "input": "", "output": "Blue, on a clear day.", "kto_tag": True},
    {"instruction": "Add the numbers", "input": "2 and 3", "output": "It is 7, surely.", "kto_tag": False},
    {"instruction": "Say hello politely", "input": "", "output": "Hello, nice to meet you!", "kto_tag": True},
    {"instruction": "Translate 'gato' to English", "input": "", "output": "The word means dog in English.",
     "kto_tag": False},
]

KTO_SHAREGPT = [
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris."}], "label": True},
    {"messages": [{"role": "user", "content": "A fruit that is yellow"},
                  {"role": "assistant", "content": "A cucumber, obviously not."}], "label": False},
    {"messages": [{"role": "user", "content": "Opposite of up"}, {"role": "assistant", "content": "down"}],
     "label": True},
    {"messages": [{"role": "user", "content": "3 * 4?"}, {"role": "assistant", "content": "34"}], "label": False},
]

DATASET_INFO = {
    "kto_alpaca": {"file_name": "kto_alpaca.json",
                   "columns": {"prompt": "instruction", "query": "input", "response": "output", "kto_tag": "kto_tag"}},
    "kto_sharegpt": {"file_name": "kto_sharegpt.json", "formatting": "sharegpt",
                     "columns": {"messages": "messages", "kto_tag": "label"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant", "system_tag": "system"}},
    "kto_ranking": {"file_name": "kto_alpaca.json", "ranking": True,
                    "columns": {"prompt": "instruction", "chosen": "output", "rejected": "output",
                                "kto_tag": "kto_tag"}},
    "kto_bad_tag": {"file_name": "kto_bad_tag.json",
                    "columns": {"prompt": "instruction", "response": "output", "kto_tag": "kto_tag"}},
}


def import_llamafactory():
    def do_import():
        from llamafactory.data.processor.feedback import FeedbackDatasetProcessor
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.train.kto.trainer import CustomKTOTrainer
        return CustomKTOTrainer, FeedbackDatasetProcessor, get_template_and_fix_tokenizer
    return import_stubbing(do_import)


def setup(tmp):
    model_dir, data = dpo_parity.setup(tmp)
    json.dump(KTO_ALPACA, open(os.path.join(data, "kto_alpaca.json"), "w"))
    json.dump(KTO_SHAREGPT, open(os.path.join(data, "kto_sharegpt.json"), "w"))
    json.dump([{"instruction": "hi", "output": "hello", "kto_tag": "yes"}],
              open(os.path.join(data, "kto_bad_tag.json"), "w"))
    info = json.load(open(os.path.join(data, "dataset_info.json")))
    info.update(DATASET_INFO)
    json.dump(info, open(os.path.join(data, "dataset_info.json"), "w"))
    return model_dir, data


def job_yaml(path, model_dir, data, out, extra):
    lines = [f"model_name_or_path: {model_dir}", "stage: kto", "dataset: kto_alpaca", f"dataset_dir: {data}",
             "template: qwen", "cutoff_len: 256", f"output_dir: {out}", f"per_device_train_batch_size: {ROWS}",
             "gradient_accumulation_steps: 1", "learning_rate: 5.0e-3", f"max_steps: {STEPS}",
             "lr_scheduler_type: cosine", "warmup_steps: 2", "max_grad_norm: 1.0", "logging_steps: 1",
             "save_strategy: \"no\"", "seed: 3", "overwrite_output_dir: true", "pref_beta: 0.2"]
    keys = {e.split(":")[0] for e in extra}
    lines = [l for l in lines if l.split(":")[0] not in keys] + extra
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def encode_feedback(model_dir, dataset, template="qwen"):
    """LLaMA-Factory's FeedbackDatasetProcessor over the rows, as its converter aligns kto_tag rows."""
    _, Processor, get_template = import_llamafactory()
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    args = types.SimpleNamespace(template=template, tool_format=None, default_system=None, enable_thinking=True,
                                 preserve_thinking=False, cutoff_len=256, train_on_prompt=False, mask_history=False)
    tmpl = get_template(tok, args)
    proc = Processor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
    prompts, responses, systems = [], [], []
    for r in (KTO_ALPACA if dataset == "kto_alpaca" else KTO_SHAREGPT):
        if dataset == "kto_alpaca":
            query = "\n".join(x for x in (r["instruction"], r["input"]) if x)
            prompt, answer, system, tag = [{"role": "user", "content": query}], r["output"], "", r["kto_tag"]
        else:
            msgs, system = r["messages"], ""
            if msgs[0]["role"] == "system":
                system, msgs = msgs[0]["content"], msgs[1:]
            prompt, answer, tag = [dict(m) for m in msgs[:-1]], msgs[-1]["content"], r["label"]
        a, empty = {"role": "assistant", "content": answer}, {"role": "assistant", "content": ""}
        prompts.append(prompt)
        responses.append([a, empty] if tag else [empty, a])
        systems.append(system)
    n = len(prompts)
    out = proc.preprocess_dataset({"_prompt": prompts, "_response": responses, "_system": systems,
                                   "_tools": [""] * n, "_images": [None] * n, "_videos": [None] * n,
                                   "_audios": [None] * n})
    assert sum(out["kto_tags"]) == 2 and len(out["kto_tags"]) == ROWS, out["kto_tags"]
    return out, tok.pad_token_id


def pad8(seqs, pad_id):
    T = (max(len(s) for s, _ in seqs) + 7) // 8 * 8
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for k, (s, l) in enumerate(seqs):
        ids[k, :len(s)], labels[k, :len(s)], mask[k, :len(s)] = torch.tensor(s), torch.tensor(l), 1
    return ids, mask, labels


def collate(features, idx, pad_id):
    """KTODataCollatorWithPadding: the target and the KL batches, each right-padded to a multiple of 8."""
    ids, mask, labels = pad8([(features["input_ids"][i], features["labels"][i]) for i in idx], pad_id)
    kl_ids, kl_mask, kl_labels = pad8([(features["kl_input_ids"][i], features["kl_labels"][i]) for i in idx], pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "kl_input_ids": kl_ids,
            "kl_attention_mask": kl_mask, "kl_labels": kl_labels,
            "kto_tags": torch.tensor([features["kto_tags"][i] for i in idx])}


class LlamaFactoryKTO:
    """The attributes LLaMA-Factory's CustomKTOTrainer methods read, with those methods bound to it."""

    def __init__(self, beta, ftx, chosen_weight, rejected_weight, ref_model=None):
        trainer_cls, _, _ = import_llamafactory()
        self.beta, self.ftx_gamma = beta, ftx
        self.desirable_weight, self.undesirable_weight = chosen_weight, rejected_weight
        self.ref_model = ref_model
        self.accelerator = types.SimpleNamespace(unwrap_model=lambda m: m, device=torch.device("cpu"))
        for name in ("forward", "concatenated_forward", "compute_reference_log_probs", "get_batch_loss_metrics"):
            setattr(self, name, types.MethodType(getattr(trainer_cls, name), self))

    kl_gathered = None  # emulated ranks: the ranks' KL means (gather_for_metrics), set by reference_run
    raw_kl = None

    def kto_loss(self, chosen, rejected, kl_logps, ref_chosen, ref_rejected, ref_kl_logps):
        # trl 1.16 KTOTrainer._compute_loss (loss_type "kto"): kl = gather_for_metrics(kl).mean().clamp(min=0); on
        # one process the gather is the identity, on emulated ranks it is the ranks' means.
        self.raw_kl = (kl_logps - ref_kl_logps).mean().detach()
        gathered = self.raw_kl if self.kl_gathered is None else self.kl_gathered
        kl = gathered.mean().clamp(min=0)
        chosen_logratios, rejected_logratios = chosen - ref_chosen, rejected - ref_rejected
        chosen_losses = 1 - F.sigmoid(self.beta * (chosen_logratios - kl))
        rejected_losses = 1 - F.sigmoid(self.beta * (kl - rejected_logratios))
        losses = torch.cat((self.desirable_weight * chosen_losses, self.undesirable_weight * rejected_losses), 0)
        return losses, self.beta * chosen_logratios.detach(), self.beta * rejected_logratios.detach(), kl


def anneal_epoch_order(n, seed, epoch):
    """The rows' order in an epoch of anneal-train's sampler (trainer/data/sampler.h: a Fisher-Yates shuffle driven
    by splitmix64 from (seed, epoch)). With accumulation the KL estimate is per micro-batch, so the reference
    must group the rows as the run does; the losses and their math stay LLaMA-Factory's."""
    mask = 2 ** 64 - 1

    def splitmix(state):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return state, z ^ (z >> 31)

    _, state = splitmix(seed ^ ((epoch * 0xD1342543DE82EF95) & mask))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound, limit = i + 1, mask - (mask % (i + 1))
        while True:
            state, x = splitmix(state)
            if x < limit:
                break
        j = x % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def reference_run(model, params, lf, features, pad_id, micro_rows, lr=5e-3, seed=3, ranks=1, evaluate=None):
    """HF Trainer's steps over the whole dataset (each step one epoch; its micro-batches group the rows in
    anneal-train's order); per step LLaMA-Factory's logged metrics (its log(): sums over the micro-batches and
    ranks / counts; kl summed) and the loss. ranks > 1 emulates DDP on one process: rank r's micro-batch holds the
    step's positions r, r + ranks, ... (each rank padded on its own), the KL estimate is the mean of the ranks'
    (TRL's gather_for_metrics), each rank's loss counts 1 / ranks (DDP's gradient mean). evaluate (one rank
    only): {"every", "features", "batch"}: HF's evaluation loop every `every` steps, its results appended to
    evaluate["results"] (evaluate_reference)."""
    if ranks > 1:
        return reference_run_ranks(model, params, lf, features, pad_id, lr, seed, ranks)
    opt = torch.optim.AdamW([p for _, p in params], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=STEPS)
    losses, metrics = [], []
    model.train()
    for step in range(STEPS):
        order = anneal_epoch_order(ROWS, seed, step)
        groups = [order[k:k + micro_rows] for k in range(0, ROWS, micro_rows)]
        total, sums = 0.0, {}
        for g in groups:
            loss, m = lf.get_batch_loss_metrics(model, collate(features, g, pad_id))
            (loss / len(groups)).backward()
            total += loss.item() / len(groups)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        losses.append(total)
        metrics.append(step_and_log(params, opt, sched, sums))
        if evaluate and len(losses) % evaluate["every"] == 0:
            evaluate["results"].append(evaluate_reference(model, lf, evaluate["features"], pad_id, evaluate["batch"]))
    return losses, metrics, len(groups)


def evaluate_reference(model, lf, features, pad_id, batch):
    """HF's evaluation loop over LLaMA-Factory's KTO trainer (model.eval(), no grad, batches of `batch` rows in
    order; eval_loss the batch losses weighted by their sizes) and its log() of the stored eval metrics: sums over
    the batches / counts, prefixed eval_. LLaMA-Factory logs the batches' KL sum unprefixed as "kl"; Anneal logs
    eval_kl as their mean (as trl 1.16 and its own training kl): here the sum / the batch count."""
    rows = len(features["input_ids"])
    model.eval()
    total, sums, batches = 0.0, {}, 0
    with torch.no_grad():
        for k in range(0, rows, batch):
            idx = list(range(k, min(k + batch, rows)))
            loss, m = lf.get_batch_loss_metrics(model, collate(features, idx, pad_id))
            total += loss.item() * len(idx)
            batches += 1
            for key, v in m.items():
                sums[key] = sums.get(key, 0.0) + v
    model.train()
    logged = {"eval_loss": total / rows, "eval_kl": sums["kl"] / batches}
    for side in ("chosen", "rejected"):
        for key in ("rewards", "logps", "logits"):
            logged[f"eval_{key}/{side}"] = sums[f"{key}/{side}_sum"] / sums[f"count/{side}"]
    logged["eval_rewards/margins"] = logged["eval_rewards/chosen"] - logged["eval_rewards/rejected"]
    return logged


EVAL_KEYS = ["eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_logps/chosen",
             "eval_logps/rejected", "eval_logits/chosen", "eval_logits/rejected", "eval_kl"]


def compare_evals(out, evaluate, tol=1e-4):
    """trainer_log.jsonl's eval records equal evaluate_reference's, every key; (count, worst relative error)."""
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        ours = [r for r in map(json.loads, f) if "eval_loss" in r]
    theirs = evaluate["results"]
    assert len(ours) == len(theirs) == STEPS // evaluate["every"], f"evals: ours {ours}, LLaMA-Factory {theirs}"
    worst = 0.0
    for o, t in zip(ours, theirs):
        for k in EVAL_KEYS:
            assert k in o, f"{k} missing from our eval record {sorted(o)}"
            err = abs(o[k] - t[k]) / max(abs(t[k]), 1e-2)
            worst = max(worst, err)
            assert err < tol, f"{k}: ours {o[k]}, LLaMA-Factory {t[k]} (eval after step {o.get('current_steps')})"
    assert max(t["eval_kl"] for t in theirs) > 0, f"the eval KL estimate was always 0: {theirs}"
    return len(ours), worst


def step_and_log(params, opt, sched, sums):
    """HF Trainer's step (clip 1.0, AdamW, the schedule) and LLaMA-Factory's log() of the step's metric sums."""
    torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
    logged = {"kl": sums["kl"]}
    for side in ("chosen", "rejected"):
        for key in ("rewards", "logps", "logits"):
            logged[f"{key}/{side}"] = sums[f"{key}/{side}_sum"] / sums[f"count/{side}"]
    logged["rewards/margins"] = logged["rewards/chosen"] - logged["rewards/rejected"]
    return logged


def reference_run_ranks(model, params, lf, features, pad_id, lr, seed, ranks):
    opt = torch.optim.AdamW([p for _, p in params], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=STEPS)
    losses, metrics = [], []
    model.train()
    for step in range(STEPS):
        order = anneal_epoch_order(ROWS, seed, step)
        groups = [order[r::ranks] for r in range(ranks)]
        raw = []
        with torch.no_grad():  # each rank's KL mean, then gathered
            for g in groups:
                lf.kl_gathered = None
                lf.get_batch_loss_metrics(model, collate(features, g, pad_id))
                raw.append(lf.raw_kl)
        lf.kl_gathered = torch.stack(raw)
        total, sums = 0.0, {}
        for g in groups:
            loss, m = lf.get_batch_loss_metrics(model, collate(features, g, pad_id))
            (loss / ranks).backward()
            total += loss.item() / ranks
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        lf.kl_gathered = None
        losses.append(total)
        metrics.append(step_and_log(params, opt, sched, sums))
    return losses, metrics, ranks


KEYS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"]


def fp32_resolution(step_metrics, key, beta=0.2):
    """The absolute error a metric computed from fp32 log probabilities of magnitude |logps| carries when each input
    is off by one unit in the last place: rewards/* and kl are differences of two such values (x beta for rewards),
    margins of four. TRL 1.16 computes log probabilities in tiles (its fused LM head), so near-zero rewards differ
    from ours by that much, e.g. 1.5e-6 = 0.2 x ulp(102.4) on a reward of -0.003 (1.5e-4 relative to 1e-2)."""
    if not (key.startswith("rewards/") or key == "kl"):
        return 0.0
    ulp = 2.0 ** (math.floor(math.log2(max(abs(step_metrics["logps/chosen"]), abs(step_metrics["logps/rejected"]))))
                  - 23)
    return {"rewards/margins": 4 * beta, "kl": 2.0}.get(key, 2 * beta) * ulp


def compare(ours, mine, ref, theirs, keys, micro_count, tol=1e-4, ulp_allowance=False):
    assert len(ours) == len(ref) == len(mine) == STEPS, f"steps: ours {len(ours)}/{len(mine)}, reference {len(ref)}"
    worst = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(ours, ref))
    assert worst < tol, f"per-step losses differ (max rel {worst:.2e}):\nours {ours}\nref  {ref}"
    assert ref[-1] < ref[0], "the reference loss did not fall: the test would prove nothing"
    worst_metric = 0.0
    for step, (m, t) in enumerate(zip(mine, theirs)):
        for k in keys:
            assert k in m, f"step {step + 1}: metric {k} missing from ours: {sorted(m)}"
            want = t[k] / micro_count if k == "kl" else t[k]  # LLaMA-Factory sums kl over micro-batches
            slack = fp32_resolution(t, k) if ulp_allowance else 0.0
            err = max(0.0, abs(m[k] - want) - slack) / max(abs(want), 1e-2)
            worst_metric = max(worst_metric, err)
            assert err < tol, f"step {step + 1}: {k} ours {m[k]} LLaMA-Factory {want}"
    kls = [t["kl"] for t in theirs]
    assert max(kls) > 0, f"the KL estimate was clamped to 0 at every step ({kls}): the KL term went untested"
    return worst, worst_metric, kls


def run_lora(binary, tmp, extra, ftx, launch=None, micro_rows=ROWS, ranks=1, evaluate=None):
    model_dir, data = setup(tmp)
    init_adapter = initial_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", f"pref_ftx: {ftx}",
                    "kto_chosen_weight: 1.0", "kto_rejected_weight: 0.7"] + extra +
                   (["eval_dataset: kto_sharegpt", "eval_strategy: steps", f"eval_steps: {evaluate['every']}",
                     f"per_device_eval_batch_size: {evaluate['batch']}"] if evaluate else []))
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = encode_feedback(model_dir, "kto_alpaca")
    model, params = lora_reference(model_dir, init_adapter)
    if evaluate:
        evaluate.update(features=encode_feedback(model_dir, "kto_sharegpt")[0], results=[])
    ref, theirs, micro = reference_run(model, params, LlamaFactoryKTO(0.2, ftx, 1.0, 0.7), features, pad_id,
                                       micro_rows, ranks=ranks, evaluate=evaluate)
    return [e["loss"] for e in our_log(out)], our_metrics(out), ref, theirs, micro


def case_lora(binary, tmp):
    evaluate = {"every": 5, "batch": 2}
    ours, mine, ref, theirs, micro = run_lora(binary, tmp, [], 0.3, evaluate=evaluate)
    worst, worst_m, kls = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    evals, worst_e = compare_evals(os.path.join(tmp, "out"), evaluate)
    print(f"lora: {STEPS} KTO losses equal LLaMA-Factory's (max rel {worst:.2e}), {len(KEYS) + 2} metrics per step "
          f"(max rel {worst_m:.2e}); loss {ref[0]:.4f} -> {ref[-1]:.4f}, kl {min(kls):.4f}..{max(kls):.4f}; {evals} "
          f"evaluations on a sharegpt eval set (batches of 2), {len(EVAL_KEYS)} eval metrics each equal LLaMA-Factory's "
          f"(max rel {worst_e:.2e})")


def case_lora_dp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    ours, mine, ref, theirs, micro = run_lora(binary, tmp, ["per_device_train_batch_size: 2"], 0.3, launch=launch,
                                              ranks=2)
    worst, worst_m, _ = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    print(f"lora_dp2: 2 ranks x 2 rows, {STEPS} KTO losses equal LLaMA-Factory's on 2 emulated DDP ranks (max rel "
          f"{worst:.2e}), metrics (logits too) max rel {worst_m:.2e}")


def case_lora_dp2_zero3(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    ours, mine, ref, theirs, micro = run_lora(binary, tmp, ["per_device_train_batch_size: 2", "zero_stage: 3",
                                                            "ddp_bucket_cap_mb: 0.01"], 0.3, launch=launch, ranks=2)
    worst, worst_m, _ = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    print(f"lora_dp2_zero3: 2 ranks x 2 rows, ZeRO-3: {STEPS} KTO losses equal LLaMA-Factory's on 2 emulated DDP "
          f"ranks (max rel {worst:.2e}), metrics max rel {worst_m:.2e}")


def case_lora_tp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    evaluate = {"every": 5, "batch": 2}
    ours, mine, ref, theirs, micro = run_lora(binary, tmp, ["tensor_model_parallel_size: 2"], 0.3, launch=launch,
                                              evaluate=evaluate)
    worst, worst_m, kls = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    evals, worst_e = compare_evals(os.path.join(tmp, "out"), evaluate)
    print(f"lora_tp2: the vocabulary split over 2 ranks (logps and logits sums combined over the group): {STEPS} KTO "
          f"losses equal LLaMA-Factory's on one process (max rel {worst:.2e}), metrics (logits, kl too) max rel "
          f"{worst_m:.2e}; kl {min(kls):.4f}..{max(kls):.4f}; {evals} evaluations equal (max rel {worst_e:.2e})")


def case_lora_tp2_dp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "4"]
    ours, mine, ref, theirs, micro = run_lora(
        binary, tmp, ["tensor_model_parallel_size: 2", "per_device_train_batch_size: 2"], 0.3, launch=launch, ranks=2)
    worst, worst_m, _ = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    print(f"lora_tp2_dp2: 4 ranks (tp 2 x dp 2, 2 rows per replica; the KL mean over the 2 replicas): {STEPS} KTO "
          f"losses equal LLaMA-Factory's on 2 emulated DDP ranks (max rel {worst:.2e}), metrics max rel {worst_m:.2e}")


def case_resume(binary, tmp):
    """checkpoint-5 of a LoRA KTO run resumed in a fresh output directory: steps 6-10 (losses and every metric,
    the KL estimate included) and the final adapter bit-identical to the uninterrupted run (as rm_parity.resume)."""
    import shutil
    from safetensors.torch import load_file
    model_dir, data = setup(tmp)
    init = initial_adapter(model_dir, tmp)
    common = ["finetuning_type: lora", f"adapter_name_or_path: {init}", "pref_ftx: 0.3", "save_strategy: steps",
              "save_steps: 5", "per_device_train_batch_size: 2", "gradient_accumulation_steps: 1"]
    straight = os.path.join(tmp, "straight")
    train_with_events([binary, "train", "--config", job_yaml(os.path.join(tmp, "a.yaml"), model_dir, data, straight,
                                                             common)], straight)
    resumed = os.path.join(tmp, "resumed")
    os.makedirs(resumed)
    shutil.copytree(os.path.join(straight, "checkpoint-5"), os.path.join(resumed, "checkpoint-5"))
    cfg = job_yaml(os.path.join(tmp, "b.yaml"), model_dir, data, resumed, common)
    train_with_events([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"], resumed)
    a, b = [e["loss"] for e in our_log(straight)][5:], [e["loss"] for e in our_log(resumed)]
    assert len(b) == STEPS - 5 and a == b, f"steps 6-10 differ after resume:\n{a}\n{b}"
    timing = {"tokens_per_s"}  # wall-clock, not training state
    ma, mb = ([{k: v for k, v in m.items() if k not in timing} for m in our_metrics(d)] for d in (straight, resumed))
    ma = ma[5:]
    assert ma == mb, f"the metrics of steps 6-10 differ after resume:\n{ma}\n{mb}"
    assert any(m["kl"] > 0 for m in mb), f"the KL estimate was 0 at every resumed step: {mb}"
    final, again = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (straight, resumed))
    assert sorted(final) == sorted(again), "the adapters hold different tensors"
    for k in final:
        assert torch.equal(final[k], again[k]), f"{k} differs after resuming from checkpoint-5"
    print(f"resume: 2 rows per step (an epoch is 2 steps, so checkpoint-5 sits mid-epoch); checkpoint-5 resumed in a "
          f"fresh directory: steps 6-10 (losses, {len(mb[0])} metrics each) and the final adapter bit-identical")


def case_full_tp2_sp(binary, tmp):
    case_full(binary, tmp, layout=["tensor_model_parallel_size: 2", "sequence_parallel: true"],
              launch=[binary, "launch", "--nproc-per-node", "2"])


def case_lora_pp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    evaluate = {"every": 5, "batch": 2}
    ours, mine, ref, theirs, micro = run_lora(
        binary, tmp, ["pipeline_model_parallel_size: 2", "per_device_train_batch_size: 2",
                      "gradient_accumulation_steps: 2"], 0.3, launch=launch, micro_rows=2, evaluate=evaluate)
    worst, worst_m, kls = compare(ours, mine, ref, theirs, KEYS + ["logits/chosen", "logits/rejected"], micro)
    evals, worst_e = compare_evals(os.path.join(tmp, "out"), evaluate)
    print(f"lora_pp2: 2 stages (1F1B), 2 micro-batches of 2 rows (the KL rows and the reference through the stages "
          f"without grad first): {STEPS} KTO losses equal LLaMA-Factory's on one process (max rel {worst:.2e}), "
          f"metrics (logits, kl too) max rel {worst_m:.2e}; kl {min(kls):.4f}..{max(kls):.4f}; {evals} evaluations "
          f"through the pipeline equal (max rel {worst_e:.2e})")


def case_full_pp2_gpipe(binary, tmp):
    case_full(binary, tmp, layout=["pipeline_model_parallel_size: 2", "pipeline_schedule: gpipe"],
              launch=[binary, "launch", "--nproc-per-node", "2"])


def case_full(binary, tmp, layout=(), launch=None):
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: full", "dataset: kto_sharegpt", "learning_rate: 1.0e-3",
                    "per_device_train_batch_size: 2", "gradient_accumulation_steps: 2"] + list(layout))
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = encode_feedback(model_dir, "kto_sharegpt")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = list(model.named_parameters())
    ref, theirs, micro = reference_run(model, params, LlamaFactoryKTO(0.2, 0.0, 1.0, 1.0, ref_model=frozen(model_dir)),
                                       features, pad_id, 2, lr=1e-3)
    worst, worst_m, kls = compare([e["loss"] for e in our_log(out)], our_metrics(out), ref, theirs,
                                  KEYS + ["logits/chosen", "logits/rejected"], micro)
    print(f"full{' ' + ' '.join(layout) if layout else ''}: sharegpt rows, frozen reference (split as the policy), "
          f"2 micro-batches per step: {STEPS} KTO losses equal "
          f"LLaMA-Factory's (max rel {worst:.2e}), metrics max rel {worst_m:.2e}; kl {min(kls):.4f}..{max(kls):.4f}")


class PreTokenizedKTOTrainer(KTOTrainer):
    """trl.KTOTrainer for rows that already hold prompt_ids / completion_ids / KL_completion_ids / label."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        assert set(dataset.column_names) == {"prompt_ids", "completion_ids", "KL_completion_ids", "label"}
        return dataset


def trl_rows(features):
    """LLaMA-Factory's feedback features -> TRL's columns (each sequence split at its first label)."""
    def split(ids, labels):
        start = next(k for k, l in enumerate(labels) if l != -100)
        assert labels[start:] == ids[start:], "labels are not a suffix"
        return ids[:start], ids[start:]
    rows = []
    for i in range(len(features["input_ids"])):
        prompt, completion = split(features["input_ids"][i], features["labels"][i])
        kl_prompt, kl_completion = split(features["kl_input_ids"][i], features["kl_labels"][i])
        assert kl_prompt == prompt, "the KL row's prompt is not the row's own"
        rows.append({"prompt_ids": prompt, "completion_ids": completion, "KL_completion_ids": kl_completion,
                     "label": bool(features["kto_tags"][i])})
    return rows


def case_trl_peft(binary, tmp):
    """KTO against trl 1.16's own KTOTrainer with peft: a fresh LoRA adapter from a peft LoraConfig (the reference is
    the base with the adapter off, as LLaMA-Factory's and Anneal's), saved before training as anneal-train's
    adapter_name_or_path; the one method replaced is _prepare_dataset (text -> ids): the rows are LLaMA-Factory's
    FeedbackDatasetProcessor output split at the first label (TRL's KL completion of row i is row i-1's completion
    within a batch, the same rotation for a batch of the whole dataset). Compared per step at 1e-4: the loss and
    rewards/*, logps/*, kl (rewards and kl less the fp32 resolution of the log probabilities they are differences
    of: fp32_resolution; the logps themselves and the loss at 1e-4 as everywhere). Not compared: logits/* (TRL 1.16 averages the mean logit over completion tokens,
    LLaMA-Factory sums every logit of the padded rows per example) and pref_ftx (TRL's KTO has none; 0 here)."""
    from peft import LoraConfig
    from transformers import PreTrainedTokenizerFast
    model_dir, data = setup(tmp)
    features, _ = encode_feedback(model_dir, "kto_alpaca")
    args = KTOConfig(output_dir=os.path.join(tmp, "trl"), per_device_train_batch_size=ROWS,
                     gradient_accumulation_steps=1, learning_rate=5e-3, max_steps=STEPS, lr_scheduler_type="cosine",
                     warmup_steps=2, max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch", logging_steps=1,
                     save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False, seed=3, beta=0.2,
                     desirable_weight=1.0, undesirable_weight=0.7, max_length=None, disable_dropout=True,
                     remove_unused_columns=False)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = PreTokenizedKTOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                     args=args, train_dataset=Dataset.from_list(trl_rows(features)),
                                     processing_class=PreTrainedTokenizerFast.from_pretrained(model_dir),
                                     peft_config=lora)
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config, "TRL's reference is not the base"
    init_adapter = os.path.join(tmp, "init_adapter")
    trainer.model.save_pretrained(init_adapter)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", "pref_ftx: 0",
                    "kto_chosen_weight: 1.0", "kto_rejected_weight: 0.7"])
    train_with_events([binary, "train", "--config", cfg], out)
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h and "kl" in h]
    worst, worst_m, kls = compare([e["loss"] for e in our_log(out)], our_metrics(out), [h["loss"] for h in theirs],
                                  theirs, KEYS, 1, ulp_allowance=True)
    print(f"trl_peft: {STEPS} KTO steps equal trl {__import__('trl').__version__}'s KTOTrainer with peft: losses max "
          f"rel {worst:.2e}, {len(KEYS)} metrics per step max rel {worst_m:.2e}; kl {min(kls):.4f}..{max(kls):.4f}")


def case_lf_example(binary, tmp):
    """LLaMA-Factory's examples/train_lora/qwen3_lora_kto.yaml (v0.9.5, copied into llamafactory_examples/) runs
    unchanged but for the model path, on a kto_en_demo of sharegpt rows tagged by a `label` column as
    LLaMA-Factory's data/dataset_info.json declares it."""
    model_dir, data = setup(tmp)
    assert data == os.path.join(tmp, "data")  # LLaMA-Factory's default dataset_dir "data", from the working dir
    info = json.load(open(os.path.join(data, "dataset_info.json")))
    info["kto_en_demo"] = dict(DATASET_INFO["kto_sharegpt"])
    json.dump(info, open(os.path.join(data, "dataset_info.json"), "w"))
    here = os.path.dirname(os.path.abspath(__file__))
    cfg = os.path.join(tmp, "qwen3_lora_kto.yaml")
    with open(os.path.join(here, "llamafactory_examples", "qwen3_lora_kto.yaml")) as f, open(cfg, "w") as g:
        g.write(f.read().replace("{model}", model_dir))
    p = subprocess.run([binary, "train", "--config", cfg], capture_output=True, text=True, timeout=600, cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    out = os.path.join(tmp, "saves", "qwen3-4b", "lora", "kto")
    for f in ("adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl"):
        assert os.path.exists(os.path.join(out, f)), f"{f} missing from {sorted(os.listdir(out))}"
    logs = [json.loads(line) for line in open(os.path.join(out, "trainer_log.jsonl"))]
    losses = [r["loss"] for r in logs if "loss" in r]
    assert all(math.isfinite(x) for x in losses), logs
    print(f"lf_example: LLaMA-Factory's qwen3_lora_kto.yaml ran unchanged but for the model path: "
          f"{sorted(os.listdir(out))}, {len(losses)} logged losses")


def case_refusals(binary, tmp):
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    bad = [
        (["stage: dpo"], "holds KTO rows (a kto_tag column)"),
        (["dataset: plain"], "has no kto_tag column"),
        (["dataset: kto_ranking"], "a dataset holds either preference pairs (ranking) or tagged answers"),
        (["dataset: kto_bad_tag"], "must be true or false"),
    ]
    expect_refused(binary, bad, lambda extra: job_yaml(os.path.join(tmp, "bad.yaml"), model_dir, data, out, extra),
                   "KTO jobs")


if __name__ == "__main__":
    run_cases({"lora": case_lora, "full": case_full, "lora_dp2": case_lora_dp2, "lora_dp2_zero3": case_lora_dp2_zero3,
               "trl_peft": case_trl_peft, "lf_example": case_lf_example, "refusals": case_refusals,
               "lora_tp2": case_lora_tp2, "resume": case_resume, "full_tp2_sp": case_full_tp2_sp,
               "lora_tp2_dp2": case_lora_tp2_dp2, "lora_pp2": case_lora_pp2, "full_pp2_gpipe": case_full_pp2_gpipe})
