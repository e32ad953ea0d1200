#!/usr/bin/env bash
# End to end through the real `uel` binary: Fashion-MNIST conversion checked with h5py, and
# bad input answered with a clear message and the right non-zero exit status, never a crash.
# usage: test_cli.sh UEL_BINARY E2E_DIR MPIEXEC
set -euo pipefail
uel=$1 mpiexec=$3
fmnist=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'umount "$tmp/disk" 2>/dev/null || true; rm -rf "$tmp"' EXIT
failures=0
passed=0

check() {  # check NAME CONDITION...
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAIL: $name" >&2
    failures=$((failures + 1))
  fi
}

# all_in TEXT PATTERN...: every grep pattern matches TEXT; none_in TEXT PATTERN: it does not.
all_in() {
  local text=$1 pattern
  shift
  for pattern in "$@"; do grep -q -- "$pattern" <<<"$text" || return 1; done
}
none_in() { ! grep -q -- "$2" <<<"$1"; }

# expect_exit NAME CODE NEEDLE COMMAND...: exit status CODE and NEEDLE in the output.
expect_exit() {
  local name=$1 code=$2 needle=$3
  shift 3
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [[ $rc != "$code" ]] || ! grep -qF -- "$needle" <<<"$out"; then
    echo "FAIL: $name: exit $rc (want $code), output:" >&2
    echo "$out" | tail -5 >&2
    failures=$((failures + 1))
  else
    passed=$((passed + 1))
  fi
}

