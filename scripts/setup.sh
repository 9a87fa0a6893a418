#!/usr/bin/env bash
# Installs every dependency of Anneal: Debian packages for the daemons and the build, and a virtualenv (.venv)
# holding torch (whose bundled LibTorch the trainer builds against) plus the reference peers used by tests and
# benchmarks. Idempotent: a second run checks and returns in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  librocksdb-dev libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler
  libboost-dev libboost-system-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libicu-dev
  libssl-dev libgloo-dev libhowardhinnant-date-dev
  libcairo2-dev
  libcld2-dev
  python3-venv procps clang-format
  clang libclang-rt-14-dev
  systemd
  slurmd slurmctld slurm-client munge
  prometheus
  chromium chromium-driver
  iproute2
)

# libcld2-dev: `data clean --languages` (Compact Language Detector 2, trainer/data/language_filter.h).
# systemd (systemd-analyze) and Slurm + munge: the deploy tests (tests/integration/deploy) verify the units and
# start a throwaway Slurm (scripts/slurm-cluster.sh). prometheus (and promtool): tests/integration/metrics runs
# a real Prometheus on a temp dir and port against a local cluster. chromium + chromium-driver: the web console's
# browser tests (tests/integration/web, label `browser`) drive a headless Chromium through selenium. iproute2 (ip, tc): tests/fault makes hosts as
# network namespaces. Debian's slurmd and slurmctld services stay inactive
# without /etc/slurm/slurm.conf (their units' condition); munge's own service starts with the key it generates.
log() { printf '[setup] %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/anneal-apt.log 2>&1 || {
    tail -30 /tmp/anneal-apt.log; echo "setup.sh: apt-get install failed (log: /tmp/anneal-apt.log)" >&2; exit 1; }
else
  log "Debian packages: all present"
fi

# The virtualenv. python3 must be 3.10+ (torch 2.11 wheels); the first python3 on PATH is used.
PY="${ANNEAL_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
REQ="$ROOT/scripts/requirements.txt"
STAMP=".venv/.anneal-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages from scripts/requirements.txt (torch is a large download the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$REQ"
  echo "$want" > "$STAMP"
else
  log "Python packages: up to date"
fi
# LLaMA-Factory is the peer of the chat-template parity test. Its own pins conflict with the transformers above,
# and the test imports only its template code, so it is installed without dependencies.
LLAMAFACTORY_PIN="llamafactory==0.9.5"
if [ "$(.venv/bin/python -m pip show llamafactory 2>/dev/null | sed -n 's/^Version: //p')" != "${LLAMAFACTORY_PIN#*==}" ]; then
  log "installing $LLAMAFACTORY_PIN (--no-deps: the template parity test's peer)"
  .venv/bin/python -m pip install -q --no-deps "$LLAMAFACTORY_PIN"
fi
log "done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cmake prefix", torch.utils.cmake_prefix_path)')"
