#!/usr/bin/env python3
"""`anneal-coordinator backup` against real processes (coordinator/backup.h).

  under_load: two clients submit jobs back to back; meanwhile a backup is taken through the running
              coordinator. A fresh coordinator started on the backup directory has the same CurveZMQ key, every
              job whose submit returned before the backup began, with the output_dir it was submitted with, job ids
              without a gap (a consistent cut, not a torn copy), fewer jobs than the original ended with (a
              point-in-time copy), and it serves: a new submit gets the next id.
  refusals:   out exists and is not empty, out's parent missing, no state directory, a user who is neither the
              coordinator's nor root (socket mode 0600: cannot connect; socket opened up: the server refuses by
              SO_PEERCRED), a request that is not a backup, a coordinator whose socket is gone (locked but silent).
              Each fails naming what and why, and the coordinator still serves afterwards (a backup into an
              existing empty directory succeeds, a submit works). Then the coordinator is stopped and an offline
              backup restores to a coordinator that has the jobs.
"""
import json
import os
import socket
import stat
import subprocess
import threading
import time

from deploylib import Coordinator, job_spec
from testlib import run_cases


def backup(bindir, state_dir, out, check=True, **kw):
    p = subprocess.run([os.path.join(bindir, "anneal-coordinator"), "backup", "--state-dir", state_dir, "--out", out],
                       capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert p.returncode == 0, f"backup into {out} failed ({p.returncode}): {p.stdout}{p.stderr}"
    return p


def refused(p, *words):
    assert p.returncode != 0, f"expected a refusal, got success: {p.stdout}"
    for w in words:
        assert w in p.stderr, f"refusal does not say {w!r}: {p.stderr}"


def jobs(c):
    return {j["job_id"]: j for j in json.loads(c.anneal("--json", "ls", "--limit", "100000").stdout)}


def submit(c, spec, out_dir):
    return c.anneal("submit", spec, "--set", f"output_dir={out_dir}").stdout.strip()


def case_under_load(bindir, tmp):
    spec = job_spec(tmp)
    c = Coordinator(bindir, tmp, f"{tmp}/state", f"{tmp}/home")
    accepted = []  # (job id, output dir, time the submit returned)
    stop = threading.Event()
    lock = threading.Lock()

    def submitter(name):
        n = 0
        while not stop.is_set():
            out = f"{tmp}/out/{name}-{n}"
            job = submit(c, spec, out)
            with lock:
                accepted.append((job, out, time.time()))
            n += 1

    threads = [threading.Thread(target=submitter, args=(f"s{i}",)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        while len(accepted) < 20:
            time.sleep(0.02)
        began = time.time()
        p = backup(bindir, f"{tmp}/state", f"{tmp}/backup")
        assert "taken by the running coordinator" in p.stdout, p.stdout
        time.sleep(0.7)  # more submits after the backup: the copy must not have them all
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        c.stop()
    before = {job: out for job, out, at in accepted if at < began}
    print(f"{len(accepted)} jobs accepted, {len(before)} before the backup began", flush=True)

    r = Coordinator(bindir, tmp, f"{tmp}/backup", f"{tmp}/home")
    try:
        assert r.server_key == c.server_key, "the restored coordinator has another CurveZMQ key"
        restored = jobs(r)
        missing = sorted(set(before) - set(restored))
        assert not missing, f"jobs accepted before the backup are missing from it: {missing}"
        numbers = sorted(int(j.split("-")[1]) for j in restored)
        assert numbers == list(range(1, len(numbers) + 1)), f"restored job ids have gaps: {numbers}"
        assert len(restored) < len(accepted), "the backup holds every job, even those submitted after it"
        all_out = {job: out for job, out, _ in accepted}
        for job, record in restored.items():
            assert record["output_dir"] == all_out[job], f"{job}: {record['output_dir']} != {all_out[job]}"
        print(f"restored {len(restored)} jobs (of {len(accepted)})", flush=True)
        fresh = submit(r, spec, f"{tmp}/out/after-restore")
        assert fresh == f"job-{len(restored) + 1:06d}", f"the restored coordinator gave {fresh}"
    finally:
        r.stop()


def case_refusals(bindir, tmp):
    os.chmod(tmp, 0o755)  # the unprivileged user below must reach the socket's directory
    spec = job_spec(tmp)
    state = f"{tmp}/state"
    c = Coordinator(bindir, tmp, state, f"{tmp}/home")
    try:
        first = submit(c, spec, f"{tmp}/out/first")
        os.makedirs(f"{tmp}/full")
        open(f"{tmp}/full/x", "w").close()
        refused(backup(bindir, state, f"{tmp}/full", check=False), f"{tmp}/full",
                "already exists and is not an empty directory")
        assert os.listdir(f"{tmp}/full") == ["x"], "a refused backup touched the existing directory"
        refused(backup(bindir, state, f"{tmp}/no/such/dir", check=False), f"{tmp}/no/such", "does not exist")
        refused(backup(bindir, f"{tmp}/nostate", f"{tmp}/b0", check=False), f"{tmp}/nostate", "does not exist")
        assert not [n for n in os.listdir(tmp) if ".partial-" in n], "a refused backup left a partial directory"

        sock = f"{state}/admin.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600, oct(os.stat(sock).st_mode)
        if os.geteuid() == 0:
            nobody = dict(user=65534, group=65534, extra_groups=[])
            refused(backup(bindir, state, f"{tmp}/b1", check=False, **nobody), sock, "Permission denied",
                    "coordinator's user or as root")
            os.chmod(sock, 0o666)  # past the file mode, the server's SO_PEERCRED check still refuses
            refused(backup(bindir, state, f"{tmp}/b1", check=False, **nobody), "backup refused: uid 65534",
                    "neither the coordinator's user (uid 0) nor root")
            assert not os.path.exists(f"{tmp}/b1")
        else:
            print("not root: the other-user refusals are not exercised", flush=True)

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(b"format c:\n")
            assert s.recv(4096).startswith(b"error unknown request"), "a non-backup request was not refused"

        os.makedirs(f"{tmp}/empty")  # an existing empty directory is a valid target
        backup(bindir, state, f"{tmp}/empty")
        assert os.path.exists(f"{tmp}/empty/BACKUP") and os.path.exists(f"{tmp}/empty/CURRENT")
        assert stat.S_IMODE(os.stat(f"{tmp}/empty/curve.key").st_mode) == 0o600, "curve.key copied readable"
        second = submit(c, spec, f"{tmp}/out/second")  # still serving

        os.rename(sock, f"{tmp}/moved.sock")  # a running coordinator that does not answer
        refused(backup(bindir, state, f"{tmp}/b2", check=False), "in use by a coordinator that does not answer",
                "admin.sock")
        assert first in jobs(c) and second in jobs(c)
    finally:
        c.stop()
    p = backup(bindir, state, os.path.relpath(f"{tmp}/offline"), cwd=os.getcwd())
    assert "coordinator not running" in p.stdout, p.stdout
    r = Coordinator(bindir, tmp, f"{tmp}/offline", f"{tmp}/home")
    try:
        assert set(jobs(r)) == {first, second}, f"offline backup restored {sorted(jobs(r))}"
    finally:
        r.stop()


if __name__ == "__main__":
    run_cases({"under_load": case_under_load, "refusals": case_refusals}, binary_flag="--bindir")