# --- the real data set ---------------------------------------------------------------------
"$uel" prepare fashion-mnist --src "$fmnist" --out "$tmp/fm" >/dev/null
check "h5py reads train/test with the right shapes and 6000 per class" /usr/bin/python3 - "$tmp/fm" <<'PY'
import sys, h5py, numpy as np
root = sys.argv[1]
for split, n in (("train", 60000), ("test", 10000)):
    with h5py.File(f"{root}/{split}.h5", "r") as f:
        assert f["images"].shape == (n, 28, 28, 1), f["images"].shape
        assert f["images"].dtype == np.uint8 and f["images"].chunks is not None
        assert f["labels"].dtype == np.int64 and f["labels"].shape == (n,)
        counts = np.bincount(f["labels"][:], minlength=10)
        assert (counts == n // 10).all(), counts
        assert f.attrs["num_classes"] == 10 and f.attrs["name"] == "fashion-mnist"
        assert list(f.attrs["class_names"])[9] == "Ankle boot"
        # The first training image of the IDX file is an ankle boot (label 9).
        if split == "train":
            assert f["labels"][0] == 9 and f["images"][0].max() == 255
PY
info=$("$uel" info "$tmp/fm/train.h5")
check "uel info describes the file" grep -q "images: 60000 x 28x28x1 uint8" <<<"$info"
check "uel info counts classes" grep -qE "9 Ankle boot +6000" <<<"$info"
bench=$("$uel" bench loader --data.train="$tmp/fm/train.h5" --bench.steps=3 --bench.warmup=1)
check "bench loader prints a JSON line" grep -q '"bench": "loader"' <<<"$bench"
# A process bound to one CPU (as mpirun binds a lone rank): the default is one thread, and two
# threads, which would share the CPU at about half the speed, are warned about with the fix.
step=(bench step --data.train="$tmp/fm/test.h5" --model.width=8 --train.batch_size=32 --bench.steps=1)
bench=$(taskset -c 0 "$uel" "${step[@]}" 2>&1)
check "one allowed CPU: one thread by default" grep -q '"threads": 1,' <<<"$bench"
check "bench step times after 20 warm-up steps by default" grep -q '1 steps after 20 warm-up steps' <<<"$bench"
check "bench step's JSON names its warm-up" grep -q '"steps": 1, "warmup": 20,' <<<"$bench"
bench=$(taskset -c 0 "$uel" "${step[@]}" --train.threads=2 2>&1)
check "more threads than allowed CPUs: a warning with the fix" \
  grep -qF -- "--train.threads=2 but this process may run on 1 CPU(s) only (its affinity): start it with mpirun --bind-to none or --map-by slot:PE=2" <<<"$bench"
# The step by operator: the two largest, the rest, the time outside operators; all of them: the
# four convolutions' backward in the one timed step (the two views go through the network as one batch).
bench=$("$uel" "${step[@]}" --bench.warmup=1 --bench.ops=2 2>&1)
check "bench step --bench.ops lists the step by operator" grep -q "rank 0's step, .* ms, by operator" <<<"$bench"
check "bench step --bench.ops=2: two operators, the others, the time outside operators" \
  test "$(sed -n '/by operator/,$p' <<<"$bench" | grep -cE '^ +-?[0-9.]+ +-?[0-9.]+% ')" = 4
check "bench step --bench.ops=2: the rest in one row" \
  grep -qE '% +the other [0-9]+ operators$' <<<"$bench"
bench=$("$uel" "${step[@]}" --bench.warmup=1 --bench.ops=1000 2>&1)
check "bench step --bench.ops: small_cnn's four convolutions, backward once in the step" \
  grep -qE '% +4\.0  aten::convolution_backward$' <<<"$bench"
check "bench step --bench.ops: every operator listed, no rest row" \
  bash -c '! grep -q "the other .* operators" <<<"$1"' _ "$bench"
# OpenBLAS (tools/setup.sh installs it) falls back to generic kernels on CPUs it does not know;
# uel restarts itself with the kernels the CPU runs (runtime::use_fast_blas_kernels), and keeps
# what a user chose.
check "bench step names the BLAS: OpenBLAS" grep -q "^BLAS: OpenBLAS, " <<<"$bench"
if grep -qw avx2 /proc/cpuinfo; then
  check "an AVX2 CPU runs OpenBLAS kernels better than the generic ones" \
    bash -c '! grep -q "BLAS: OpenBLAS, Prescott kernels" <<<"$1"' _ "$bench"
fi
bench=$(OPENBLAS_CORETYPE=Prescott "$uel" "${step[@]}" --bench.warmup=0 2>&1)
check "a user's OPENBLAS_CORETYPE is kept" \
  grep -q "^BLAS: OpenBLAS, Prescott kernels (OPENBLAS_CORETYPE)" <<<"$bench"
check "uel --version names the git sha" bash -c "'$uel' --version | grep -q 'git '"

# --- bad input -------------------------------------------------------------------------------
sum_before=$(md5sum "$tmp/fm/train.h5" "$tmp/fm/test.h5")
mkdir -p "$tmp/bad"
cp "$fmnist"/* "$tmp/bad/"
gzip -dc "$fmnist/t10k-images-idx3-ubyte.gz" >"$tmp/full"
head -c 100000 "$tmp/full" >"$tmp/bad/t10k-images-idx3-ubyte"
rm "$tmp/bad/t10k-images-idx3-ubyte.gz"
expect_exit "truncated IDX" 3 "truncated or corrupt file" \
  "$uel" prepare fashion-mnist --src "$tmp/bad" --out "$tmp/fm"
printf 'garbage!' | gzip >"$tmp/bad/t10k-images-idx3-ubyte.gz"
rm "$tmp/bad/t10k-images-idx3-ubyte"
expect_exit "wrong IDX magic" 3 "not an IDX file" \
  "$uel" prepare fashion-mnist --src "$tmp/bad" --out "$tmp/fm"
check "failed prepares left the earlier output untouched" \
  bash -c "[[ \"\$(md5sum '$tmp/fm/train.h5' '$tmp/fm/test.h5')\" == '$sum_before' ]]"
check "no temporary file left behind" bash -c "! ls '$tmp/fm' | grep -q tmp"
expect_exit "missing source folder" 3 "is not a folder" \
  "$uel" prepare fashion-mnist --src "$tmp/nowhere" --out "$tmp/x"
expect_exit "missing dataset file" 3 "does not exist" "$uel" info "$tmp/none.h5"
head -c 5000 "$tmp/fm/test.h5" >"$tmp/cut.h5"
expect_exit "truncated HDF5" 3 "cut.h5" "$uel" info "$tmp/cut.h5"
echo "not hdf5" >"$tmp/junk.h5"
expect_exit "corrupt HDF5" 3 "not a readable HDF5 file" "$uel" info "$tmp/junk.h5"
printf '[train]\nbatch_sise = 64\n' >"$tmp/typo.ini"
expect_exit "unknown config key" 2 "did you mean 'train.batch_size'?" \
  "$uel" bench loader --config "$tmp/typo.ini"
expect_exit "negative batch size" 2 "--train.batch_size must be positive, got -4" \
  "$uel" bench loader --data.train="$tmp/fm/test.h5" --train.batch_size=-4
expect_exit "non-numeric value" 2 "expected integer" \
  "$uel" bench loader --train.batch_size=many
expect_exit "class filter outside the classes" 2 "outside the dataset's classes 0-9" \
  "$uel" bench loader --data.train="$tmp/fm/test.h5" --data.classes=12
mkdir -p "$tmp/imgs"
printf '# nothing listed\n' >"$tmp/empty.txt"
expect_exit "empty image list" 3 "empty dataset" \
  "$uel" prepare image-list --root "$tmp/imgs" --list "$tmp/empty.txt" --out "$tmp/e.h5"
expect_exit "unknown command" 2 "unknown command 'trian'" "$uel" trian
expect_exit "unknown format" 2 "unknown format 'mnist'" "$uel" prepare mnist --src x --out y

expect_exit "NCE temperature below the floor" 2 "--nce.temperature 0.001 is below 0.005" \
  "$uel" train --data.train="$tmp/fm/test.h5" --train.method=nce --nce.temperature=0.001 --out "$tmp/t"
expect_exit "bank benchmark size" 2 "--bench.bank_rows: 0.5 is not a positive whole number" \
  "$uel" bench bank --bench.bank_rows=0.5

# --- help, messages and exit statuses a new user meets -----------------------------------------
for command in prepare info bench cluster neighbours train eval embed "bench loader" "bench comm" "bench step" \
  "bench bank" "bench kmeans" "prepare fashion-mnist"; do
  # shellcheck disable=SC2086
  check "uel $command --help works" bash -c "'$uel' $command --help | grep -q '^usage: '"
done
check "uel bench --help lists every benchmark" bash -c "'$uel' bench --help | grep -q '^  kmeans '"
check "uel --help lists bench's bank" bash -c "'$uel' --help | grep -q 'loader, comm, step, bank, kmeans'"
check "uel --help documents exit statuses 4 and 5" \
  bash -c "'$uel' --help | grep -q '4 communication' && '$uel' --help | grep -q '5 CUDA' && '$uel' --help | grep -q 'cannot be written: a full disk'"
expect_exit "unknown key, space-separated" 2 "unknown option 'train.metod' on the command line; did you mean 'train.method'?" \
  "$uel" train --train.metod isif --out "$tmp/t"
out=$("$uel" bench loader --train.batch_size=-4 2>&1 || true)
check "a user error carries no code location" none_in "$out" "check '"
out=$(UEL_DEBUG=1 "$uel" bench loader --train.batch_size=-4 2>&1 || true)
check "UEL_DEBUG=1 adds the code location" grep -q "options.cpp:.*check '" <<<"$out"
expect_exit "--print-config validates across options" 2 "--eval.features=bank needs the memory bank" \
  "$uel" train --config "$(dirname "$0")/../../configs/fmnist-isif.ini" --eval.features=bank --print-config

# A tiny run: resume warnings, uel info on runs, checkpoints and embeddings.
tiny_options=(--data.train="$tmp/fm/test.h5" --data.test="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353
  --model.width=4 --model.low_dim=8 --train.batch_size=32 --train.threads=1 --eval.every=0
  --train.checkpoint_every=2)
tiny=("${tiny_options[@]}" --out "$tmp/run")
"$uel" train "${tiny[@]}" --train.max_steps=2 >/dev/null 2>&1
out=$("$uel" train "${tiny[@]}" --train.max_steps=4 --train.log_every=1 2>&1)
check "resuming with another max_steps does not warn" all_in "$out" "resumed from"
check "resuming with another max_steps does not warn (no 'changed')" none_in "$out" "changed"
out=$("$uel" train "${tiny[@]}" --train.max_steps=6 --train.lr=0.05 2>&1)
check "resuming with another lr names it" grep -qF "options changed since it was saved: train.lr 0.03 -> 0.05" <<<"$out"
info=$("$uel" info "$tmp/run/checkpoints/step-0000006")
check "uel info describes a checkpoint" all_in "$info" "^kind: checkpoint" "^step: 6 " "^world size: 1" \
  "^method: isif" "^state: complete"
cp -r "$tmp/run/checkpoints/step-0000006" "$tmp/partial" && rm "$tmp/partial/DONE"
check "uel info flags an incomplete checkpoint" bash -c "'$uel' info '$tmp/partial' | grep -q '^state: incomplete'"
info=$("$uel" info "$tmp/run")
check "uel info describes a run" all_in "$info" "^kind: run" "latest complete: .*step-0000006"
"$uel" embed --run "$tmp/run" --data "$tmp/fm/test.h5" --out "$tmp/emb.h5" >/dev/null 2>&1
info=$("$uel" info "$tmp/emb.h5")
check "uel info describes embeddings" all_in "$info" "^kind: embeddings" "^embeddings: 10000 x 8 float32" \
  "^checkpoint: .*step-0000006"
expect_exit "uel info on a folder that is no run" 3 "neither a run folder" "$uel" info "$tmp/imgs"

# --- bad input refused before the work, the run's files kept -----------------------------------
/usr/bin/python3 - "$tmp" <<'PY'
import sys, h5py, numpy as np
t = sys.argv[1]
with h5py.File(f"{t}/fm/test.h5", "r") as f:
    images, labels = f["images"][:100], f["labels"][:100]
def write(name, images, labels):
    with h5py.File(f"{t}/{name}", "w") as g:
        g["images"], g["labels"] = images, labels
        g.attrs["num_classes"] = 10
write("rgb.h5", np.repeat(images, 3, axis=3), labels)
write("padded.h5", np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), labels)
write("float.h5", images.astype(np.float32) / 255, labels)
labels[7] = 12
write("labels.h5", images, labels)
PY
expect_exit "embed: another channel count than the run's" 3 \
  "--data '$tmp/rgb.h5' holds 28x28x3 images but run '$tmp/run' was trained on 28x28x1 images" \
  "$uel" embed --run "$tmp/run" --data "$tmp/rgb.h5" --out "$tmp/e.h5"
expect_exit "embed: another image size than the run's" 3 "holds 32x32x1 images but run" \
  "$uel" embed --run "$tmp/run" --data "$tmp/padded.h5" --out "$tmp/e.h5"
mkdir -p "$tmp/norun/checkpoints/step-0000002"
cp "$tmp/run/config.ini" "$tmp/norun/"
expect_exit "eval: a run without a complete checkpoint" 3 \
  "--run '$tmp/norun' has no complete checkpoint (a checkpoints/step-N folder with DONE) yet" \
  "$uel" eval --run "$tmp/norun"
expect_exit "eval: options for another model than the run's" 2 \
  "holds another model or method than these options ask for (saved -> asked: model.low_dim 8 -> 16); drop those options" \
  "$uel" eval --run "$tmp/run" --model.low_dim=16
expect_exit "resume: another architecture" 2 \
  "checkpoint '$tmp/run/checkpoints/step-0000006' holds another model or method than these options ask for (saved -> asked: model.arch small_cnn -> resnet18); resume with the options" \
  "$uel" train "${tiny[@]}" --model.arch=resnet18 --train.max_steps=8
expect_exit "resume: another method" 2 "(saved -> asked: train.method isif -> nce)" \
  "$uel" train "${tiny[@]}" --train.method=nce --train.max_steps=8
expect_exit "nccl on the CPU" 2 \
  "--comm.backend=nccl runs on GPUs but --train.device=cpu; use --comm.backend=mpi (or auto)" \
  "$uel" train "${tiny[@]}" --comm.backend=nccl --train.device=cpu
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  expect_exit "nccl without a GPU" 2 "--comm.backend=nccl needs a CUDA device; use mpi for CPU training" \
    "$uel" train "${tiny[@]}" --comm.backend=nccl
fi
expect_exit "a validation split that leaves no training images" 2 \
  "--data.val_fraction 0.9999 holds out all 1000 training images of '$tmp/fm/test.h5' and leaves nothing to train on" \
  "$uel" train "${tiny[@]}" --data.classes=0 --data.val_fraction=0.9999
expect_exit "a validation fraction of 1" 2 "--data.val_fraction must be in [0, 1), got 1" \
  "$uel" train "${tiny[@]}" --data.val_fraction=1
expect_exit "ISIF temperature 0" 2 "--isif.temperature must be positive" \
  "$uel" train "${tiny[@]}" --isif.temperature=0
expect_exit "kNN with no neighbours" 2 "--eval.knn_k must be positive" \
  "$uel" eval --run "$tmp/run" --eval.knn_k=0
expect_exit "labels beyond num_classes" 3 "'$tmp/labels.h5' has labels in [0, 12], outside [0, num_classes=10)" \
  "$uel" train --data.train="$tmp/labels.h5" --eval.every=0 --out "$tmp/bad-labels"
expect_exit "float pixels" 3 "'$tmp/float.h5'/images must be uint8 pixels" \
  "$uel" train --data.train="$tmp/float.h5" --eval.every=0 --out "$tmp/bad-dtype"
small=("${tiny[@]/--train.batch_size=32/--train.batch_size=33}")
expect_exit "a batch that 2 ranks cannot split" 2 \
  "--train.batch_size 33 is not divisible by the world size 2; use a multiple of 2" \
  "$mpiexec" -np 2 "$uel" train "${small[@]}"
check "refused runs kept the run's checkpoints and config" \
  bash -c "[[ -f '$tmp/run/checkpoints/step-0000006/DONE' && -f '$tmp/run/checkpoints/step-0000004/DONE' ]] && grep -q 'arch = small_cnn' '$tmp/run/config.ini'"

# SIGKILL while a checkpoint is written: strace kills the run as it opens the checkpoint's DONE,
# after every other file of the folder, whatever the machine's speed. The folder has no DONE, and
# the next run resumes from the checkpoint before it.
killed=(--data.train="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353 --model.low_dim=8
  --train.batch_size=4 --train.threads=1 --eval.every=0 --train.checkpoint_every=1 --out "$tmp/killed")
"$uel" train "${killed[@]}" --train.max_steps=1 >/dev/null 2>&1
dir=$tmp/killed/checkpoints/step-0000002
(strace -f -qq -o /dev/null -P "$dir/DONE.tmp" -e trace=openat -e inject=openat:signal=KILL \
  "$uel" train "${killed[@]}" --train.max_steps=2) >/dev/null 2>&1 || true
check "SIGKILL while a checkpoint was being written leaves its folder without DONE" \
  bash -c "[[ -f '$dir/state.json' && ! -e '$dir/DONE' ]]"
out=$("$uel" train "${killed[@]}" --train.max_steps=2 2>&1)
check "after SIGKILL the run resumes from the previous checkpoint" \
  grep -q "resumed from $tmp/killed/checkpoints/step-0000001" <<<"$out"
check "and completes the killed one" test -f "$dir/DONE"

# A full disk (a 4 MiB tmpfs): before the run starts nothing is touched; during a checkpoint
# the write fails with a message and the newest complete checkpoint stays and resumes.
mkdir -p "$tmp/disk"
if mount -t tmpfs -o size=4m tmpfs "$tmp/disk" 2>"$tmp/mount.err"; then
  disk=("${tiny_options[@]}" --out "$tmp/disk/run")
  "$uel" train "${disk[@]}" --train.max_steps=2 >/dev/null 2>&1
  fill() {  # fill KIB_LEFT: fill the disk up to KIB_LEFT KiB
    rm -f "$tmp/disk/filler"
    dd if=/dev/zero of="$tmp/disk/filler" bs=1k count=$(($(df -k --output=avail "$tmp/disk" | tail -1) - $1)) 2>/dev/null
  }
  fill 0
  expect_exit "a full disk before the run starts" 3 "cannot write '$tmp/disk/run/config.ini': No space left on device" \
    "$uel" train "${disk[@]}" --train.max_steps=4
  fill 16  # room for config.ini and metrics, not for a checkpoint
  expect_exit "a full disk during a checkpoint" 3 \
    "checkpoint '$tmp/disk/run/checkpoints/step-0000004' is incomplete: cannot write '$tmp/disk/run/checkpoints/step-0000004/model.pt': No space left on device; the newest complete checkpoint stays" \
    "$uel" train "${disk[@]}" --train.max_steps=4
  check "the full disk lost no file" bash -c "[[ -f '$tmp/disk/run/checkpoints/step-0000002/DONE' && ! -f '$tmp/disk/run/checkpoints/step-0000004/DONE' ]] && grep -q 'arch = small_cnn' '$tmp/disk/run/config.ini' && [[ \$(wc -l <'$tmp/disk/run/metrics.jsonl') -ge 2 ]]"
  rm "$tmp/disk/filler"
  out=$("$uel" train "${disk[@]}" --train.max_steps=4 2>&1)
  check "with space again the run resumes from the checkpoint before the full disk" \
    grep -q "resumed from $tmp/disk/run/checkpoints/step-0000002" <<<"$out"
  umount "$tmp/disk"
else
  echo "SKIP: full-disk cases: cannot mount a tmpfs ($(cat "$tmp/mount.err")); run as root to test them" >&2
fi

# Every recipe parses: no unknown key, no bad value.
parses() { "$uel" train --config "$1" --print-config >/dev/null 2>&1; }
for config in "$(dirname "$0")"/../../configs/*.ini; do
  check "recipe $(basename "$config") parses" parses "$config"
done

echo "e2e_cli: $passed passed, $failures failed"
((failures == 0))
