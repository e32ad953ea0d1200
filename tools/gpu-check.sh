#!/usr/bin/env bash
# The one command for a machine with a GPU and a Python torch built with CUDA. It answers in
# order of importance and appends one line per stage to $OUT/summary.txt as soon as the stage
# ends, so a run cut short still returns what it learned (the tails of failed stages' logs go to
# $OUT/details.txt):
#   device  the GPU, driver, torch and cores
#   deps    OpenMPI, HDF5, Boost.Program_options, fmt, GTest, PNG, JPEG, zlib: the machine's own,
#           else the .deb files of .gpu/debs (tools/gpu-debs.sh) unpacked into build-gpu/prefix
#           (never into /), else apt-get
#   build   the `uel` target only, against the Python torch's LibTorch, ninja on every core
#   a       1 rank, NCCL, float64, 200 ISIF steps on Fashion-MNIST's test split: every step's loss
#           against the CPU's (tools/gpu-check/fmnist-isif-float64.tsv), PASS at 1e-9 relative
#   b       the same in float32: img/s and loss first -> last (uel has no bf16: float32|float64)
#   c       2 MPI ranks sharing the GPU (NCCL takes one rank per device) against a's 1 rank
#   d       `bench step` of configs/fmnist-isif.ini and of the CIFAR-10 ResNet-18 recipe on
#           CIFAR-shaped random images, beside the same step in plain PyTorch (tools/peer/step.py,
#           eager and torch.compile)
#   tests   the test binaries, then `ctest -L "gpu|mpi" -LE e2e` (the e2e scripts train on CPU)
# A stage that fails is recorded and the next one runs; the exit status is 1 if any failed.
#
# Time budget, 16 cores and one H200. Measured here (2-core AMD EPYC VM, gcc 12, Debian's LibTorch
# 1.13, ninja -j1 in a separate build folder against this bundle): the uel target is 65 objects,
# 538 s of compiling in all, the longest 22 s (train/trainer.cpp), its link 2 s; the tests add 36
# objects (412 s, the longest 28 s: unit/test_train.cpp) and 29 links (49 s). LibTorch 2.11's
# headers are heavier: counted 1.5 x. The rest are estimates until a GPU run replaces them.
#   machine start, 42 MiB transfer (outside the script)       120 s
#   device, deps (dpkg -x of 73 .deb files: 8 s here)          20 s   limit  60 s (apt-get 120 s)
#   configure (torch's CMake package finds CUDA)               40 s   limit 120 s
#   build uel: 538 s x 1.5 / 16 cores, >= the longest file     60 s   limit 420 s
#   a: 200 float64 steps, CUDA and NCCL start-up               40 s   limit 120 s
#   b: 200 float32 steps                                       25 s   limit  90 s
#   c: 2 ranks x 200 float64 steps, staged through the host    60 s   limit 120 s
#   d: bench step 2 x 15 s, peer 2 x (eager 10 s, compile 50 s) 150 s  limits 60, 90, 60, 150 s
#   tests: build 461 s x 1.5 / 16 (>= 43 s for test_train)     60 s   limit 300 s
#   tests: ctest gpu|mpi (900 processor-s on 2 cores here)     90 s   limit 300 s
#   total                                                     665 s = 11.1 min (545 s in the script)
# One device call runs at most 600 s: the script starts no stage after UEL_GPU_CHECK_DEADLINE_S
# (default 570 s) and says which it did not start; a second call at once (the warm machine keeps
# build-gpu/) runs them, e.g. UEL_GPU_CHECK_STAGES=deps,tests.
#
# With the device tool (the bundle is ignored by git, so it travels only when carried):
#   here, once:  bash tools/gpu-debs.sh     (writes .gpu/: the .deb files and Fashion-MNIST)
#   run(command="OUT=$OUT bash tools/gpu-check.sh", carry=[".gpu"], timeout_s=600)
#   run(command="OUT=$OUT UEL_GPU_CHECK_STAGES=deps,tests bash tools/gpu-check.sh",
#       carry=[".gpu"], timeout_s=600)     only where the first says the tests did not start
# $OUT is the tool's folder that comes back (summary.txt, details.txt); elsewhere OUT defaults
# to build-gpu/out.
#
# UEL_GPU_CHECK_DRY=1: the whole script on this CPU machine, as CI runs it (tests/CMakeLists.txt,
# gpu_check_dry): uses build/src/cli/uel (UEL_BIN) instead of configuring and building,
# --train.device=cpu, the MPI backend for NCCL, a few steps each, and says "skipped (dry run)"
# where a stage needs CUDA. On the reference's CPU the float64 losses must equal it digit for
# digit (elsewhere to 1e-9: other BLAS kernels sum in another order).
#
# usage: bash tools/gpu-check.sh             the check
#        bash tools/gpu-check.sh --reference  rewrites the CPU reference (build/'s uel, 2 min)
# env:   OUT, PYTHON (default python3), JOBS, UEL_GPU_WORK (default build-gpu), UEL_BIN,
#        UEL_GPU_CHECK_DRY, UEL_GPU_CHECK_STAGES, UEL_GPU_CHECK_DEADLINE_S
set -uo pipefail  # no -e: a failed stage is recorded and the next one runs
cd "$(dirname "$0")/.." || exit 1
root=$PWD
dry=${UEL_GPU_CHECK_DRY:-0}
work=${UEL_GPU_WORK:-$root/build-gpu}
out=${OUT:-$work/out}
python=${PYTHON:-python3}
jobs=${JOBS:-$(nproc)}
stages=,${UEL_GPU_CHECK_STAGES:-deps,build,a,b,c,d,tests},
deadline=${UEL_GPU_CHECK_DEADLINE_S:-570}
reference=$root/tools/gpu-check/fmnist-isif-float64.tsv
logs=$work/logs
mkdir -p "$logs" "$out" "$work/runs"
summary=$out/summary.txt
: >"$summary"
: >"$out/details.txt"
failed=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Shared memory between the ranks of one machine; UCX would probe for networks there are none of.
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1

