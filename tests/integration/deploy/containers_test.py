#!/usr/bin/env python3
"""deploy/containers without a container engine (none runs on the development machines): a lint of the
Containerfiles and the compose file, and the images' install steps run on this host.

  lint:            each Containerfile parsed by dockerfile-parse (PyPI): pinned base images (the daemons on
                   debian:12-slim, the trainer on NVIDIA's CUDA runtime image of the pinned torch's CUDA major),
                   COPY sources that exist, repository scripts that exist and are executable, apt installs without
                   recommends that clean their lists, exec-form CMD, a non-root daemon image, an ignore file that
                   keeps build trees and the virtualenv out; every package the images install exists in this
                   Debian's archive (apt-cache, when the host is Debian 12). compose.yaml validated against the
                   compose specification's schema (check-jsonschema's vendored compose-spec), its Containerfiles
                   and mounted files exist, and its development configs run: the coordinator and an agent start
                   with them and the agent registers.
  install_daemons: the daemon image's install step (deploy/systemd/install.sh into a staging root) on this
                   host: every shared library the installed daemons load comes from a package the runtime image
                   installs (daemon-runtime-packages.txt) or from debian:12-slim's base (dpkg -S), none missing.
  install_trainer: the trainer image's steps (install.sh, then bundle-libs.sh --torch with the torch wheel of
                   .venv): with only the bundle's library path, anneal-train loads LibTorch and its CUDA libraries
                   from the bundle and prints its version. Skipped (77) without an anneal-train binary.
"""
import argparse
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from deploylib import ROOT, SKIP, run_shipped_configs, skip
from testlib import run

HERE = os.path.join(ROOT, "deploy/containers")
FILES = {"daemons": "Containerfile.daemons", "trainer": "Containerfile.trainer"}
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1", "zlib1g"}  # in debian:12-slim


def parse(name):
    from dockerfile_parse import DockerfileParser
    with open(os.path.join(HERE, name), "rb") as f:
        return DockerfileParser(fileobj=io.BytesIO(f.read()))


def stages(parser):
    """[(base image with ARG defaults substituted, stage name, [instructions])]."""
    args, out = {}, []
    for ins in parser.structure:
        if ins["instruction"] == "ARG" and not out and "=" in ins["value"]:
            k, v = ins["value"].split("=", 1)
            args[k] = v
        elif ins["instruction"] == "FROM":
            words = ins["value"].split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            out.append((image, words[2] if len(words) > 2 and words[1].upper() == "AS" else None, []))
        elif out:
            out[-1][2].append(ins)
    return out


