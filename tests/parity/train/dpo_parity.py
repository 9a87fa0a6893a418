#!/usr/bin/env python3
"""Preference training (stage dpo) of anneal-train against LLaMA-Factory's own DPO trainer code, HF transformers,
peft and torch.optim.AdamW (peers nobody here wrote).

The reference runs LLaMA-Factory v0.9.5 itself where it can: its PairwiseDatasetProcessor encodes the ranking
rows (with its template and tokenizer fix), and its CustomDPOTrainer's concatenated_forward,
compute_reference_log_probs (peft's disable_adapter under LoRA, a frozen copy of the base otherwise),
compute_preference_loss (orpo and simpo are its own), get_batch_loss_metrics (pref_ftx and every metric) run
bound to a stand-in object that holds the attributes they read. Only dpo_loss, which LLaMA-Factory inherits from
TRL <= 0.24 (not installable next to this transformers), is TRL's published formula (sigmoid, hinge, ipo) written
out below. The step is HF Trainer's: the micro-batch loss / gradient_accumulation_steps, clip 1.0, AdamW, the
cosine schedule with warmup.

Cases (one ctest each); every step's batch is the whole dataset of 4 pairs, so the data order cannot matter:
  lora_sigmoid : alpaca ranking rows, qwen template, LoRA from a random adapter, sigmoid + pref_ftx 0.3, one
                 micro-batch per step: per-step losses and every metric (logits included) equal; the eval loss on
                 a sharegpt eval_dataset every 5 steps and the eval_rewards/*, eval_logps/*, eval_logits/* metrics
                 LLaMA-Factory logs equal HF's evaluation loop over its code; the adapter loads in peft with our
                 logits.
  full_ipo     : full fine-tuning against a frozen reference, ipo, 2 micro-batches of 2 pairs (accumulation):
                 losses and the reward metrics equal.
  lora_orpo    : sharegpt ranking rows with a system prompt and history, qwen3 (reasoning) template, orpo (no
                 reference; sft_loss and odds_ratio_loss metrics).
  freeze_hinge : freeze tuning (the last layer), hinge, against a frozen reference.
  lora_simpo_dp2 : simpo run as dp 2 (anneal-train launch, 2 pairs per rank) equals the single-process run and
                 the reference.
  full_ipo_dp2_zero3 : full_ipo as dp 2 with ZeRO-3 (the policy stored as shards and gathered per layer, the
                 frozen reference replicated; 1 pair per rank and micro-batch, 2 micro-batches each reduce-scattered)
                 equals the reference on one process.
  lora_sigmoid_tp2 / full_ipo_tp2_sp : tensor parallel 2 (the second with sequence parallelism and the frozen
                 reference split too) equal the reference on one process, logits metrics included.
  lora_sigmoid_pp2 : pipeline parallel 2 (1F1B; one layer per stage), 2 micro-batches of 2 pairs: the reference
                 pass (adapters off on each stage) and the policy pass through the stages equal LLaMA-Factory's DPO on
                 one process, reward metrics; evaluation through the pipeline (batches of 3 and 1 pairs: eval_loss
                 and the eval_ metrics); checkpoint-5 resumed on one process continues the reference's losses.
  full_ipo_pp2_gpipe : full fine-tuning under pp 2 with the GPipe schedule, the frozen reference held per stage.
  lora_simpo_pp2 : a reference-free loss under pp 2 (1F1B).
  qlora8_sigmoid : quantization_bit 8 (LLM.int8 base) with LoRA against LLaMA-Factory's DPO on peft over transformers'
                 bitsandbytes 8-bit model on CPU (the reference: the quantized base with the adapters off): losses and
                 reward metrics equal, while plain LoRA on the unquantized base differs by far more.
  refusals     : a ranking dataset under stage sft, a plain dataset under stage dpo, and refused preference keys
                 each fail with a message naming the problem.
"""
import json
import os
import subprocess
import sys
import types

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.optimization import get_scheduler

torch.set_num_threads(1)
os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
os.environ["DISABLE_VERSION_CHECK"] = "1"  # LLaMA-Factory 0.9.5 pins an older transformers; its code runs here
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import expect_refused, import_stubbing, make_tokenizer, run, run_cases  # noqa: E402

STEPS = 10
PAIRS = 4


def import_llamafactory():
    """LLaMA-Factory's DPO trainer and pairwise processor (testlib.import_stubbing: its optional heavy modules and
    the names newer TRL no longer has are stubbed; only the code used here runs)."""
    def do_import():
        from llamafactory.data.processor.pairwise import PairwiseDatasetProcessor
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.train.dpo.trainer import CustomDPOTrainer
        return CustomDPOTrainer, PairwiseDatasetProcessor, get_template_and_fix_tokenizer
    return import_stubbing(do_import)


