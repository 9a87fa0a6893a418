"""An Anneal cluster on FaultNet hosts (tests/fault/hosts.py): the coordinator on hosts[0], one agent on each other
host, every daemon in its host's namespace with its state under that host's directory; the test process (root
namespace) runs the CLI against the coordinator's address through the bridge.

    with FaultNet(3, tmp) as net, HostCluster(net, bindir, tmp, slots=2) as c:
        job = c.anneal("submit", spec).stdout.strip()
        c.agent_host("node1").kill()          # the host dies with its ranks
        c.start_agent(net.hosts[1])           # ... and comes back with the same identity and disk

Daemons are started as `anneal up` starts them (cli/local_cluster.cc): a CURVE coordinator that bootstraps the
admin's client config and a join token; agents that join with the token and keep their node credential in their
work dir. Ranks run as `nobody` (the agents run as root), so the test's files must be reachable: `prepare_access`.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import ROOT, run, wait_for  # noqa: E402
from workload import trainer_binary  # noqa: E402

COORDINATOR_PORT = 7070


class HostCluster:
    def __init__(self, net, bindir, tmp, slots=2, coordinator_settings="", agent_args=()):
        self.net, self.bindir, self.tmp, self.slots = net, bindir, tmp, slots
        self.home = os.path.join(tmp, "client")
        self.coordinator_host = net.hosts[0]
        self.endpoint = f"tcp://{self.coordinator_host.address}:{COORDINATOR_PORT}"
        self.state = os.path.join(self.coordinator_host.dir, "coordinator")
        self.settings = coordinator_settings
        self.agent_args = list(agent_args)
        self.env = dict(os.environ, ANNEAL_HOME=self.home, OMP_NUM_THREADS="1")
        self.agents = {}  # node name -> host

    def anneal(self, *args, check=True, timeout=300):
        """Runs the CLI; a command that outlasts `timeout` is an AssertionError naming it (so the scenarios' handlers
        add the daemons' logs), raised well before ctest's own timeout would kill the test without them."""
        try:
            p = subprocess.run([os.path.join(self.bindir, "anneal"), *map(str, args)], capture_output=True,
                               text=True, env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"anneal {' '.join(map(str, args))} did not finish within {timeout} s:\n"
                                 f"{(e.stdout or '')[-3000:] if isinstance(e.stdout, str) else ''}")
        if check and p.returncode != 0:
            raise AssertionError(f"anneal {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                                 f"{p.stderr[-3000:]}")
        return p

    def __enter__(self):
        run(["bash", os.path.join(ROOT, "scripts/rank-access.sh"), self.bindir, os.path.join(ROOT, ".venv"), self.tmp,
             os.path.dirname(trainer_binary(self.bindir))])
        os.makedirs(self.home, exist_ok=True)
        config = os.path.join(self.coordinator_host.dir, "coordinator.yaml")
        with open(config, "w") as f:
            f.write("path_policy:\n  default:\n")
            for kind in ("models", "datasets", "outputs"):
                f.write(f"    {kind}: [\"{self.tmp}\", \"{ROOT}/examples\"]\n")
            f.write(self.settings)
        self.start_coordinator()
        wait_for("the coordinator's client config", lambda: os.path.exists(os.path.join(self.home, "config")), 30)
        for host in self.net.hosts[1:]:
            self.start_agent(host)
        names = [f"node{h.index}" for h in self.net.hosts[1:]]
        wait_for(f"agents {names} to register", lambda: all(self.node_state(n) == "NODE_UP" for n in names), 60)
        return self

    def __exit__(self, *exc):
        for host in self.net.hosts:
            host.kill()

    def start_coordinator(self):
        h = self.coordinator_host
        return h.spawn([os.path.join(self.bindir, "anneal-coordinator"), "--bind", self.endpoint, "--state-dir", self.state,
                        "--bootstrap-admin-config", os.path.join(self.home, "config"), "--config",
                        os.path.join(h.dir, "coordinator.yaml"), "--bootstrap-join-token-file",
                        os.path.join(h.dir, "join-token")], log=os.path.join(h.dir, "coordinator.log"))

    def start_agent(self, host):
        """Starts (or restarts) the agent of `host` as node<index>, its work dir on the host's disk."""
        name = f"node{host.index}"
        self.agents[name] = host
        begin = 29500 + 100 * host.index
        return host.spawn([os.path.join(self.bindir, "anneal-agent"), "--coordinator", self.endpoint, "--node", name,
                           "--address", host.address, "--work-dir", os.path.join(host.dir, "agent"), "--slots",
                           self.slots, "--server-key-file", os.path.join(self.state, "curve.pub"), "--join-token-file",
                           os.path.join(self.coordinator_host.dir, "join-token"), "--rendezvous-ports",
                           f"{begin}-{begin + 99}", "--trainer", trainer_binary(self.bindir), *self.agent_args],
                          log=os.path.join(host.dir, "agent.log"), env=self.env)

    def kill_coordinator(self):
        """kill -9 of the coordinator daemon (its host and the agents stay up)."""
        return self.coordinator_host.kill_matching("anneal-coordinator")

    def restart_coordinator(self):
        """A new coordinator on the same state dir and address (after kill_coordinator); waits until it answers."""
        self.start_coordinator()
        wait_for("the restarted coordinator to answer", lambda: self.anneal("nodes", check=False, timeout=10)
                 .returncode == 0, 60)

    def agent_host(self, node):
        return self.agents[node]

    def node_state(self, node):
        p = self.anneal("--json", "nodes", check=False, timeout=30)
        if p.returncode != 0:
            return None
        out = json.loads(p.stdout)
        for n in (out["nodes"] if isinstance(out, dict) else out):
            if n.get("node_id") == node:
                return n.get("state")
        return None

    def logs(self):
        """The daemons' logs (for a failure message)."""
        text = []
        for h in self.net.hosts:
            for name in ("coordinator.log", "agent.log"):
                path = os.path.join(h.dir, name)
                if os.path.exists(path):
                    text.append(f"--- {h.name} {name}\n" + open(path, errors="replace").read()[-3000:])
        return "\n".join(text)


def wait_until(what, predicate, timeout, poll_s=0.25):
    """Like testlib.wait_for, also returning how long it took."""
    start = time.time()
    got = wait_for(what, predicate, timeout, poll_s)
    return got, time.time() - start
