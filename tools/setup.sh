#!/usr/bin/env bash
# Installs everything uel needs on Debian 12: idempotent, as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake git pkg-config clang-format
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libboost-program-options-dev libfmt-dev libgtest-dev libgmock-dev
  zlib1g-dev libpng-dev libjpeg62-turbo-dev
  dataset-fashion-mnist
  python3 python3-h5py python3-numpy
  python3-sklearn libfaiss-dev  # references: test_cluster.py, bench kmeans
  python3-matplotlib            # uel report and uel show (tools/uel_report.py, uel_show.py)
  python3-pil                   # e2e_train writes query PNGs
  slurm-wlm munge               # the slurm tests stand up a cluster on localhost
  strace                        # e2e_cli kills a run at a chosen system call
  iproute2                      # launch/loopback-only (ip) and launch_uel_run (ss)
  python3-torch                 # the PyTorch peer of bench step (tools/peer, gpu_check_dry)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
