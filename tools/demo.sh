#!/usr/bin/env bash
# README command 1: installs what is missing, builds, prepares Fashion-MNIST, trains ISIF on two
# MPI ranks for a few minutes (3 epochs of configs/fmnist-isif.ini), evaluates the run with the
# weighted kNN and 1-NN protocols, prints them next to uel's pixel baseline on the same split, and
# draws the embedding (`uel show`: retrieval grid, maps beside the pixels', per-class kNN).
# DEMO_EPOCHS=60 reproduces the full recipe (23 minutes of training on 2 idle cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
UEL_BUILD_TARGET=uel bash tools/build.sh  # the tests build with README's second command
uel=build/src/cli/uel
if [[ ! -f data/fmnist/train.h5 || ! -f data/fmnist/test.h5 ]]; then
  "$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out data/fmnist
fi
"$uel" info data/fmnist/train.h5 | head -4

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A single updating progress line on a terminal, plain lines in a log (mpirun gives the ranks a
# pseudo-terminal either way).
if [[ -t 1 ]]; then export UEL_PROGRESS=line; else export UEL_PROGRESS=plain; fi
epochs=${DEMO_EPOCHS:-3}
run=runs/demo-fmnist-isif
rm -rf "$run"
mpirun -np 2 "$uel" train --config configs/fmnist-isif.ini --train.epochs="$epochs" --eval.every=0 --out "$run"
# Learned and pixel figures of the same split, computed by uel: weighted kNN (the run's K and
# tau) and 1-NN, the embedding against the centred, L2-normalised pixels (--eval.features=pixels).
figure() { mpirun -np 2 "$uel" eval --run "$run" "$@" | tail -1 | sed -E 's/.*"knn_top1": ([0-9.]+).*/\1/'; }
knn=$(figure)
nn1=$(figure --eval.knn_k=1)
pixels_knn=$(figure --eval.features=pixels)
pixels_nn1=$(figure --eval.features=pixels --eval.knn_k=1)
cat <<TEXT

Fashion-MNIST test set against the training set (top-1 %):
                                   weighted kNN (K=200, tau=0.1)   1-NN
  ISIF, ${epochs} epochs on 2 ranks      ${knn}                         ${nn1}
  pixels (centred, L2-normalised)  ${pixels_knn}                         ${pixels_nn1}
TEXT
mpirun -np 2 "$uel" show --run "$run" --out "$run/show"
echo "Pictures of the embedding: $run/show/show.md (grid.png, map.png, classes.png)"
