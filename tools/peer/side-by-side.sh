#!/usr/bin/env bash
# uel's `bench step` beside the same step in plain PyTorch (tools/peer/step.py), interleaved so
# that both meet the same machine, at the two layouts of a 2-core box: one process with 2 threads
# (started without mpirun) and 2 ranks with 1 thread each (mpirun --bind-to none; the peer is
# DistributedDataParallel over gloo). Also uel with SyncBatchNorm at 2 ranks (PyTorch's
# SyncBatchNorm runs on GPUs only), and the fraction of a 2048^3 float matmul's rate the step
# reaches (the peer counts the network's FLOP). The peer runs twice: as a user starts it, and
# with glibc's malloc told to keep freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_),
# which is what uel's caching CPU allocator does (docs/training.md, "Speed on CPU"): the first
# column is what a user sees, the second the same allocation policy on both sides. Prints a
# Markdown table; the logs stay in LOGS.
# usage: tools/peer/side-by-side.sh [ROUNDS] [CONFIG]   (defaults: 3, configs/fmnist-isif.ini)
# Needs build/ (tools/build.sh), data/fmnist (tools/demo.sh) and Debian's python3-torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3} config=${2:-configs/fmnist-isif.ini}
uel=${UEL:-build/src/cli/uel}
logs=${LOGS:-$(mktemp -d)}
mkdir -p "$logs"
python=/usr/bin/python3
[[ -x $uel ]] || { echo "no $uel: run tools/build.sh first" >&2; exit 1; }
$python -c 'import torch' 2>/dev/null || { echo "no torch for $python: apt-get install python3-torch" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 UEL_PROGRESS=plain
mpi=(mpirun -np 2 --bind-to none)
batch=$("$uel" train --config "$config" --print-config | sed -n 's/^batch_size = //p' | head -1)
# The peer's model follows the recipe's (small_cnn, width 16, 4 x 4 grid, 128-d head).
peer=("$python" tools/peer/step.py --model small_cnn --batch "$batch" --steps 60 --warmup 20)
bench=(bench step --config "$config" --bench.steps=60 --bench.warmup=20)
keep=(env MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296)
img_s() { grep -o '"img_per_s": [0-9.]*' "$1" | tail -1 | cut -d' ' -f2; }
peer_img_s() { grep -o 'eager [0-9]*' "$1" | tail -1 | cut -d' ' -f2; }

for r in $(seq "$rounds"); do
  "$uel" "${bench[@]}" --train.threads=2 >"$logs/uel-1x2-$r.log" 2>&1
  "${peer[@]}" --threads 2 >"$logs/peer-1x2-$r.log" 2>&1
  "${keep[@]}" "${peer[@]}" --threads 2 >"$logs/kept-1x2-$r.log" 2>&1
  "${mpi[@]}" "$uel" "${bench[@]}" --train.threads=1 --model.sync_bn=false >"$logs/uel-2x1-$r.log" 2>&1
  "${mpi[@]}" "${peer[@]}" --threads 1 >"$logs/peer-2x1-$r.log" 2>&1
  "${mpi[@]}" -x MALLOC_MMAP_THRESHOLD_=33554432 -x MALLOC_TRIM_THRESHOLD_=4294967296 \
    "${peer[@]}" --threads 1 >"$logs/kept-2x1-$r.log" 2>&1
  "${mpi[@]}" "$uel" "${bench[@]}" --train.threads=1 --model.sync_bn=true >"$logs/uel-2x1-sync-$r.log" 2>&1
done
# The practical peak is the best matmul rate among the OpenBLAS kernels this CPU runs: OpenBLAS
# 0.3.21 does not know every CPU and falls back to generic SSE3 kernels ("Prescott") on some, e.g.
# a 2-core Intel Xeon VM with AVX-512: 40 GFLOP/s there against 175 with OPENBLAS_CORETYPE=SkylakeX.
cores=(default)
grep -qw avx2 /proc/cpuinfo && cores+=(Haswell)
grep -qw avx512f /proc/cpuinfo && cores+=(SkylakeX)
peak=0 peak_core=
for core in "${cores[@]}"; do
  blas=()
  [[ $core == default ]] || blas=(OPENBLAS_CORETYPE="$core")
  env "${blas[@]}" "${peer[@]}" --threads 2 --steps 1 --warmup 0 --peak >"$logs/peak-$core.log" 2>&1
  rate=$(grep -o '[0-9.]* GFLOP/s' "$logs/peak-$core.log" | cut -d' ' -f1)
  if $python -c "import sys; sys.exit(not float('$rate') > float('$peak'))"; then peak=$rate peak_core=$core; fi
done
mflop=$(grep -o '[0-9.]* MFLOP' "$logs/peak-default.log" | cut -d' ' -f1)

list() { # list KIND LAYOUT: the rounds' figures, comma-separated
  local f=() r
  for r in $(seq "$rounds"); do
    if [[ $1 == uel ]]; then f+=("$(img_s "$logs/uel-$2-$r.log")"); else f+=("$(peer_img_s "$logs/$1-$2-$r.log")"); fi
  done
  (IFS=,; echo "${f[*]}")
}
$python - "$mflop" "$peak" "$(list uel 1x2)" "$(list peer 1x2)" "$(list kept 1x2)" "$(list uel 2x1)" \
  "$(list peer 2x1)" "$(list kept 2x1)" "$(list uel 2x1-sync)" "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" "$peak_core" <<'PY'
import sys
mflop, peak = float(sys.argv[1]), float(sys.argv[2])
rows = [[float(x) for x in a.split(",")] for a in sys.argv[3:10]]
u12, p12, k12, u21, p21, k21, sync = rows
span = lambda v: f"{min(v):,.0f}-{max(v):,.0f}"
ratio = lambda u, p: f"{min(a / b for a, b in zip(u, p)):.2f}-{max(a / b for a, b in zip(u, p)):.2f}x"
frac = lambda u: f"{100 * min(u) * mflop / 1e3 / peak:.0f}-{100 * max(u) * mflop / 1e3 / peak:.0f}%"
print(f"{sys.argv[10]} CPUs,{sys.argv[11]}; {mflop:.1f} MFLOP per instance; "
      f"matmul {peak:.0f} GFLOP/s (OpenBLAS kernels: {sys.argv[12]})")
print("| layout | uel img/s | PyTorch img/s | ratio | PyTorch, memory kept | ratio | uel / matmul peak |")
print("|---|---|---|---|---|---|---|")
for name, u, p, k in (("1 process x 2 threads", u12, p12, k12), ("2 ranks x 1 thread, SyncBN off", u21, p21, k21)):
    print(f"| {name} | {span(u)} | {span(p)} | {ratio(u, p)} | {span(k)} | {ratio(u, k)} | {frac(u)} |")
keeps = f"{min(a / b for a, b in zip(sync, u21)):.2f}-{max(a / b for a, b in zip(sync, u21)):.2f}"
print(f"| 2 ranks x 1 thread, SyncBN on | {span(sync)} | | keeps {keeps} of off | | | {frac(sync)} |")
PY
echo "logs: $logs"
