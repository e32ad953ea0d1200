#!/usr/bin/env bash
# Downloads (on a Debian 12 machine with the archive) the .deb files tools/gpu-check.sh unpacks
# on a GPU machine where apt-get cannot install: uel's build and test dependencies and the
# libraries they need beyond a CUDA + Python image (libc and the compiler are not included).
# usage: bash tools/gpu-debs.sh [DIR]   (default .debs/, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.debs}
mkdir -p "$dir"
top=(libopenmpi-dev openmpi-bin libhdf5-dev libboost-program-options-dev libfmt-dev libgtest-dev
  libgmock-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev dataset-fashion-mnist python3-h5py
  python3-numpy)
skip='^(libc6|libc-dev-bin|libc6-dev|libgcc-s1|libstdc\+\+6|gcc.*|g\+\+.*|cpp.*|python3|python3\.11.*|libpython3.*|perl.*|debconf.*|dpkg|tar|.*:i386)$'
apt-get update -qq
pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${top[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -vE "$skip")
(cd "$dir" && apt-get download $pkgs >/dev/null)
echo "gpu-debs: $(ls "$dir"/*.deb | wc -l) packages, $(du -sh "$dir" | cut -f1) in $dir"
