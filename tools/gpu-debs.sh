#!/usr/bin/env bash
# Makes the bundle that travels with the working tree to a GPU machine that has CUDA, PyTorch,
# CMake and ninja but no package registry (tools/gpu-check.sh unpacks it there):
#   .gpu/debs/      the Debian 12 packages uel builds, links and runs with (OpenMPI, HDF5,
#                   Boost.Program_options, fmt, GTest, PNG, JPEG, zlib), the runtime packages
#                   their -dev links point to, and every package whose shared libraries their
#                   programs and libraries load, as ldd finds them here; libc, libstdc++ and
#                   libgcc are the machine's own (73 packages, 33 MiB)
#   .gpu/fmnist/    Fashion-MNIST's test split as uel's HDF5 (the check trains on it; 7.6 MiB)
# and fails where the bundle exceeds UEL_GPU_BUNDLE_MIB (default 48 MiB: the working tree that
# travels is capped at 64 MiB in all). Runs on Debian 12 with uel's dependencies installed
# (tools/setup.sh) and build/src/cli/uel built.
# usage: bash tools/gpu-debs.sh [--measure]   (--measure: list and size the packages from apt-cache,
#   no network; exit 77 without apt's package lists)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu
limit_mib=${UEL_GPU_BUNDLE_MIB:-48}
top=(libopenmpi-dev openmpi-bin openmpi-common libhdf5-dev libboost-program-options-dev
  libboost-program-options1.74-dev libboost1.74-dev libfmt-dev libgtest-dev libgmock-dev googletest
  libpng-dev libjpeg62-turbo-dev zlib1g-dev)
own='^(libc6|libstdc\+\+6|libgcc-s1)$'  # the GPU machine's own, and newer there

# The packages owning what the libraries and programs of `p` point to (a -dev's libfoo.so leads to
# the runtime package holding libfoo.so.N) and every library their ELF files load, as ldd finds
# them. Only shared objects and programs are looked at: libopenmpi-dev alone has 1,500 headers.
needs() {
  dpkg -L "$1" | grep -E '\.so(\.[0-9.]+)?$|/s?bin/|/libexec/' | while read -r f; do
    [[ -f $f ]] || continue  # follows links; folders and dangling links are skipped
    real=$(realpath -e "$f")
    echo "$real"
    if [[ $(head -c4 "$real" | tr -d '\0') == $'\x7fELF' ]]; then
      ldd "$real" 2>/dev/null | sed -nE 's/.*=> (\/[^ ]+) .*/\1/p' | xargs -r realpath -e
    fi
  done | sort -u | owners | grep -vE "$own" | grep -vxF "$1" || true
}

# The packages owning the paths on stdin. dpkg's database predates merged /usr: zlib1g owns
# /lib/x86_64-linux-gnu/libz.so.1, which realpath spells /usr/lib/..., so both are asked.
owners() {
  while read -r f; do
    echo "$f"
    [[ $f == /usr/* ]] && echo "${f#/usr}"
  done | xargs -r dpkg -S 2>/dev/null | sed -E 's/: \/.*//; s/, /\n/g' | sed 's/:.*//' | sort -u
}

# `packages` and everything they need, until nothing new appears.
closure() {
  declare -A seen=()
  local queue=("$@") p
  while ((${#queue[@]})); do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n ${seen[$p]:-} ]] && continue
    seen[$p]=1
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      { echo "gpu-debs: $p is not installed here: run tools/setup.sh first" >&2; exit 2; }
    while read -r dep; do
      [[ -n $dep && -z ${seen[$dep]:-} ]] && queue+=("$dep")
    done < <(needs "$p")
  done
  printf '%s\n' "${!seen[@]}" | sort
}

pkgs=$(closure "${top[@]}")
bytes=0
for p in $pkgs; do
  size=$(apt-cache show --no-all-versions "$p" 2>/dev/null | sed -n 's/^Size: //p' | head -1)
  if [[ -z $size ]]; then  # apt's package lists are absent (an image that deleted them)
    echo "gpu-debs: apt-cache knows no size of $p: run apt-get update" >&2
    [[ ${1:-} == --measure ]] && exit 77  # ctest: skipped, not failed
    exit 1
  fi
  bytes=$((bytes + size))
done
fmnist_bytes=7950976  # .gpu/fmnist/test.h5 as uel prepare writes it
mib=$(((bytes + fmnist_bytes + 1048575) / 1048576))
echo "gpu-debs: $(wc -w <<<"$pkgs") packages, $(((bytes + 1048575) / 1048576)) MiB of .deb files;" \
  "with Fashion-MNIST $mib MiB of the $limit_mib MiB budget"
if [[ ${1:-} == --measure ]]; then
  echo $pkgs
else
  rm -rf "$out/debs"
  mkdir -p "$out/debs" "$out/fmnist"
  (cd "$out/debs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download $pkgs >/dev/null)
  if [[ ! -f $out/fmnist/test.h5 ]]; then  # the test split only: train.h5 alone is 47 MB
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    build/src/cli/uel prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp" >/dev/null
    mv "$tmp/test.h5" "$out/fmnist/test.h5"
  fi
  mib=$(du -sm "$out" | cut -f1)
  echo "gpu-debs: $out holds $mib MiB"
fi
((mib <= limit_mib)) || { echo "gpu-debs: over the $limit_mib MiB budget" >&2; exit 1; }
