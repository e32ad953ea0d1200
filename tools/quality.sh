#!/usr/bin/env bash
# One row of the learning-quality ablation: trains a recipe with overrides on 2 ranks, evaluates
# the embedding (eval.layer=head), the backbone's features (eval.layer=backbone) and the pixel
# baseline of the same split with weighted kNN (the run's K and tau), 1-NN, Recall@1 and NMI
# (within the test classes), and appends a JSON row (figures, wall time of the training) to
# QUALITY_OUT (default runs/quality.jsonl). On an unseen-category recipe (data.test_classes) the
# gallery holds other classes: read Recall@1 and NMI there, kNN and 1-NN mean nothing.
# usage: tools/quality.sh NAME CONFIG [--section.key=value ...]
#   e.g. tools/quality.sh crop09 configs/fmnist-isif.ini --train.epochs=5 --aug.crop_scale_min=0.9
# Needs build/ (tools/build.sh) and data/fmnist (tools/demo.sh prepares it).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 config=$2
shift 2
# A private copy: a rebuild during the hour a row takes would otherwise rewrite (or briefly
# remove) the binary its later `uel eval` calls start.
uel=$(mktemp --suffix=.uel)
trap 'rm -f "$uel"' EXIT
cp "${UEL:-build/src/cli/uel}" "$uel" && chmod 755 "$uel"
out=${QUALITY_OUT:-runs/quality.jsonl}
run=runs/quality/$name
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 UEL_PROGRESS=plain
mpi=(mpirun -np 2 --bind-to none)
if [[ -z ${QUALITY_EVAL_ONLY:-} ]]; then  # QUALITY_EVAL_ONLY=1: evaluate the trained run again
  rm -rf "$run"
  mkdir -p "$(dirname "$out")" "$run"
  "${mpi[@]}" "$uel" train --config "$config" --eval.every=0 --train.threads=1 "$@" --out "$run" >"$run.log" 2>&1 ||
    { tail -5 "$run.log"; exit 1; }
fi
# The training's wall time, as the run logged it (done: N steps in h:mm:ss).
seconds=$(sed -nE 's/.*done: [0-9]+ steps in ([0-9]+):([0-9]+):([0-9]+).*/10#\1*3600+10#\2*60+10#\3/p' "$run.log" | tail -1)
seconds=$((seconds))
# JSON of `uel eval` with extra options; the run's own protocols are replaced by all three.
evaluate() { "${mpi[@]}" "$uel" eval --run "$run" "$@" | tail -1; }
rows=()
for features in "--eval.layer=head" "--eval.layer=backbone" "--eval.features=pixels"; do
  rows+=("$(evaluate $features --protocol knn,recall,nmi)" "$(evaluate $features --protocol knn --eval.knn_k=1)")
done
/usr/bin/python3 - "$name" "$seconds" "$*" "${rows[@]}" <<'PY' | tee -a "$out"
import json, sys
name, seconds, options, *rows = sys.argv[1:]
row = {"name": name, "train_s": int(seconds)}
for i, what in enumerate(("head", "backbone", "pixels")):
    full, nn1 = json.loads(rows[2 * i]), json.loads(rows[2 * i + 1])
    row.update({f"{what}_knn": full["knn_top1"], f"{what}_nn1": nn1["knn_top1"],
                f"{what}_r1": full["recall@1"], f"{what}_nmi": round(full["nmi"], 4)})
row["options"] = options
print(json.dumps(row))
PY