say() { echo "$*" >>"$summary"; echo "gpu-check: $*"; }
fail() { failed=1; say "$1: FAIL ${*:2}"; }
want() { [[ $stages == *",$1,"* ]]; }
# may_start STAGE: wanted and time left; one that is out of time is recorded as not started.
may_start() {
  want "$1" || return 1
  ((deadline - SECONDS >= 10)) && return 0
  failed=1
  say "$1: NOT STARTED: out of time at $SECONDS s; a second call runs it: UEL_GPU_CHECK_STAGES=deps,$1"
  return 1
}

# run NAME LIMIT CMD...: CMD under the smaller of LIMIT and the time left, output in
# $logs/NAME.log, the log's tail in details.txt when it fails; sets `took` (seconds).
took=0
run() {
  local name=$1 limit=$2 rc left
  shift 2
  left=$((deadline - SECONDS))
  ((limit > left)) && limit=$left
  took=0
  if ((limit < 10)); then
    echo "not started: $((deadline - SECONDS)) s left of UEL_GPU_CHECK_DEADLINE_S=$deadline" >"$logs/$name.log"
    return 125
  fi
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  took=$((SECONDS - start))
  if ((rc != 0)); then
    {
      echo "=== $name: exit $rc$( ((rc == 124)) && echo ", stopped after its ${limit} s")"
      echo "command: $*"
      tail -40 "$logs/$name.log"
    } >>"$out/details.txt"
  fi
  return $rc
}
# why STATUS LOG: why a run did not pass, in words.
why() {
  local stage=$2
  case $2 in
    configure) stage=build ;;
    bench-* | peer-*) stage=d ;;
    tests-*) stage=tests ;;
  esac
  case $1 in
    124) echo "timed out after $took s (log: $logs/$2.log)" ;;
    125) echo "not started: out of time; a second call runs it: UEL_GPU_CHECK_STAGES=deps,$stage" ;;
    *) echo "exit $1 (log: $logs/$2.log)" ;;
  esac
}

