#!/usr/bin/env bash
# End to end through the real `uel` binary: Fashion-MNIST conversion checked with h5py, and
# bad input answered with a clear message and the right non-zero exit status, never a crash.
# usage: test_cli.sh UEL_BINARY
set -euo pipefail
uel=$1
fmnist=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
for command in prepare info bench cluster train eval embed "bench loader" "bench comm" "bench step" \
  "bench bank" "bench kmeans" "prepare fashion-mnist"; do
  # shellcheck disable=SC2086
  check "uel $command --help works" bash -c "'$uel' $command --help | grep -q '^usage: '"
done
check "uel bench --help lists every benchmark" bash -c "'$uel' bench --help | grep -q '^  kmeans '"
check "uel --help lists bench's bank" bash -c "'$uel' --help | grep -q 'loader, comm, step, bank, kmeans'"
check "uel --help documents exit statuses 4 and 5" \
  bash -c "'$uel' --help | grep -q '4 communication' && '$uel' --help | grep -q '5 CUDA'"
expect_exit "unknown key, space-separated" 2 "unknown option 'train.metod' on the command line; did you mean 'train.method'?" \
  "$uel" train --train.metod isif --out "$tmp/t"
out=$("$uel" bench loader --train.batch_size=-4 2>&1 || true)
check "a user error carries no code location" none_in "$out" "check '"
out=$(UEL_DEBUG=1 "$uel" bench loader --train.batch_size=-4 2>&1 || true)
check "UEL_DEBUG=1 adds the code location" grep -q "options.cpp:.*check '" <<<"$out"
expect_exit "--print-config validates across options" 2 "--eval.features=bank needs the memory bank" \
  "$uel" train --config "$(dirname "$0")/../../configs/fmnist-isif.ini" --eval.features=bank --print-config

# A tiny run: resume warnings, uel info on runs, checkpoints and embeddings.
tiny=(--data.train="$tmp/fm/test.h5" --data.test="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353
  --model.width=4 --model.low_dim=8 --train.batch_size=32 --train.threads=1 --eval.every=0
  --train.checkpoint_every=2 --out "$tmp/run")
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

# Every recipe parses: no unknown key, no bad value.
parses() { "$uel" train --config "$1" --print-config >/dev/null 2>&1; }
for config in "$(dirname "$0")"/../../configs/*.ini; do
  check "recipe $(basename "$config") parses" parses "$config"
done

echo "e2e_cli: $passed passed, $failures failed"
((failures == 0))
