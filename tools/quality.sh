#!/usr/bin/env bash
# One row of the learning-quality ablation: trains a recipe with overrides on 2 ranks, evaluates
# the embedding (eval.layer=head) and the backbone's features (eval.layer=backbone) with weighted
# kNN (K=200, tau=0.1) and 1-NN, and the pixel baseline of the same split, and appends a JSON row
# (figures, wall time of the training) to QUALITY_OUT (default runs/quality.jsonl).
# usage: tools/quality.sh NAME CONFIG [--section.key=value ...]
#   e.g. tools/quality.sh crop09 configs/fmnist-isif.ini --train.epochs=5 --aug.crop_scale_min=0.9
# Needs build/ (tools/build.sh) and data/fmnist (tools/demo.sh prepares it).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 config=$2
shift 2
uel=${UEL:-build/src/cli/uel}
out=${QUALITY_OUT:-runs/quality.jsonl}
run=runs/quality/$name
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 UEL_PROGRESS=plain
mpi=(mpirun -np 2 --bind-to none)
rm -rf "$run"
mkdir -p "$(dirname "$out")" "$run"
SECONDS=0
"${mpi[@]}" "$uel" train --config "$config" --eval.every=0 --train.threads=1 "$@" --out "$run" >"$run.log" 2>&1 ||
  { tail -5 "$run.log"; exit 1; }
seconds=$SECONDS
figure() { "${mpi[@]}" "$uel" eval --run "$run" "$@" | tail -1 | sed -E 's/.*"knn_top1": ([0-9.]+).*/\1/'; }
row=$(printf '{"name": "%s", "train_s": %.0f, "head_knn": %s, "head_nn1": %s, "backbone_knn": %s, "backbone_nn1": %s, "pixels_knn": %s, "pixels_nn1": %s, "options": "%s"}' \
  "$name" "$seconds" "$(figure)" "$(figure --eval.knn_k=1)" \
  "$(figure --eval.layer=backbone)" "$(figure --eval.layer=backbone --eval.knn_k=1)" \
  "$(figure --eval.features=pixels)" "$(figure --eval.features=pixels --eval.knn_k=1)" "$*")
echo "$row" | tee -a "$out"