def lint_containerfile(kind, name):
    parsed = stages(parse(name))
    assert parsed, f"{name}: no FROM"
    names = set()
    for image, stage, instructions in parsed:
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{name}: base image {image} is not pinned to a tag"
        for ins in instructions:
            where = f"{name}:{ins['startline'] + 1} {ins['instruction']}"
            value = ins["value"]
            if ins["instruction"] in ("COPY", "ADD"):
                assert ins["instruction"] == "COPY", f"{where}: use COPY (ADD fetches URLs and unpacks archives)"
                words = value.split()
                source_from = [w for w in words if w.startswith("--from=")]
                if source_from:
                    assert source_from[0][7:] in names, f"{where}: --from names no earlier stage"
                    continue
                for src in [w for w in words[:-1] if not w.startswith("--")]:
                    assert os.path.exists(os.path.join(ROOT, src)), f"{where}: {src} does not exist in the repository"
            if ins["instruction"] == "RUN":
                for script in re.findall(r"\b((?:deploy|scripts)/[\w./-]+\.sh)\b", value):
                    path = os.path.join(ROOT, script)
                    assert os.access(path, os.X_OK), f"{where}: {script} is missing or not executable"
                if "apt-get install" in value:
                    assert "--no-install-recommends" in value, f"{where}: apt-get install without --no-install-recommends"
                    assert "rm -rf /var/lib/apt/lists" in value, f"{where}: apt lists not removed in the same layer"
                for listed in re.findall(r"xargs -a (/tmp/[\w.-]+)", value):
                    copied = [i for i in instructions if i["instruction"] == "COPY" and i["value"].split()[-1] == listed]
                    assert copied, f"{where}: {listed} is not COPYed into this stage"
            if ins["instruction"] in ("CMD", "ENTRYPOINT"):
                assert value.startswith("["), f"{where}: use the exec form (JSON array)"
        if stage:
            names.add(stage)
    final_base, _, final = parsed[-1]
    if kind == "daemons":
        assert final_base == "debian:12-slim", f"{name}: the daemon image runs on {final_base}, not debian:12-slim"
        users = [i["value"] for i in final if i["instruction"] == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{name}: the daemon image runs as root"
    else:
        m = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-(?:cudnn-)?runtime-ubuntu[\d.]+", final_base)
        assert m, f"{name}: the trainer image runs on {final_base}, not an nvidia/cuda runtime image"
        check_cuda_matches_torch(int(m.group(1)), name)
    ignore = open(os.path.join(HERE, name + ".dockerignore")).read().split()
    assert "build*/" in ignore and ".venv" in ignore, f"{name}.dockerignore keeps build trees or .venv in the context"


def check_cuda_matches_torch(cuda_major, name):
    pin = re.search(r"^torch==([\d.]+)$", open(os.path.join(ROOT, "scripts/requirements.txt")).read(), re.M)
    assert pin, "scripts/requirements.txt pins no torch"
    code = "import torch; print(torch.__version__.split('+')[0], torch.version.cuda or '')"
    p = run([sys.executable, "-c", code], check=False)
    if p.returncode != 0:
        print(f"torch not importable here: the CUDA major of {name} is not compared with the wheel's", flush=True)
        return
    version, cuda = p.stdout.split() + [""] * (2 - len(p.stdout.split()))
    assert version == pin.group(1), f"this .venv has torch {version}, scripts/requirements.txt pins {pin.group(1)}"
    if cuda:
        assert int(cuda.split(".")[0]) == cuda_major, f"{name}: CUDA {cuda_major} base, the torch wheel is CUDA {cuda}"


def packages_installed_by_images():
    lists = ["build-packages.txt", "daemon-runtime-packages.txt"]
    return sorted({l.strip() for f in lists for l in open(os.path.join(HERE, f)) if l.strip()})


def check_packages_exist():
    osr = open("/etc/os-release").read() if os.path.exists("/etc/os-release") else ""
    if not shutil.which("apt-cache") or 'VERSION_ID="12"' not in osr or "ID=debian" not in osr:
        print("not Debian 12: the images' package names are not checked against the archive", flush=True)
        return
    wanted = packages_installed_by_images()
    out = run(["apt-cache", "policy", *wanted], check=False).stdout
    candidates = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (.*)$", out, re.M))
    missing = [p for p in wanted if candidates.get(p, "(none)") == "(none)"]
    assert not missing, f"packages the images install that this Debian 12 does not have: {missing}"


def lint_compose(bindir, tmp):
    compose = os.path.join(HERE, "compose.yaml")
    p = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", compose], check=False)
    assert p.returncode == 0, f"compose.yaml does not validate against the compose spec: {p.stdout}{p.stderr}"
    import yaml
    doc = yaml.safe_load(open(compose))
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build:
            ctx = os.path.normpath(os.path.join(HERE, build["context"]))
            assert os.path.exists(os.path.join(ctx, build["dockerfile"])), f"{name}: {build['dockerfile']} missing"
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(HERE, src)), f"{name}: mounts {src}, which does not exist"
            else:
                assert src in doc.get("volumes", {}), f"{name}: volume {src} is not declared"
        assert svc["command"][0] in ("anneal-coordinator", "anneal-agent"), f"{name}: runs {svc['command'][0]}"
    run_shipped_configs(bindir, f"{HERE}/dev/coordinator.yaml", f"{HERE}/dev/agent.yaml", tmp)


def case_lint(bindir, tmp):
    try:
        import check_jsonschema  # noqa: F401
        import dockerfile_parse  # noqa: F401
    except ImportError as e:
        skip(f"{e.name} is not installed (scripts/requirements.txt; run scripts/setup.sh)")
    for kind, name in FILES.items():
        lint_containerfile(kind, name)
    check_packages_exist()
    lint_compose(bindir, tmp)
    print("Containerfiles and compose.yaml pass", flush=True)


