#!/usr/bin/env bash
# Builds anneal-train on a GPU machine whose python3 holds CUDA torch, then runs the trainer's tests there.
#
# The GPU machine reaches no package registry, so what the trainer needs beyond torch travels in an ignored
# folder, .device/ (prepared on this machine by `scripts/device-build.sh --prepare`):
#   .device/debs/*.deb unpacked into .device/root: nlohmann-json, CLI11, yaml-cpp, PCRE2, ICU, gloo headers,
#   OpenSSL headers (the libraries are present in the base image or come from the .debs).
# Usage:
#   here:        scripts/device-build.sh --prepare
#   GPU machine: scripts/device-build.sh            (the `run` tool with carry: [".device"])
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEBS="nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libyaml-cpp0.7 libpcre2-dev libpcre2-8-0 libpcre2-16-0
      libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72 libgloo-dev libssl-dev libfmt-dev libfmt9 libspdlog-dev
      libspdlog1.10 libgtest-dev"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device/debs
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  (cd .device/debs && apt-get download $DEBS)
  du -sh .device
  exit 0
fi

PREFIX="$ROOT/.device/root"
if [ -d .device/debs ]; then
  mkdir -p "$PREFIX"
  for f in .device/debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
fi
PY="$(command -v python3)"
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
export CMAKE_PREFIX_PATH="$TORCH_PREFIX:$PREFIX/usr:$PREFIX/usr/lib/x86_64-linux-gnu/cmake:$PREFIX/usr/share/cmake"
export CPATH="$PREFIX/usr/include:${CPATH:-}"
export LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
mkdir -p "${OUT:-/tmp}"
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DANNEAL_PYTHON="$PY" -DANNEAL_TRAINER_ONLY=ON \
  2>&1 | tail -5
ninja -C build-device -j 16 anneal-train trainer_test 2>&1 | tail -3
./build-device/bin/trainer_test 2>&1 | tail -20 | tee "${OUT:-/tmp}/trainer_test.log"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "${OUT:-/tmp}/trainer_test.log"
