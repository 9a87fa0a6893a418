#!/usr/bin/env python3
"""Metrics scraped by a real Prometheus (Debian's `prometheus`), from a real local cluster and a real job.

  scrape: `anneal up` (1 agent x 1 CPU slot) with the coordinator's HTTP port and the agent's metrics endpoint
          on (each behind its own bearer token), a short LoRA job run by the real anneal-train, and a Prometheus
          scraping both every second with those tokens (credentials files). Its HTTP API then returns the job's
          loss equal to the last loss in the trainer's trainer_log.jsonl (and its step), the agent's per-task
          CPU series, the coordinator's queue, jobs-by-team, wait-time and pass-latency series, and `up` 1 for
          both targets; the agent's endpoint answers 401 without the token.
  deploy: deploy/prometheus/prometheus.yml passes `promtool check config` (with its credentials files in
          place), and every metric the Grafana dashboard queries is one the daemons export (their docs).

Exit 77 (ctest: skipped) with the reason printed when Debian's prometheus/promtool or anneal-train is missing.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, free_port, http_get, make_tokenizer, run, skip, wait_for  # noqa: E402


def job_yaml(tmp, steps):
    path = f"{tmp}/job.yaml"
    with open(path, "w") as f:
        f.write(f"""model_name_or_path: {tmp}/base
