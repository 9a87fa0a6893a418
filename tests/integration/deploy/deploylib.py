"""Scaffolding of the deploy tests: a real anneal-coordinator process on loopback with a fresh cluster admin,
the `anneal` CLI as that admin, and the skip convention (exit 77 with the reason printed: ctest SKIP_RETURN_CODE).
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT  # noqa: E402,F401

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


class Coordinator:
    """anneal-coordinator on tcp://127.0.0.1:<free port> with state in `state_dir`; `home` holds the admin's
    client config (written by the first start's bootstrap)."""

    def __init__(self, bindir, tmp, state_dir, home):
        self.bindir, self.state_dir, self.home = bindir, state_dir, home
        self.config = os.path.join(tmp, f"coordinator-{os.path.basename(state_dir)}.yaml")
        with open(self.config, "w") as f:
            f.write(f"""bind: tcp://127.0.0.1:0
state_dir: {state_dir}
bootstrap_admin_config: {home}/config
heartbeat_timeout_ms: 60000
path_policy:
  default: {{models: [{tmp}], datasets: [{tmp}, {ROOT}/examples], outputs: [{tmp}]}}
""")
        self.log = open(os.path.join(tmp, f"coordinator-{os.path.basename(state_dir)}.log"), "a")
        self.proc = subprocess.Popen([os.path.join(bindir, "anneal-coordinator"), "--config", self.config],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.server_key, self.endpoint = None, None
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"anneal-coordinator on {state_dir} exited ({self.proc.wait()}): see {self.log.name}")
            if line.startswith("server-key "):
                self.server_key = line.split()[1]
            if line.startswith("listening "):
                self.endpoint = line.split()[1]
                break
        assert self.endpoint, f"anneal-coordinator on {state_dir} printed no 'listening' line in 20 s"
        self.env = dict(os.environ, ANNEAL_HOME=home, ANNEAL_COORDINATOR=self.endpoint,
                        ANNEAL_SERVER_KEY=self.server_key or "")

    def anneal(self, *args, check=True):
        p = subprocess.run([os.path.join(self.bindir, "anneal"), *map(str, args)], capture_output=True, text=True,
                           env=self.env, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"anneal {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=30) == 0, f"anneal-coordinator did not exit 0 on SIGTERM: {self.log.name}"
        self.log.close()


def job_spec(tmp):
    """A train job spec inside the coordinator's path policy; with no agent it stays PENDING forever."""
    path = os.path.join(tmp, "job.yaml")
    with open(path, "w") as f:
        f.write(f"""model_name_or_path: {tmp}/model
stage: sft
finetuning_type: lora
dataset: demo_train
dataset_dir: {ROOT}/examples/data
template: qwen
output_dir: {tmp}/out/default
max_steps: 1
""")
    return path