ALPACA = [
    {"instruction": "Name a color of the sky", "input": "", "chosen": "Blue, on a clear day.", "rejected": "Green."},
    {"instruction": "Add the numbers", "input": "2 and 3", "chosen": "2 + 3 = 5", "rejected": "It is 7, surely."},
    {"instruction": "Say hello politely", "input": "", "chosen": "Hello, nice to meet you!", "rejected": "Go away"},
    {"instruction": "Translate 'gato' to English", "input": "", "chosen": "cat", "rejected": "The word means dog in English."},
]

# One-token prompts (under the `empty` template the prompt is the instruction's own token): TRL's ORPO takes its NLL
# term over prompt and completion, LLaMA-Factory's over the completion; the first token is never predicted, so with a
# one-token prompt both cover the same tokens (dpo_trl_parity.trl_orpo_peft).
SHORT = [
    {"instruction": "S", "input": "", "chosen": "Blue, on a clear day.", "rejected": "Green."},
    {"instruction": "+", "input": "", "chosen": "2 + 3 = 5", "rejected": "It is 7, surely."},
    {"instruction": "H", "input": "", "chosen": "Hello, nice to meet you!", "rejected": "Go away"},
    {"instruction": "T", "input": "", "chosen": "cat", "rejected": "The word means dog in English."},
]

SHAREGPT = [
    {"conversations": [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "Hi"},
                       {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Capital of France?"}],
     "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Lyon, I think."}},
    {"conversations": [{"from": "human", "value": "Think: 3 * 4?"}],
     "chosen": {"from": "gpt", "value": "<think>\nthree fours\n</think>\n\n12"}, "rejected": {"from": "gpt", "value": "34"}},
    {"conversations": [{"from": "human", "value": "A fruit that is yellow"}],
     "chosen": {"from": "gpt", "value": "A banana."}, "rejected": {"from": "gpt", "value": "A cucumber, obviously not."}},
    {"conversations": [{"from": "human", "value": "Opposite of up"}, {"from": "gpt", "value": "<think>\nhm\n</think>\n\ndown"},
                       {"from": "human", "value": "And of left?"}],
     "chosen": {"from": "gpt", "value": "right"}, "rejected": {"from": "gpt", "value": "up"}},
]

