"""What the fault scenarios and the soak share about jobs on a HostCluster (tests/fault/cluster.py): the trainer
binary, a tiny model, LoRA job specs, the final-loss comparison with an uninterrupted run, the committed
checkpoints (and whether their files still verify), and the rank processes running on every host.

    trainer = trainer_binary(bindir)            # ANNEAL_TRAINER, else bindir/anneal-train
    prepare_model(tmp, trainer)                 # {tmp}/tok and {tmp}/base
    watch = RankWatch(net).start()              # samples every host's ranks (job id, epoch) twice a second
    ...
    watch.stop(); assert not watch.overlaps, watch.overlaps    # never two epochs of one job alive at once
    assert not unverified_checkpoints(c, job)  # every COMMITTED record's files exist with their sha256

Ranks carry ANNEAL_JOB_ID, ANNEAL_EPOCH and RANK in their environment (agent/supervisor_launch.cc); the test
process is root, so it reads /proc/<pid>/environ of every host's processes (the namespaces share one pid space
with it).
"""
import hashlib
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from testlib import lora_job_yaml, make_tokenizer, run  # noqa: E402


def trainer_binary(bindir):
    """The anneal-train the agents launch: $ANNEAL_TRAINER (a worktree built without the trainer points at the
    main build's), else the one next to the daemons."""
    return os.environ.get("ANNEAL_TRAINER") or os.path.join(bindir, "anneal-train")


def prepare_model(tmp, trainer):
    make_tokenizer(f"{tmp}/tok")
    run([trainer, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
         f"{tmp}/base", "--seed", "2"])


def final_loss(out):
    rows = [json.loads(line) for line in open(f"{out}/trainer_log.jsonl") if '"loss"' in line]
    return rows[-1]["current_steps"], rows[-1]["loss"]


def same_final_loss(out, reference_out, steps):
    """The final (step, loss) in `out`, asserted equal to the uninterrupted run's in `reference_out` (1e-5
    relative); (got, want)."""
    got, want = final_loss(out), final_loss(reference_out)
    assert got[0] == want[0] == steps, (got, want)
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1]), f"final loss {got[1]} differs from the uninterrupted {want[1]}"
    return got[1], want[1]


def show(c, job):
    shown = json.loads(c.anneal("--json", "show", job).stdout)
    return shown.get("job", shown), shown


def placed_nodes(c, job):
    record, _ = show(c, job)
    return sorted(n["node_id"] for n in record.get("placement", {}).get("nodes", []))


def events(c, job):
    _, shown = show(c, job)
    return [f"{e.get('kind')}: {e.get('message')}" for e in shown.get("events", [])]


def checkpoints(c, job):
    cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
    return cks["checkpoints"] if isinstance(cks, dict) else cks


def committed_steps(c, job):
    return sorted(int(k["step"]) for k in checkpoints(c, job)
                  if k.get("state", "CHECKPOINT_COMMITTED") in ("CHECKPOINT_COMMITTED", "COMMITTED"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unverified_checkpoints(c, job):
    """Every COMMITTED checkpoint record of the job whose files are missing or fail their sha256: 'path: why'."""
    bad = []
    for k in checkpoints(c, job):
        if k.get("state", "CHECKPOINT_COMMITTED") not in ("CHECKPOINT_COMMITTED", "COMMITTED"):
            continue
        for f in k.get("files", []):
            path = os.path.join(k["path"], f["path"])
            if not os.path.exists(path):
                bad.append(f"{path}: missing")
            elif f.get("sha256") and sha256(path) != f["sha256"]:
                bad.append(f"{path}: sha256 differs from the record")
    return bad


def cpu_seconds(pid):
    """User + system CPU time of the process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0.0


def rank_processes(net):
    """Every rank alive on any host: [(host name, pid, job id, epoch, rank)]."""
    found = []
    for host in net.hosts:
        for pid in host.pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            job = env.get(b"ANNEAL_JOB_ID")
            if job is None or b"ANNEAL_EPOCH" not in env:
                continue
            found.append((host.name, pid, job.decode(), int(env[b"ANNEAL_EPOCH"]), int(env.get(b"RANK", b"-1"))))
    return found


class RankWatch:
    """Samples every host's ranks in a thread: `overlaps` lists each moment two epochs of one job were alive at
    once (a duplicate attempt: what epoch fencing must prevent); `seen` maps job -> the epochs seen.

    A host cut off from the others keeps its ranks alive (nobody can reach them to stop them) while the job
    restarts elsewhere, so "alive" is too strict there: concurrent_training(job) lists the sampling intervals in
    which two epochs of the job both used CPU (at least `busy_s` per interval in some rank), i.e. both trained.
    Ranks whose peers are gone wait in a collective and use none."""

    def __init__(self, net, period_s=0.5, busy_s=0.05):
        self.net, self.period_s, self.busy_s = net, period_s, busy_s
        self.overlaps, self.seen, self.samples = [], {}, 0
        self.training = []  # (time, job, {epoch: busy ranks}) where two epochs were busy in one interval
        self._cpu = {}  # pid -> CPU seconds at the previous sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def sample(self):
        """One look at every host: {job: {epoch: ["host:pid:rankN", ...]}}."""
        by_job, busy, cpu = {}, {}, {}
        for host, pid, job, epoch, rank in rank_processes(self.net):
            name = f"{host}:{pid}:rank{rank}"
            by_job.setdefault(job, {}).setdefault(epoch, []).append(name)
            self.seen.setdefault(job, set()).add(epoch)
            cpu[pid] = cpu_seconds(pid)
            if pid in self._cpu and cpu[pid] - self._cpu[pid] >= self.busy_s:
                busy.setdefault(job, {}).setdefault(epoch, []).append(name)
        self._cpu = cpu
        now = time.strftime('%H:%M:%S')
        for job, epochs in by_job.items():
            if len(epochs) > 1:
                self.overlaps.append(f"{now} job {job}: epochs {sorted(epochs)} alive at once: {epochs}")
            if len(busy.get(job, {})) > 1:
                self.training.append((now, job, busy[job]))
        self.samples += 1
        return by_job

    def concurrent_training(self, job=None):
        """The intervals in which two epochs of `job` (any job: None) both used CPU, as text."""
        return [f"{t} job {j}: epochs {sorted(b)} busy at once: {b}" for t, j, b in self.training
                if job is None or j == job]

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as e:  # a sampling error must not kill the watch silently
                self.overlaps.append(f"sampling failed: {e!r}")
            self._stop.wait(self.period_s)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)
        return self


def two_node_job(tmp, name, steps, **keys):
    """A LoRA job over 2 nodes x 2 ranks (tensor parallel 2 in a node, data parallel 2 across), checkpoint every 5."""
    keys = dict(dict(save_steps=5, nodes=2, gpus_per_node=2, tensor_model_parallel_size=2), **keys)
    return lora_job_yaml(tmp, name, steps, **keys)
