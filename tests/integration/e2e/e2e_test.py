#!/usr/bin/env python3
"""End to end with real processes: `anneal up` (coordinator + 2 agents x 2 CPU slots), real anneal-train ranks.

  succeed   : submit a LoRA SFT job over 4 ranks (2 nodes x 2: tensor parallel 2 x data parallel 2), watch it to SUCCEEDED; its
              checkpoints are listed with sha256 checksums; the exported adapter loads in peft and reproduces
              our logits; an eval job on the adapter succeeds and its result file is stored.
  agent_kill: kill -9 one agent (and its ranks) after the first committed checkpoint; the job restarts from
              that checkpoint once the node is back and finishes with the same final loss as an uninterrupted
              run of the same job.
  retention : a 4-rank job checkpointing every 2 steps with save_total_limit 2 and keep_best 1 (eval_loss): no
              failed attempt; `anneal checkpoints` agrees with the disk at every sample taken while it runs; at
              the end the disk holds exactly the latest 2 plus the best (computed from trainer_log.jsonl).
  retention_standalone: the same job under `anneal-train launch` alone (the trainer owns retention): the same
              end state, and no checkpoint directory is ever seen without its manifest.
"""
import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, lora_job_yaml, make_tokenizer, run, run_cases  # noqa: E402


class Cluster:
    def __init__(self, bindir, home, up_args=(), agents=2):
        self.bindir, self.home, self.up_args, self.agents = bindir, home, list(up_args), agents
        self.env = dict(os.environ, ANNEAL_HOME=home, OMP_NUM_THREADS="1")

    def anneal(self, *args, check=True, timeout=300):
        p = subprocess.run([os.path.join(self.bindir, "anneal"), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"anneal {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def __enter__(self):
        # The jobs' files live in the test's temp dir: the local cluster's path policy must allow it, and ranks
        # (run as `nobody` when the agents run as root) must reach it, the trainer and LibTorch.
        tmp = os.path.dirname(self.home)
        run(["bash", os.path.join(ROOT, "scripts/rank-access.sh"), self.bindir, os.path.join(ROOT, ".venv"), tmp])
        self.anneal("up", "--agents", str(self.agents), "--slots", "2", "--allow-root", tmp, "--allow-root", os.path.join(ROOT, "examples"),
                    *self.up_args)
        return self

    def __exit__(self, *exc):
        self.anneal("down", check=False)


def prepare(tmp, bindir):
    make_tokenizer(f"{tmp}/tok")
    run([os.path.join(bindir, "anneal-train"), "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer",
         f"{tmp}/tok", "--out", f"{tmp}/base", "--seed", "2"])


def job_yaml(tmp, name, steps, save_steps, extra=""):
    return lora_job_yaml(tmp, name, steps, extra, save_steps=save_steps, nodes=2, gpus_per_node=2,
                         tensor_model_parallel_size=2)


def final_loss(out):
    rows = [json.loads(l) for l in open(f"{out}/trainer_log.jsonl") if '"loss"' in l]
    return rows[-1]["current_steps"], rows[-1]["loss"]


def case_succeed(bindir, tmp):
    prepare(tmp, bindir)
    with Cluster(bindir, f"{tmp}/home") as c:
        job = c.anneal("submit", job_yaml(tmp, "sft", 12, 4)).stdout.strip()
        w = c.anneal("watch", job, check=False)
        assert w.returncode == 0, f"watch ended with {w.returncode}:\n{w.stdout[-2000:]}\n{w.stderr[-2000:]}"
        show = json.loads(c.anneal("--json", "show", job).stdout)
        assert "SUCCEEDED" in json.dumps(show), show
        cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
        cks = cks["checkpoints"] if isinstance(cks, dict) else cks
        steps = sorted(int(k["step"]) for k in cks)
        assert steps == [4, 8, 12], steps
        for k in cks:
            files = k["files"]
            assert files and all(len(f["sha256"]) == 64 for f in files), k
        # The adapter loads in peft unchanged and reproduces our logits.
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        ids = torch.randint(3, 300, (1, 17), generator=torch.Generator().manual_seed(0))
        save_file({"input_ids": ids}, f"{tmp}/in.safetensors")
        subprocess.run([os.path.join(bindir, "anneal-train"), "model", "logits", "--model", f"{tmp}/base", "--adapter",
                        f"{tmp}/sft", "--inputs", f"{tmp}/in.safetensors", "--out", f"{tmp}/lo.safetensors"], check=True)
        ours = load_file(f"{tmp}/lo.safetensors")["logits"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(f"{tmp}/base", dtype=torch.float32),
                                          f"{tmp}/sft").eval()
        with torch.no_grad():
            theirs = model(input_ids=ids).logits
        err = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        assert err < 1e-5, f"peft logits differ from ours: {err:.2e}"
        # An eval job on the adapter; its result is stored.
        ev = f"{tmp}/eval.yaml"
        with open(ev, "w") as f:
            f.write(f"kind: eval\nmodel_name_or_path: {tmp}/base\nadapter_name_or_path: {tmp}/sft\ndataset: demo_eval\n"
                    f"dataset_dir: {ROOT}/examples/data\ntemplate: qwen\ncutoff_len: 96\noutput_dir: {tmp}/eval\n"
                    f"tokenized_cache_dir: {tmp}/cache\n")
        ejob = c.anneal("submit", ev).stdout.strip()
        assert c.anneal("watch", ejob, check=False).returncode == 0
        res = json.load(open(f"{tmp}/eval/eval_results.json"))
        assert res["loss"]["eval_loss"] > 0
        shown = json.loads(c.anneal("--json", "show", ejob).stdout)
        assert "eval_loss" in json.dumps(shown), "the eval result is not in the job's stored events/metrics"
        # The eval event names what was evaluated, not a training step.
        evals = [e["message"] for e in shown["events"] if e["kind"] == "eval"]
        assert any(m.startswith(f"eval of adapter {tmp}/sft on dataset demo_eval: eval_loss=") for m in evals), evals
    print(f"succeed: 4-rank LoRA job SUCCEEDED, checkpoints {steps} with sha256, peft logits rel {err:.1e}, "
          f"eval loss {res['loss']['eval_loss']:.4f} stored")




def case_agent_kill(bindir, tmp):
    prepare(tmp, bindir)
    steps = 40
    # Uninterrupted reference: the same job (same 4-rank layout) run straight through on a cluster.
    with Cluster(bindir, f"{tmp}/home-ref") as c:
        job = c.anneal("submit", job_yaml(tmp, "ref", steps, 5)).stdout.strip()
        assert c.anneal("watch", job, check=False).returncode == 0
    ref = final_loss(f"{tmp}/ref")
    home = f"{tmp}/home"
    with Cluster(bindir, home) as c:
        job = c.anneal("submit", job_yaml(tmp, "killed", steps, 5)).stdout.strip()
        deadline = time.time() + 240
        while time.time() < deadline:
            cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
            cks = cks["checkpoints"] if isinstance(cks, dict) else cks
            if cks:
                break
            time.sleep(0.2)
        assert cks, "no checkpoint was committed"
        # kill -9 the agent of local-1 and every rank it launched (the node is gone, not just its daemon).
        out = subprocess.run(["pgrep", "-f", f"anneal-agent.*--node local-1"], capture_output=True, text=True).stdout.split()
        assert out, "agent local-1 not found"
        agent_pid = int(out[0])
        ranks = subprocess.run(["pgrep", "-P", str(agent_pid)], capture_output=True, text=True).stdout.split()
        os.kill(agent_pid, signal.SIGKILL)
        for r in ranks:
            try:
                os.killpg(int(r), signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Wait for the coordinator to declare the node down and the job to go back to the queue.
        deadline = time.time() + 60
        while time.time() < deadline:
            show = json.dumps(json.loads(c.anneal("--json", "show", job).stdout))
            if "RESTARTING" in show or "PENDING" in show.split("events")[0]:
                break
            time.sleep(0.5)
        # Capacity returns: the node's agent starts again with the same identity and work dir.
        cfg = dict(l.split(": ", 1) for l in open(f"{home}/config").read().splitlines() if ": " in l and not l.startswith("#"))
        subprocess.Popen([os.path.join(bindir, "anneal-agent"), "--coordinator", cfg["coordinator"].strip(), "--node",
                          "local-1", "--work-dir", f"{home}/agents/local-1", "--slots", "2",
                          "--server-key-file", f"{home}/coordinator/curve.pub"],
                         stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent-restart.log", "w"), start_new_session=True,
                         env=c.env)
        w = c.anneal("watch", job, check=False, timeout=400)
        assert w.returncode == 0, f"the job did not finish after the agent came back:\n{w.stdout[-3000:]}"
        show = json.dumps(json.loads(c.anneal("--json", "show", job).stdout))
        assert "resuming from" in show, "the restarted attempt did not resume from a checkpoint"
        subprocess.run(["pkill", "-f", f"anneal-agent.*{home}/agents/local-1"], check=False)
    got = final_loss(f"{tmp}/killed")
    assert got[0] == ref[0] == steps, (got, ref)
    assert abs(got[1] - ref[1]) <= 1e-6 * abs(ref[1]), f"final loss {got[1]} differs from the uninterrupted {ref[1]}"
    print(f"agent_kill: agent local-1 killed -9 mid-job; the job resumed from its checkpoint and ended at step {steps} "
          f"with loss {got[1]:.6f} = uninterrupted {ref[1]:.6f}")


RETENTION_EXTRA = """save_total_limit: 2
keep_best: 1
metric_for_best_model: eval_loss
greater_is_better: true
val_size: 0.25
eval_strategy: steps
eval_steps: 2
"""
# greater_is_better on eval_loss makes the "best" an early checkpoint (the loss falls), so the best one is
# not among the latest two and retention has to keep it apart.


def disk_steps(out):
    """checkpoint-N directories on disk (committed ones are renamed into place whole)."""
    if not os.path.isdir(out):
        return set()
    return {int(n[11:]) for n in os.listdir(out) if n.startswith("checkpoint-") and n[11:].isdigit()}


def expected_steps(out, total, every, keep_latest):
    evals = {int(r["current_steps"]): r["eval_loss"] for r in map(json.loads, open(f"{out}/trainer_log.jsonl"))
             if "eval_loss" in r}
    saved = list(range(every, total + 1, every))
    best = max(saved, key=lambda s: (evals[s], -s))  # greater is better; ties go to the earlier step
    return set(saved[-keep_latest:]) | {best}


def registry(c, job):
    cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
    cks = cks["checkpoints"] if isinstance(cks, dict) else cks
    return {int(k["step"]): k.get("state", "") for k in cks}


def case_retention(bindir, tmp):
    prepare(tmp, bindir)
    steps, every = 16, 2
    out = f"{tmp}/kept"
    with Cluster(bindir, f"{tmp}/home") as c:
        job = c.anneal("submit", job_yaml(tmp, "kept", steps, every, RETENTION_EXTRA)).stdout.strip()
        samples, deadline = 0, time.time() + 600
        while time.time() < deadline:
            before = registry(c, job)
            on_disk = disk_steps(out)
            after = registry(c, job)
            for step, state in before.items():
                if "COMMITTED" in state and "COMMITTED" in after.get(step, ""):
                    assert step in on_disk, f"checkpoint {step} is COMMITTED in the registry but not on disk"
            # The disk was read between the two registry reads: a directory seen on disk was COMMITTED or
            # DELETING in one of them (a deletion may complete in between), or was newer than the first read.
            live = ("COMMITTED", "DELETING")
            for step in on_disk:
                seen = [before.get(step, ""), after.get(step, "")]
                assert any(s.endswith(live) for s in seen) or step not in before, \
                    f"checkpoint-{step} is on disk but the registry says {seen[0]!r} then {seen[1]!r}"
                assert "DELETED" not in before.get(step, "X").replace("DELETING", ""), \
                    f"checkpoint-{step} was DELETED in the registry yet is on disk"
            samples += 1
            state = json.dumps(json.loads(c.anneal("--json", "show", job).stdout).get("job", {}).get("state", ""))
            if any(s in state for s in ("SUCCEEDED", "FAILED", "CANCELLED")):
                break
            time.sleep(0.3)
        w = c.anneal("watch", job, check=False)
        assert w.returncode == 0, f"watch ended with {w.returncode}:\n{w.stdout[-2000:]}"
        show = json.loads(c.anneal("--json", "show", job).stdout)
        assert not show["failed_attempts"] and int(show["job"]["attempt"]) == 1, \
            f"an attempt failed: {show['failed_attempts']}"
        # Deletes are confirmed by the agent shortly after the last commit.
        deadline = time.time() + 30
        while time.time() < deadline and any("DELETING" in s for s in registry(c, job).values()):
            time.sleep(0.2)
        final = registry(c, job)
    want = expected_steps(out, steps, every, 2)
    committed = {s for s, state in final.items() if "COMMITTED" in state}
    assert disk_steps(out) == want, f"on disk {sorted(disk_steps(out))}, expected latest 2 + best = {sorted(want)}"
    assert committed == want, f"registry COMMITTED {sorted(committed)} != disk {sorted(want)} ({final})"
    assert all("DELETED" in final[s] for s in final if s not in want), final
    assert not [n for n in os.listdir(out) if n.startswith(".deleting-") or n.startswith(".tmp-checkpoint")]
    print(f"retention: {samples} samples of registry vs disk agreed; kept {sorted(want)} (latest 2 + best), "
          f"no failed attempt")


def case_retention_standalone(bindir, tmp):
    prepare(tmp, bindir)
    steps, every = 16, 2
    out = f"{tmp}/alone"
    cfg = job_yaml(tmp, "alone", steps, every, RETENTION_EXTRA)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("ANNEAL_CHECKPOINT_RETENTION", None)
    proc = subprocess.Popen([os.path.join(bindir, "anneal-train"), "launch", "--nproc-per-node", "4", "--", "train",
                             "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    samples, most = 0, 0
    while proc.poll() is None:
        for step in disk_steps(out):
            d = f"{out}/checkpoint-{step}"
            if not os.path.exists(f"{d}/manifest.json"):
                assert not os.path.isdir(d), f"{d} exists without its manifest (half-written or half-deleted)"
        most = max(most, len(disk_steps(out)))
        samples += 1
        time.sleep(0.1)
    log = proc.stdout.read()
    assert proc.returncode == 0, f"anneal-train launch failed ({proc.returncode}):\n{log[-4000:]}"
    want = expected_steps(out, steps, every, 2)
    assert disk_steps(out) == want, f"on disk {sorted(disk_steps(out))}, expected latest 2 + best = {sorted(want)}"
    assert most <= len(want) + 1, f"up to {most} checkpoints were on disk at once"
    assert "retention: deleted checkpoint-" in log, log[-2000:]
    print(f"retention_standalone: {samples} samples; kept {sorted(want)} (latest 2 + best), at most {most} on disk")


if __name__ == "__main__":
    run_cases({"succeed": case_succeed, "agent_kill": case_agent_kill, "retention": case_retention,
               "retention_standalone": case_retention_standalone}, binary_flag="--bindir")