DATASET_INFO = {
    "pairs_alpaca": {"file_name": "pairs_alpaca.json", "ranking": True,
                     "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "pairs_sharegpt": {"file_name": "pairs_sharegpt.json", "formatting": "sharegpt", "ranking": True,
                       "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "pairs_short": {"file_name": "pairs_short.json", "ranking": True,
                    "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "plain": {"file_name": "plain.json"},
}
ALPACA_ROWS = {"pairs_alpaca": ALPACA, "pairs_short": SHORT}


def setup(tmp):
    """A tokenizer, a random llama model, and the ranking datasets."""
    tok = make_tokenizer(os.path.join(tmp, "tok"), 400)
    vocab = json.load(open(os.path.join(tok, "tokenizer.json")))
    vocab_size = max([max(vocab["model"]["vocab"].values()) + 1] + [t["id"] + 1 for t in vocab["added_tokens"]])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model_dir = os.path.join(tmp, "base")
    model.save_pretrained(model_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.link(os.path.join(tok, f), os.path.join(model_dir, f))
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    json.dump(ALPACA, open(os.path.join(data, "pairs_alpaca.json"), "w"))
    json.dump(SHORT, open(os.path.join(data, "pairs_short.json"), "w"))
    json.dump(SHAREGPT, open(os.path.join(data, "pairs_sharegpt.json"), "w"))
    json.dump([{"instruction": "hi", "output": "hello"}], open(os.path.join(data, "plain.json"), "w"))
    json.dump(DATASET_INFO, open(os.path.join(data, "dataset_info.json"), "w"))
    return model_dir, data


def job_yaml(path, model_dir, data, out, extra):
    lines = [f"model_name_or_path: {model_dir}", "stage: dpo", "dataset: pairs_alpaca", f"dataset_dir: {data}",
             "template: qwen", "cutoff_len: 256", f"output_dir: {out}", "per_device_train_batch_size: 4",
             "gradient_accumulation_steps: 1", "learning_rate: 5.0e-3", f"max_steps: {STEPS}",
             "lr_scheduler_type: cosine", "warmup_steps: 2", "max_grad_norm: 1.0", "logging_steps: 1",
             "save_strategy: \"no\"", "seed: 3", "overwrite_output_dir: true", "pref_beta: 0.2"]
    keys = {e.split(":")[0] for e in extra}
    lines = [l for l in lines if l.split(":")[0] not in keys] + extra
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def encode_pairs(model_dir, dataset, template, cutoff_len=256):
    """LLaMA-Factory's PairwiseDatasetProcessor over the rows, as its converters align them."""
    _, Processor, get_template = import_llamafactory()
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    args = types.SimpleNamespace(template=template, tool_format=None, default_system=None, enable_thinking=True,
                                 preserve_thinking=False, cutoff_len=cutoff_len, train_on_prompt=False,
                                 mask_history=False)
    tmpl = get_template(tok, args)
    proc = Processor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
    prompts, responses, systems = [], [], []
    if dataset in ALPACA_ROWS:
        for r in ALPACA_ROWS[dataset]:
            query = "\n".join(x for x in (r["instruction"], r["input"]) if x)
            prompts.append([{"role": "user", "content": query}])
            responses.append([{"role": "assistant", "content": r["chosen"]}, {"role": "assistant", "content": r["rejected"]}])
            systems.append("")
    else:
        roles = {"human": "user", "gpt": "assistant"}
        for r in SHAREGPT:
            msgs = r["conversations"]
            system = ""
            if msgs[0]["from"] == "system":
                system, msgs = msgs[0]["value"], msgs[1:]
            prompts.append([{"role": roles[m["from"]], "content": m["value"]} for m in msgs])
            responses.append([{"role": "assistant", "content": r[k]["value"]} for k in ("chosen", "rejected")])
            systems.append(system)
    n = len(prompts)
    out = proc.preprocess_dataset({"_prompt": prompts, "_response": responses, "_system": systems,
                                   "_tools": [""] * n, "_images": [None] * n, "_videos": [None] * n,
                                   "_audios": [None] * n})
    return out, tok.pad_token_id


def collate(features, idx, pad_id):
    """PairwiseDataCollatorWithPadding: chosen rows then rejected rows, right-padded to a multiple of 8."""
    seqs = [(features["chosen_input_ids"][i], features["chosen_labels"][i]) for i in idx]
    seqs += [(features["rejected_input_ids"][i], features["rejected_labels"][i]) for i in idx]
    T = max(len(s) for s, _ in seqs)
    T = (T + 7) // 8 * 8
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for k, (s, l) in enumerate(seqs):
        ids[k, :len(s)] = torch.tensor(s)
        labels[k, :len(s)] = torch.tensor(l)
        mask[k, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LlamaFactoryDPO:
    """The attributes LLaMA-Factory's CustomDPOTrainer methods read, with those methods bound to it."""

    def __init__(self, loss_type, beta, ftx, ref_model=None, simpo_gamma=0.5):
        trainer_cls, _, _ = import_llamafactory()
        self.finetuning_args = types.SimpleNamespace(use_ref_model=loss_type not in ("orpo", "simpo"))
        self.loss_type, self.beta, self.ftx_gamma, self.simpo_gamma = loss_type, beta, ftx, simpo_gamma
        self.bco_gemma, self.ld_alpha, self.label_smoothing = 0.0, None, 0.0
        self.ref_model = ref_model
        self.accelerator = types.SimpleNamespace(unwrap_model=lambda m: m, device=torch.device("cpu"))
        for name in ("concatenated_forward", "compute_reference_log_probs", "compute_preference_loss",
                     "odds_ratio_loss", "simpo_loss", "get_batch_loss_metrics"):
            setattr(self, name, types.MethodType(getattr(trainer_cls, name), self))

    def dpo_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        # TRL's DPOTrainer.dpo_loss (<= 0.24), reverse KL, label_smoothing 0.
        logits = (chosen - rejected) - (ref_chosen - ref_rejected)
        if self.loss_type == "sigmoid":
            losses = -F.logsigmoid(self.beta * logits)
        elif self.loss_type == "hinge":
            losses = torch.relu(1 - self.beta * logits)
        elif self.loss_type == "ipo":
            losses = (logits - 1 / (2 * self.beta)) ** 2
        else:
            raise ValueError(self.loss_type)
        return losses, self.beta * (chosen - ref_chosen).detach(), self.beta * (rejected - ref_rejected).detach()


def evaluate_once(model, lf, evaluate, pad_id):
    """HF's evaluation loop over LLaMA-Factory's get_batch_loss_metrics(..., "eval") (model.eval(), batches of
    evaluate["batch"] pairs, default 1): eval_loss the batch losses weighted by their sizes, appended to
    evaluate["losses"]; and what LLaMA-Factory's log() adds from the stored eval metrics, each eval_<name> the mean
    over the batches (one process), appended to evaluate["metrics"] when that list is given."""
    model.eval()
    pairs = len(evaluate["features"]["chosen_input_ids"])
    batch = evaluate.get("batch", 1)
    total, sums, batches = 0.0, {}, 0
    with torch.no_grad():
        for k in range(0, pairs, batch):
            idx = list(range(k, min(k + batch, pairs)))
            loss, m = lf.get_batch_loss_metrics(model, collate(evaluate["features"], idx, pad_id), "eval")
            total += loss.item() * len(idx)
            batches += 1
            for key, v in m.items():
                sums[key] = sums.get(key, 0.0) + float(v)
    evaluate["losses"].append(total / pairs)
    if "metrics" in evaluate:
        evaluate["metrics"].append({key: v / batches for key, v in sums.items()})
    model.train()


def compare_eval(out, evaluate, tol=1e-4):
    """Our trainer_log.jsonl's eval rows against evaluate_once's: eval_loss and every eval_ metric LLaMA-Factory
    logs. Returns the largest relative error."""
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        ours = [r for r in map(json.loads, f) if "eval_loss" in r]
    assert len(ours) == len(evaluate["losses"]), f"{len(ours)} evaluations, LLaMA-Factory {len(evaluate['losses'])}"
    worst = 0.0
    for k, (row, loss) in enumerate(zip(ours, evaluate["losses"])):
        expected = dict(evaluate["metrics"][k]) if "metrics" in evaluate else {}
        expected["eval_loss"] = loss
        for key, v in expected.items():
            assert key in row, f"evaluation {k + 1}: {key} missing from trainer_log.jsonl: {sorted(row)}"
            err = abs(row[key] - v) / max(abs(v), 1e-2)
            worst = max(worst, err)
            assert err < tol, f"evaluation {k + 1}: {key} ours {row[key]}, LLaMA-Factory {v}"
    return worst


EVAL_KEYS = ["eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies", "eval_rewards/margins",
             "eval_logps/chosen", "eval_logps/rejected", "eval_logits/chosen", "eval_logits/rejected"]


def reference_run(model, params, lf, features, pad_id, micro_pairs, lr=5e-3, evaluate=None):
    """HF Trainer's steps over the whole dataset: per micro-batch loss / accumulation, clip 1.0, AdamW, cosine.
    Returns (losses, metrics per step: each the mean over the step's micro-batches). evaluate: (every, eval
    features, ...): evaluate_once every `every` steps."""
    opt = torch.optim.AdamW([p for _, p in params], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            foreach=False)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=STEPS)
    groups = [list(range(k, min(k + micro_pairs, PAIRS))) for k in range(0, PAIRS, micro_pairs)]
    losses, metrics = [], []
    model.train()
    for _ in range(STEPS):
        total, step_metrics = 0.0, {}
        for g in groups:
            loss, m = lf.get_batch_loss_metrics(model, collate(features, g, pad_id))
            (loss / len(groups)).backward()
            total += loss.item() / len(groups)
            for k, v in m.items():
                step_metrics[k] = step_metrics.get(k, 0.0) + v / len(groups)
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        metrics.append(step_metrics)
        if evaluate and len(losses) % evaluate["every"] == 0:
            evaluate_once(model, lf, evaluate, pad_id)
    return losses, metrics


def our_log(out):
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        return [json.loads(l) for l in f if "loss" in json.loads(l)]


def train_with_events(cmd, out):
    """Runs `cmd` with the trainer's event channel (ANNEAL_EVENTS_FD) on <out>.events.jsonl."""
    path = out + ".events.jsonl"
    with open(path, "w") as f:
        p = subprocess.run(cmd, pass_fds=(f.fileno(),), env=dict(os.environ, ANNEAL_EVENTS_FD=str(f.fileno())),
                           capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"


def our_metrics(out):
    """Per step: the metrics event's values (rewards/..., logps/..., logits/...)."""
    steps = []
    with open(out + ".events.jsonl") as f:
        for line in f:
            e = json.loads(line)
            if e.get("type") == "metrics":
                steps.append(e["values"])
    return steps


def compare(ours_losses, ours_metrics, ref_losses, ref_metrics, keys, tol=1e-4):
    assert len(ours_losses) == len(ref_losses) == STEPS, f"{len(ours_losses)} vs {len(ref_losses)} steps"
    worst = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(ours_losses, ref_losses))
    assert worst < tol, f"per-step losses differ (max rel {worst:.2e}):\nours {ours_losses}\nref  {ref_losses}"
    assert ref_losses[-1] < ref_losses[0], "the reference loss did not fall: the test would prove nothing"
    worst_metric = 0.0
    for step, (mine, theirs) in enumerate(zip(ours_metrics, ref_metrics)):
        for k in keys:
            assert k in mine, f"step {step + 1}: metric {k} missing from ours: {sorted(mine)}"
            err = abs(mine[k] - theirs[k]) / max(abs(theirs[k]), 1e-2)
            worst_metric = max(worst_metric, err)
            assert err < tol, f"step {step + 1}: {k} ours {mine[k]} LLaMA-Factory {theirs[k]}"
    accuracies = [m["rewards/accuracies"] for m in ref_metrics]
    assert max(accuracies) > min(accuracies) or accuracies[-1] == 1.0, "rewards/accuracies never moved"
    return worst, worst_metric


REWARD_KEYS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
               "logps/rejected"]


def initial_adapter(model_dir, tmp):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, task_type="CAUSAL_LM",
                                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    path = os.path.join(tmp, "init_adapter")
    peft_model.save_pretrained(path)
    return path


def lora_reference(model_dir, init_adapter):
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                      init_adapter, is_trainable=True)
    for m in model.modules():  # TRL's disable_dropout_in_model, which LLaMA-Factory applies
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def frozen(model_dir):
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def run_lora(binary, tmp, loss_type, dataset, template, extra, micro_pairs=PAIRS, ftx=0.0, launch=None, evaluate=None):
    model_dir, data = setup(tmp)
    init_adapter = initial_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", f"pref_loss: {loss_type}",
                    f"dataset: {dataset}", f"template: {template}", f"pref_ftx: {ftx}"] + extra)
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = encode_pairs(model_dir, dataset, template)
    model, params = lora_reference(model_dir, init_adapter)
    if evaluate:
        evaluate["features"], _ = encode_pairs(model_dir, evaluate["dataset"], template)
    ref_losses, ref_metrics = reference_run(model, params, LlamaFactoryDPO(loss_type, 0.2, ftx), features, pad_id,
                                            micro_pairs, evaluate=evaluate)
    return model_dir, out, [e["loss"] for e in our_log(out)], our_metrics(out), ref_losses, ref_metrics


