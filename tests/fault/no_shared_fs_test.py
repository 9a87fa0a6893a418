"""No shared filesystem (docs/transfers.md), on separate hosts whose disks are their own (FaultNet private_path).

  no_shared_fs  the model, tokenizer and dataset exist only on node1's disk (the cluster's artifact_source, drained so
                it runs nothing); a 2-node LoRA job on node2 + node3 stages them from node1; every checkpoint rank 0
                writes is copied to the job's other node before it counts; the host of rank 0 is killed -9; the job
                restarts on node1 + the surviving node, the checkpoint copy is staged from the survivor, and the job
                ends with the final loss of an uninterrupted run (1e-5), read from the outputs `anneal fetch` copied
                to the test machine.
  no_shared_fs_pp_zero  the same with 2 pipeline stages over the 2 nodes (2 ranks each, ZeRO-1 in each stage): the
                stage on the other node writes its weights and optimizer shards on its own disk and the trainer sends
                them to rank 0 before the commit (trainer/train/file_gather.h), so the checkpoint copies are whole,
                the resumed job finds every shard, and the final adapter joins both stages.

Exit status 0 and a "SKIP: why" line when this machine cannot make hosts (not root, no network namespaces).
"""
import json
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from cluster import HostCluster, wait_until  # noqa: E402
from workload import placed_nodes, prepare_model, trainer_binary  # noqa: E402
from hosts import FaultNet  # noqa: E402
from safetensors import safe_open  # noqa: E402
from testlib import ROOT, lora_job_yaml, run, run_cases, wait_for  # noqa: E402

SETTINGS = "shared_filesystem: false\nartifact_source: node1\ncheckpoint_replicas: 1\n"


def checkpoints(c, job):
    cks = json.loads(c.anneal("--json", "checkpoints", job).stdout)
    return cks["checkpoints"] if isinstance(cks, dict) else cks


def replicated(c, job):
    """Checkpoints that count (COMMITTED) with a copy on another node."""
    return [k for k in checkpoints(c, job) if k.get("state") == "CHECKPOINT_COMMITTED" and k.get("replica_nodes")]


def fetched_final_loss(c, job, dest, layers, base):
    """The final (step, loss) of the outputs `anneal fetch` copied to `dest`, after checking that the adapter there
    holds LoRA weights for each of the base model's `layers` layers (every pipeline stage's part joined) and names
    the base model as the spec did (`base`), not the copy staged on a training node."""
    c.anneal("fetch", job, "--to", dest)
    with open(f"{dest}/adapter_config.json") as f:
        named = json.load(f)["base_model_name_or_path"]
    assert named == base, f"adapter_config.json names base model {named!r}, the spec {base!r}"
    with safe_open(f"{dest}/adapter_model.safetensors", "pt") as f:
        found = {int(m.group(1)) for m in map(re.compile(r"\.layers\.(\d+)\.").search, f.keys()) if m}
    assert found == set(range(layers)), f"the fetched adapter has LoRA weights for layers {sorted(found)} of {layers}"
    rows = [json.loads(line) for line in open(f"{dest}/trainer_log.jsonl") if '"loss"' in line]
    return rows[-1]["current_steps"], rows[-1]["loss"]


def job_yaml(tmp, shared, name, steps, **layout):
    layout = layout or dict(nodes=2, gpus_per_node=1)
    return lora_job_yaml(tmp, name, steps, save_steps=5, model_name_or_path=f"{shared}/base",
                         dataset_dir=f"{shared}/data", output_dir=f"{shared}/{name}",
                         tokenized_cache_dir=f"{shared}/cache", **layout)


def case_no_shared_fs(bindir, tmp):
    moved_elsewhere(bindir, tmp, "no_shared_fs", {})


def case_no_shared_fs_pp_zero(bindir, tmp):
    # Ranks 0-1 (stage 0) on one node, 2-3 (stage 1) on the other; ZeRO-1 shards each stage's optimizer state.
    moved_elsewhere(bindir, tmp, "no_shared_fs_pp_zero",
                    dict(nodes=2, gpus_per_node=2, pipeline_model_parallel_size=2, zero_stage=1))


