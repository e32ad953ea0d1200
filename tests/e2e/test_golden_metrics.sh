#!/usr/bin/env bash
# metrics.jsonl pinned: two short float64 runs on 2 ranks (ISIF with the noise scale and every
# evaluation protocol; the margin loss with its method metric) write the rows, keys and values
# of golden_metrics.jsonl (recorded before the Trainer was split into its units). Values match
# to 1e-6 relative; img_per_s, comm_seconds and elapsed_s depend on the machine and are only
# checked to be there. `--record` rewrites the golden file.
# usage: test_golden_metrics.sh UEL MPIEXEC [--record]
set -uo pipefail
uel=$1 mpiexec=$2 record=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$here/../support/tally.sh"

"$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp/fm" >/dev/null || exit 1
base=(--data.train="$tmp/fm/test.h5" --data.test="$tmp/fm/test.h5" --data.classes=0-3 --aug.mean=0.286
  --aug.std=0.353 --model.width=8 --model.low_dim=16 --train.threads=1 --train.precision=float64
  --train.epochs=2 --train.log_every=4 --eval.every=1)
"$mpiexec" -np 2 "$uel" train "${base[@]}" --train.method=isif --train.batch_size=256 --train.noise_scale=true \
  --eval.protocol=knn,recall,nmi --out "$tmp/isif" >"$tmp/isif.log" 2>&1 || { fail "isif run"; tail -5 "$tmp/isif.log"; }
"$mpiexec" -np 2 "$uel" train "${base[@]}" --train.method=margin --train.batch_size=128 --margin.items_per_class=32 --train.max_steps=20 \
  --out "$tmp/margin" >"$tmp/margin.log" 2>&1 || { fail "margin run"; tail -5 "$tmp/margin.log"; }

/usr/bin/python3 - "$tmp" "$here/golden_metrics.jsonl" "$record" <<'PY' && pass || fail "metrics.jsonl differs from golden_metrics.jsonl"
import json, math, sys
tmp, golden, record = sys.argv[1:]
rows = [dict(run=run, **json.loads(line))
        for run in ("isif", "margin") for line in open(f"{tmp}/{run}/metrics.jsonl")]
if record == "--record":
    with open(golden, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    sys.exit(0)
want = [json.loads(line) for line in open(golden)]
timing = {"img_per_s", "comm_seconds", "elapsed_s"}
bad = []
if len(rows) != len(want):
    bad.append(f"{len(rows)} rows, golden has {len(want)}")
for i, (got, exp) in enumerate(zip(rows, want)):
    if list(got) != list(exp):
        bad.append(f"row {i}: keys {list(got)} != {list(exp)}")
        continue
    for key, value in exp.items():
        if key in timing:
            ok = isinstance(got[key], (int, float)) and got[key] >= 0
        elif isinstance(value, float) and not isinstance(got[key], str) and got[key] is not None:
            ok = math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-12)
        else:
            ok = got[key] == value
        if not ok:
            bad.append(f"row {i} ({exp['run']} step {exp['step']}): {key} {got[key]!r} != {value!r}")
print("\n".join(bad[:20]))
sys.exit(1 if bad else 0)
PY
finish "golden metrics"