@functools.lru_cache(maxsize=None)
def owner_package(path):
    real = os.path.realpath(path)
    candidates = {real, path}
    for p in list(candidates):  # merged /usr: dpkg may know either spelling
        if p.startswith("/usr/lib/"):
            candidates.add(p[4:])
        elif p.startswith("/lib/"):
            candidates.add("/usr" + p)
    for c in candidates:
        p = run(["dpkg", "-S", c], check=False)
        if p.returncode == 0:
            return p.stdout.split(":")[0]
    return None


def case_install_daemons(bindir, tmp):
    if not shutil.which("dpkg"):
        skip("no dpkg here: cannot map libraries to Debian packages")
    dest = f"{tmp}/stage"
    run([f"{ROOT}/deploy/systemd/install.sh", "--destdir", dest, "--prefix", "/opt/anneal", "--bindir", bindir])
    allowed = BASE_PACKAGES | {l.strip() for l in open(f"{HERE}/daemon-runtime-packages.txt") if l.strip()}
    for b in ["anneal-coordinator", "anneal-agent", "anneal"]:
        binary = f"{dest}/opt/anneal/bin/{b}"
        assert run([binary, "--version"]).stdout.strip(), f"{b} --version printed nothing"
        out = run(["ldd", binary]).stdout
        assert "not found" not in out, f"{b}: {out}"
        for lib, path in re.findall(r"^\s*(\S+) => (/\S+)", out, re.M):
            pkg = owner_package(path)
            assert pkg, f"{b}: {lib} ({path}) belongs to no Debian package"
            assert pkg.split(":")[0] in allowed, f"{b} needs {lib} from {pkg}, which the daemon image does not install"
    print("the installed daemons load only libraries the runtime image installs", flush=True)


def case_install_trainer(bindir, tmp, trainer):
    if not trainer or not os.path.exists(trainer):
        skip(f"no anneal-train binary ({trainer or 'none given'}): build the trainer or set ANNEAL_TRAIN_BIN")
    code = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    p = run([sys.executable, "-c", code], check=False)
    if p.returncode != 0:
        skip(f"torch is not importable by {sys.executable}: no wheel to bundle LibTorch from")
    site = p.stdout.strip()
    bins = f"{tmp}/bin"
    os.makedirs(bins)
    for b in ["anneal-agent", "anneal"]:
        shutil.copy2(f"{bindir}/{b}", bins)
    shutil.copy2(trainer, f"{bins}/anneal-train")
    dest = f"{tmp}/stage"
    run([f"{ROOT}/deploy/systemd/install.sh", "--destdir", dest, "--prefix", "/opt/anneal", "--bindir", bins])
    prefix = f"{dest}/opt/anneal"
    run([f"{HERE}/bundle-libs.sh", prefix, "--torch", site, "--link"])
    libdirs = [l.strip() for l in open(f"{prefix}/etc/ld.so.conf.d/anneal.conf") if l.strip()]
    assert all(d.startswith(prefix) for d in libdirs), libdirs
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ":".join(libdirs)}
    out = run(["ldd", f"{prefix}/bin/anneal-train"], env=env).stdout
    assert "not found" not in out, out
    for lib, path in re.findall(r"^\s*(\S+) => (/\S+)", out, re.M):
        if re.match(r"lib(torch|c10|cudnn|cublas|nccl|cusparse|cufft|curand)", lib):
            assert path.startswith(prefix), f"{lib} loads from {path}, not from the bundle"
    version = run([f"{prefix}/bin/anneal-train", "--version"], env=env).stdout
    assert version.startswith("anneal-train"), version
    print(f"bundled anneal-train runs: {version.strip()}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--case", required=True, choices=["lint", "install_daemons", "install_trainer"])
    ap.add_argument("--trainer", default=os.environ.get("ANNEAL_TRAIN_BIN", ""))
    args = ap.parse_args()
    bindir = os.path.abspath(args.bindir)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.case == "lint":
                case_lint(bindir, tmp)
            elif args.case == "install_daemons":
                case_install_daemons(bindir, tmp)
            else:
                case_install_trainer(bindir, tmp, args.trainer)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