def moved_elsewhere(bindir, tmp, name, layout):
    """Inputs only on node1, a reference run, then the same job with rank 0's host killed after a replicated
    checkpoint: it resumes elsewhere from the copy and ends with the reference's final loss."""
    shared = os.path.join(tmp, "cluster-fs")  # each host has its own files here
    steps = 30
    with FaultNet(4, tmp, private_path=shared) as net, \
            HostCluster(net, bindir, tmp, coordinator_settings=SETTINGS) as c:
        try:
            source = net.hosts[1]
            prepare_model(source.fs, trainer_binary(bindir))  # base model + tokenizer on node1's disk only
            shutil.copytree(os.path.join(ROOT, "examples/data"), os.path.join(source.fs, "data"))
            run(["chmod", "-R", "a+rX", source.fs])
            for h in net.hosts[2:]:
                assert not os.listdir(h.fs), f"{h.name} is not empty: the hosts share files"
            c.anneal("drain", "node1")  # it serves its files, runs nothing

            ref = c.anneal("submit", job_yaml(tmp, shared, "ref", steps, **layout)).stdout.strip()
            assert c.anneal("watch", ref, check=False, timeout=400).returncode == 0, "the reference run failed"
            with open(os.path.join(source.fs, "base", "config.json")) as f:
                layers = json.load(f)["num_hidden_layers"]
            want = fetched_final_loss(c, ref, os.path.join(tmp, "fetched-ref"), layers, f"{shared}/base")

            job = c.anneal("submit", job_yaml(tmp, shared, "moved", steps, **layout)).stdout.strip()
            wait_for("a checkpoint copied to a second node", lambda: replicated(c, job), 300)
            before = placed_nodes(c, job)
            assert "node1" not in before, before
            shown = json.loads(c.anneal("--json", "show", job).stdout)
            writer = shown.get("job", shown)["placement"]["nodes"][0]["node_id"]  # global rank 0's node
            staged_model = [h for h in net.hosts[2:] if os.path.exists(os.path.join(h.fs, "base"))]
            assert not staged_model, "the model appeared at its source path on another host (a shared filesystem?)"
            killed_at = time.time()
            c.agent_host(writer).kill()
            wait_until(f"{writer} to be declared lost", lambda: c.node_state(writer) not in ("NODE_UP", None), 30)
            c.anneal("drain", "node1", "--undrain")
            w = c.anneal("watch", job, check=False, timeout=400)
            assert w.returncode == 0, f"the job did not finish after rank 0's host died:\n{w.stdout[-3000:]}"
            after = placed_nodes(c, job)
            assert writer not in after, (before, after)
            shown = json.dumps(json.loads(c.anneal("--json", "show", job).stdout))
            assert "resuming from" in shown, "the restarted attempt did not resume from a checkpoint"
            assert "copies on" in shown, "no checkpoint was recorded with its copies"
            got = fetched_final_loss(c, job, os.path.join(tmp, "fetched-moved"), layers, f"{shared}/base")
            recovered_s = time.time() - killed_at
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.logs()}")
    assert got[0] == want[0] == steps, (got, want)
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1]), f"final loss {got[1]} differs from the uninterrupted {want[1]}"
    print(f"{name}: {layout or '2 nodes x 1 rank'}: inputs on node1 only, staged to {before}; rank 0's host ({writer}) killed -9 after a "
          f"replicated checkpoint; the job moved to {after}, resumed from the copy and ended at step {steps} with loss "
          f"{got[1]:.6f} = uninterrupted {want[1]:.6f} ({recovered_s:.0f} s from the kill); outputs fetched with "
          f"anneal fetch")


def main():
    why = FaultNet.unavailable()
    if why:
        print(f"SKIP: {why}")
        sys.exit(0)
    run_cases({"no_shared_fs": case_no_shared_fs, "no_shared_fs_pp_zero": case_no_shared_fs_pp_zero},
              binary_flag="--bindir")


if __name__ == "__main__":
    main()
