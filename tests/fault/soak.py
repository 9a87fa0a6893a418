"""The chaos soak of issue 19 (docs/reliability.md, "Soak"): a coordinator host and 3 agent hosts, a stream of
LoRA jobs (alternately 1 node x 2 ranks and 2 nodes x 2 ranks), and N random faults while they train:

  kill_host      kill -9 of an agent host running a job (agent and ranks); the agent comes back 5 s later
  kill_agent     kill -9 of the agent daemon of such a host (its ranks must not outlive it); restarted 2 s later
  kill_rank      kill -9 of one rank of a running job
  kill_coord     kill -9 of the coordinator; restarted on the same state dir 2 s later
  cut_host       an agent host running a job is cut off for 5-25 s, then healed
  (latency/loss via tc netem: skipped where the kernel has no netem, which the summary says)

Afterwards: every job SUCCEEDED with the final loss of the uninterrupted run of its layout (1e-5), every COMMITTED
checkpoint's files exist and verify, no rank or other stray process is left on any host, and never did two
epochs of one job train at once (every host's ranks sampled each second: job id and epoch from their
environment, CPU use to tell a training rank from one a partition left waiting). A table gives the faults by
kind, detection time (fault -> node DOWN or job out of RUNNING), restart time (fault -> RUNNING again) and the
work lost (steps trained past the checkpoint the job resumed from).

    soak.py --bindir build/bin --faults 3 --jobs 2 --seed 1       # fault.soak_short
    scripts/soak.sh 100                                           # the long one

Exit 0 and "SKIP: why" where hosts cannot be made; 1 with the failed checks.
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from cluster import HostCluster  # noqa: E402
from hosts import FaultNet, Unavailable  # noqa: E402
from testlib import lora_job_yaml  # noqa: E402
from workload import (RankWatch, events, final_loss, prepare_model, rank_processes, show, trainer_binary,  # noqa: E402
                      unverified_checkpoints)

KINDS = ["kill_host", "kill_agent", "kill_rank", "kill_coord", "cut_host"]
LAYOUTS = {1: dict(nodes=1, gpus_per_node=2, tensor_model_parallel_size=2),
           2: dict(nodes=2, gpus_per_node=2, tensor_model_parallel_size=2)}
TERMINAL = ("JOB_SUCCEEDED", "JOB_FAILED", "JOB_CANCELLED")


def spec(tmp, name, steps, nodes):
    return lora_job_yaml(tmp, name, steps, save_steps=5, max_attempts=50, max_infra_restarts=50, **LAYOUTS[nodes])


def job_view(c, job):
    try:
        record, _ = show(c, job)
        return record
    except (AssertionError, json.JSONDecodeError, Exception):  # the coordinator may be down right now
        return None


def node_states(c):
    p = c.anneal("--json", "nodes", check=False, timeout=15)
    if p.returncode != 0:
        return {}
    out = json.loads(p.stdout)
    return {n["node_id"]: n.get("state") for n in (out["nodes"] if isinstance(out, dict) else out)}


def last_step(out):
    try:
        return final_loss(out)[0]
    except (FileNotFoundError, IndexError, KeyError, ValueError):
        return 0


def checkpoint_step(path):
    try:
        return int(os.path.basename(path.rstrip("/")).split("-")[1])
    except (IndexError, ValueError):
        return 0


class Soak:
    def __init__(self, args, net, c, tmp):
        self.args, self.net, self.c, self.tmp = args, net, c, tmp
        self.rng = random.Random(args.seed)
        self.jobs = {}  # job id -> (name, nodes)
        self.faults = []  # dicts: kind, target, detected_s, restarted_s, lost_steps
        self.skipped = []

    def submit_next(self):
        i = len(self.jobs)
        nodes = 1 if i % 2 == 0 else 2
        name = f"soak{i}"
        job = self.c.anneal("submit", spec(self.tmp, name, self.args.steps, nodes)).stdout.strip()
        self.jobs[job] = (name, nodes)

    def active(self):
        views = {j: job_view(self.c, j) for j in self.jobs}
        return {j: v for j, v in views.items() if v is None or v.get("state") not in TERMINAL}

    def running_target(self):
        """(job, record, node) of a running job, or None."""
        running = [(j, v) for j, v in self.active().items() if v and v.get("state") == "JOB_RUNNING"]
        if not running:
            return None
        job, record = self.rng.choice(sorted(running, key=lambda x: x[0]))
        nodes = [n["node_id"] for n in record.get("placement", {}).get("nodes", [])]
        return job, record, self.rng.choice(sorted(nodes))

    def inject(self, kind, target):
        job, record, node = target
        host = self.c.agent_host(node)
        if kind == "kill_host":
            host.kill()
            return lambda: (time.sleep(5), self.c.start_agent(host))
        if kind == "kill_agent":
            host.kill_matching("anneal-agent")
            return lambda: (time.sleep(2), self.c.start_agent(host))
        if kind == "kill_rank":
            ranks = [pid for h, pid, j, e, r in rank_processes(self.net) if j == job and h == host.name]
            if ranks:
                os.kill(self.rng.choice(sorted(ranks)), 9)
            return None
        if kind == "kill_coord":
            self.c.kill_coordinator()
            return lambda: (time.sleep(2), self.c.restart_coordinator())
        if kind == "cut_host":
            self.net.cut(host)
            hold = self.rng.uniform(5, 25)
            return lambda: (time.sleep(hold), self.net.heal(host))
        raise ValueError(kind)

    def observe(self, kind, target, recover):
        """Injects, recovers, and measures until the job runs again (at most 150 s)."""
        job, record, node = target
        name = self.jobs[job][0]
        epoch0, step0 = record.get("epoch"), last_step(f"{self.tmp}/{name}")
        t0 = time.time()
        fault = dict(kind=kind, target=f"{job}@{node}", detected_s=None, restarted_s=None, lost_steps=0)
        healer = threading.Thread(target=recover, daemon=True) if recover else None
        if healer:
            healer.start()  # the host, daemon or link comes back while the job is being watched
        while time.time() - t0 < 150:
            v = job_view(self.c, job)
            now = time.time() - t0
            if v is None:
                time.sleep(0.5)
                continue
            state = v.get("state")
            if fault["detected_s"] is None and kind != "kill_coord":
                down = kind in ("kill_host", "cut_host") and node_states(self.c).get(node) not in ("NODE_UP", None)
                if down or state != "JOB_RUNNING" or v.get("epoch") != epoch0:
                    fault["detected_s"] = now
            if state in TERMINAL:
                break
            if state == "JOB_RUNNING" and v.get("epoch") != epoch0:
                fault["restarted_s"] = now
                fault["lost_steps"] = max(0, step0 - checkpoint_step(v.get("resume_checkpoint", "")))
                break
            if state == "JOB_RUNNING" and kind == "kill_coord":
                fault["restarted_s"] = now  # the new coordinator answers and has re-adopted the running job
                break
            if state == "JOB_RUNNING" and kind == "cut_host" and now > 40:
                break  # re-adopted: the job never stopped
            time.sleep(0.5)
        if healer:
            healer.join()
        self.faults.append(fault)

    def run(self):
        while len(self.jobs) < min(2, self.args.jobs):
            self.submit_next()
        injected = 0
        while injected < self.args.faults:
            if len(self.active()) < 2 and len(self.jobs) < self.args.jobs:
                self.submit_next()
            time.sleep(self.rng.uniform(self.args.interval / 2, self.args.interval))
            target = self.running_target()
            if target is None:
                if not self.active() and len(self.jobs) >= self.args.jobs:
                    self.submit_next()  # keep faults landing on training jobs
                continue
            kind = self.rng.choice(KINDS)
            recover = self.inject(kind, target)
            injected += 1
            print(f"fault {injected}/{self.args.faults}: {kind} on {target[2]} (job {target[0]})", flush=True)
            self.observe(kind, target, recover)
        while len(self.jobs) < self.args.jobs:
            self.submit_next()
        try:
            self.net.delay(self.net.hosts[1], 10)
            self.net.undelay(self.net.hosts[1])
        except Unavailable as e:
            self.skipped.append(f"latency/loss faults: {e}")


def table(faults, skipped):
    lines = [f"{'fault':<11}{'count':>6}{'detect p50':>12}{'detect max':>12}{'restart p50':>13}{'restart max':>13}"
             f"{'steps lost':>12}"]
    for kind in KINDS + ["all"]:
        fs = [f for f in faults if kind in ("all", f["kind"])]
        if not fs:
            continue
        det = [f["detected_s"] for f in fs if f["detected_s"] is not None]
        res = [f["restarted_s"] for f in fs if f["restarted_s"] is not None]
        p50 = (lambda xs: f"{statistics.median(xs):.1f} s" if xs else "-")
        mx = (lambda xs: f"{max(xs):.1f} s" if xs else "-")
        lines.append(f"{kind:<11}{len(fs):>6}{p50(det):>12}{mx(det):>12}{p50(res):>13}{mx(res):>13}"
                     f"{sum(f['lost_steps'] for f in fs):>12}")
    return "\n".join(lines + [f"skipped: {s}" for s in skipped])


def check(soak, c, net, tmp, steps, watch):
    failures = []
    for job, (name, nodes) in soak.jobs.items():
        c.anneal("watch", job, check=False, timeout=1800)
        record = job_view(c, job) or {}
        if record.get("state") != "JOB_SUCCEEDED":
            failures.append(f"job {job} ({name}) ended {record.get('state')}: {record.get('result')} (attempt "
                            f"{record.get('attempt')}, infra restarts {record.get('infra_restarts')}, preemptions "
                            f"{record.get('preemptions')}); its last events:\n    " +
                            "\n    ".join(events(c, job)[-12:]))
            continue
        got, want = final_loss(f"{tmp}/{name}"), final_loss(f"{tmp}/ref{nodes}")
        if got[0] != steps or abs(got[1] - want[1]) > 1e-5 * abs(want[1]):
            failures.append(f"job {job} ({name}): final (step, loss) {got} differs from the uninterrupted {want}")
        bad = unverified_checkpoints(c, job)
        if bad:
            failures.append(f"job {job} ({name}): committed checkpoints lost: {bad}")
    time.sleep(3)
    watch.stop()
    daemons = ("anneal-agent", "anneal-coordinator")
    for host in net.hosts:
        for pid in host.pids():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except FileNotFoundError:
                continue
            if not any(d in cmd for d in daemons):
                failures.append(f"orphan on {host.name}: pid {pid}: {cmd[:200]}")
    failures += watch.concurrent_training()
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--faults", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=0, help="jobs in the stream (default: faults / 3, at least 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--interval", type=float, default=20, help="at most this many seconds between faults")
    args = ap.parse_args()
    args.jobs = args.jobs or max(2, args.faults // 3)
    why = FaultNet.unavailable()
    if why:
        print(f"SKIP: {why}")
        return 0
    bindir = os.path.abspath(args.bindir)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_model(tmp, trainer_binary(bindir))
        settings = "reconnect_grace_ms: 5000\n"
        with FaultNet(4, tmp) as net, HostCluster(net, bindir, tmp, coordinator_settings=settings) as c:
            started = time.time()
            refs = [c.anneal("submit", spec(tmp, f"ref{n}", args.steps, n)).stdout.strip() for n in LAYOUTS]
            for ref in refs:
                assert c.anneal("watch", ref, check=False, timeout=900).returncode == 0, "a reference run failed"
            watch = RankWatch(net, period_s=1.0).start()
            soak = Soak(args, net, c, tmp)
            try:
                soak.run()
                failures = check(soak, c, net, tmp, args.steps, watch)
            except AssertionError as e:
                failures = [f"{e}\n{c.logs()}"]
            print(f"soak: {len(soak.faults)} faults, {len(soak.jobs)} jobs of {args.steps} steps, seed {args.seed}, "
                  f"{time.time() - started:.0f} s, {watch.samples} process samples, {len(watch.overlaps)} with a "
                  f"cut-off stale epoch alive")
            print(table(soak.faults, soak.skipped))
            for f in soak.faults:
                print(f"  {f}")
    if failures:
        print("FAIL:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print("soak: every job SUCCEEDED with its uninterrupted loss; no committed checkpoint lost; no orphan; never two "
          "epochs of a job training at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
