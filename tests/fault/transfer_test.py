"""Transfers cut or corrupted midway (docs/transfers.md, docs/reliability.md), on hosts whose disks are their own.

Every case: the base model (17 MB: the tiny preset with a 32768-token vocabulary, untied) and the dataset exist
only on node1's disk (the cluster's artifact_source, drained: it serves, runs nothing); node1's link sends at most
32 Mbit/s (tc tbf), so staging the model takes about 5 s in 4 MiB reads; agents ask again after 2.5 s without a
reply (--transfer-timeout-ms; transfer_cut_past_retries: 64 Mbit/s and 1 s). A reference run stages to node3; the
faulted job (1 rank, 20 steps) stages to node2 (its own, empty store).

  transfer_cut      once node2's .part of model.safetensors holds at least one 4 MiB chunk, node2's link goes down
                    for 6 s, then up. The staging does not fail and does not start over: node2's agent logs "no
                    reply ... resumed at byte N of M on a fresh socket" with N at least the .part's length at the cut
                    (and below M), its "staged ..." line counts every byte received once and 0 refetched; the job's
                    attempt stays 1 and its final loss equals the reference's (1e-5).
  transfer_corrupt  the same cut, and meanwhile the first MiB of the .part on node2's disk is overwritten with
                    zeros (bytes already received, so the resumed copy never rewrites them): when the copy is
                    complete its SHA-256 does not match; the agent logs "did not match its sha256 ... fetching it
                    again from scratch", fetches it once more, and its "staged ..." line says 1 refetched after a
                    checksum mismatch; the job succeeds (attempt 1) with the reference's final loss. That is the
                    designed behaviour (transfer/client.h): a second mismatch would fail the staging with DATA_LOSS
                    naming the file.
  transfer_cut_past_retries  node2 is cut off for 9 s while its agent asks again after 1 s without a reply (node1
                    sending at 64 Mbit/s): the 6 tries are spent, the staging fails ("no reply from transfer server
                    ... after 6 tries"), a failed attempt; the coordinator starts the job again on node2, whose
                    staging continues the .part the first one left: "resuming 'model.safetensors' ... at byte N"
                    with N at least the .part's length at the cut, and its "staged ..." line counts N bytes resumed
                    and only the rest received; the job succeeds with the reference's final loss.
  transfer_cut_past_heartbeat  node2 is cut off for 24 s, longer than the coordinator's heartbeat timeout (10 s)
                    and than the agent's 6 tries of 2.5 s: the coordinator declares node2 DOWN and its staging task
                    lost at once (the reconnect grace keeps only running tasks): an infrastructure restart, no
                    attempt charged (max_attempts 1; the record's `attempt` counts placements), the job PENDING for
                    a node; node2's agent gives up the stale staging meanwhile. When node2 comes back, that stale
                    failure changes nothing, the job is placed on node2 again (the only node not drained) and the
                    new epoch's staging continues the .part at the byte the cut left (only the rest received); the
                    job succeeds with the reference's final loss.

Exit status 0 and a "SKIP: why" line when this machine cannot make hosts (not root, no network namespaces, no tc tbf).
"""
import glob
import json
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from cluster import HostCluster  # noqa: E402
from hosts import FaultNet, Unavailable  # noqa: E402
from testlib import ROOT, lora_job_yaml, make_tokenizer, run, run_cases, wait_for  # noqa: E402
from workload import placed_nodes, show, trainer_binary  # noqa: E402

SETTINGS = "shared_filesystem: false\nartifact_source: node1\ncheckpoint_replicas: 0\n"
STEPS = 20
# (node1's send rate in Mbit/s, the agents' --transfer-timeout-ms, how long node2 is cut off): a 4 MiB read takes
# about 1 s at 32 Mbit/s, well inside 2.5 s; 6 tries of 1 s are spent within a 9 s cut, which stays inside the
# coordinator's heartbeat timeout (10 s) as far as it can.
WITHIN_RETRIES = (32, 2500, 6)
PAST_RETRIES = (64, 1000, 9)
PAST_HEARTBEAT = (32, 2500, 24)


def prepare_big_model(fs, trainer):
    make_tokenizer(f"{fs}/tok")
    run([trainer, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{fs}/tok", "--out",
         f"{fs}/base", "--seed", "2", "--vocab-size", "32768", "--untied"])


