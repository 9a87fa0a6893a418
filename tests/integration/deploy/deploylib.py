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

    def __init__(self, bindir, tmp, state_dir, home, extra_config=""):
        self.bindir, self.state_dir, self.home = bindir, state_dir, home
        self.config = os.path.join(tmp, f"coordinator-{os.path.basename(state_dir)}.yaml")
        with open(self.config, "w") as f:
            f.write(f"""bind: tcp://127.0.0.1:0
state_dir: {state_dir}
bootstrap_admin_config: {home}/config
heartbeat_timeout_ms: 60000
path_policy:
  default: {{models: [{tmp}], datasets: [{tmp}, {ROOT}/examples], outputs: [{tmp}]}}
{extra_config}""")
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


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_shipped_configs(bindir, coordinator_yaml, agent_yaml, tmp, on_ready=None):
    """Starts anneal-coordinator with `coordinator_yaml` and anneal-agent with `agent_yaml` (as shipped; only
    paths and ports overridden on the command line) and waits until the agent logs "registered with coordinator"
    (the documented readiness) and `anneal nodes` lists it. on_ready(port, home) runs while both serve. An unknown
    key or a wrong type in either file fails here (the daemons exit 2 naming it)."""
    import json
    port = free_port()
    state, home = f"{tmp}/cfg-state", f"{tmp}/cfg-home"
    coord_log = open(f"{tmp}/cfg-coordinator.log", "w")
    coord = subprocess.Popen([f"{bindir}/anneal-coordinator", "--config", coordinator_yaml, "--state-dir", state,
                              "--bind", f"tcp://127.0.0.1:{port}", "--http-bind", "",
                              "--bootstrap-admin-config", f"{home}/config",
                              "--bootstrap-join-token-file", f"{tmp}/cfg-join-token"],
                             stdout=subprocess.PIPE, stderr=coord_log, text=True)
    agent = None
    try:
        line = coord.stdout.readline()
        while line and not line.startswith("listening "):
            line = coord.stdout.readline()
        assert line, f"anneal-coordinator --config {coordinator_yaml} exited: {open(coord_log.name).read()}"
        agent_log = f"{tmp}/cfg-agent.log"
        agent = subprocess.Popen([f"{bindir}/anneal-agent", "--config", agent_yaml, "--coordinator",
                                  f"tcp://127.0.0.1:{port}", "--server-key-file", f"{state}/curve.pub",
                                  "--join-token-file", f"{tmp}/cfg-join-token", "--work-dir", f"{tmp}/cfg-work",
                                  "--node", "cfg-node", "--slots", "1"], stdout=open(agent_log, "w"),
                                 stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while "registered with coordinator" not in open(agent_log).read():
            assert agent.poll() is None, f"anneal-agent --config {agent_yaml} exited {agent.returncode}: {open(agent_log).read()}"
            assert time.time() < deadline, f"the agent did not register: {open(agent_log).read()}"
            time.sleep(0.1)
        env = dict(os.environ, ANNEAL_HOME=home)
        p = subprocess.run([f"{bindir}/anneal", "--json", "nodes"], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and '"cfg-node"' in p.stdout, f"anneal nodes: {p.stdout}{p.stderr}"
        if on_ready:
            on_ready(port, home)
    finally:
        for proc in [agent, coord]:
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert coord.returncode == 0, f"the coordinator did not exit 0 on SIGTERM: {open(coord_log.name).read()}"