def case_lora_sigmoid(binary, tmp):
    evaluate = {"every": 5, "dataset": "pairs_sharegpt", "losses": [], "metrics": []}
    model_dir, out, ours, mine, ref, theirs = run_lora(
        binary, tmp, "sigmoid", "pairs_alpaca", "qwen",
        ["eval_dataset: pairs_sharegpt", "eval_strategy: steps", "eval_steps: 5"], ftx=0.3, evaluate=evaluate)
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS + ["logits/chosen", "logits/rejected"])
    worst_eval = compare_eval(out, evaluate)
    assert sorted(evaluate["metrics"][0]) == sorted(EVAL_KEYS), f"LLaMA-Factory logs {sorted(evaluate['metrics'][0])}"
    log = our_log(out)
    assert all(abs(e["accuracy"] - m["rewards/accuracies"]) < 1e-9 for e, m in zip(log, mine)), \
        "trainer_log.jsonl's accuracy is not rewards/accuracies"
    # The trained adapter loads in peft: its logits on a pair equal ours.
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    features, _ = encode_pairs(model_dir, "pairs_alpaca", "qwen")
    ids = torch.tensor([features["chosen_input_ids"][1]])
    save_file({"input_ids": ids}, os.path.join(tmp, "in.safetensors"))
    run([binary, "model", "logits", "--model", model_dir, "--adapter", out, "--inputs",
         os.path.join(tmp, "in.safetensors"), "--out", os.path.join(tmp, "lo.safetensors")])
    mine_logits = load_file(os.path.join(tmp, "lo.safetensors"))["logits"]
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out)
    with torch.no_grad():
        theirs_logits = peft_model.eval()(input_ids=ids).logits.float()
    err = ((mine_logits - theirs_logits).abs().max() / theirs_logits.abs().max()).item()
    assert err < 1e-5, f"the exported adapter's logits in peft differ from ours: rel {err:.2e}"
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["lora_dropout"] == 0.1, f"adapter_config lora_dropout {cfg['lora_dropout']} (the configured 0.1)"
    print(f"lora_sigmoid: {STEPS} losses equal LLaMA-Factory's DPO (max rel {worst:.2e}), metrics "
          f"{len(REWARD_KEYS) + 2} per step (max rel {worst_m:.2e}); loss {ref[0]:.4f} -> {ref[-1]:.4f}, "
          f"accuracy {theirs[-1]['rewards/accuracies']:.2f}; eval_loss and {len(EVAL_KEYS)} eval_ metrics at steps 5 and "
          f"10 equal HF's evaluation loop over LLaMA-Factory's DPO (max rel {worst_eval:.2e}); the "
          f"adapter loads in peft (rel {err:.1e})")


