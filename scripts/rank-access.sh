#!/usr/bin/env bash
# Ranks run unprivileged: an agent started as root runs them as `nobody` (docs/agent.md, "Ranks run
# unprivileged"), so the trainer binary, LibTorch in .venv and the demo's files must be reachable by that user.
# When run as root, this adds only the search (execute) bit for others to each directory on the way to the given
# paths that lacks it (e.g. a checkout under /root, 0700), and says which it changed. Nothing is made readable
# or writable that was not; non-root users need nothing (their ranks run as themselves).
#
#   scripts/rank-access.sh PATH...
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
for target in "$@"; do
  dir="$(cd "$target" && pwd)"
  while [ "$dir" != "/" ]; do
    if [ "$(( $(stat -c '%a' "$dir" | sed 's/^\(.*\)\(.\)$/\2/') & 1 ))" = 0 ]; then
      chmod o+x "$dir"
      echo "rank-access.sh: ranks run as an unprivileged user: added o+x (search only) to $dir"
    fi
    dir="$(dirname "$dir")"
  done
done
