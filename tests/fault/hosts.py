"""Several hosts on one machine for fault tests: Linux network namespaces joined by veth pairs on a bridge.

Each host is a network namespace with its own address on a private /24 and its own directory (its "disk"); the
test process stays in the root namespace and reaches every host through the bridge's address. Processes started
with Host.spawn run inside the host's namespace, and so do their children (an agent's ranks). Faults:

    host.kill()              kill -9 of every process in the host's namespace (the host dies with its ranks)
    host.kill_matching(pat)  kill -9 of the host's processes whose command line contains `pat` (one daemon)
    net.cut(host)            the host's link goes down: it reaches nobody and nobody reaches it
    net.heal(host)           the link comes back up
    net.delay(host, ms, loss_pct)   tc netem on the host's link (raises Unavailable where the kernel lacks netem)
    net.limit_rate(host, mbit)      a token bucket (tc tbf) on what the host sends: a slow link (e.g. a slow copy)
    host.small_disk(mb)      a tmpfs of `mb` MiB mounted at host.disk: writes there fail with ENOSPC when full

Everything created (namespaces, bridge, veths, mounts, processes) is removed by close(), which runs on leaving the
`with` block, also when the test fails, at interpreter exit and on SIGTERM (ctest's timeout). Names carry the
creating process's pid, and leftovers of dead test processes are swept when a new FaultNet starts.

Needs root and `ip` (iproute2); FaultNet.unavailable() returns the reason when hosts cannot be made, so a test can
skip saying why.

Example:
    with FaultNet(3, tmp) as net:
        a, b, c = net.hosts
        server = b.spawn(["python3", "-m", "http.server", "8000", "--bind", b.address], log="http.log")
        net.cut(b)      # a can no longer reach b:8000
        net.heal(b)
        b.kill()        # the server and anything else on b is gone
"""
import atexit
import os
import re
import shutil
import signal
import subprocess
import time

PREFIX = "anh"  # namespaces: anh<pid>-<i>; bridge: anb<pid>; host-side veths: anv<pid>-<i>


class Unavailable(Exception):
    """A fault this machine cannot inject (the message says why)."""