def case_lora_orpo(binary, tmp):
    _, _, ours, mine, ref, theirs = run_lora(binary, tmp, "orpo", "pairs_sharegpt", "qwen3", [])
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS + ["sft_loss", "odds_ratio_loss"])
    print(f"lora_orpo (sharegpt ranking, qwen3 template): {STEPS} losses equal LLaMA-Factory's ORPO "
          f"(max rel {worst:.2e}), metrics max rel {worst_m:.2e}; loss {ref[0]:.4f} -> {ref[-1]:.4f}")


def case_lora_simpo_dp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    _, _, ours, mine, ref, theirs = run_lora(binary, tmp, "simpo", "pairs_alpaca", "qwen",
                                             ["per_device_train_batch_size: 2"], micro_pairs=2, launch=launch)
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS)
    print(f"lora_simpo_dp2: 2 ranks x 2 pairs, {STEPS} losses equal LLaMA-Factory's SimPO on one process "
          f"(max rel {worst:.2e}), metrics max rel {worst_m:.2e}; loss {ref[0]:.4f} -> {ref[-1]:.4f}")


def run_with_reference(binary, tmp, finetuning, loss_type, micro_pairs, trainable, layout=(), launch=None):
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    extra = [f"finetuning_type: {finetuning}", f"pref_loss: {loss_type}", "learning_rate: 1.0e-3",
             f"per_device_train_batch_size: {micro_pairs}", f"gradient_accumulation_steps: {PAIRS // micro_pairs}"]
    if finetuning == "freeze":
        extra += ["freeze_trainable_layers: 1"]
    extra = [e for e in extra if e.split(":")[0] not in {l.split(":")[0] for l in layout}]  # the layout's win
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out, extra + list(layout))
    train_with_events(launch + ["--", "train", "--config", cfg] if launch else [binary, "train", "--config", cfg], out)
    features, pad_id = encode_pairs(model_dir, "pairs_alpaca", "qwen")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for n, p in model.named_parameters():
        p.requires_grad_(trainable(n))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    lf = LlamaFactoryDPO(loss_type, 0.2, 0.0, ref_model=frozen(model_dir))
    ref, theirs = reference_run(model, params, lf, features, pad_id, micro_pairs, lr=1e-3)
    return compare([e["loss"] for e in our_log(out)], our_metrics(out), ref, theirs, REWARD_KEYS), ref