def job_yaml(tmp, shared, name, **keys):
    return lora_job_yaml(tmp, name, STEPS, save_steps=1000, model_name_or_path=f"{shared}/base",
                         dataset_dir=f"{shared}/data", output_dir=f"{shared}/{name}",
                         tokenized_cache_dir=f"{shared}/cache", nodes=1, gpus_per_node=1, **keys)


def final_loss(c, job, dest):
    c.anneal("fetch", job, "--to", dest)
    rows = [json.loads(line) for line in open(f"{dest}/trainer_log.jsonl") if '"loss"' in line]
    return rows[-1]["current_steps"], rows[-1]["loss"]


def model_part(host):
    """node<i>'s .part files of the staging in progress: [(path, size)]."""
    parts = glob.glob(os.path.join(host.dir, "agent", "artifacts", "partial", "*.part"))
    return [(p, os.path.getsize(p)) for p in parts if os.path.exists(p)]


def agent_log(host):
    return open(os.path.join(host.dir, "agent.log"), errors="replace").read()


def drain(c, node, undrain=False):
    """Drains (or undrains) `node` and waits until the coordinator shows it so. A node the coordinator marked DOWN
    meanwhile (all heartbeats late on a loaded machine) loses its drain when it registers again, so it is drained
    again until the state holds."""
    want = "NODE_UP" if undrain else "NODE_DRAINING"

    def done():
        if c.node_state(node) == want:
            return True
        c.anneal("drain", node, *(["--undrain"] if undrain else []), check=False)
        return c.node_state(node) == want
    wait_for(f"{node} to be {want}", done, 60, poll_s=1)


