#!/usr/bin/env python3
"""deploy/systemd against real tools (docs/operations.md, "Bare metal with systemd").

  verify:    install.sh into a temporary DESTDIR (--prefix /opt/anneal): binaries 0755, units with the prefix's
             paths, configs; a second run keeps an edited config; --dry-run writes nothing; a bad flag is refused
             naming it. `systemd-analyze verify --root` on the installed units prints nothing and exits 0 (and
             does flag a unit with a bad value, so the check can fail). The units carry what the operations guide
             promises (Restart=on-failure, StateDirectory, LimitNOFILE, Delegate=yes on the agent, hardening), and
             every ${VAR} they use is set by their EnvironmentFile. Skipped (77) where systemd-analyze is missing.
  daemons:   the installed binaries with the installed configs (only paths and ports overridden): the
             coordinator starts, anneal-wait-tcp (the unit's readiness check) returns 0 on its port and 1 on a
             closed one, the agent joins with a join token and logs "registered with coordinator" (the documented
             readiness), and `anneal nodes` lists it.
"""
import os
import re
import shutil

from deploylib import ROOT, free_port, run_shipped_configs, skip
from testlib import run, run_cases

INSTALL = os.path.join(ROOT, "deploy/systemd/install.sh")
UNITS = ["anneal-coordinator.service", "anneal-agent.service"]


def install(bindir, dest, *extra, check=True):
    return run([INSTALL, "--bindir", bindir, "--destdir", dest, "--prefix", "/opt/anneal", *extra], check=check)


def unit_settings(path):
    settings = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def env_file(path):
    return {k: v for k, _, v in (l.strip().partition("=") for l in open(path)) if k and not k.startswith("#")}


def case_verify(bindir, tmp):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        skip("systemd-analyze is not installed (Debian: systemd); scripts/setup.sh installs it")
    if not os.path.isdir("/lib/systemd/system"):
        skip("no /lib/systemd/system to give the verify root its standard targets")
    dest = f"{tmp}/root"
    p = install(bindir, dest)
    assert "Next steps" in p.stdout, p.stdout
    for b in ["anneal-coordinator", "anneal-agent", "anneal"]:
        assert os.stat(f"{dest}/opt/anneal/bin/{b}").st_mode & 0o777 == 0o755, b
    for unit in UNITS:
        text = open(f"{dest}/etc/systemd/system/{unit}").read()
        assert "/usr/local/" not in text and "/opt/anneal/bin/" in text, f"{unit} paths not rewritten"
    with open(f"{dest}/etc/anneal/coordinator.yaml", "a") as f:
        f.write("# edited by the operator\n")
    install(bindir, dest)
    assert "edited by the operator" in open(f"{dest}/etc/anneal/coordinator.yaml").read(), "install.sh overwrote a config"
    p = install(bindir, f"{tmp}/dry", "--dry-run")
    assert not os.path.exists(f"{tmp}/dry"), "--dry-run wrote files"
    assert "would run: install" in p.stdout, p.stdout
    p = install(bindir, f"{tmp}/bad", "--frobnicate", check=False)
    assert p.returncode == 2 and "--frobnicate" in p.stderr, (p.returncode, p.stderr)

    # The units promise what docs/operations.md says.
    coord = unit_settings(f"{dest}/etc/systemd/system/anneal-coordinator.service")
    agent = unit_settings(f"{dest}/etc/systemd/system/anneal-agent.service")
    for name, s in [("coordinator", coord), ("agent", agent)]:
        for key, want in [("Restart", "on-failure"), ("NoNewPrivileges", "yes"), ("Type", "exec")]:
            assert s.get(key) == [want], f"{name}: {key}={s.get(key)}, want {want}"
        for key in ["StateDirectory", "LimitNOFILE", "ProtectSystem", "ProtectHome", "EnvironmentFile"]:
            assert key in s, f"{name} unit has no {key}="
        env = env_file(dest + s["EnvironmentFile"][0])
        used = set(re.findall(r"\$\{?([A-Z_]+)\}?", " ".join(s["ExecStart"] + s.get("ExecStartPost", []))))
        assert used <= set(env), f"{name}: {sorted(used - set(env))} used by the unit, not set in its env file"
    assert agent["Delegate"] == ["yes"] and "PrivateDevices" not in agent, "the agent needs its cgroup and /dev/nvidia*"
    assert coord["ProtectSystem"] == ["strict"] and coord["PrivateDevices"] == ["yes"]

    shutil.copytree("/lib/systemd/system", f"{dest}/lib/systemd/system", symlinks=True)
    units = [f"/etc/systemd/system/{u}" for u in UNITS]
    p = run([analyze, "verify", f"--root={dest}", "--man=no", *units], check=False, cwd=tmp)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), f"systemd-analyze verify: {p.stdout}{p.stderr}"
    bad = open(f"{dest}/etc/systemd/system/anneal-agent.service").read().replace("KillMode=process", "KillMode=bogus")
    open(f"{dest}/etc/systemd/system/x-bad.service", "w").write(bad)
    p = run([analyze, "verify", f"--root={dest}", "--man=no", "/etc/systemd/system/x-bad.service"], check=False, cwd=tmp)
    assert "bogus" in p.stderr, f"verify did not flag a bad unit: {p.stdout}{p.stderr}"
    print("systemd-analyze verify: both units clean", flush=True)


def case_daemons(bindir, tmp):
    dest = f"{tmp}/root"
    install(bindir, dest)
    b, etc = f"{dest}/opt/anneal/bin", f"{dest}/etc/anneal"
    wait_tcp = f"{dest}/opt/anneal/lib/anneal/anneal-wait-tcp"

    def readiness_check(port, home):
        run([wait_tcp, f"127.0.0.1:{port}", "20"])
        p = run([wait_tcp, f"127.0.0.1:{free_port()}", "1"], check=False)
        assert p.returncode == 1 and "did not accept" in p.stderr, (p.returncode, p.stderr)

    run_shipped_configs(b, f"{etc}/coordinator.yaml", f"{etc}/agent.yaml", tmp, on_ready=readiness_check)


if __name__ == "__main__":
    run_cases({"verify": case_verify, "daemons": case_daemons}, binary_flag="--bindir")
