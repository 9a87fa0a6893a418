#!/usr/bin/env python3
"""Schedules with real processes: kill -9 of the coordinator just before, just after and right at fire times.

  kill_fire: `anneal up` (a coordinator and one agent), a schedule firing every minute ("* * * * *") with
             --concurrency replace, so every fire starts a pipeline run whatever the previous one does (its job
             trains a model that does not exist: it fails, and no trainer is needed). The coordinator is killed -9
             (its pid only) 2 s before fire time M1 and again 2 s after it, then right at M2 (while it decides
             and commits the fire), and `anneal up` restarts it each time on the same RocksDB state. Once M2 is
             in the history (and 3 s more, time for a double to show): every fire time from the first to M2 is
             in the schedule's history exactly once, each with its own pipeline run, and the coordinator holds
             exactly one run per fire time (the runs' origins are the fire times, none twice, none missing).
             About 2 minutes.
  data_change: a schedule with --on-data-change on a dataset directory and --check-interval 10s. The first
             check records a baseline and runs nothing; a check with the data unchanged runs nothing; a file
             appended to fires exactly one pipeline run; a kill -9 of the coordinator after that fire neither
             repeats it nor loses the new baseline (the next unchanged check runs nothing); a new file fires
             again. About 1.5 minutes.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, run_cases, wait_for  # noqa: E402

SCHEDULE = "every-minute"


class Cluster:
    def __init__(self, bindir, home):
        self.bindir, self.home = bindir, home
        self.env = dict(os.environ, ANNEAL_HOME=home, OMP_NUM_THREADS="1")

    def anneal(self, *args, check=True, timeout=120):
        p = subprocess.run([os.path.join(self.bindir, "anneal"), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"anneal {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def up(self, tmp):
        self.anneal("up", "--agents", "1", "--slots", "1", "--allow-root", tmp, "--allow-root",
                    os.path.join(ROOT, "examples"))

    def coordinator_pid(self):
        """The pid of this cluster's anneal-coordinator (cluster.yaml records it; the state dir names it)."""
        out = subprocess.run(["pgrep", "-f", f"anneal-coordinator .*{self.home}"], capture_output=True,
                             text=True).stdout.split()
        assert len(out) == 1, f"expected one coordinator of {self.home}, found pids {out}"
        return int(out[0])

    def kill9_and_heal(self, tmp, what):
        pid = self.coordinator_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.02)
        print(f"  killed -9 coordinator {pid} {what} ({time.strftime('%H:%M:%S')})", flush=True)
        self.up(tmp)

    def schedule(self):
        return json.loads(self.anneal("--json", "schedule", "show", SCHEDULE).stdout)["schedule"]

    def runs(self):
        reply = json.loads(self.anneal("--json", "pipeline", "ls", "--all").stdout)
        return reply.get("runs", [])


def pipeline_yaml(tmp):
    path = f"{tmp}/pipeline.yaml"
    with open(path, "w") as f:
        f.write(f"""name: kill-fire
steps:
  - name: train
    job:
      model_name_or_path: {tmp}/no-such-model
      stage: sft
      finetuning_type: lora
      dataset: demo_train
      dataset_dir: {ROOT}/examples/data
      template: qwen
      output_dir: {tmp}/out/${{pipeline.id}}
      max_steps: 1
      max_attempts: 1
""")
    return path


def wait_until(unix_s):
    while time.time() < unix_s:
        time.sleep(min(0.01, max(unix_s - time.time(), 0)))