def transfer_fault(bindir, tmp, corrupt=False, timing=WITHIN_RETRIES):
    rate_mbit, timeout_ms, cut_s = timing
    shared = os.path.join(tmp, "cluster-fs")
    with FaultNet(4, tmp, private_path=shared) as net:
        source, node2, node3 = net.hosts[1], net.hosts[2], net.hosts[3]
        try:
            net.limit_rate(source, rate_mbit)
        except Unavailable as e:
            print(f"SKIP: {e}")
            return
        # Before the daemons start: loading the trainer to write the model is the heaviest thing the test does.
        prepare_big_model(source.fs, trainer_binary(bindir))
        shutil.copytree(os.path.join(ROOT, "examples/data"), os.path.join(source.fs, "data"))
        run(["chmod", "-R", "a+rX", source.fs])
        model_bytes = os.path.getsize(os.path.join(source.fs, "base", "model.safetensors"))
        # Bytes of the files fetched after it (the manifest is sorted by path; those before are in the store).
        later = sum(os.path.getsize(os.path.join(source.fs, "base", n)) for n in os.listdir(
            os.path.join(source.fs, "base")) if n > "model.safetensors")
        with HostCluster(net, bindir, tmp, coordinator_settings=SETTINGS,
                         agent_args=["--transfer-timeout-ms", timeout_ms]) as c:
            try:
                drain(c, "node1")
                drain(c, "node2")  # the reference stages to node3
                ref = c.anneal("submit", job_yaml(tmp, shared, "ref")).stdout.strip()
                # Bounded well inside ctest's 600 s: a stuck job fails with the daemons' logs (below).
                assert c.anneal("watch", ref, check=False, timeout=240).returncode == 0, "the reference run failed"
                assert placed_nodes(c, ref) == ["node3"], placed_nodes(c, ref)
                want = final_loss(c, ref, os.path.join(tmp, "fetched-ref"))
                drain(c, "node2", undrain=True)
                drain(c, "node3")

                # Past the heartbeat, a lost staging must cost no attempt: max_attempts 1 would fail the job.
                keys = dict(max_attempts=1) if timing == PAST_HEARTBEAT else {}
                job = c.anneal("submit", job_yaml(tmp, shared, "faulted", **keys)).stdout.strip()
                # At least one whole 4 MiB read written, and the file not complete: the copy is midway.
                part, at_cut = wait_for("node2's .part of the model to hold a chunk",
                                        lambda: next(((p, n) for p, n in model_part(node2)
                                                      if (4 << 20) <= n < model_bytes), None), 120, poll_s=0.05)
                net.cut(node2)
                cut_at = time.time()
                if corrupt:
                    with open(part, "r+b") as f:  # bytes already received: the resumed copy does not rewrite them
                        f.write(b"\0" * (1 << 20))
                time.sleep(cut_s)
                during_cut = show(c, job)[0]  # past the heartbeat: the task is lost and the job waits for a node
                net.heal(node2)
                w = c.anneal("watch", job, check=False, timeout=240)
                assert w.returncode == 0, f"the job failed after the transfer fault:\n{w.stdout[-3000:]}"
                assert placed_nodes(c, job) == ["node2"], placed_nodes(c, job)
                record, _ = show(c, job)
                attempt = int(record.get("attempt", 1))
                got = final_loss(c, job, os.path.join(tmp, "fetched-faulted"))
                log = agent_log(node2)
                if timing == PAST_HEARTBEAT:
                    return past_heartbeat(log, at_cut, model_bytes, later, record, during_cut, got, want, cut_s)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{c.logs()}")

    if timing == PAST_RETRIES:
        return past_retries(log, at_cut, model_bytes, later, attempt, got, want, timeout_ms, cut_s)
    resumes = [(int(a), int(b)) for a, b in
               re.findall(r"no reply from \S+ for \d+ ms reading 'model\.safetensors': resumed at byte (\d+) of "
                          r"(\d+) on a fresh socket", log)]
    staged = re.search(r"staged model\.model_name_or_path .* (\d+) bytes in ([\d.]+) s -> \S+ \((\d+) bytes received, "
                       r"(\d+) resumed from \.part files, (\d+) re-requests, (\d+) refetched", log)
    assert staged, f"no 'staged model...' line in node2's agent log:\n{log[-3000:]}"
    total, seconds, received, resumed, re_requests, refetched = (float(x) for x in staged.groups())
    assert resumes, f"node2's agent never asked again after the cut:\n{log[-3000:]}"
    first = resumes[0][0]
    assert at_cut <= first < model_bytes and resumes[0][1] == model_bytes, (at_cut, resumes, model_bytes)
    assert re_requests == len(resumes) >= 1, (re_requests, resumes)
    assert attempt == 1, f"the staging failed an attempt ({attempt})"
    assert got[0] == want[0] == STEPS, (got, want)
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1]), f"final loss {got[1]} differs from the uninterrupted {want[1]}"
    if corrupt:
        assert refetched == 1, f"the corrupted .part was not refetched ({refetched})"
        assert re.search(r"'model\.safetensors' from \S+ did not match its sha256 .*fetching it again from scratch",
                         log), "no checksum-mismatch warning"
        assert received == total + model_bytes, (received, total, model_bytes)  # the model twice, the rest once
        print(f"transfer_corrupt: node2's copy of model.safetensors ({model_bytes} bytes) cut off at byte {at_cut} "
              f"for {cut_s} s, its first MiB overwritten on node2's disk meanwhile; resumed at byte {first}; the "
              f"SHA-256 mismatch was detected and the file fetched once more from scratch ({int(received)} bytes "
              f"received for {int(total)}; 1 refetched, {int(re_requests)} re-request(s)); staged in {seconds} s; "
              f"attempt {attempt}; final loss {got[1]:.6f} = uninterrupted {want[1]:.6f}")
    else:
        assert refetched == 0 and resumed == 0, (refetched, resumed)
        assert received == total, f"{received} bytes received for {total}: some were fetched twice"
        print(f"transfer_cut: node2's copy of model.safetensors ({model_bytes} bytes) cut off at byte {at_cut} for "
              f"{cut_s} s; asked again {int(re_requests)} time(s), resumed at byte {first} (not 0); staged in "
              f"{seconds} s with every byte received once ({int(received)} of {int(total)}); checksum verified; "
              f"attempt {attempt}; final loss {got[1]:.6f} = uninterrupted {want[1]:.6f} "
              f"({time.time() - cut_at:.0f} s from the cut to the checks)")


def resumed_part(log, at_cut, model_bytes, later):
    """Checks that the one successful staging in node2's log continued the .part the cut left (every byte before it
    kept, only the rest received, no refetch); (first byte asked, total, seconds, received, kept)."""
    resumed = [(int(a), int(b)) for a, b in re.findall(
        r"resuming 'model\.safetensors' from \S+ at byte (\d+) of (\d+) \(its \.part", log)]
    assert resumed, f"the next staging did not continue the .part:\n{log[-3000:]}"
    first = resumed[0][0]
    assert at_cut <= first < model_bytes and resumed[0][1] == model_bytes, (at_cut, resumed, model_bytes)
    staged = re.findall(r"staged model\.model_name_or_path .* (\d+) bytes in ([\d.]+) s -> \S+ \((\d+) bytes received, "
                        r"(\d+) resumed from \.part files, (\d+) re-requests, (\d+) refetched", log)
    assert len(staged) == 1, f"expected one staged model (the one after the failed staging):\n{log[-3000:]}"
    total, seconds, received, kept, _, refetched = (float(x) for x in staged[0])
    assert kept == first and received == model_bytes - first + later and refetched == 0, (staged, later)
    return first, total, seconds, received, kept