stage: sft
finetuning_type: lora
lora_target: all
lora_rank: 8
dataset: demo_train
dataset_dir: {ROOT}/examples/data
template: qwen
cutoff_len: 64
output_dir: {tmp}/out
per_device_train_batch_size: 2
learning_rate: 5.0e-3
max_steps: {steps}
logging_steps: 1
save_steps: 1000
nodes: 1
gpus_per_node: 1
tokenized_cache_dir: {tmp}/cache
""")
    return path


class Prometheus:
    def __init__(self, tmp, targets):
        """targets: [(job name, host:port, credentials file)]"""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = f"{tmp}/prometheus.yml"
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n")
            for job, address, credentials in targets:
                f.write(f"  - job_name: {job}\n    authorization:\n      type: Bearer\n"
                        f"      credentials_file: {credentials}\n    static_configs:\n      - targets: ['{address}']\n")
        self.log = open(f"{tmp}/prometheus.log", "w")
        self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/prom-data",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("prometheus to be ready", lambda: self.ready(), 30)

    def ready(self):
        assert self.proc.poll() is None, f"prometheus exited: {open(self.log.name).read()[-2000:]}"
        try:
            return http_get(f"{self.url}/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, expr):
        """The instant vector of `expr`: [(labels, float value)]."""
        status, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, f"query {expr}: HTTP {status}: {body[:500]}"
        data = json.loads(body)["data"]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def target_errors(self):
        """Each target's last scrape error (for failure messages)."""
        targets = json.loads(http_get(f"{self.url}/api/v1/targets")[1])["data"]["activeTargets"]
        return {t["labels"]["job"]: t.get("lastError", "") for t in targets}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def case_scrape(bindir, trainer, tmp):
    if shutil.which("prometheus") is None:
        skip("Debian's prometheus is not installed (scripts/setup.sh installs it)")
    if not os.access(trainer, os.X_OK):
        skip(f"no anneal-train at {trainer} (build the trainer, or set ANNEAL_TRAIN to one)")
    t0 = time.time()
    make_tokenizer(f"{tmp}/tok")
    run([trainer, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
         f"{tmp}/base", "--seed", "2"])
    home = f"{tmp}/home"
    env = dict(os.environ, ANNEAL_HOME=home, OMP_NUM_THREADS="1")

    def anneal(*args, check=True, timeout=120):
        p = subprocess.run([os.path.join(bindir, "anneal"), *args], capture_output=True, text=True, env=env,
                           timeout=timeout)
        assert not check or p.returncode == 0, f"anneal {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        return p

    agent_token = f"{tmp}/agent-metrics-token"
    with open(agent_token, "w") as f:
        f.write(secrets.token_hex(24) + "\n")
    os.chmod(agent_token, 0o600)
    http_port = free_port()
    run(["bash", os.path.join(ROOT, "scripts/rank-access.sh"), bindir, os.path.dirname(trainer),
         os.path.join(ROOT, ".venv"), tmp])
    anneal("up", "--agents", "1", "--slots", "1", "--allow-root", tmp, "--allow-root", os.path.join(ROOT, "examples"),
           "--coordinator-set", f"http_bind=127.0.0.1:{http_port}",
           "--agent-set", "metrics_bind=127.0.0.1:0", "--agent-set", f"metrics_token_file={agent_token}",
           "--agent-set", f"trainer={trainer}")
    prom = None
    try:
        # The coordinator's /metrics wants a cluster admin's API token: the one `anneal up` wrote for us.
        config = open(f"{home}/config").read()
        admin_token = re.search(r'^token:\s*"?([^"\n]+)"?', config, re.M).group(1)
        coordinator_token = f"{tmp}/coordinator-token"
        with open(coordinator_token, "w") as f:
            f.write(admin_token + "\n")
        agent_address = wait_for("the agent's metrics address", lambda: (
            open(f"{home}/agents/local-0/metrics-address").read().strip()
            if os.path.exists(f"{home}/agents/local-0/metrics-address") else None), 20)
        status, body = http_get(f"http://{agent_address}/metrics")
        assert status == 401 and "no Authorization header" in body, (status, body)
        status, body = http_get(f"http://{agent_address}/metrics", "not-the-token")
        assert status == 401 and "wrong bearer token" in body, (status, body)
        prom = Prometheus(tmp, [("anneal-coordinator", f"127.0.0.1:{http_port}", coordinator_token),
                                ("anneal-agent", agent_address, agent_token)])
        # Prometheus applies new targets after its discovery's first update (up to 5 s): both are scraped first.
        for target in ("anneal-coordinator", "anneal-agent"):
            wait_for(f"Prometheus to scrape {target} (errors: {prom.target_errors()})",
                     lambda: [v for _, v in prom.query(f'up{{job="{target}"}}') if v == 1], 20)
        job = anneal("submit", job_yaml(tmp, 200)).stdout.strip()
        # The agent's own endpoint while the job runs: its task's ranks, CPU and RSS (read from /proc).
        seen = {}
        watcher = subprocess.Popen([os.path.join(bindir, "anneal"), "watch", job], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        while watcher.poll() is None:
            status, body = http_get(f"http://{agent_address}/metrics", open(agent_token).read().strip())
            for line in body.splitlines():
                if line.startswith("anneal_task_") and f'job_id="{job}"' in line:
                    name = line.split("{")[0]
                    seen[name] = max(seen.get(name, 0.0), float(line.rsplit(" ", 1)[1]))
            time.sleep(0.1)
        assert seen.get("anneal_task_ranks") == 1, f"the agent never showed the job's rank: {seen}"
        assert seen.get("anneal_task_cpu_seconds_total", 0) > 0, f"no CPU time for the task: {seen}"
        assert seen.get("anneal_task_resident_memory_bytes", 0) > 1 << 20, f"no RSS for the task: {seen}"
        w = anneal("watch", job, check=False, timeout=60)
        assert w.returncode == 0, f"the job did not succeed:\n{w.stdout[-2000:]}\n{w.stderr[-2000:]}"
        rows = [json.loads(l) for l in open(f"{tmp}/out/trainer_log.jsonl") if '"loss"' in l]
        last_step, last_loss = rows[-1]["current_steps"], rows[-1]["loss"]

        def series(expr):
            return prom.query(expr) or None

        loss = wait_for(f"Prometheus to hold job {job}'s last loss {last_loss}", lambda: (
            [v for _, v in prom.query(f'last_over_time(anneal_job_loss{{job_id="{job}"}}[10m])') if v == last_loss]
            or None), 20)
        step = prom.query(f'last_over_time(anneal_job_step{{job_id="{job}"}}[10m])')
        assert step and step[0][1] == last_step, (step, last_step)
        cpu = wait_for(f"the task's CPU series (scrape errors: {prom.target_errors()})", lambda: series(
            f'max_over_time(anneal_task_cpu_seconds_total{{job_id="{job}"}}[10m]) > 0'), 10)
        for target in ("anneal-coordinator", "anneal-agent"):
            up = prom.query(f'up{{job="{target}"}}')
            assert up and up[0][1] == 1, f"{target} is not scraped: {up}"
        waits = wait_for("the wait-time histogram of team default", lambda: series(
            'anneal_job_wait_seconds_count{team="default"} >= 1'), 10)
        passes = series("anneal_scheduling_pass_seconds_count > 0")
        assert passes, "no scheduling pass latency"
        queue = series('anneal_queue_jobs{team="default"}')
        assert queue is not None, "no queue depth per team"
        jobs = series('anneal_team_jobs{team="default",state="PENDING"}')
        assert jobs is not None, "no jobs by team and state"
        nvml = series("anneal_agent_nvml_available")
        assert nvml is not None, "the agent does not say whether NVML is present"
        gpus = prom.query("anneal_gpu_utilization_ratio")
        if nvml[0][1] == 0:
            assert not gpus, f"GPU series without NVML: {gpus}"
        print(f"scrape: Prometheus holds job {job}'s loss {loss[0]} at step {last_step} = trainer_log.jsonl; task CPU "
              f"{cpu[0][1]:.2f} s; {waits[0][1]:.0f} wait(s) for team default; {passes[0][1]:.0f} scheduling passes; "
              f"NVML {'present' if nvml[0][1] else 'absent'}; {time.time() - t0:.0f} s in all", flush=True)
    finally:
        if prom:
            prom.stop()
        anneal("down", check=False)


def case_deploy(bindir, trainer, tmp):
    if shutil.which("promtool") is None:
        skip("Debian's promtool (package prometheus) is not installed (scripts/setup.sh installs it)")
    deploy = os.path.join(ROOT, "deploy/prometheus")
    text = open(f"{deploy}/prometheus.yml").read()
    # The credentials files it names, made here (promtool checks that they exist).
    for path in set(re.findall(r"credentials_file:\s*(\S+)", text)):
        text = text.replace(path, f"{tmp}/{os.path.basename(path)}")
        with open(f"{tmp}/{os.path.basename(path)}", "w") as f:
            f.write("x" * 32 + "\n")
    with open(f"{tmp}/prometheus.yml", "w") as f:
        f.write(text)
    run(["promtool", "check", "config", f"{tmp}/prometheus.yml"])
    dashboard = json.load(open(f"{deploy}/grafana-dashboard.json"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard queries nothing"
    exported = set(re.findall(r"anneal_[a-z_]+", open(os.path.join(ROOT, "coordinator/metrics.h")).read() +
                              open(os.path.join(ROOT, "agent/metrics.h")).read()))
    for expr in exprs:
        for name in re.findall(r"anneal_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"the dashboard queries {name}, which nothing exports"
    print(f"deploy: promtool accepts prometheus.yml; the dashboard's {len(exprs)} queries use exported metrics")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--trainer", default="")
    ap.add_argument("--case", required=True, choices=["scrape", "deploy"])
    args = ap.parse_args()
    trainer = os.environ.get("ANNEAL_TRAIN") or args.trainer or os.path.join(args.bindir, "anneal-train")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            {"scrape": case_scrape, "deploy": case_deploy}[args.case](os.path.abspath(args.bindir),
                                                                     os.path.abspath(trainer), tmp)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
