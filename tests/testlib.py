"""Shared scaffolding of the Python-driven tests (tests/parity/*, tests/integration/*): running commands,
making a small tokenizer, and the `--bin/--case` entry point that turns a failed assertion into one FAIL line
and exit status 1 for ctest.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def run(cmd, check=True, **kw):
    """Runs cmd capturing its output; a non-zero exit (with check) is an AssertionError showing both streams."""
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p


def wait_for(what, predicate, timeout, poll_s=0.25):
    """predicate()'s first truthy value within timeout seconds; an AssertionError naming `what` otherwise."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


SKIP = 77  # ctest's SKIP_RETURN_CODE in the tests that use skip()


def skip(why):
    """Ends the test as skipped (exit 77), saying why (a tool this machine lacks)."""
    print(f"SKIPPED: {why}", flush=True)
    sys.exit(SKIP)


def free_port():
    """A TCP port free on 127.0.0.1 now (for a daemon told to bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, token=None, timeout=5):
    """GET url (with a bearer token when given): (status, body text); an HTTP error status is returned, not raised."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def lora_job_yaml(tmp, name, steps, extra="", **keys):
    """Writes {tmp}/{name}.yaml: a LoRA SFT job on {tmp}/base and examples' demo_train, output in {tmp}/{name},
    logging every step, with `keys` replacing or adding flat keys and `extra` (YAML text) appended; its path."""
    spec = dict(model_name_or_path=f"{tmp}/base", stage="sft", finetuning_type="lora", lora_target="all", lora_rank=8,
                dataset="demo_train", dataset_dir=f"{ROOT}/examples/data", template="qwen", cutoff_len=96,
                output_dir=f"{tmp}/{name}", per_device_train_batch_size=2, learning_rate="5.0e-3", max_steps=steps,
                logging_steps=1, tokenized_cache_dir=f"{tmp}/cache")
    spec.update(keys)
    path = f"{tmp}/{name}.yaml"
    with open(path, "w") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in spec.items()) + extra)
    return path


def make_tokenizer(out_dir, vocab_size=None):
    """A small byte-level BPE tokenizer (scripts/make_tokenizer.py, HF tokenizers) in out_dir."""
    cmd = [PY, os.path.join(ROOT, "scripts/make_tokenizer.py"), "--out", out_dir]
    if vocab_size:
        cmd += ["--vocab-size", str(vocab_size)]
    run(cmd)
    return out_dir


def expect_refused(binary, bad, write_config, what):
    """Each (extra keys, wanted text) of `bad` must fail naming its problem: write_config(extra) gives the job's
    YAML path; a job whose extra keys ask for 2-way tensor or pipeline parallelism runs under `anneal-train launch
    --nproc-per-node 2` (the refusal must come from the layout check, not from a missing rank)."""
    for extra, want in bad:
        cmd = [binary, "train", "--config", write_config(extra)]
        if any("parallel_size: 2" in e for e in extra):
            cmd = [binary, "launch", "--nproc-per-node", "2", "--"] + cmd[1:]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode != 0, f"{extra} was accepted"
        assert want in p.stderr + p.stdout, f"{extra}: the error does not say '{want}':\n{p.stderr[-2000:]}"
    print(f"refusals: {len(bad)} bad {what} refused, each naming its problem")


def run_cases(cases, binary_flag="--bin"):
    """Entry point: `script BINARY_FLAG PATH --case NAME` calls cases[NAME](abs PATH, a fresh temp dir)."""
    ap = argparse.ArgumentParser()
    ap.add_argument(binary_flag, required=True, dest="binary")
    ap.add_argument("--case", required=True, choices=sorted(cases))
    args = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cases[args.case](os.path.abspath(args.binary), tmp)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


def import_stubbing(do_import, package="llamafactory"):
    """Calls do_import() (a function doing `from <package>... import ...` and returning what it wants) with the
    package's optional heavy dependencies stubbed: a missing module (torchaudio, ...) becomes a MagicMock module,
    and a name a newer dependency no longer has (`cannot import name X from trl`) a MagicMock attribute; the
    package's own modules are re-imported after each stub. Only the code the caller runs must be real. A missing
    module of `package` itself propagates (the package is not installed)."""
    import re
    from unittest import mock
    for _ in range(40):
        try:
            return do_import()
        except ImportError as e:
            missing = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", str(e))
            if isinstance(e, ModuleNotFoundError):
                parts = e.name.split(".")
                if parts[0] == package:
                    raise
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name not in sys.modules:
                        stub = mock.MagicMock()
                        stub.__path__ = []
                        stub.__spec__ = None
                        sys.modules[name] = stub
            elif missing and missing.group(2) in sys.modules and not missing.group(2).startswith(package):
                setattr(sys.modules[missing.group(2)], missing.group(1), mock.MagicMock())
            else:
                raise
            for k in list(sys.modules):
                if k.startswith(package):
                    del sys.modules[k]
    raise RuntimeError(f"cannot import {package}")