def past_retries(log, at_cut, model_bytes, later, attempt, got, want, timeout_ms, cut_s):
    """The checks of transfer_cut_past_retries on node2's agent log (see the module docstring)."""
    gave_up = re.search(r"no reply from transfer server \S+ after (\d+) tries of (\d+) ms", log)
    assert gave_up, f"the staging did not give up during the cut:\n{log[-3000:]}"
    first, total, seconds, received, kept = resumed_part(log, at_cut, model_bytes, later)
    assert attempt >= 2, f"the staging failure cost no attempt ({attempt})"
    assert got[0] == want[0] == STEPS, (got, want)
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1]), f"final loss {got[1]} differs from the uninterrupted {want[1]}"
    print(f"transfer_cut_past_retries: node2's copy of model.safetensors ({model_bytes} bytes) cut off at byte "
          f"{at_cut} for {cut_s} s; the staging gave up after {gave_up.group(1)} tries of {timeout_ms} ms (a failed "
          f"attempt); attempt {attempt} on node2 resumed the .part at byte {first}: {int(kept)} bytes kept, "
          f"{int(received)} received for {int(total)}, staged in {seconds} s, checksum verified; final loss "
          f"{got[1]:.6f} = uninterrupted {want[1]:.6f}")


def past_heartbeat(log, at_cut, model_bytes, later, record, during_cut, got, want, cut_s):
    """The checks of transfer_cut_past_heartbeat (see the module docstring)."""
    assert during_cut.get("state") in ("JOB_PENDING", "JOB_RESTARTING"), \
        f"the job was {during_cut.get('state')} at the end of the cut, not waiting for a node: {during_cut}"
    assert int(record.get("infra_restarts", 0)) >= 1, f"no infrastructure restart: {record}"
    charged = int(record.get("attempt", 1)) - int(record.get("infra_restarts", 0)) - int(record.get("preemptions", 0))
    assert charged == 1, f"the lost staging cost an attempt: {record}"
    assert int(record.get("epoch", 1)) >= 2, f"the job was not placed again: {record}"
    gave_up = re.search(r"no reply from transfer server \S+ after (\d+) tries of (\d+) ms", log)
    first, total, seconds, received, kept = resumed_part(log, at_cut, model_bytes, later)
    assert got[0] == want[0] == STEPS, (got, want)
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1]), f"final loss {got[1]} differs from the uninterrupted {want[1]}"
    print(f"transfer_cut_past_heartbeat: node2's copy of model.safetensors ({model_bytes} bytes) cut off at byte "
          f"{at_cut} for {cut_s} s: the job was {during_cut.get('state')} at the end of the cut (node2's task lost), "
          f"the stale staging {'gave up after ' + gave_up.group(1) + ' tries' if gave_up else 'was stopped'}; "
          f"epoch {record.get('epoch')} on node2 resumed the .part at byte {first}: {int(kept)} bytes kept, "
          f"{int(received)} received for {int(total)}, staged in {seconds} s; placement {record.get('attempt')}, "
          f"infra_restarts {record.get('infra_restarts')}, 1 attempt charged of max_attempts 1; final loss {got[1]:.6f} = uninterrupted "
          f"{want[1]:.6f}")


def case_transfer_cut(bindir, tmp):
    transfer_fault(bindir, tmp, corrupt=False)


def case_transfer_corrupt(bindir, tmp):
    transfer_fault(bindir, tmp, corrupt=True)


def case_transfer_cut_past_retries(bindir, tmp):
    transfer_fault(bindir, tmp, timing=PAST_RETRIES)


def case_transfer_cut_past_heartbeat(bindir, tmp):
    transfer_fault(bindir, tmp, timing=PAST_HEARTBEAT)


def main():
    why = FaultNet.unavailable()
    if why:
        print(f"SKIP: {why}")
        sys.exit(0)
    run_cases({"transfer_cut": case_transfer_cut, "transfer_corrupt": case_transfer_corrupt,
               "transfer_cut_past_retries": case_transfer_cut_past_retries,
               "transfer_cut_past_heartbeat": case_transfer_cut_past_heartbeat}, binary_flag="--bindir")


if __name__ == "__main__":
    main()