have() {  # any of the paths exists
  local f
  for f; do [[ -e $f ]] && return 0; done
  return 1
}
# The CPU's model and vector extensions: float64 losses on CPU agree digit for digit only where
# the BLAS and convolution kernels take the same paths.
cpu_id() {
  echo "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1);" \
    "$(grep -m1 '^flags' /proc/cpuinfo | grep -owE 'avx512f|avx2|fma' | sort -u | xargs)"
}
py=python3  # the summaries need only the standard library
command -v "$py" >/dev/null || py=/usr/bin/python3
data=$root/.gpu/fmnist/test.h5

# The recipe at its batch (256 instances, 512 images), every step logged, no evaluation; with
# SyncBN (stage c compares 2 ranks with 1) and the lr, schedule and augmentation (no erasing) the
# committed reference was written with (the recipe's own are tuned for quality, not this check).
base=()
set_base() {
  base=(--config configs/fmnist-isif.ini --data.train="$data" --data.test="$data"
    --model.sync_bn=true --train.lr=0.03 --train.epochs=20 --aug.erase_p=0
    --train.max_steps="$1" --train.log_every=1 --eval.every=0 --train.threads="$threads")
}

# --- --reference: the CPU losses stage a compares against ---------------------------------------
if [[ ${1:-} == --reference ]]; then
  uel=${UEL_BIN:-$root/build/src/cli/uel}
  [[ -f $data ]] || { echo "gpu-check: $data is missing: run tools/gpu-debs.sh first" >&2; exit 1; }
  threads=1
  set_base 200
  args=("${base[@]}" --train.precision=float64 --train.device=cpu --comm.backend=mpi)
  rm -rf "$work/runs/reference"
  mpirun -np 1 --bind-to none "$uel" train "${args[@]}" --out "$work/runs/reference" \
    >"$logs/reference.log" 2>&1 || { tail -5 "$logs/reference.log"; exit 1; }
  {
    echo "# uel train's loss per step on CPU, float64, 1 rank: bash tools/gpu-check.sh --reference"
    echo "# args: ${args[*]//$root\//}"
    echo "# cpu: $(cpu_id)"
    "$py" -c 'import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(row["step"], repr(row["loss"]), sep="\t")' "$work/runs/reference/metrics.jsonl"
  } >"$reference.tmp" && mv "$reference.tmp" "$reference"
  echo "gpu-check: wrote $reference ($(grep -vc '^#' "$reference") steps)"
  exit 0
fi

steps=200 threads=0 device=cuda nccl=nccl bar=1e-9
if [[ $dry == 1 ]]; then
  # Few steps on 1 thread; on the reference's CPU the float64 losses must match to the digit.
  steps=10 threads=1 device=cpu nccl=mpi bar=1e-9
  [[ $(sed -n 's/^# cpu: //p' "$reference") == "$(cpu_id)" ]] && bar=0
fi

# --- device --------------------------------------------------------------------------------------
if [[ $dry == 1 ]]; then
  say "device: dry run on CPU, $(nproc) cores ($(cpu_id)); what needs CUDA is skipped"
