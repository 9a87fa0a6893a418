#!/usr/bin/env python3
"""End to end with real processes: `anneal up` (coordinator + 2 agents x 2 CPU slots), real anneal-train ranks.

  succeed   : submit a LoRA SFT job over 4 ranks (2 nodes x 2: tensor parallel 2 x data parallel 2), watch it to SUCCEEDED; its
              checkpoints are listed with sha256 checksums; the exported adapter loads in peft and reproduces
              our logits; an eval job on the adapter succeeds and its result file is stored.
  agent_kill: kill -9 one agent (and its ranks) after the first committed checkpoint; the job restarts from
              that checkpoint once the node is back and finishes with the same final loss as an uninterrupted
              run of the same job.
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
from testlib import ROOT, make_tokenizer, run, run_cases  # noqa: E402


class Cluster:
    def __init__(self, bindir, home):
        self.bindir, self.home = bindir, home
        self.env = dict(os.environ, ANNEAL_HOME=home, OMP_NUM_THREADS="1")

    def anneal(self, *args, check=True, timeout=300):
        p = subprocess.run([os.path.join(self.bindir, "anneal"), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"anneal {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def __enter__(self):
        self.anneal("up", "--agents", "2", "--slots", "2")
        return self

    def __exit__(self, *exc):
        self.anneal("down", check=False)


def prepare(tmp, bindir):
    make_tokenizer(f"{tmp}/tok")
    run([os.path.join(bindir, "anneal-train"), "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer",
         f"{tmp}/tok", "--out", f"{tmp}/base", "--seed", "2"])


def job_yaml(tmp, name, steps, save_steps, extra=""):
    path = f"{tmp}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""model_name_or_path: {tmp}/base
stage: sft
finetuning_type: lora
lora_target: all
lora_rank: 8
dataset: demo_train
dataset_dir: {ROOT}/examples/data
template: qwen
cutoff_len: 96
output_dir: {tmp}/{name}
per_device_train_batch_size: 2
learning_rate: 5.0e-3
max_steps: {steps}
logging_steps: 1
save_steps: {save_steps}
nodes: 2
gpus_per_node: 2
tensor_model_parallel_size: 2
tokenized_cache_dir: {tmp}/cache
{extra}""")
    return path


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
                          "local-1", "--work-dir", f"{home}/agents/local-1", "--slots", "2"],
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


if __name__ == "__main__":
    run_cases({"succeed": case_succeed, "agent_kill": case_agent_kill}, binary_flag="--bindir")
