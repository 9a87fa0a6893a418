#!/usr/bin/env python3
"""report_to: tensorboard and plot_loss: true in a real anneal-train run (a tiny model, real processes, real files).

  straight : a LoRA job with evaluation every 4 steps; TensorBoard's own reader (EventAccumulator, PyPI tensorboard)
             loads <output_dir>/runs/<run>/ and holds, at the same steps, the same values (as float32) as
             trainer_log.jsonl: train/loss, train/learning_rate, train/grad_norm, train/epoch, train/tokens_per_second,
             eval/loss; no train/mfu on a CPU. training_loss.png and training_eval_loss.png are 640x480 PNGs of the
             curves (PIL).
  resumed  : the same job killed (SIGKILL) after step 10 with checkpoint-8 its latest, so steps 9 and 10 were logged
             past it, then resumed from checkpoint-8: one run directory, one event file, each step exactly once,
             equal to the (truncated, then continued) trainer_log.jsonl.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import lora_job_yaml, make_tokenizer, run, run_cases  # noqa: E402

STEPS = 12
PREEMPTED = 75
# trainer_log.jsonl key -> TensorBoard tag (HF's TensorBoardCallback names; tokens/s is Anneal's own).
TAGS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm", "epoch": "train/epoch",
        "throughput": "train/tokens_per_second", "eval_loss": "eval/loss"}


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def prepare(binary, tmp, save_steps=100):
    make_tokenizer(f"{tmp}/tok")
    run([binary, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
         f"{tmp}/base", "--seed", "3"])
    return lora_job_yaml(tmp, "job", STEPS, save_steps=save_steps, val_size=0.1, eval_strategy="steps", eval_steps=4,
                         report_to="tensorboard", plot_loss="true")


def load_run(out):
    """The one TensorBoard run under out/runs, as TensorBoard's reader sees it: {tag: [(step, value)]}."""
    runs = sorted(os.listdir(f"{out}/runs"))
    assert len(runs) == 1, f"expected one run directory in {out}/runs, found {runs}"
    run_dir = f"{out}/runs/{runs[0]}"
    files = [f for f in os.listdir(run_dir) if "tfevents" in f]
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags}, files


def check_against_log(out, scalars):
    rows = [json.loads(line) for line in open(f"{out}/trainer_log.jsonl")]
    assert "train/mfu" not in scalars, "MFU reported on a CPU"
    for key, tag in TAGS.items():
        # The training entries' values (an eval entry repeats the epoch; TensorBoard's train/epoch is the training one).
        source = [r for r in rows if "eval_loss" in r] if key == "eval_loss" else [r for r in rows if "loss" in r]
        expected = [(r["current_steps"], float(np.float32(r[key]))) for r in source]
        assert expected, f"trainer_log.jsonl has no {key}"
        got = scalars.get(tag)
        assert got is not None, f"tag {tag} missing; TensorBoard has {sorted(scalars)}"
        assert got == expected, f"{tag}: TensorBoard {got}\n != trainer_log.jsonl {expected}"
    steps = [s for s, _ in scalars["train/loss"]]
    assert steps == list(range(1, STEPS + 1)), f"train/loss steps {steps}"
    return len(rows)


def check_png(path, key, out):
    img = Image.open(path)
    img.verify()
    img = Image.open(path).convert("RGB")
    assert img.format is None or img.format == "PNG"
    assert img.size == (640, 480), f"{path}: {img.size}"
    px = np.asarray(img).astype(int)
    blue = ((px[:, :, 2] - px[:, :, 0]) > 60).sum()  # the curves' #1f77b4
    assert blue > 200, f"{path}: only {blue} curve pixels"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 2000, f"{path}: {os.path.getsize(path)} bytes"


def case_straight(binary, tmp):
    cfg = prepare(binary, tmp)
    r = run([binary, "train", "--config", cfg], env=env())
    out = f"{tmp}/job"
    scalars, files = load_run(out)
    assert len(files) == 1, files
    n = check_against_log(out, scalars)
    assert [s for s, _ in scalars["eval/loss"]] == [4, 8, 12], scalars["eval/loss"]
    check_png(f"{out}/training_loss.png", "loss", out)
    check_png(f"{out}/training_eval_loss.png", "eval_loss", out)
    assert "plot_loss: wrote" in r.stderr, r.stderr[-2000:]
    print(f"straight: {n} trainer_log.jsonl entries == TensorBoard's {sorted(scalars)}; plots 640x480")


def case_resumed(binary, tmp):
    cfg = prepare(binary, tmp, save_steps=4)
    out = f"{tmp}/job"
    rfd, wfd = os.pipe()
    with open(f"{tmp}/first.log", "w") as log:
        proc = subprocess.Popen([binary, "train", "--config", cfg], pass_fds=(wfd,),
                                env=dict(env(), ANNEAL_EVENTS_FD=str(wfd)), stdout=log, stderr=subprocess.STDOUT)
        os.close(wfd)
        with os.fdopen(rfd) as pipe:
            for line in pipe:
                ev = json.loads(line)
                # Killed after step 10: checkpoint-8 is the latest, steps 9 and 10 were logged past it.
                if ev["type"] == "metrics" and ev["step"] >= 10 and proc.poll() is None:
                    proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}:\n{open(f'{tmp}/first.log').read()[-3000:]}"
    before, _ = load_run(out)
    logged = [s for s, _ in before["train/loss"]]
    assert logged[-1] >= 10 and os.path.isdir(f"{out}/checkpoint-8"), (logged, os.listdir(out))
    r = run([binary, "train", "--config", cfg, "--set", "resume_from_checkpoint=latest"], env=env())
    assert f"checkpoint-8 at step 8" in r.stderr, r.stderr[-3000:]
    scalars, files = load_run(out)
    assert len(files) == 1, f"the earlier attempt's file was not folded in: {files}"
    check_against_log(out, scalars)
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: a step shown twice: {steps}"
    assert scalars["train/loss"][:8] == before["train/loss"][:8], "the first attempt's steps 1..8 changed"
    print(f"resumed: killed after step {logged[-1]}, resumed from checkpoint-8: one event file, steps 1..{STEPS} "
          f"once each, == trainer_log.jsonl")


if __name__ == "__main__":
    run_cases({"straight": case_straight, "resumed": case_resumed})
