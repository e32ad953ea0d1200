#!/usr/bin/env bash
# The large-batch study of docs/large-batch.md: ISIF on Fashion-MNIST, 2 ranks, global batch
# 256 (configs/fmnist-isif.ini, momentum SGD) and 1024, 4096 (configs/fmnist-isif-lars.ini: LARS,
# warm-up, sqrt scaling) and 4096 with momentum SGD at the lr the gradient noise scale suggests,
# the same number of epochs, then `uel report` of the four.
# usage: tools/large-batch.sh [OUT=runs/large-batch]   (EPOCHS=5; about 15 min a run on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/large-batch}
epochs=${EPOCHS:-5}
uel=build/src/cli/uel
[[ -x $uel ]] || bash tools/build.sh
if [[ ! -f data/fmnist/train.h5 || ! -f data/fmnist/test.h5 ]]; then
  "$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out data/fmnist
fi
mkdir -p "$out"
run() {  # run NAME CONFIG OPTIONS...
  local name=$1 config=$2
  shift 2
  echo "training $name: $out/$name.log"
  launch/uel-run -n 2 train --config "$config" --train.epochs="$epochs" "$@" --out "$out/$name" \
    >"$out/$name.log" 2>&1
}
# The SGD runs as the study measured them: SyncBN, lr 0.03 at 256, an evaluation every epoch.
sgd=(--model.sync_bn=true --eval.every=1)
run b256 configs/fmnist-isif.ini "${sgd[@]}" --train.lr=0.03
run b1024 configs/fmnist-isif-lars.ini --train.batch_size=1024
run b4096 configs/fmnist-isif-lars.ini --train.batch_size=4096
# Momentum SGD without warm-up at 2 x batch 256's lr: the gradient noise scale of this training
# is at most a few hundred (docs/large-batch.md), and above it the best lr barely grows with the batch.
run b4096-sgd configs/fmnist-isif.ini "${sgd[@]}" --train.batch_size=4096 --train.lr=0.06
"$uel" report "$out/b256" "$out/b1024" "$out/b4096" "$out/b4096-sgd" --out "$out/report"
