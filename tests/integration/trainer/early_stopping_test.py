#!/usr/bin/env python3
"""early_stopping_steps and load_best_model_at_end in real anneal-train runs (a tiny model, real files), judged by
HF transformers' own EarlyStoppingCallback and Trainer._determine_best_metric replayed on the run's eval losses.

  stops   : eval and save every 2 steps, patience 2, load_best_model_at_end, 40 steps allowed. The run ends at the
            evaluation where HF's callback sets should_training_stop (trainer_log.jsonl has no later step), the
            best step is HF's best_global_step, and the exported adapter equals checkpoint-<best>'s tensor for
            tensor (not the last step's).
  resumed : the same job with patience 3, killed (SIGKILL) once step 33 is logged (checkpoint-32 holds one
            evaluation without improvement), resumed: it stops at the step the uninterrupted run stops at, which
            needs the patience counter from the checkpoint (a fresh counter would stop two evaluations later).
"""
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback, Trainer, TrainerControl, TrainerState

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import lora_job_yaml, make_tokenizer, run, run_cases  # noqa: E402

MAX_STEPS = 40


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def prepare(binary, tmp, name, patience):
    if not os.path.isdir(f"{tmp}/base"):
        make_tokenizer(f"{tmp}/tok")
        run([binary, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
             f"{tmp}/base", "--seed", "3"])
    return lora_job_yaml(tmp, name, MAX_STEPS, save_steps=2, val_size=0.1, eval_strategy="steps", eval_steps=2,
                         learning_rate="5.0e-2", early_stopping_steps=patience, load_best_model_at_end="true")


def hf_verdict(evals, patience):
    """(stop step or None, best step) as HF decides them: on_evaluate (the callback) then _determine_best_metric,
    per evaluation, as Trainer._maybe_log_save_evaluate calls them."""
    args = SimpleNamespace(metric_for_best_model="eval_loss", greater_is_better=False, load_best_model_at_end=True,
                           eval_strategy="steps", save_strategy="steps")
    state, control = TrainerState(), TrainerControl()
    callback = EarlyStoppingCallback(early_stopping_patience=patience)
    trainer = SimpleNamespace(args=args, state=state)
    for step, loss in evals:
        state.global_step = step
        callback.on_evaluate(args, state, control, metrics={"eval_loss": loss})
        Trainer._determine_best_metric(trainer, {"eval_loss": loss}, None)
        if control.should_training_stop:
            return step, state.best_global_step
    return None, state.best_global_step


def evals_of(out):
    rows = [json.loads(line) for line in open(f"{out}/trainer_log.jsonl")]
    return [(r["current_steps"], r["eval_loss"]) for r in rows if "eval_loss" in r], rows


def same_tensors(a, b):
    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def case_stops(binary, tmp):
    cfg = prepare(binary, tmp, "job", patience=2)
    r = run([binary, "train", "--config", cfg], env=env())
    out = f"{tmp}/job"
    evals, rows = evals_of(out)
    stop, best = hf_verdict(evals, 2)
    assert stop is not None, f"HF's callback would not stop on these eval losses; pick a harsher run: {evals}"
    last = max(r["current_steps"] for r in rows)
    assert last == stop, f"stopped after step {last}; HF's EarlyStoppingCallback stops at {stop} ({evals})"
    assert f"early stopping at step {stop} of {MAX_STEPS}" in r.stderr, r.stderr[-2000:]
    assert f"checkpoint-{best} (the best eval_loss)" in r.stderr, r.stderr[-2000:]
    assert best != stop
    adapter = f"{out}/adapter_model.safetensors"
    assert same_tensors(adapter, f"{out}/checkpoint-{best}/adapter_model.safetensors"), "not the best weights"
    assert not same_tensors(adapter, f"{out}/checkpoint-{stop}/adapter_model.safetensors"), "the last weights"
    print(f"stops: at step {stop} of {MAX_STEPS} as HF's EarlyStoppingCallback on {len(evals)} evaluations; "
          f"the adapter is checkpoint-{best}'s (HF's best_global_step)")


def case_resumed(binary, tmp):
    cfg = prepare(binary, tmp, "ref", patience=3)
    run([binary, "train", "--config", cfg], env=env())
    want_evals, want_rows = evals_of(f"{tmp}/ref")
    want_stop, want_best = hf_verdict(want_evals, 3)
    assert want_stop is not None and want_stop > 34, f"the reference must stop after step 34: {want_evals}"
    cfg = prepare(binary, tmp, "job", patience=3)
    out = f"{tmp}/job"
    rfd, wfd = os.pipe()
    with open(f"{tmp}/first.log", "w") as log:
        proc = subprocess.Popen([binary, "train", "--config", cfg], pass_fds=(wfd,),
                                env=dict(env(), ANNEAL_EVENTS_FD=str(wfd)), stdout=log, stderr=subprocess.STDOUT)
        os.close(wfd)
        with os.fdopen(rfd) as pipe:
            for line in pipe:
                ev = json.loads(line)
                if ev["type"] == "metrics" and ev["step"] >= want_stop - 3 and proc.poll() is None:
                    proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}:\n{open(f'{tmp}/first.log').read()[-3000:]}"
    r = run([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"], env=env())
    assert "resumed from" in r.stderr, r.stderr[-2000:]
    evals, rows = evals_of(out)
    last = max(r["current_steps"] for r in rows)
    assert evals == want_evals, f"resumed evals {evals} != uninterrupted {want_evals}"
    assert last == want_stop, f"resumed run stopped after {last}, the uninterrupted one at {want_stop}"
    assert same_tensors(f"{out}/adapter_model.safetensors", f"{tmp}/ref/adapter_model.safetensors")
    print(f"resumed: killed near step {want_stop - 3}, resumed, stopped at {want_stop} as the uninterrupted run "
          f"(best checkpoint-{want_best}); same adapter")


if __name__ == "__main__":
    run_cases({"stops": case_stops, "resumed": case_resumed})