def case_full_ipo(binary, tmp):
    (worst, worst_m), ref = run_with_reference(binary, tmp, "full", "ipo", 2, lambda n: True)
    print(f"full_ipo: frozen reference, 2 micro-batches per step: {STEPS} losses equal LLaMA-Factory's IPO "
          f"(max rel {worst:.2e}), reward metrics max rel {worst_m:.2e}; loss {ref[0]:.4f} -> {ref[-1]:.4f}")


def case_full_ipo_dp2_zero3(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    (worst, worst_m), ref = run_with_reference(binary, tmp, "full", "ipo", 1, lambda n: True,
                                               layout=["gradient_accumulation_steps: 2", "zero_stage: 3",
                                                       "ddp_bucket_cap_mb: 0.01"], launch=launch)
    print(f"full_ipo_dp2_zero3: 2 ranks x 1 pair x 2 micro-batches, ZeRO-3: {STEPS} losses equal LLaMA-Factory's "
          f"IPO on one process (max rel {worst:.2e}), reward metrics max rel {worst_m:.2e}")


def case_lora_sigmoid_tp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    _, _, ours, mine, ref, theirs = run_lora(binary, tmp, "sigmoid", "pairs_alpaca", "qwen",
                                             ["tensor_model_parallel_size: 2"], launch=launch)
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS + ["logits/chosen", "logits/rejected"])
    print(f"lora_sigmoid_tp2: the vocabulary split over 2 ranks (log probabilities and logits metrics combined over "
          f"the group): {STEPS} losses equal LLaMA-Factory's DPO on one process (max rel {worst:.2e}), metrics with "
          f"logits max rel {worst_m:.2e}")


