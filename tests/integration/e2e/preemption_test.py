#!/usr/bin/env python3
"""Sharing end to end with real processes: `anneal up` (coordinator + 2 agents x 2 CPU slots), real ranks.

  preempt: team a fills every slot with two long LoRA jobs (one node x 2 ranks each); team b, guaranteed the
           whole cluster, submits a job: one of a's jobs is PREEMPTED (its ranks checkpoint at an agreed step
           and exit "preempted"), b's job is RUNNING within the grace period plus 10 s. Then one rank of a's other
           job is frozen (SIGSTOP: it cannot answer) and b submits again: at the grace deadline the agent kills
           that gang and the job goes back to the queue. Once b's jobs are done, both of a's jobs resume (one from
           the checkpoint taken at preemption, one from its last periodic checkpoint) and end with the final loss
           of an uninterrupted run (1e-5), with no failed attempt: preemptions never use up max_attempts.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from e2e_test import Cluster, final_loss, job_yaml, prepare  # noqa: E402
from testlib import run_cases, wait_for  # noqa: E402

GRACE_S = 15
ONE_NODE = "nodes: 1\ngpus_per_node: 2\ntensor_model_parallel_size: 2\nmax_attempts: 1\n"


def yaml_one_node(tmp, name, steps, save_steps):
    path = job_yaml(tmp, name, steps, save_steps)
    text = open(path).read()
    for key in ("nodes: 2\n", "gpus_per_node: 2\n", "tensor_model_parallel_size: 2\n"):
        text = text.replace(key, "")
    with open(path, "w") as f:
        f.write(text + ONE_NODE)
    return path


def show(c, job):
    return json.loads(c.anneal("--json", "show", job).stdout)


def state(c, job):
    return show(c, job)["job"]["state"].replace("JOB_", "")


def checkpoint_steps(c, job):
    cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
    cks = cks["checkpoints"] if isinstance(cks, dict) else cks
    return sorted(int(k["step"]) for k in cks if "COMMITTED" in k.get("state", "COMMITTED"))


def rank_pids(job):
    """The anneal-train processes whose environment names the job (the agents pass ANNEAL_JOB_ID)."""
    pids = []
    for pid in subprocess.run(["pgrep", "-f", "anneal-train"], capture_output=True, text=True).stdout.split():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"ANNEAL_JOB_ID={job}".encode() in env:
            pids.append(int(pid))
    return pids


def events(c, job, kind=None):
    return [e for e in show(c, job).get("events", []) if kind is None or e.get("kind") == kind]


def case_preempt(bindir, tmp):
    prepare(tmp, bindir)
    # Long enough that a's jobs still run when b's arrive (a step takes ~0.1 s here), checkpointing often.
    steps, every = 400, 20
    # Uninterrupted reference: the same job run straight through by anneal-train launch (2 ranks, TP 2).
    ref_cfg = yaml_one_node(tmp, "ref", steps, every)
    # Its own tokenized cache: this run is root's, and the cluster's ranks (nobody) must own theirs.
    with open(ref_cfg) as f:
        text = f.read().replace(f"tokenized_cache_dir: {tmp}/cache", f"tokenized_cache_dir: {tmp}/cache-ref")
    with open(ref_cfg, "w") as f:
        f.write(text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([os.path.join(bindir, "anneal-train"), "launch", "--nproc-per-node", "2", "--", "train",
                        "--config", ref_cfg], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ref = final_loss(f"{tmp}/ref")

    settings = ["--coordinator-set", "min_runtime_ms=0", "--coordinator-set", f"preemption_grace_ms={GRACE_S * 1000}"]
    with Cluster(bindir, f"{tmp}/home", up_args=settings) as c:
        for team in ("a", "b"):
            c.anneal("team", "create", team)
        c.anneal("team", "quota", "b", "--guaranteed", "4", "--max", "4")
        a_jobs = [c.anneal("submit", "--team", "a", yaml_one_node(tmp, f"a{i}", steps, every)).stdout.strip()
                  for i in (1, 2)]
        wait_for("a's jobs running with a checkpoint",
                 lambda: all(state(c, j) == "RUNNING" and checkpoint_steps(c, j) for j in a_jobs), 300)

        # 1. A clean preemption: b's first job reclaims one node.
        t0 = time.time()
        b1 = c.anneal("submit", "--team", "b", yaml_one_node(tmp, "b1", 150, 0)).stdout.strip()
        wait_for("b's first job RUNNING", lambda: state(c, b1) == "RUNNING", GRACE_S + 10)
        took = time.time() - t0
        victims = [j for j in a_jobs if any(e.get("to_state", "").endswith("PREEMPTED") for e in events(c, j))]
        assert len(victims) == 1, f"expected one of a's jobs preempted, got {victims}"
        clean = victims[0]
        other = a_jobs[1 - a_jobs.index(clean)]
        preempt_events = [e["message"] for e in events(c, clean, "preemption")]
        assert any(b1 in m for m in preempt_events), f"the victim's events do not name the beneficiary: {preempt_events}"
        assert any("checkpointed and stopped" in m for m in preempt_events), preempt_events
        queue = c.anneal("queue").stdout
        assert clean in queue, f"the preempted job is not in the queue:\n{queue}"

        # 2. A gang that cannot answer: freeze one rank of a's other job, then b asks for its node too.
        pids = rank_pids(other)
        assert len(pids) == 2, f"expected 2 ranks of {other}, found {pids}"
        os.kill(pids[0], signal.SIGSTOP)
        last_ckpt = checkpoint_steps(c, other)[-1]
        t1 = time.time()
        b2 = c.anneal("submit", "--team", "b", yaml_one_node(tmp, "b2", 10, 0)).stdout.strip()
        wait_for("a's frozen job PREEMPTED", lambda: state(c, other) == "PREEMPTED", 30)
        # Back in the queue (it may be placed again at once when b's first job has ended meanwhile).
        wait_for("a's frozen job out of PREEMPTED", lambda: state(c, other) != "PREEMPTED", GRACE_S + 30)
        waited = time.time() - t1
        requeued = [e for e in events(c, other, "state")
                    if e.get("from_state") == "JOB_PREEMPTED" and e.get("to_state") == "JOB_PENDING"]
        assert requeued, f"{other} did not go PREEMPTED -> PENDING: {events(c, other, 'state')}"
        assert waited >= GRACE_S - 1, f"the frozen gang was let go after {waited:.1f} s, before the grace period"
        killed = [e["message"] for e in events(c, other, "preemption") if "did not stop within the grace" in e["message"]]
        assert killed, f"no event says the gang was killed at the deadline: {events(c, other, 'preemption')}"
        assert not [p for p in pids if os.path.exists(f"/proc/{p}") and "zombie" not in open(f"/proc/{p}/status").read()]

        for job in (b1, b2):
            assert c.anneal("watch", job, check=False, timeout=600).returncode == 0, f"b's job {job} failed"
        for job in a_jobs:
            w = c.anneal("watch", job, check=False, timeout=600)
            assert w.returncode == 0, f"a's job {job} did not finish after the preemption:\n{w.stdout[-3000:]}"
            s = show(c, job)
            assert not s["failed_attempts"], f"{job}: a preemption counted as a failed attempt: {s['failed_attempts']}"
            assert int(s["job"].get("preemptions", 0)) == 1, s["job"]
        resumed = " ".join(e["message"] for e in events(c, other))
        assert f"checkpoint-{last_ckpt}" in resumed, f"{other} did not resume from checkpoint-{last_ckpt}"
    for name, job in (("clean", clean), ("killed", other)):
        out = f"{tmp}/a{a_jobs.index(job) + 1}"
        got = final_loss(out)
        assert got[0] == ref[0] == steps, (name, got, ref)
        assert abs(got[1] - ref[1]) <= 1e-5 * max(1.0, abs(ref[1])), \
            f"{name}: final loss {got[1]} differs from the uninterrupted {ref[1]}"
    print(f"preempt: b's job RUNNING {took:.1f} s after submit (grace {GRACE_S} s); the frozen gang was killed "
          f"after {waited:.1f} s; both of a's jobs resumed and ended at step {steps} with loss {ref[1]:.6f} = "
          f"uninterrupted, no failed attempt")


if __name__ == "__main__":
    run_cases({"preempt": case_preempt}, binary_flag="--bindir")