def _ip(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _ns_pids(ns):
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def _kill_ns(ns):
    """SIGKILL every process in the namespace until none is left (children may be forked meanwhile)."""
    for _ in range(50):
        pids = _ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def sweep_leftovers():
    """Removes namespaces and bridges left by fault tests whose process is gone (a kill -9 of the test runner)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({PREFIX}(\d+)-\d+)", listed, re.M):
        if not _alive(int(name[1])):
            _kill_ns(name[0])
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True)
    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    for name, pid in re.findall(r"^\d+: (anb(\d+)):", links, re.M):
        if not _alive(int(pid)):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


class Host:
    def __init__(self, net, index, address, directory):
        self.net, self.index, self.address, self.dir = net, index, address, directory
        self.name = f"host{index}"
        self.ns = f"{PREFIX}{net.pid}-{index}"
        self.veth = f"anv{net.pid}-{index}"[:15]
        self.disk = os.path.join(directory, "disk")
        # With FaultNet(private_path=P): this host's own files at P (no filesystem shared with the other hosts).
        self.fs = os.path.join(directory, "fs")
        self.procs = []
        self._mounted = False

    def spawn(self, argv, log, env=None, cwd=None):
        """Starts argv inside this host's namespace (stdout and stderr to `log`, in its own session); a Popen."""
        out = open(log, "ab")
        p = subprocess.Popen(self._in_ns(argv), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def run(self, argv, env=None, timeout=60):
        """Runs argv inside this host's namespace to completion; a CompletedProcess (text)."""
        return subprocess.run(self._in_ns(argv), capture_output=True, text=True, env=env, timeout=timeout)

    def _in_ns(self, argv):
        # `ip netns exec` gives every command its own mount namespace (mounts are slaves of the root's): a bind of
        # this host's fs directory over the private path there is seen by the command and its children only.
        if self.net.private_path is None:
            return ["ip", "netns", "exec", self.ns, *map(str, argv)]
        bind = 'mount --bind "$1" "$2" || exit 97; shift 2; exec "$@"'
        return ["ip", "netns", "exec", self.ns, "sh", "-c", bind, "sh", self.fs, self.net.private_path, *map(str, argv)]

    def pids(self):
        return _ns_pids(self.ns)

    def kill(self):
        """kill -9 of everything running on the host: its daemons and every rank they launched."""
        _kill_ns(self.ns)
        for p in self.procs:
            p.poll()

    def kill_matching(self, pattern):
        """kill -9 of this host's processes whose command line contains `pattern`; the pids killed."""
        killed = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                if pattern in cmdline:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return killed

    def small_disk(self, mib):
        """Mounts a tmpfs of `mib` MiB at self.disk (a full disk on demand); its path."""
        os.makedirs(self.disk, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(mib)}m,mode=0777", "tmpfs", self.disk], check=True)
        self._mounted = True
        return self.disk

    def _teardown(self):
        self.kill()
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._mounted:
            subprocess.run(["umount", "-l", self.disk], capture_output=True)
            self._mounted = False
        # The pair first: a namespace is destroyed asynchronously, and its veth with it.
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class FaultNet:
    """N hosts (network namespaces) on one bridge; see the module docstring."""

    @staticmethod
    def unavailable():
        """None when hosts can be made here; else why not (for a skip message)."""
        if os.geteuid() != 0:
            return "fault hosts need root (network namespaces, a bridge, tmpfs mounts)"
        if shutil.which("ip") is None:
            return "fault hosts need `ip` (iproute2)"
        probe = f"{PREFIX}{os.getpid()}-probe"
        p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if p.returncode != 0:
            return f"cannot create a network namespace: {p.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def __init__(self, count, directory, private_path=None):
        """`private_path`: a directory every host sees with its own contents (host.fs), as on nodes without a shared
        filesystem; the test process (root namespace) reads a host's files under host.fs."""
        self.pid = os.getpid() % 100000
        self.count, self.root = count, directory
        self.private_path = private_path
        # A /24 per test process, so that fault tests running at once do not share addresses.
        self.subnet = f"10.{200 + (self.pid // 250) % 50}.{self.pid % 250}"
        self.bridge = f"anb{self.pid}"
        self.bridge_address = f"{self.subnet}.254"
        self.hosts = []
        self._closed = False
        self._netem = None

    def __enter__(self):
        why = self.unavailable()
        if why:
            raise Unavailable(why)
        sweep_leftovers()
        atexit.register(self.close)
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.count):
                self._add_host(i)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, i):
        directory = os.path.join(self.root, f"host{i}")
        os.makedirs(directory, exist_ok=True)
        host = Host(self, i, f"{self.subnet}.{i + 1}", directory)
        if self.private_path is not None:
            os.makedirs(self.private_path, exist_ok=True)
            os.makedirs(host.fs, exist_ok=True)
            os.chmod(host.fs, 0o755)
        self.hosts.append(host)
        subprocess.run(["ip", "netns", "add", host.ns], check=True, capture_output=True)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("link", "set", "lo", "up", ns=host.ns)
        _ip("addr", "add", f"{host.address}/24", "dev", "eth0", ns=host.ns)
        _ip("link", "set", "eth0", "up", ns=host.ns)
        _ip("route", "add", "default", "via", self.bridge_address, ns=host.ns)

    def __exit__(self, *exc):
        self.close()

    def _on_sigterm(self, signum, frame):
        self.close()
        raise SystemExit(128 + signum)

    def cut(self, host):
        """The host's link goes down: no packet reaches it or leaves it (connections stall, then time out)."""
        _ip("link", "set", host.veth, "down")

    def heal(self, host):
        _ip("link", "set", host.veth, "up")

    def netem_available(self):
        if self._netem is None:
            probe = self.hosts[0]
            p = subprocess.run(["ip", "netns", "exec", probe.ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                                "delay", "1ms"], capture_output=True, text=True)
            self._netem = p.returncode == 0
            if self._netem:
                subprocess.run(["ip", "netns", "exec", probe.ns, "tc", "qdisc", "del", "dev", "lo", "root"],
                               capture_output=True)
        return self._netem

    def delay(self, host, ms, loss_pct=0.0):
        """Adds `ms` of latency (and `loss_pct` % packet loss) to everything the host sends; Unavailable when the
        kernel has no netem qdisc."""
        if not self.netem_available():
            raise Unavailable("tc netem is not available in this kernel (sch_netem): latency and loss faults skip")
        args = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"]
        if loss_pct:
            args += ["loss", f"{loss_pct}%"]
        subprocess.run(["ip", "netns", "exec", host.ns, *args], check=True, capture_output=True)

    def limit_rate(self, host, mbit):
        """Everything the host sends goes through a token bucket of `mbit` Mbit/s (tc tbf; what it receives is not
        limited): a slow link, e.g. so that copying a file from this host takes seconds. undelay() removes it."""
        args = ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", f"{mbit}mbit", "burst", "64kb",
                "latency", "400ms"]
        p = subprocess.run(["ip", "netns", "exec", host.ns, *args], capture_output=True, text=True)
        if p.returncode != 0:
            raise Unavailable(f"tc tbf is not available here: {p.stderr.strip()}")

    def undelay(self, host):
        subprocess.run(["ip", "netns", "exec", host.ns, "tc", "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            host._teardown()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        try:
            atexit.unregister(self.close)
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        except (AttributeError, TypeError, ValueError):
            pass

    def leftovers(self):
        """What of this FaultNet still exists (for the cleanup test): namespace and link names."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        left = [h.ns for h in self.hosts if re.search(rf"^{re.escape(h.ns)}\b", names, re.M)]
        left += [n for n in [self.bridge] + [h.veth for h in self.hosts] if re.search(rf"\d+: {re.escape(n)}[:@]", links)]
        return left
