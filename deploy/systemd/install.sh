#!/usr/bin/env bash
# Installs Anneal's binaries, systemd units and default configs (docs/operations.md, "Bare metal with systemd").
#
#   deploy/systemd/install.sh [--prefix /usr/local] [--destdir DIR] [--bindir build/bin] [--torch-lib DIR]
#                             [--dry-run]
#
# --prefix     where binaries go ($prefix/bin) and the helper ($prefix/lib/anneal); units name these paths.
# --destdir    staging root (also $DESTDIR): files land under DIR; users are not created, systemd not reloaded.
# --bindir     the built binaries (default: build/bin of this checkout); those present of anneal-coordinator,
#              anneal-agent, anneal and anneal-train are installed (a coordinator host needs no trainer).
# --torch-lib  LibTorch's lib/ (the torch wheel's torch/lib): copied to $prefix/lib/anneal/torch and put on the
#              ranks' LD_LIBRARY_PATH in agent.env (anneal-train's RUNPATH names the build's virtualenv).
# --dry-run    print what would be done, change nothing.
# Existing files in /etc/anneal are never overwritten. Exit 0 prints the next steps; errors name what failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/deploy/systemd"
prefix=/usr/local
destdir="${DESTDIR:-}"
bindir="$ROOT/build/bin"
torch_lib=""
dry_run=0
die() { echo "install.sh: $*" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --bindir) bindir="${2:?--bindir needs a directory}"; shift 2 ;;
    --torch-lib) torch_lib="${2:?--torch-lib needs a directory}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$prefix" == /* ]] || die "--prefix must be absolute, got '$prefix'"
[ -x "$bindir/anneal-coordinator" ] || [ -x "$bindir/anneal-agent" ] ||
  die "neither anneal-coordinator nor anneal-agent in $bindir: build them first (scripts/build.sh) or pass --bindir"
[ -z "$torch_lib" ] || [ -f "$torch_lib/libtorch.so" ] || die "--torch-lib $torch_lib has no libtorch.so"

run() {
  if ((dry_run)); then printf 'would run: %s\n' "$*"; else "$@"; fi
}
# install_config SRC DEST MODE: never overwrites an operator's file.
install_config() {
  if [ -e "$destdir$2" ]; then echo "kept existing $2"; return; fi
  run install -D -m "$3" "$1" "$destdir$2"
}

echo "installing Anneal into ${destdir:-/} (prefix $prefix)"
for b in anneal-coordinator anneal-agent anneal anneal-train; do
  if [ ! -x "$bindir/$b" ]; then
    [ "$b" = anneal-train ] && echo "no $bindir/anneal-train: skipped (GPU nodes need it next to anneal-agent)" ||
      echo "no $bindir/$b: skipped"
    continue
  fi
  run install -D -m 755 "$bindir/$b" "$destdir$prefix/bin/$b"
done
run install -D -m 755 "$HERE/anneal-wait-tcp" "$destdir$prefix/lib/anneal/anneal-wait-tcp"
for unit in anneal-coordinator.service anneal-agent.service; do
  if ((dry_run)); then
    echo "would write $destdir/etc/systemd/system/$unit (paths under $prefix)"
  else
    install -d -m 755 "$destdir/etc/systemd/system"
    sed "s|/usr/local/|$prefix/|g" "$HERE/$unit" > "$destdir/etc/systemd/system/$unit"
    chmod 644 "$destdir/etc/systemd/system/$unit"
  fi
done
install_config "$HERE/coordinator.env" /etc/anneal/coordinator.env 644
install_config "$HERE/coordinator.yaml" /etc/anneal/coordinator.yaml 644
install_config "$HERE/agent.yaml" /etc/anneal/agent.yaml 644
if [ -n "$torch_lib" ]; then
  run install -d -m 755 "$destdir$prefix/lib/anneal/torch"
  run cp -a "$torch_lib/." "$destdir$prefix/lib/anneal/torch/"
  if [ ! -e "$destdir/etc/anneal/agent.env" ]; then
    if ((dry_run)); then echo "would write $destdir/etc/anneal/agent.env with LD_LIBRARY_PATH=$prefix/lib/anneal/torch"
    else install -D -m 644 "$HERE/agent.env" "$destdir/etc/anneal/agent.env"
         echo "LD_LIBRARY_PATH=$prefix/lib/anneal/torch" >> "$destdir/etc/anneal/agent.env"; fi
  else
    echo "kept existing /etc/anneal/agent.env: add LD_LIBRARY_PATH=$prefix/lib/anneal/torch to it yourself"
  fi
else
  install_config "$HERE/agent.env" /etc/anneal/agent.env 644
fi

if [ -n "$destdir" ]; then
  echo "staged under $destdir: service users not created, systemd not reloaded"
else
  for user in anneal anneal-rank; do
    if ! id -u "$user" >/dev/null 2>&1; then
      run useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
    fi
  done
  if [ -d /run/systemd/system ]; then run systemctl daemon-reload; fi
fi
cat <<NEXT
Next steps (docs/operations.md, "Bare metal with systemd"):
  coordinator host: edit /etc/anneal/coordinator.yaml (path_policy, bind), then
      systemctl enable --now anneal-coordinator
      install -m 600 /var/lib/anneal/coordinator/bootstrap-admin-config ~/.anneal/config
      anneal node join-token create --ttl 24h
  each node: copy /var/lib/anneal/coordinator/curve.pub to /etc/anneal/coordinator.pub, the join token to
      /etc/anneal/join-token (mode 600), set coordinator: in /etc/anneal/agent.yaml, then
      systemctl enable --now anneal-agent && anneal nodes
NEXT
