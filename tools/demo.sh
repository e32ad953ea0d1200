#!/usr/bin/env bash
# README command 1: installs what is missing, builds, prepares Fashion-MNIST and runs the main
# job. Until training lands (issue "ISIF end to end") the job is: prepare, describe the data and
# measure the input pipeline with the FMNIST recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
uel=build/src/cli/uel
if [[ ! -f data/fmnist/train.h5 || ! -f data/fmnist/test.h5 ]]; then
  "$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out data/fmnist
fi
"$uel" info data/fmnist/train.h5
"$uel" bench loader --config configs/fmnist-isif.ini