def case_full_ipo_tp2_sp(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    (worst, worst_m), ref = run_with_reference(binary, tmp, "full", "ipo", 2, lambda n: True,
                                               layout=["tensor_model_parallel_size: 2", "sequence_parallel: true"],
                                               launch=launch)
    print(f"full_ipo_tp2_sp: tensor parallel 2 with sequence parallelism, the frozen reference split the same way: "
          f"{STEPS} losses equal LLaMA-Factory's IPO on one process (max rel {worst:.2e}), metrics max rel "
          f"{worst_m:.2e}")


def case_freeze_hinge(binary, tmp):
    (worst, worst_m), ref = run_with_reference(binary, tmp, "freeze", "hinge", 4, lambda n: ".layers.1." in n)
    print(f"freeze_hinge: the last layer trained against a frozen reference: {STEPS} losses equal "
          f"LLaMA-Factory's hinge DPO (max rel {worst:.2e}), metrics max rel {worst_m:.2e}; "
          f"loss {ref[0]:.4f} -> {ref[-1]:.4f}")


PP2 = ["pipeline_model_parallel_size: 2", "per_device_train_batch_size: 2", "gradient_accumulation_steps: 2"]


def case_lora_sigmoid_pp2(binary, tmp):
    import shutil
    launch = [binary, "launch", "--nproc-per-node", "2"]
    evaluate = {"every": 5, "dataset": "pairs_sharegpt", "losses": [], "metrics": [], "batch": 3}
    model_dir, out, ours, mine, ref, theirs = run_lora(
        binary, tmp, "sigmoid", "pairs_alpaca", "qwen",
        PP2 + ["eval_dataset: pairs_sharegpt", "eval_strategy: steps", "eval_steps: 5", "per_device_eval_batch_size: 3",
               "save_strategy: steps", "save_steps: 5"], micro_pairs=2, ftx=0.3, launch=launch, evaluate=evaluate)
    # (The logits metrics are means over each micro-batch's padded block, so they depend on which pairs the sampler
    # put together: compared in evaluation, whose batches follow the dataset's order.)
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS)
    worst_eval = compare_eval(out, evaluate)
    # checkpoint-5 of the pipeline run resumed on one process continues LLaMA-Factory's steps 6-10.
    resumed = os.path.join(tmp, "resumed")
    os.makedirs(resumed)
    shutil.copytree(os.path.join(out, "checkpoint-5"), os.path.join(resumed, "checkpoint-5"))
    cfg = job_yaml(os.path.join(tmp, "resume.yaml"), model_dir, os.path.join(tmp, "data"), resumed,
                   ["finetuning_type: lora", f"adapter_name_or_path: {os.path.join(tmp, 'init_adapter')}",
                    "pref_loss: sigmoid", "pref_ftx: 0.3", "per_device_train_batch_size: 2",
                    "gradient_accumulation_steps: 2"])
    train_with_events([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"], resumed)
    after = [e["loss"] for e in our_log(resumed)]
    assert len(after) == STEPS - 5, f"the resumed run logged {len(after)} steps, not {STEPS - 5}"
    worst_resume = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(after, ref[5:]))
    assert worst_resume < 1e-4, f"steps 6-10 resumed on one process differ: ours {after}, LLaMA-Factory {ref[5:]}"
    print(f"lora_sigmoid_pp2: 2 stages (1F1B), 2 micro-batches of 2 pairs: {STEPS} losses equal LLaMA-Factory's DPO "
          f"on one process (max rel {worst:.2e}), reward metrics max rel {worst_m:.2e}; eval_loss and "
          f"{len(EVAL_KEYS)} eval_ metrics through the pipeline max rel {worst_eval:.2e}; checkpoint-5 resumed on one "
          f"process: steps 6-10 max rel {worst_resume:.2e}")


def case_full_ipo_pp2_gpipe(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    (worst, worst_m), ref = run_with_reference(binary, tmp, "full", "ipo", 2, lambda n: True,
                                               layout=["pipeline_model_parallel_size: 2", "pipeline_schedule: gpipe"],
                                               launch=launch)
    print(f"full_ipo_pp2_gpipe: 2 stages (GPipe), the frozen reference held per stage, 2 micro-batches of 2 pairs: "
          f"{STEPS} losses equal LLaMA-Factory's IPO on one process (max rel {worst:.2e}), metrics max rel "
          f"{worst_m:.2e}")


def case_lora_simpo_pp2(binary, tmp):
    launch = [binary, "launch", "--nproc-per-node", "2"]
    _, _, ours, mine, ref, theirs = run_lora(binary, tmp, "simpo", "pairs_alpaca", "qwen", PP2, micro_pairs=2,
                                             launch=launch)
    worst, worst_m = compare(ours, mine, ref, theirs, REWARD_KEYS)
    print(f"lora_simpo_pp2: a reference-free loss through 2 stages (1F1B): {STEPS} losses equal LLaMA-Factory's SimPO "
          f"on one process (max rel {worst:.2e}), metrics max rel {worst_m:.2e}")


def case_qlora8_sigmoid(binary, tmp):
    """quantization_bit: 8 under stage dpo against LLaMA-Factory's DPO on peft over transformers' bitsandbytes 8-bit
    model (Linear8bitLt on CPU); the reference is the quantized base with the adapters off in both."""
    from peft import PeftModel
    from transformers import BitsAndBytesConfig
    model_dir, data = setup(tmp)
    init_adapter = initial_adapter(model_dir, tmp)
    out = os.path.join(tmp, "out")
    cfg = job_yaml(os.path.join(tmp, "job.yaml"), model_dir, data, out,
                   ["finetuning_type: lora", f"adapter_name_or_path: {init_adapter}", "pref_loss: sigmoid",
                    "quantization_bit: 8"])
    train_with_events([binary, "train", "--config", cfg], out)
    features, pad_id = encode_pairs(model_dir, "pairs_alpaca", "qwen")
    bnb = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                               dtype=torch.float32, device_map="cpu")
    model = PeftModel.from_pretrained(bnb, init_adapter, is_trainable=True)
    assert "Linear8bitLt" in type(model.base_model.model.model.layers[0].self_attn.q_proj).__name__
    for m in model.modules():  # TRL's disable_dropout_in_model
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ref, theirs = reference_run(model, params, LlamaFactoryDPO("sigmoid", 0.2, 0.0), features, pad_id, PAIRS)
    ours = [e["loss"] for e in our_log(out)]
    worst, worst_m = compare(ours, our_metrics(out), ref, theirs, REWARD_KEYS)
    plain, plain_params = lora_reference(model_dir, init_adapter)
    plain_ref, _ = reference_run(plain, plain_params, LlamaFactoryDPO("sigmoid", 0.2, 0.0), features, pad_id, PAIRS)
    gap = max(abs(a - b) / abs(b) for a, b in zip(ours, plain_ref))
    assert gap > 10 * worst, f"the 8-bit base changed the losses by only {gap:.1e}: the comparison proves nothing"
    print(f"qlora8_sigmoid: {STEPS} DPO losses equal LLaMA-Factory's on peft over bnb Linear8bitLt (max rel "
          f"{worst:.2e}), reward metrics max rel {worst_m:.2e}; plain LoRA on the unquantized base differs by "
          f"{gap:.1e}")


def case_refusals(binary, tmp):
    model_dir, data = setup(tmp)
    out = os.path.join(tmp, "out")
    bad = [
        (["stage: sft", "dataset: pairs_alpaca"], "holds preference pairs"),
        (["dataset: plain"], "is not a ranking dataset"),
        (["dpo_label_smoothing: 0.1"], "dpo_label_smoothing"),
        (["pref_loss: kto_pair"], "pref_loss"),
        (["ref_model: /models/other"], "a separate reference model is not built"),
        (["mask_history: true"], "only for stage sft"),
    ]
    expect_refused(binary, bad, lambda extra: job_yaml(os.path.join(tmp, "bad.yaml"), model_dir, data, out, extra),
                   "preference jobs")


if __name__ == "__main__":
    run_cases({"lora_sigmoid": case_lora_sigmoid, "lora_orpo": case_lora_orpo, "lora_simpo_dp2": case_lora_simpo_dp2,
               "full_ipo": case_full_ipo, "freeze_hinge": case_freeze_hinge, "lora_sigmoid_tp2": case_lora_sigmoid_tp2,
               "full_ipo_tp2_sp": case_full_ipo_tp2_sp, "full_ipo_dp2_zero3": case_full_ipo_dp2_zero3,
               "lora_sigmoid_pp2": case_lora_sigmoid_pp2, "full_ipo_pp2_gpipe": case_full_ipo_pp2_gpipe,
               "lora_simpo_pp2": case_lora_simpo_pp2, "qlora8_sigmoid": case_qlora8_sigmoid, "refusals": case_refusals})
