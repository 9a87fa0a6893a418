"""Fault scenarios on several hosts (tests/fault/hosts.py, cluster.py); docs/reliability.md.

  harness    the harness itself: hosts reach each other only through their links; cut and heal; kill -9 of a
             host kills what runs there; a small disk fills with ENOSPC; nothing is left behind, also when the
             test body fails
  partition  the coordinator's host is cut off from every agent for 30 s while a 2-node job trains: the nodes
             are declared DOWN, but their running tasks are kept for the reconnect grace; when the link heals the
             agents register again still running the tasks, which are re-adopted: the job never stops, uses no
             attempt, and ends with the uninterrupted run's loss
  host_kill  a 2-node LoRA job on 3 agent hosts; the host of one of its nodes is killed (agent and ranks, kill -9)
             after a committed checkpoint: the node is declared lost within the heartbeat timeout plus a margin, the
             gang restarts on the two healthy hosts from the newest committed checkpoint and ends with the final
             loss of an uninterrupted run

Exit status 0 and a "SKIP: why" line when this machine cannot make hosts (not root, no network namespaces).
"""
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from cluster import HostCluster, wait_until  # noqa: E402
from hosts import FaultNet, Unavailable  # noqa: E402
from testlib import run_cases, wait_for  # noqa: E402
from workload import (committed_steps, placed_nodes, prepare_model, same_final_loss, trainer_binary,  # noqa: E402
                      two_node_job)

ECHO_SERVER = ("import socket,sys\n"
               "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "s.bind((sys.argv[1], 9000)); s.listen()\n"
               "while True:\n"
               "    c,_=s.accept(); c.sendall(b'hello from '+sys.argv[1].encode()); c.close()\n")


def reach(address, timeout=1.0):
    """The echo server's greeting at address:9000 from the test process (root namespace); None when unreachable."""
    try:
        with socket.create_connection((address, 9000), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(100).decode()
    except OSError:
        return None


def case_harness(bindir, tmp):
    net = FaultNet(3, tmp)
    with net:
        a, b, c = net.hosts
        assert len({a.address, b.address, c.address}) == 3
        for h in (b, c):
            h.spawn([sys.executable, "-c", ECHO_SERVER, h.address], log=os.path.join(h.dir, "echo.log"))
        wait_for("the echo servers", lambda: reach(b.address) and reach(c.address), 10)
        # Host to host, through the bridge: a reaches c.
        probe = a.run([sys.executable, "-c", f"import socket; print(socket.create_connection(('{c.address}', 9000), 2)"
                                             f".recv(100).decode())"])
        assert probe.returncode == 0 and c.address in probe.stdout, probe
        # A host's loopback is its own: b's echo server is not on a's 127.0.0.1.
        own = a.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9000), 1)"])
        assert own.returncode != 0, "a host reached another host's server on its own loopback"
        # Cut and heal.
        net.cut(b)
        assert reach(b.address) is None, "a cut host still answers"
        assert reach(c.address), "cutting b cut c too"
        net.heal(b)
        wait_for("b to answer again after heal", lambda: reach(b.address), 10)
        # kill -9 of a host: everything on it is gone.
        assert b.pids(), "nothing runs on b"
        b.kill()
        assert not b.pids() and reach(b.address) is None
        # A small disk fills with ENOSPC.
        disk = c.small_disk(1)
        try:
            with open(os.path.join(disk, "fill"), "wb") as f:
                for _ in range(4):
                    f.write(b"\0" * (512 << 10))
                    f.flush()
            raise AssertionError("a 1 MiB disk took 2 MiB")
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
        try:
            net.delay(c, 20)
            net.undelay(c)
            netem = "netem delay applied and removed"
        except Unavailable as e:
            netem = f"netem unavailable ({e})"
    left = net.leftovers()
    assert not left, f"left behind: {left}"
    assert subprocess.run(["mountpoint", "-q", os.path.join(tmp, "host2", "disk")]).returncode != 0, "tmpfs left mounted"
    # A failing test body still cleans up.
    failing = FaultNet(2, os.path.join(tmp, "failing"))
    try:
        with failing:
            failing.hosts[0].spawn(["sleep", "300"], log=os.path.join(tmp, "sleep.log"))
            raise RuntimeError("the test body failed")
    except RuntimeError:
        pass
    left = failing.leftovers()
    assert not left, f"left behind after a failure: {left}"
    print(f"harness: 3 hosts, cut/heal, kill -9 of a host, ENOSPC on a 1 MiB disk, {netem}, nothing left behind")


