#!/usr/bin/env bash
# bundle-libs.sh PREFIX [--torch SITE_PACKAGES] [--link]
#
# Makes PREFIX (an install.sh --prefix tree) self-contained for another distribution's base image (the trainer
# image runs on NVIDIA's CUDA runtime image, Ubuntu, while the binaries are built on Debian 12):
# - every shared library the ELF files in PREFIX/bin need, other than glibc, libgcc and libstdc++ (the base
#   image's are as new or newer) and LibTorch/CUDA (below), is copied to PREFIX/lib;
# - with --torch: the torch wheel's torch/lib and nvidia/ (cuDNN, cuBLAS, NCCL, ... that LibTorch was built
#   with) are copied to PREFIX/python/, keeping their layout (their RUNPATH is $ORIGIN/../../nvidia/...);
#   --link hard-links (or, across filesystems, symlinks) instead of copying (tests);
# - PREFIX/etc/ld.so.conf.d/anneal.conf lists the library directories: the image copies it to
#   /etc/ld.so.conf.d/ and runs ldconfig; the host test puts them on LD_LIBRARY_PATH.
# libcudart and the driver libraries come from the CUDA base image and the host's driver (NVIDIA container toolkit).
set -euo pipefail
prefix="${1:?usage: bundle-libs.sh PREFIX [--torch SITE_PACKAGES] [--link]}"
shift
site=""
link=0
while (($#)); do
  case "$1" in
    --torch) site="${2:?--torch needs the site-packages directory}"; shift 2 ;;
    --link) link=1; shift ;;
    *) echo "bundle-libs.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -d "$prefix/bin" ] || { echo "bundle-libs.sh: $prefix/bin does not exist (run install.sh first)" >&2; exit 2; }
mkdir -p "$prefix/lib" "$prefix/etc/ld.so.conf.d"
conf="$prefix/etc/ld.so.conf.d/anneal.conf"
# The install location inside the image: PREFIX with a staging root (install.sh --destdir) removed.
final="${BUNDLE_FINAL_PREFIX:-$prefix}"
echo "$final/lib" > "$conf"

copy_tree() {  # copy_tree SRC DEST
  mkdir -p "$(dirname "$2")"
  if ((link)); then cp -al "$1" "$2" 2>/dev/null || cp -as "$(readlink -f "$1")" "$2"; else cp -a "$1" "$2"; fi
}
if [ -n "$site" ]; then
  [ -f "$site/torch/lib/libtorch.so" ] || { echo "bundle-libs.sh: no torch/lib/libtorch.so in $site" >&2; exit 2; }
  copy_tree "$site/torch/lib" "$prefix/python/torch/lib"
  [ -d "$site/nvidia" ] && copy_tree "$site/nvidia" "$prefix/python/nvidia"
  echo "$final/python/torch/lib" >> "$conf"
  for d in "$prefix"/python/nvidia/*/lib; do [ -d "$d" ] && echo "$final${d#"$prefix"}" >> "$conf"; done
fi

base='^(libc|libm|libdl|librt|libpthread|libutil|libresolv|ld-linux-x86-64|libgcc_s|libstdc\+\+)\.so'
torch='^(libtorch|libc10|libcudart|libcuda|libnvidia|libgomp|libcu|libnccl|libnv)'
for elf in "$prefix"/bin/*; do
  [ "$(head -c 4 "$elf")" = $'\x7fELF' ] || continue  # scripts (anneal-wait-tcp lives in lib/anneal anyway)
  ldd "$elf" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    [[ "$name" =~ $base || "$name" =~ $torch ]] && continue
    [ -e "$prefix/lib/$name" ] || cp -L "$path" "$prefix/lib/$name"
  done
done
echo "bundled $(ls "$prefix/lib" | wc -l) libraries into $prefix/lib; library path in $conf"
