#!/usr/bin/env python3
"""Anneal agents inside a real Slurm allocation (deploy/slurm/anneal-agents.sbatch; docs/operations.md, "Slurm").

A throwaway Slurm (scripts/slurm-cluster.sh: munged, slurmctld, two slurmd on this host, CPU only) and a real
coordinator; `sbatch anneal-agents.sbatch` over both Slurm nodes starts one agent per node with a join token; the
jobs run real anneal-train ranks on a tiny generated model.

  succeed: both nodes appear in `anneal nodes` labelled slurm_job=<job id>; a 1-rank LoRA job runs to SUCCEEDED on
           them. The walltime signal (the --signal=B:USR1 the allocation gets before its end, sent here with
           `scancel --batch --signal=USR1`) ends the allocation cleanly: the batch script exits 0, the agents
           exit, the nodes are removed from the cluster.
  drain:   a longer job is running when the walltime signal comes: the nodes are drained with --evict, so the
           coordinator preempts the job (counted as a preemption, not an attempt), the ranks checkpoint at the
           step they agree on and stop, the allocation ends cleanly, and the job waits (not FAILED) with that
           checkpoint committed. A second allocation's agents pick it up: it resumes from that checkpoint
           (its first logged step is past it) and SUCCEEDS.
  srun_ranks: ranks under srun without Anneal's daemons: `srun -N2 --ntasks-per-node=1 anneal-train train` reads
           Slurm's variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, ...): the two tasks are ranks 0 and 1 of one
           data-parallel world of 2, and the job commits its checkpoints and adapter. MASTER_ADDR is set to
           127.0.0.1 because this cluster's node names (n1, n2) are not host names; everything else comes from
           Slurm. Skipped when the anneal-train binary predates Slurm support.
Skipped (77, reason printed) without root, without Slurm and munge, or without an anneal-train binary.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from deploylib import ROOT, Coordinator, skip
from testlib import lora_job_yaml, make_tokenizer, run

SBATCH = os.path.join(ROOT, "deploy/slurm/anneal-agents.sbatch")


class Allocation:
    """One `sbatch anneal-agents.sbatch` over the two Slurm nodes."""

    def __init__(self, env, tmp):
        out = run(["sbatch", "--parsable", "--nodes", "2", "--time", "10", "--output", f"{tmp}/slurm-%j.out",
                   "--chdir", tmp, SBATCH], env=env).stdout.strip()
        self.job_id, self.env, self.tmp = out.split(";")[0], env, tmp
        self.nodes = {f"n1-slurm{self.job_id}", f"n2-slurm{self.job_id}"}

    def output(self):
        path = f"{self.tmp}/slurm-{self.job_id}.out"
        return open(path).read() if os.path.exists(path) else ""

    def state(self):
        p = run(["scontrol", "show", "job", self.job_id], env=self.env, check=False)
        m = re.search(r"JobState=(\S+).*?ExitCode=(\S+)", p.stdout, re.S)
        return (m.group(1), m.group(2)) if m else ("GONE", "")

    def walltime_signal(self):
        run(["scancel", "--batch", "--signal=USR1", self.job_id], env=self.env)

    def wait_ended(self, timeout=60):
        deadline = time.time() + timeout
        while self.state()[0] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            assert time.time() < deadline, f"allocation {self.job_id} still {self.state()}:\n{self.output()}"
            time.sleep(0.3)
        return self.state()

    def cancel(self):
        run(["scancel", self.job_id], env=self.env, check=False)


def nodes(c):
    return {n["node_id"]: n for n in json.loads(c.anneal("--json", "nodes").stdout)}


def wait_for(what, predicate, timeout, detail=lambda: ""):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}: {detail()}"
        time.sleep(0.3)


def job(c, job_id):
    return json.loads(c.anneal("--json", "show", job_id).stdout)


def job_state(c, job_id):
    j = job(c, job_id)
    return (j.get("job") or j).get("state", "").removeprefix("JOB_")


def job_yaml(tmp, name, steps):
    return lora_job_yaml(tmp, name, steps, lora_rank=4, cutoff_len=64, per_device_train_batch_size=1,
                         save_steps=100000, nodes=1, gpus_per_node=1)


def logged_steps(out):
    path = f"{out}/trainer_log.jsonl"
    rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    return [r["current_steps"] for r in rows if "loss" in r]


def start_slurm(trainer, tmp):
    if os.geteuid() != 0:
        skip("slurmd needs root")
    missing = [b for b in ["munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol"] if not shutil.which(b)]
    if missing:
        skip(f"Slurm is not installed ({', '.join(missing)} missing; scripts/setup.sh installs slurmd, slurmctld, "
             "slurm-client and munge)")
    if not trainer or not os.access(trainer, os.X_OK):
        skip(f"no anneal-train binary ({trainer or 'none given'}): build the trainer or set ANNEAL_TRAIN_BIN")
    os.chmod(tmp, 0o755)
    p = run([f"{ROOT}/scripts/slurm-cluster.sh", "start", f"{tmp}/slurm", "--nodes", "2", "--cpus", "2"], check=False)
    if p.returncode != 0:
        raise AssertionError(f"scripts/slurm-cluster.sh start failed: {p.stdout}{p.stderr}")
    make_tokenizer(f"{tmp}/tok")
    run([trainer, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
         f"{tmp}/base", "--seed", "2"])


def setup(bindir, trainer, tmp):
    start_slurm(trainer, tmp)
    run(["bash", f"{ROOT}/scripts/rank-access.sh", os.path.dirname(trainer), os.path.join(ROOT, ".venv"), tmp])
    c = Coordinator(bindir, tmp, f"{tmp}/state", f"{tmp}/home",
                    extra_config=f"bootstrap_join_token_file: {tmp}/join-token\n")
    env = dict(c.env, SLURM_CONF=f"{tmp}/slurm/slurm.conf", ANNEAL_SERVER_KEY_FILE=f"{tmp}/state/curve.pub",
               ANNEAL_JOIN_TOKEN_FILE=f"{tmp}/join-token", ANNEAL_AGENT=f"{bindir}/anneal-agent",
               ANNEAL_CLI=f"{bindir}/anneal", ANNEAL_WORK_ROOT=f"{tmp}/work", ANNEAL_SLOTS="1",
               ANNEAL_AGENT_ARGS=f"--trainer {trainer}", ANNEAL_SLURM_DIR=os.path.dirname(SBATCH),
               ANNEAL_DRAIN_GRACE_S="40", OMP_NUM_THREADS="1")
    return c, env


def start_agents(c, env, tmp):
    a = Allocation(env, tmp)
    wait_for(f"the nodes of allocation {a.job_id}", lambda: a.nodes <= set(nodes(c)), 30,
             lambda: f"{sorted(nodes(c))}\n{a.output()}")
    for n in a.nodes:
        labels = nodes(c)[n].get("inventory", {}).get("labels", {})
        assert labels.get("slurm_job") == a.job_id, f"{n} labels {labels}"
    return a


def end_allocation(c, a):
    a.walltime_signal()
    state, exit_code = a.wait_ended()
    out = a.output()
    assert state == "COMPLETED" and exit_code == "0:0", f"allocation {a.job_id} ended {state} {exit_code}:\n{out}"
    assert "left the cluster" in out, out
    left = a.nodes & set(nodes(c))
    assert not left, f"nodes still registered after the allocation: {left}"


def case_succeed(bindir, trainer, tmp):
    c, env = setup(bindir, trainer, tmp)
    a = None
    try:
        a = start_agents(c, env, tmp)
        job_id = c.anneal("submit", job_yaml(tmp, "quick", 4)).stdout.strip()
        p = c.anneal("watch", job_id, check=False)
        assert p.returncode == 0 and job_state(c, job_id) == "SUCCEEDED", \
            f"{job_id}: {job_state(c, job_id)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}"
        end_allocation(c, a)
        print(f"{job_id} SUCCEEDED on allocation {a.job_id}; the allocation drained and ended cleanly", flush=True)
    finally:
        if a:
            a.cancel()
        c.stop()
        run([f"{ROOT}/scripts/slurm-cluster.sh", "stop", f"{tmp}/slurm"], check=False)


def case_drain(bindir, trainer, tmp):
    c, env = setup(bindir, trainer, tmp)
    a = b = None
    out = f"{tmp}/long"
    try:
        a = start_agents(c, env, tmp)
        job_id = c.anneal("submit", job_yaml(tmp, "long", 60)).stdout.strip()
        wait_for("a few training steps", lambda: len(logged_steps(out)) >= 3, 60, lambda: job_state(c, job_id))
        end_allocation(c, a)
        checkpoints = json.loads(c.anneal("--json", "checkpoints", job_id).stdout)
        checkpoints = checkpoints.get("checkpoints", checkpoints) if isinstance(checkpoints, dict) else checkpoints
        assert checkpoints, f"{job_id}: no checkpoint committed by the drain"
        step = max(int(ck["step"]) for ck in checkpoints)
        state = job_state(c, job_id)
        assert state in ("PENDING", "RESTARTING", "PREEMPTED"), f"{job_id} is {state} after the drain, not waiting"
        shown = job(c, job_id)
        record = shown.get("job") or shown
        # `anneal drain --evict`: the coordinator preempted it (a preemption, not one of its attempts).
        assert int(record.get("preemptions", 0)) == 1, f"{job_id}: not counted as a preemption: {record}"
        assert "drained with --evict" in json.dumps(shown), f"{job_id}: no eviction event"
        before = len(logged_steps(out))
        print(f"drained at step {step} ({job_id} {state})", flush=True)

        b = start_agents(c, env, tmp)
        p = c.anneal("watch", job_id, check=False)
        assert p.returncode == 0 and job_state(c, job_id) == "SUCCEEDED", f"{job_id}: {job_state(c, job_id)}"
        record = job(c, job_id).get("job") or job(c, job_id)
        used = int(record.get("attempt", 0)) - int(record.get("preemptions", 0))
        assert used == 1, f"{job_id} used {used} attempts (attempt {record.get('attempt')}, preemptions 1): the drain cost one"
        resumed = logged_steps(out)[before:]
        assert resumed and resumed[0] == step + 1, f"the resumed attempt logged steps {resumed[:5]}..., not {step + 1}"
        end_allocation(c, b)
        print(f"{job_id} resumed at step {step + 1} on allocation {b.job_id} and SUCCEEDED", flush=True)
    finally:
        for alloc in (a, b):
            if alloc:
                alloc.cancel()
        c.stop()
        run([f"{ROOT}/scripts/slurm-cluster.sh", "stop", f"{tmp}/slurm"], check=False)


def case_srun_ranks(bindir, trainer, tmp):
    if trainer and os.path.exists(trainer) and b"SLURM_PROCID" not in open(trainer, "rb").read():
        skip(f"{trainer} predates Slurm support (it never reads SLURM_PROCID): rebuild the trainer")
    start_slurm(trainer, tmp)
    try:
        # The world is srun's: no nodes / gpus_per_node in the spec (docs/trainer-contract.md).
        spec = job_yaml(tmp, "srun", 4)
        lines = [l for l in open(spec) if not l.startswith(("nodes:", "gpus_per_node:"))]
        with open(spec, "w") as f:
            f.write("".join(lines).replace("save_steps: 100000", "save_steps: 2"))
        env = dict(os.environ, SLURM_CONF=f"{tmp}/slurm/slurm.conf", MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
        for k in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"]:
            env.pop(k, None)
        p = run(["srun", "--nodes", "2", "--ntasks-per-node", "1", "--label", trainer, "train", "--config", spec],
                env=env, check=False, timeout=120)
        out = p.stdout + p.stderr
        assert p.returncode == 0, f"srun anneal-train failed ({p.returncode}):\n{out[-4000:]}"
        assert re.search(r"^0: \[train\] rank 0 \(tp 0, pp 0, dp 0\)", out, re.M), out
        assert re.search(r"^1: \[train\] rank 1 \(tp 0, pp 0, dp 1\)", out, re.M), f"task 1 is not rank 1 of 2:\n{out}"
        for path in ["checkpoint-2", "checkpoint-4", "adapter_model.safetensors"]:
            assert os.path.exists(f"{tmp}/srun/{path}"), f"{path} missing: {os.listdir(f'{tmp}/srun')}"
        assert logged_steps(f"{tmp}/srun") == [1, 2, 3, 4], logged_steps(f"{tmp}/srun")
        print("srun: 2 tasks ran as ranks 0 and 1 of one data-parallel world and committed the job", flush=True)
    finally:
        run([f"{ROOT}/scripts/slurm-cluster.sh", "stop", f"{tmp}/slurm"], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--case", required=True, choices=["succeed", "drain", "srun_ranks"])
    ap.add_argument("--trainer", default=os.environ.get("ANNEAL_TRAIN_BIN", ""))
    args = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            {"succeed": case_succeed, "drain": case_drain, "srun_ranks": case_srun_ranks}[args.case](os.path.abspath(args.bindir), args.trainer, tmp)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
