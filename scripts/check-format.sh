#!/usr/bin/env bash
# Checks that the tracked C++/CUDA sources are clang-format clean under the repository's .clang-format.
#
#   scripts/check-format.sh          list the files that differ (exit 1 if any)
#   scripts/check-format.sh --fix    reformat them in place (baseline files too, then empty the baseline)
#
# scripts/format-baseline.txt lists files written before the check existed and not yet reformatted; they are
# skipped (reformatting them all at once would rebuild the whole trainer and collide with open work). Every
# other file, and every new one, must be clean. Remove a file from the baseline by formatting it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v clang-format >/dev/null || { echo "check-format.sh: clang-format is missing (scripts/setup.sh installs it)" >&2; exit 1; }
BASELINE=scripts/format-baseline.txt
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  : > "$BASELINE"
  exit 0
fi
declare -A skip=()
if [ -f "$BASELINE" ]; then
  while IFS= read -r f; do [ -n "$f" ] && skip["$f"]=1; done < "$BASELINE"
fi
bad=()
checked=0
for f in "${files[@]}"; do
  [ -n "${skip[$f]:-}" ] && continue
  checked=$((checked + 1))
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  printf 'check-format.sh: %d file(s) are not clang-format clean (clang-format -i FILE):\n' "${#bad[@]}" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format.sh: $checked files clang-format clean (${#skip[@]} in the baseline not yet reformatted)"