def fire_times(schedule):
    """The fire times (unix seconds) in a schedule's history, in history order."""
    return [int(f["fire_time_ms"]) // 1000 for f in schedule.get("history", [])]


def next_minute(after_s):
    return (int(after_s) // 60 + 1) * 60


def case_kill_fire(bindir, tmp):
    c = Cluster(bindir, f"{tmp}/home")
    os.makedirs(f"{tmp}/out")
    c.up(tmp)
    try:
        c.anneal("schedule", "create", SCHEDULE, "--cron", "* * * * *", "--concurrency", "replace",
                 pipeline_yaml(tmp))
        created_s = time.time()
        m1 = next_minute(created_s)
        if m1 - created_s < 8:  # room to kill before M1 and restart
            m1 += 60
        m2 = m1 + 60
        print(f"schedule created at {time.strftime('%H:%M:%S')}; kills around {time.strftime('%H:%M:%S', time.localtime(m1))}"
              f" and {time.strftime('%H:%M:%S', time.localtime(m2))}", flush=True)
        wait_until(m1 - 2)
        c.kill9_and_heal(tmp, "2 s before a fire time")
        wait_until(m1 + 2)
        c.kill9_and_heal(tmp, "2 s after a fire time")
        wait_until(m2)
        c.kill9_and_heal(tmp, "at a fire time")
        deadline = m2 + 30
        while time.time() < deadline and m2 not in fire_times(c.schedule()):
            time.sleep(0.5)
        time.sleep(3)

        schedule = c.schedule()
        fires = [f for f in schedule.get("history", [])]
        times = fire_times(schedule)
        assert times == sorted(set(times)), f"a fire time was handled twice: {times}"
        assert times and times[-1] == m2, f"the last fire is not M2 ({m2}): {times}"
        assert times == list(range(times[0], m2 + 1, 60)), f"a fire time was skipped: {times}"
        assert times[0] <= m1, f"M1 did not fire: {times}"
        for f in fires:
            assert f["outcome"] == "FIRE_STARTED", f"fire {f} did not start a run"
            assert int(f.get("missed_count", 0)) == 0, f"fire {f} counted as missed (restart slower than the grace?)"
        run_ids = [f["run_id"] for f in fires]
        assert len(set(run_ids)) == len(run_ids), f"two fires share a run: {run_ids}"

        origins = [r["origin"] for r in c.runs() if r["origin"].startswith(f"schedule default/{SCHEDULE} ")]
        expected = [f"schedule default/{SCHEDULE} fire at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))}"
                    for t in times]
        assert sorted(origins) == sorted(expected), f"pipeline runs per fire time differ:\n{sorted(origins)}\n{expected}"
        print(f"kill_fire: {len(times)} fire times, each exactly once with its own pipeline run, across 3 kill -9 "
              f"(before, after, at a fire time)")
    finally:
        c.anneal("down", check=False)


def case_data_change(bindir, tmp):
    c = Cluster(bindir, f"{tmp}/home")
    os.makedirs(f"{tmp}/out")
    data = f"{tmp}/data/support"
    os.makedirs(data)
    with open(f"{data}/week1.jsonl", "w") as f:
        f.write('{"instruction": "hi", "output": "hello"}\n')
    c.up(tmp)
    try:
        c.anneal("schedule", "create", SCHEDULE, "--on-data-change", data, "--check-interval", "10s",
                 pipeline_yaml(tmp))
        outcomes = lambda: [h["outcome"] for h in c.schedule().get("history", [])]  # noqa: E731
        wait_for("the baseline check", lambda: "FIRE_BASELINE" in outcomes(), 30)
        time.sleep(11)  # one more check of unchanged data
        assert outcomes() == ["FIRE_BASELINE"], f"unchanged data fired: {outcomes()}"

        with open(f"{data}/week1.jsonl", "a") as f:
            f.write('{"instruction": "bye", "output": "goodbye"}\n')
        wait_for("a fire after the data changed", lambda: "FIRE_STARTED" in outcomes(), 30)
        c.kill9_and_heal(tmp, "after the data-change fire")
        time.sleep(12)  # a check after the restart, data unchanged since the fire
        assert outcomes().count("FIRE_STARTED") == 1, f"the change fired again after a restart: {outcomes()}"

        with open(f"{data}/week2.jsonl", "w") as f:
            f.write('{"instruction": "new", "output": "data"}\n')
        wait_for("a second fire after a new file", lambda: outcomes().count("FIRE_STARTED") == 2, 30)
        runs = [r for r in c.runs() if r["origin"].startswith(f"schedule default/{SCHEDULE}")]
        assert len(runs) == 2, f"expected one run per data change, got {[r['origin'] for r in runs]}"
        print(f"data_change: baseline, no fire on unchanged data, one run per change ({len(runs)} runs) across a "
              f"kill -9: {outcomes()}")
    finally:
        c.anneal("down", check=False)


if __name__ == "__main__":
    run_cases({"kill_fire": case_kill_fire, "data_change": case_data_change}, binary_flag="--bindir")
