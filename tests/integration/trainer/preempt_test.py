#!/usr/bin/env python3
"""Preemption of anneal-train (docs/trainer-contract.md, "Signals and exit codes"): real processes, a tiny model.

  two_ranks : `anneal-train launch --nproc-per-node 2` of a LoRA job; after a few steps SIGUSR1 goes to ONE rank
              (rank 1, not the launcher): both ranks agree on one step, rank 0 commits checkpoint-S, both say
              `finished` {status: preempted} at that step and exit 75, and so does the launcher. Resumed from
              that checkpoint, the job ends with the final loss of an uninterrupted run (within 1e-5).
  launcher  : SIGUSR1 to the launcher itself is forwarded to every rank: the same stop, exit 75.
  single    : `anneal-train train` alone (WORLD_SIZE 1, no collective): SIGUSR1 -> checkpoint, exit 75; the resumed
              run ends with the uninterrupted run's final loss.
"""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import lora_job_yaml, make_tokenizer, run, run_cases  # noqa: E402

STEPS = 16
PREEMPTED = 75


def prepare(binary, tmp):
    make_tokenizer(f"{tmp}/tok")
    run([binary, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
         f"{tmp}/base", "--seed", "2"])


def job_yaml(tmp, name):
    return lora_job_yaml(tmp, name, STEPS, save_steps=100)


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "ANNEAL_CHECKPOINT_RETENTION"):
        e.pop(k, None)
    return e


def final_loss(out):
    rows = [json.loads(line) for line in open(f"{out}/trainer_log.jsonl") if '"loss"' in line]
    return rows[-1]["current_steps"], rows[-1]["loss"]


def preempted_run(cmd, signal_target, after_step=3):
    """Runs cmd with an event pipe; once a metrics event reaches `after_step`, sends SIGUSR1 to
    signal_target(process, started events). Returns (exit code, events, the combined output)."""
    r, w = os.pipe()
    e = dict(env(), ANNEAL_EVENTS_FD=str(w))
    log_path = f"{cmd[-1]}.log" if cmd[-1].endswith(".yaml") else None
    log = open(log_path or os.devnull, "w")
    proc = subprocess.Popen(cmd, pass_fds=(w,), env=e, stdout=log, stderr=subprocess.STDOUT)
    os.close(w)
    events, started, sent = [], {}, False
    with os.fdopen(r) as pipe:
        for line in pipe:  # until every writer (the launcher and its ranks) has exited
            ev = json.loads(line)
            events.append(ev)
            if ev["type"] == "started":
                started[ev["rank"]] = ev["pid"]
            if ev["type"] == "metrics" and ev["step"] >= after_step and not sent:
                sent = True
                os.kill(signal_target(proc, started), signal.SIGUSR1)
    proc.wait()
    log.close()
    output = open(log_path).read() if log_path else ""
    assert sent, f"the run ended before step {after_step} ({proc.returncode}):\n{output[-3000:]}"
    return proc.returncode, events, output


def check_preempted(out, events, ranks, rc, output):
    """Every rank stopped at one step S with status preempted; checkpoint-S is committed; returns S."""
    assert rc == PREEMPTED, f"exit {rc}, expected {PREEMPTED}:\n{output[-3000:]}"
    finished = {ev["rank"]: ev for ev in events if ev["type"] == "finished"}
    assert sorted(finished) == list(range(ranks)), f"finished events from ranks {sorted(finished)}"
    assert all(ev["status"] == "preempted" for ev in finished.values()), finished
    stops = {ev["message"].split(":")[0] for ev in finished.values()}
    assert len(stops) == 1, f"the ranks stopped at different steps: {stops}"
    preempted = [ev for ev in events if ev["type"] == "preempted"]
    assert len(preempted) == 1 and preempted[0]["rank"] == 0, preempted
    step = preempted[0]["step"]
    assert stops == {f"preempted at step {step}"}, stops
    assert 3 <= step < STEPS, f"stopped at step {step}"
    ckpt = f"{out}/checkpoint-{step}"
    assert preempted[0]["checkpoint"] == ckpt, preempted[0]
    commits = [ev for ev in events if ev["type"] == "checkpoint"]
    assert [c["step"] for c in commits] == [step], f"committed {[c['step'] for c in commits]}, expected [{step}]"
    manifest = json.load(open(f"{ckpt}/manifest.json"))
    assert manifest["step"] == step, manifest
    assert manifest["metadata"]["layout"]["world_size"] == ranks, manifest["metadata"]
    assert not os.path.exists(f"{out}/adapter_model.safetensors"), "a preempted run exported its adapter"
    return step


def resumed_equals_straight(cmd_prefix, tmp, name, step):
    straight = job_yaml(tmp, "straight")
    run([*cmd_prefix, "--config", straight], env=env())
    resumed = run([*cmd_prefix, "--config", f"{tmp}/{name}.yaml", "--set", "resume_from_checkpoint=latest"], env=env())
    where = f"resumed from {tmp}/{name}/checkpoint-{step} at step {step}"
    assert where in resumed.stderr + resumed.stdout, f"not {where}:\n{resumed.stderr[-3000:]}"
    (s_step, s_loss), (r_step, r_loss) = final_loss(f"{tmp}/straight"), final_loss(f"{tmp}/{name}")
    assert s_step == r_step == STEPS, (s_step, r_step)
    assert abs(s_loss - r_loss) <= 1e-5, f"final loss {r_loss} after preemption at step {step} != {s_loss}"
    return s_loss, r_loss


def case_two_ranks(binary, tmp):
    prepare(binary, tmp)
    cfg = job_yaml(tmp, "preempted")
    launch = [binary, "launch", "--nproc-per-node", "2", "--", "train"]
    rc, events, output = preempted_run([*launch, "--config", cfg], lambda proc, started: started[1])
    step = check_preempted(f"{tmp}/preempted", events, 2, rc, output)
    straight, resumed = resumed_equals_straight(launch, tmp, "preempted", step)
    print(f"two_ranks: SIGUSR1 to rank 1 -> both ranks stopped at step {step}, checkpoint committed, exit 75; "
          f"resumed final loss {resumed:.8f} == uninterrupted {straight:.8f}")


def case_launcher(binary, tmp):
    prepare(binary, tmp)
    cfg = job_yaml(tmp, "preempted")
    rc, events, output = preempted_run([binary, "launch", "--nproc-per-node", "2", "--", "train", "--config", cfg],
                                       lambda proc, started: proc.pid)
    step = check_preempted(f"{tmp}/preempted", events, 2, rc, output)
    print(f"launcher: SIGUSR1 to the launcher reached both ranks: stopped at step {step}, exit 75")


def case_single(binary, tmp):
    prepare(binary, tmp)
    cfg = job_yaml(tmp, "preempted")
    rc, events, output = preempted_run([binary, "train", "--config", cfg], lambda proc, started: proc.pid)
    step = check_preempted(f"{tmp}/preempted", events, 1, rc, output)
    straight, resumed = resumed_equals_straight([binary, "train"], tmp, "preempted", step)
    print(f"single: stopped at step {step}, exit 75; resumed final loss {resumed:.8f} == uninterrupted {straight:.8f}")


if __name__ == "__main__":
    run_cases({"two_ranks": case_two_ranks, "launcher": case_launcher, "single": case_single})