def same_final_loss_as_reference(tmp, name, steps):
    """The final (step, loss) of job `name`, asserted equal to the uninterrupted `ref` run's (1e-5 relative)."""
    return same_final_loss(f"{tmp}/{name}", f"{tmp}/ref", steps)


def start_after_reference(c, tmp, name, steps):
    """Runs the uninterrupted reference `ref` to its end, then submits `name` and waits for its first committed
    checkpoint; the job id."""
    ref = c.anneal("submit", two_node_job(tmp, "ref", steps)).stdout.strip()
    assert c.anneal("watch", ref, check=False, timeout=400).returncode == 0, "the reference run failed"
    job = c.anneal("submit", two_node_job(tmp, name, steps)).stdout.strip()
    wait_for("a committed checkpoint", lambda: committed_steps(c, job), 300)
    return job


def case_host_kill(bindir, tmp):
    prepare_model(tmp, trainer_binary(bindir))
    steps = 30
    # 4 hosts: the coordinator and three agents, so a 2-node job has a spare host to restart on.
    with FaultNet(4, tmp) as net, HostCluster(net, bindir, tmp) as c:
        try:
            job = start_after_reference(c, tmp, "killed", steps)
            before = placed_nodes(c, job)
            victim = c.agent_host(before[0])
            killed_at = time.time()
            victim.kill()
            _, detected_s = wait_until(f"{before[0]} to be declared lost",
                                       lambda: c.node_state(before[0]) not in ("NODE_UP", None), 30)
            w = c.anneal("watch", job, check=False, timeout=400)
            assert w.returncode == 0, f"the job did not finish after its host died:\n{w.stdout[-3000:]}"
            after = placed_nodes(c, job)
            assert before[0] not in after and len(after) == 2, (before, after)
            shown = json.dumps(json.loads(c.anneal("--json", "show", job).stdout))
            assert "resuming from" in shown, "the restarted attempt did not resume from a checkpoint"
            recovered_s = time.time() - killed_at
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.logs()}")
    got, want = same_final_loss_as_reference(tmp, "killed", steps)
    assert detected_s <= 10 + 5, f"node loss detected after {detected_s:.1f} s (heartbeat timeout 10 s)"
    print(f"host_kill: host of {before[0]} killed -9; lost after {detected_s:.1f} s; the job moved {before} -> {after}, "
          f"resumed from its checkpoint and ended at step {steps} with loss {got:.6f} = uninterrupted "
          f"{want:.6f} ({recovered_s:.0f} s from the kill to the end)")


def attempts_of(c, job):
    shown = json.loads(c.anneal("--json", "show", job).stdout)
    return int(shown.get("job", shown).get("attempt", 0)), shown


def case_partition(bindir, tmp):
    prepare_model(tmp, trainer_binary(bindir))
    steps = 40
    with FaultNet(3, tmp) as net, HostCluster(net, bindir, tmp) as c:
        try:
            job = start_after_reference(c, tmp, "cut", steps)
            attempt_before, _ = attempts_of(c, job)
            net.cut(c.coordinator_host)
            time.sleep(30)
            net.heal(c.coordinator_host)
            w = c.anneal("watch", job, check=False, timeout=400)
            assert w.returncode == 0, f"the job did not finish after the partition healed:\n{w.stdout[-3000:]}"
            attempt_after, shown = attempts_of(c, job)
            events = [f"{e.get('kind')}: {e.get('message')}" for e in shown.get("events", [])]
            assert attempt_after == attempt_before, f"the partition cost an attempt ({attempt_before} -> " \
                f"{attempt_after}):\n" + "\n".join(events)
            assert any("re-adopted" in e for e in events), "\n".join(events)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.logs()}")
    got, want = same_final_loss_as_reference(tmp, "cut", steps)
    print(f"partition: coordinator cut off from every agent for 30 s; attempts {attempt_before} -> {attempt_after}; "
          f"final loss {got:.6f} = uninterrupted {want:.6f}\n" + "\n".join(events[-15:]))


def main():
    why = FaultNet.unavailable()
    if why:
        print(f"SKIP: {why}")
        sys.exit(0)
    run_cases({"harness": case_harness, "host_kill": case_host_kill, "partition": case_partition}, binary_flag="--bindir")


if __name__ == "__main__":
    main()