else
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  torch_info=$("$python" -c 'import torch
print(torch.__version__, "CUDA", torch.version.cuda, "available" if torch.cuda.is_available() else "NOT AVAILABLE")' 2>&1 | tail -1)
  say "device: ${gpu:-nvidia-smi sees no GPU}; torch $torch_info; $(nproc) cores"
  [[ $torch_info == *" available" ]] ||
    fail device "torch sees no usable GPU: set PYTHON to a Python whose torch is built with CUDA"
fi

# --- deps ----------------------------------------------------------------------------------------
# What the build and the runs use, by a file or program each; the packages' names differ
# between Debian and Ubuntu, their files do not.
missing_deps() {
  local m=()
  command -v mpirun >/dev/null && command -v mpicc >/dev/null || m+=(OpenMPI)
  have /usr/include/hdf5.h /usr/include/hdf5/serial/hdf5.h || m+=(HDF5)
  have /usr/include/boost/program_options.hpp || m+=(Boost.Program_options)
  have /usr/include/fmt/core.h || m+=(fmt)
  have /usr/include/gtest/gtest.h || m+=(GTest)
  have /usr/include/png.h || m+=(PNG)
  have /usr/include/jpeglib.h /usr/include/x86_64-linux-gnu/jpeglib.h || m+=(JPEG)
  have /usr/include/zlib.h || m+=(zlib)
  echo "${m[*]}"
}
prefix=$work/prefix
cmake_prefix=()
# .gpu/debs unpacked into $prefix, and the environment that finds it there.
use_bundle() {
  local debs=$root/.gpu/debs lib=$prefix/usr/lib/x86_64-linux-gnu deb so
  if [[ ! -f $prefix/.unpacked || $debs -nt $prefix/.unpacked ]]; then
    rm -rf "$prefix"
    mkdir -p "$prefix/ld"
    for deb in "$debs"/*.deb; do
      if command -v dpkg >/dev/null; then
        dpkg -x "$deb" "$prefix" || return 1
      else  # a .deb is an ar archive; Debian 12 compresses its files with xz
        ar p "$deb" data.tar.xz | tar -xJ -C "$prefix" || return 1
      fi
    done
    # dpkg -x merges no /usr: Debian 12 still ships libz, libnl and others in /lib, and some
    # links are absolute (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13). Merge, and point
    # such links into the prefix.
    for d in lib lib64 bin sbin; do
      [[ -d $prefix/$d ]] && { cp -a "$prefix/$d/." "$prefix/usr/$d/" && rm -rf "${prefix:?}/$d" || return 1; }
    done
    local link target
    while read -r link; do
      target=$(readlink "$link")
      target=/usr${target#/usr}
      [[ -e $prefix$target ]] && ln -sfn "$prefix$target" "$link"
    done < <(find "$prefix/usr" -type l -lname '/*')
    # dpkg -x runs no maintainer script: make the links update-alternatives would have made.
    local b=$prefix/usr/bin
    ln -sf mpirun.openmpi "$b/mpirun"
    ln -sf mpiexec.openmpi "$b/mpiexec"
    ln -sf mpicc.openmpi "$b/mpicc"
    ln -sf mpic++.openmpi "$b/mpicxx"
    ln -sf mpic++.openmpi "$b/mpic++"
    mkdir -p "$prefix/usr/include/x86_64-linux-gnu"
    ln -sfn ../../lib/x86_64-linux-gnu/openmpi/include "$prefix/usr/include/x86_64-linux-gnu/mpi"
    ln -sf openmpi/lib/libmpi.so "$lib/libmpi.so"
    ln -sf openmpi/lib/libmpi_cxx.so "$lib/libmpi++.so"
    # The loader's path gets only the libraries this machine lacks: a Debian libz or libssl in
    # front of the machine's own could break its Python, CMake or compiler.
    local known
    known=$(ldconfig -p 2>/dev/null | awk 'NR > 1 {print $1}' | sort -u)
    for so in "$lib"/lib*.so.*; do
      grep -qxF "$(basename "$so")" <<<"$known" || ln -sf "$so" "$prefix/ld/"
    done
    touch "$prefix/.unpacked"
  fi
  # A relocated OpenMPI finds its helpers, components and wrapper data through OPAL_PREFIX.
  export OPAL_PREFIX=$prefix/usr PATH=$prefix/usr/bin:$PATH
  export LD_LIBRARY_PATH=$prefix/ld:$lib/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # The compiler looks in its own multiarch folder only: jpeglib.h includes jconfig.h from there.
  local multiarch=$prefix/usr/include/x86_64-linux-gnu
  export C_INCLUDE_PATH=$multiarch${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
  export CPLUS_INCLUDE_PATH=$multiarch${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}
  cmake_prefix=("$prefix/usr")
}
if want deps; then
  missing=$(missing_deps)
  start=$SECONDS
  if [[ -z $missing ]]; then
    say "deps: the machine has them"
  elif compgen -G "$root/.gpu/debs/*.deb" >/dev/null; then
    # Before apt-get: the bundle is what uel was tested with, and a machine without a package
    # registry would spend minutes on apt-get's time-outs.
    if use_bundle >"$logs/deps.log" 2>&1; then
      say "deps: $(ls "$root"/.gpu/debs/*.deb | wc -l) .deb files of .gpu/debs unpacked into" \
        "$prefix, $(ls "$prefix/ld" | wc -l) libraries the machine lacks on the loader's path" \
        "(missing: $missing; $((SECONDS - start)) s)"
    else
      tail -20 "$logs/deps.log" >>"$out/details.txt"
      fail deps "unpacking .gpu/debs into $prefix (log: $logs/deps.log)"
    fi
  elif run deps 120 bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libopenmpi-dev openmpi-bin libhdf5-dev libboost-program-options-dev libfmt-dev libgtest-dev \
      libgmock-dev libpng-dev libjpeg-dev zlib1g-dev' && [[ -z $(missing_deps) ]]; then
    say "deps: installed with apt-get (missing: $missing; $took s)"
  else
    fail deps "missing $missing: no .gpu/debs (run tools/gpu-debs.sh where the archive is and carry .gpu) and apt-get failed"
  fi
elif [[ -f $prefix/.unpacked ]]; then
  use_bundle  # an earlier call's prefix
fi

# --- build ---------------------------------------------------------------------------------------
uel=$work/src/cli/uel
cuda=${CUDA_HOME:-/usr/local/cuda}
export PATH=$PATH:$cuda/bin  # nvcc, for torch's CMake package, also when ninja reconfigures
if [[ $dry == 1 ]]; then
  uel=${UEL_BIN:-$root/build/src/cli/uel}
  want build && say "build: skipped (dry run): uses $uel"
elif may_start build; then
  torch_cmake=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  prefixes=$(IFS=';'; echo "$torch_cmake${cmake_prefix[*]:+;${cmake_prefix[*]}}")
  # TORCH_CUDA_ARCH_LIST: torch's CMake package would otherwise compile and run a probe. NCCL
  # AUTO (CMake also looks in the nvidia-nccl wheel beside torch): a build without it still
  # answers b, c and d; the line below says it is missing.
  if TORCH_CUDA_ARCH_LIST=9.0 run configure 120 cmake -S . -B "$work" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefixes" -DCUDAToolkit_ROOT="$cuda" -DUEL_USE_CUDA=ON -DUEL_USE_NCCL=AUTO; then
    configure_s=$took
    found=$(grep -o 'uel: LibTorch.*' "$logs/configure.log" | head -1)
    [[ $found == *"(CUDA ON), CUDA code ON, NCCL backend ON"* ]] ||
      fail configure "not the GPU build: ${found:-no 'uel: LibTorch' line} (log: $logs/configure.log)"
    if run build 420 ninja -C "$work" -j"$jobs" uel; then
      steps_built=$(grep -c '^\[' "$logs/build.log")
      say "build: uel in $took s on $jobs cores ($steps_built ninja steps) after a $configure_s s" \
        "configure; ${found#uel: }"
    else
      fail build "$(why $? build); first error: $(grep -m1 -E 'error:|undefined reference' "$logs/build.log")"
    fi
  else
    fail build "configure: $(why $? configure); $(grep -m1 -E 'CMake Error|Could NOT find' "$logs/configure.log")"
  fi
fi

# --- the data ------------------------------------------------------------------------------------
if [[ ! -f $data && -x $uel && -d /usr/share/datasets/fashion-mnist ]]; then
  data=$work/fmnist/test.h5
  [[ -f $data ]] || "$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist \
    --out "$work/fmnist" >"$logs/prepare.log" 2>&1
fi
[[ -f $data ]] || say "data: no Fashion-MNIST: run tools/gpu-debs.sh and carry .gpu"
[[ -x $uel ]] || say "uel: $uel was not built; the stages below fail"
set_base "$steps"
mpi1=(mpirun -np 1 --bind-to none)  # unbound: LibTorch's threads use every core
mpi2=(mpirun -np 2 --bind-to none)
runs=$work/runs

# --- a: float64 losses against the CPU's -----------------------------------------------------------
if may_start a; then
  rm -rf "$runs/a"
  run a 120 "${mpi1[@]}" "$uel" train "${base[@]}" --train.precision=float64 --train.device="$device" \
    --comm.backend="$nccl" --out "$runs/a"
  rc=$?
  figures=$("$py" tools/gpu-check/losses.py compare "$runs/a/metrics.jsonl" "$reference" --bar $bar)
  verdict=$?
  line="1 rank, $nccl, float64, $steps steps on $device vs the CPU reference: $figures"
  if [[ $dry == 1 ]]; then  # the comparison must also be able to fail: one loss off by 1e-8
    awk -F'\t' -v OFS='\t' '!/^#/ && $1 == 2 {$2 = sprintf("%.17g", $2 * (1 + 1e-8))} 1' "$reference" >"$runs/off.tsv"
    "$py" tools/gpu-check/losses.py compare "$runs/a/metrics.jsonl" "$runs/off.tsv" --bar $bar >/dev/null
    if (($? == 1)); then
      line+="; a loss off by 1e-8 fails it"
    else
      line+="; a loss off by 1e-8 PASSES it"
      verdict=1
    fi
  fi
  if ((rc == 0 && verdict == 0)); then say "a: $line ($took s)"; else fail a "$line; run: $(why $rc a)"; fi
fi

# --- b: float32 speed ----------------------------------------------------------------------------
if may_start b; then
  rm -rf "$runs/b"
  run b 90 "${mpi1[@]}" "$uel" train "${base[@]}" --train.precision=float32 --train.device="$device" \
    --comm.backend="$nccl" --out "$runs/b"
  rc=$?
  figures=$("$py" tools/gpu-check/losses.py stats "$runs/b/metrics.jsonl")
  line="1 rank, $nccl, float32, $steps steps on $device: $figures; bf16: uel has none"
  line+=" (train.precision is float32|float64)"
  if ((rc == 0)); then say "b: $line ($took s)"; else fail b "$line; run: $(why $rc b)"; fi
fi

# --- c: 2 ranks sharing the device against 1 -----------------------------------------------------
if may_start c; then
  rm -rf "$runs/c"
  run c 120 "${mpi2[@]}" "$uel" train "${base[@]}" --train.precision=float64 --train.device="$device" \
    --comm.backend=mpi --out "$runs/c"
  rc=$?
  against=$runs/a/metrics.jsonl what="a's 1 rank"
  [[ -s $against ]] || against=$reference what="the CPU reference (a logged nothing)"
  figures=$("$py" tools/gpu-check/losses.py compare "$runs/c/metrics.jsonl" "$against" --bar 1e-9)
  verdict=$?
  line="2 ranks sharing $device, mpi, float64, $steps steps vs $what: $figures"
  if ((rc == 0 && verdict == 0)); then say "c: $line ($took s)"; else fail c "$line; run: $(why $rc c)"; fi
fi

# --- d: bench step beside plain PyTorch ------------------------------------------------------------
# A Python with torch for the peer: the GPU machine's python3; in a dry run whichever has one.
peer_python=$python
if [[ $dry == 1 ]]; then
  for p in "$python" python3 /usr/bin/python3; do
    "$p" -c 'import torch' 2>/dev/null && { peer_python=$p; break; }
  done
fi
bench_args=(--train.device="$device" --comm.backend="$nccl" --train.threads="$threads")
peer_args=(--device "$device")
[[ $dry == 1 ]] && bench_args+=(--bench.steps=2 --bench.warmup=1) &&
  peer_args+=(--steps 2 --warmup 1 --threads 1 --batch 16)
# bench_figure NAME: uel's instances/s from the JSON line of bench step's log.
bench_figure() {
  grep -o '"img_per_s": [0-9.]*' "$logs/$1.log" | tail -1 | cut -d' ' -f2
}
# peer NAME MODEL LIMIT: the plain PyTorch step's line, or why there is none (status 1).
peer() {
  if ! "$peer_python" -c 'import torch' 2>/dev/null; then
    echo "peer: skipped ($peer_python has no torch)"
  elif run "$1" "$3" "$peer_python" tools/peer/step.py --model "$2" "${peer_args[@]}"; then
    tail -1 "$logs/$1.log"
  else
    echo "peer: $(why $? "$1")"
    return 1
  fi
}
if may_start d; then
  run bench-fmnist 60 "${mpi1[@]}" "$uel" bench step --config configs/fmnist-isif.ini \
    --data.train="$data" --data.test="$data" "${bench_args[@]}"
  rc=$?
  figure=$(bench_figure bench-fmnist)
  p=$(peer peer-fmnist small_cnn 90)
  prc=$?
  line="bench step fmnist-isif (small_cnn, batch 256) on $device: uel ${figure:-no figure} img/s; $p"
  ((rc)) && line+="; uel: $(why $rc bench-fmnist)"
  if ((rc == 0 && prc == 0)); then say "d: $line"; else fail d "$line"; fi

  # No CIFAR-10 travels: records in its binary format, random pixels, through uel's own converter.
  # A step's arithmetic does not depend on the pixels.
  cifar=$work/cifar-shaped
  if [[ ! -f $cifar/train.h5 ]]; then
    "$py" -c 'import os, random, sys
rng = random.Random(0)
os.makedirs(sys.argv[1] + "/src", exist_ok=True)
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    with open(sys.argv[1] + "/src/" + name, "wb") as f:
        for i in range(256):
            f.write(bytes([i % 10]) + rng.randbytes(3072))' "$cifar" &&
      "$uel" prepare cifar10 --src "$cifar/src" --out "$cifar" >"$logs/prepare-cifar.log" 2>&1
  fi
  cifar_args=()
  [[ $dry == 1 ]] && cifar_args=(--train.batch_size=16)
  run bench-cifar 60 "${mpi1[@]}" "$uel" bench step --config configs/cifar10-isif.ini \
    --data.train="$cifar/train.h5" --data.test="$cifar/test.h5" "${bench_args[@]}" "${cifar_args[@]}"
  rc=$?
  figure=$(bench_figure bench-cifar)
  p=$(peer peer-cifar resnet18 150)
  prc=$?
  batch=$([[ $dry == 1 ]] && echo 16 || echo 128)
  line="bench step cifar10-isif (ResNet-18, batch $batch, 32x32x3 random pixels) on $device:"
  line+=" uel ${figure:-no figure} img/s; $p"
  ((rc)) && line+="; uel: $(why $rc bench-cifar)"
  if ((rc == 0 && prc == 0)); then say "d: $line"; else fail d "$line"; fi
fi

# --- tests ---------------------------------------------------------------------------------------
selection=(-L "gpu|mpi" -LE e2e)  # the e2e scripts train on CPU and take minutes: not the GPU's
if may_start tests; then
  if [[ $dry == 1 ]]; then
    tests_dir=$(cd "$(dirname "$uel")/../.." && pwd)
    n=$(cd "$tests_dir" && ctest -N "${selection[@]}" | sed -n 's/^Total Tests: //p')
    gpu=$(cd "$tests_dir" && ctest -N -L gpu | grep -c 'Test *#')
    say "tests: skipped (dry run): ctest ${selection[*]} selects ${n:-no} tests in $tests_dir, $gpu of them gpu"
  elif run tests-build 300 ninja -C "$work" -j"$jobs"; then
    build_s=$took
    run tests 300 bash -c "cd '$work' && ctest ${selection[*]@Q} -j$jobs --timeout 120 --output-on-failure"
    rc=$?
    result=$(grep -E 'tests passed|tests failed' "$logs/tests.log" | tail -1)
    gpu=$(grep -E 'Test +#[0-9]+: [a-z_]*gpu' "$logs/tests.log" |
      sed -E 's/.*: ([a-z_0-9]+) .*\.\.\. *\**([A-Za-z]+).*/\1 \2/' | paste -sd, -)
    line="ctest ${selection[*]} after a $build_s s build: ${result:-no result}; gpu entries: ${gpu:-none ran}"
    if ((rc == 0)); then say "tests: $line ($took s)"; else fail tests "$line; $(why $rc tests)"; fi
  else
    rc=$?
    fail tests "building the tests: $(why $rc tests-build); first error:" \
      "$(grep -m1 -E 'error:|undefined reference' "$logs/tests-build.log")"
  fi
fi

say "total: $SECONDS s; $( ((failed)) && echo "FAILED stages above" || echo "every stage run passed")"
exit $failed
