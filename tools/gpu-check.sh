#!/usr/bin/env bash
# The one command for a machine with a GPU and a Python torch built with CUDA: builds uel against
# that torch's LibTorch, runs `ctest -L "gpu|mpi|unit"`, trains a short Fashion-MNIST ISIF run on
# the GPU with NCCL (world size 1: NCCL takes one rank per GPU) and one with 2 MPI ranks sharing
# it, runs `bench comm` and `bench step` on the GPU, and prints one summary.
#
# Dependencies: what is missing is installed with apt-get where that works (root or sudo and a
# reachable archive); otherwise put the Debian 12 .deb files `tools/gpu-debs.sh` downloads in
# $UEL_DEBS (default .debs/) and they are unpacked into build-gpu/prefix (never into /).
# usage: bash tools/gpu-check.sh        env: PYTHON (default python3), UEL_DEBS, JOBS
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build-gpu
prefix=$build/prefix
python=${PYTHON:-python3}
jobs=${JOBS:-$(nproc)}
mkdir -p "$build"
summary=()
note() { summary+=("$*"); echo "gpu-check: $*"; }
die() { note "FAILED: $*"; printf '%s\n' "--- summary ---" "${summary[@]}"; exit 1; }

# --- the GPU and its torch --------------------------------------------------------------------
torch_info=$("$python" -c 'import torch
print(torch.utils.cmake_prefix_path)
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")') ||
  die "$python has no torch; set PYTHON to a Python whose torch is built with CUDA"
torch_cmake=$(sed -n 1p <<<"$torch_info")
read -r torch_version torch_cuda cuda_ok gpus <<<"$(sed -n 2p <<<"$torch_info")"
gpu_name=$(sed -n 3p <<<"$torch_info")
[[ $cuda_ok == True ]] || die "torch $torch_version sees no usable GPU (CUDA $torch_cuda)"
note "device: $gpus x $gpu_name, torch $torch_version (CUDA $torch_cuda)"

# --- dependencies -------------------------------------------------------------------------------
need=(libopenmpi-dev openmpi-bin libhdf5-dev libboost-program-options-dev libfmt-dev libgtest-dev
  libgmock-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev dataset-fashion-mnist python3-h5py
  python3-numpy)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
if ((${#missing[@]})) && command -v apt-get >/dev/null &&
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 &&
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
  missing=()
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fmnist=/usr/share/datasets/fashion-mnist
cmake_prefix="$torch_cmake"
if ((${#missing[@]})); then
  debs=${UEL_DEBS:-$root/.debs}
  compgen -G "$debs/*.deb" >/dev/null ||
    die "missing ${missing[*]}, apt-get cannot install them and $debs has no .deb files (tools/gpu-debs.sh)"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$prefix"; done
  # A relocated OpenMPI finds its helpers and components through OPAL_PREFIX.
  export OPAL_PREFIX=$prefix/usr PATH=$prefix/usr/bin:$PATH
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:$prefix/usr/lib/x86_64-linux-gnu/openmpi/lib:${LD_LIBRARY_PATH:-}
  export PYTHONPATH=$prefix/usr/lib/python3/dist-packages:${PYTHONPATH:-}
  cmake_prefix="$torch_cmake;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake;$prefix/usr/lib/x86_64-linux-gnu/openmpi"
  fmnist=$prefix$fmnist
  note "unpacked $(ls "$debs"/*.deb | wc -l) .deb files into $prefix (missing: ${missing[*]})"
fi

# --- build ----------------------------------------------------------------------------------------
cuda_root=${CUDA_HOME:-/usr/local/cuda}
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$cmake_prefix" \
  -DCUDAToolkit_ROOT="$cuda_root" -DUEL_USE_CUDA=ON -DUEL_USE_NCCL=ON >"$build/configure.log" 2>&1 ||
  { tail -20 "$build/configure.log"; die "configure (log: $build/configure.log)"; }
grep -q "CUDA ON), CUDA code ON, NCCL backend ON" "$build/configure.log" ||
  die "LibTorch without CUDA or no NCCL: $(grep 'uel: LibTorch' "$build/configure.log")"
cmake --build "$build" -j"$jobs" >"$build/build.log" 2>&1 ||
  { grep -m5 -B2 -A5 "error" "$build/build.log"; die "build (log: $build/build.log)"; }
note "build: $(($(date +%s) - start)) s, $(grep 'uel: LibTorch' "$build/configure.log" | sed 's/.*uel: //')"
uel=$build/src/cli/uel

# --- tests ----------------------------------------------------------------------------------------
(cd "$build" && ctest -L "gpu|mpi|unit" -j"$jobs" --output-on-failure >"$build/ctest.log" 2>&1)
tests_rc=$?
note "ctest -L \"gpu|mpi|unit\": $(grep -E 'tests passed|tests failed' "$build/ctest.log" | tail -1)"
note "  gpu entries: $(grep -E 'test_comm_gpu' "$build/ctest.log" | sed -E 's/ +/ /g' | tr '\n' ';')"

# --- a short training on the GPU ------------------------------------------------------------------
data=$build/fmnist
"$uel" prepare fashion-mnist --src "$fmnist" --out "$data" >/dev/null || die "preparing Fashion-MNIST from $fmnist"
train_args=(--config configs/fmnist-isif.ini --data.train="$data/train.h5" --data.test="$data/test.h5"
  --train.device=cuda --train.epochs=1 --train.log_every=20 --eval.every=1)
first_last() { "$python" -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
loss = [r["loss"] for r in rows if "loss" in r]
knn = [r["knn_top1"] for r in rows if "knn_top1" in r]
ips = [r["img_per_s"] for r in rows if "img_per_s" in r][1:] or [0]
print(f"loss {loss[0]:.4f} -> {loss[-1]:.4f}, kNN top-1 {knn[-1]:.2f}%, {sorted(ips)[len(ips)//2]:.0f} img/s (median)")' "$1"; }
rm -rf "$build/run-nccl" "$build/run-mpi"
if mpirun -np 1 "$uel" train "${train_args[@]}" --comm.backend=nccl --comm.check_order=true \
  --out "$build/run-nccl" >"$build/train-nccl.log" 2>&1; then
  note "train ISIF, 1 epoch, NCCL, 1 rank, check_order on: $(first_last "$build/run-nccl/metrics.jsonl")"
else
  tail -5 "$build/train-nccl.log"; note "FAILED: train with NCCL (log: $build/train-nccl.log)"; tests_rc=1
fi
if mpirun -np 2 "$uel" train "${train_args[@]}" --comm.backend=mpi --out "$build/run-mpi" \
  >"$build/train-mpi.log" 2>&1; then
  note "train ISIF, 1 epoch, MPI, 2 ranks sharing the GPU: $(first_last "$build/run-mpi/metrics.jsonl")"
else
  tail -5 "$build/train-mpi.log"; note "FAILED: train with MPI on the GPU (log: $build/train-mpi.log)"; tests_rc=1
fi

# --- benchmarks -----------------------------------------------------------------------------------
if mpirun -np 1 "$uel" bench comm --bench.device=cuda --comm.backend=nccl >"$build/bench-comm.log" 2>&1; then
  note "bench comm (NCCL, 1 rank): $(grep -E '^all_reduce' "$build/bench-comm.log" | tail -1 | sed -E 's/ +/ /g')"
else
  note "FAILED: bench comm (log: $build/bench-comm.log)"; tests_rc=1
fi
for recipe in configs/fmnist-isif.ini configs/cifar10-isif.ini; do
  if mpirun -np 1 "$uel" bench step --config "$recipe" --data.train="$data/train.h5" --data.test="" --eval.every=0 \
    --train.device=cuda >"$build/bench-step.log" 2>&1; then
    note "bench step $(basename "$recipe" .ini) on the GPU: $(grep -iE 'img/s' "$build/bench-step.log" | tail -1)"
  else
    note "bench step $(basename "$recipe" .ini): failed (log: $build/bench-step.log)"; tests_rc=1
  fi
done

printf '%s\n' "--- summary ---" "${summary[@]}"
exit $tests_rc
