#!/usr/bin/env bash
# Large-batch tools end to end through `uel`, on Fashion-MNIST's test split:
#  - train.accumulate: 1 rank x 4 micro-batches and 2 ranks x 2 give the losses of 4 ranks x 16
#    (full softmax, float64, BatchNorm per rank = per micro-batch), and a method whose loss spans
#    the batch refuses it,
#  - LARS with warm-up and sqrt scaling: a run resumed from its checkpoint logs the uninterrupted
#    losses digit for digit (the optimizer's state is saved),
#  - train.trace: valid JSON, every rank's phases nested inside its steps, one all-reduce event
#    per bucket and step,
#  - the progress line: one updating line on a terminal, none in a log file,
#  - train.noise_scale: the gradient noise scale in every logged row, the losses unchanged; one
#    rank, SyncBatchNorm and gradients into other ranks' samples refused,
#  - uel report: PNG plots, the table's figures equal to metrics.jsonl's, a scaling table for runs
#    that differ only in ranks, kNN at equal epochs for runs of different batches, bad arguments.
# usage: test_large_batch.sh UEL MPIEXEC
set -uo pipefail
uel=$1 mpiexec=$2 here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../support/tally.sh"

"$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp/fm" >/dev/null || exit 1
base=(--data.train="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353 --model.width=8
  --model.low_dim=32 --train.threads=1)

# --- gradient accumulation ----------------------------------------------------------------------
acc=("${base[@]}" --train.log_every=1 --train.batch_size=64 --eval.every=0 --train.method=nce --nce.k=0
  --train.precision=float64 --train.max_steps=6)
"$mpiexec" -np 4 "$uel" train "${acc[@]}" --out "$tmp/np4" >"$tmp/np4.log" 2>&1 || fail "4 ranks x 16"
"$mpiexec" -np 1 "$uel" train "${acc[@]}" --train.accumulate=4 --out "$tmp/acc4" >"$tmp/acc4.log" 2>&1 ||
  fail "1 rank x 4 micro-batches"
"$mpiexec" -np 2 "$uel" train "${acc[@]}" --train.accumulate=2 --out "$tmp/acc2" >"$tmp/acc2.log" 2>&1 ||
  fail "2 ranks x 2 micro-batches"
for run in acc4 acc2; do
  /usr/bin/python3 "$here/compare_losses.py" "$tmp/np4/metrics.jsonl" "$tmp/$run/metrics.jsonl" 6 1e-9 &&
    pass || fail "$run differs from 4 ranks x 16"
done
# Without accumulation one rank normalises the 64 together: the comparison can tell.
"$uel" train "${acc[@]}" --out "$tmp/np1" >"$tmp/np1.log" 2>&1 || fail "1 rank x 64"
/usr/bin/python3 "$here/compare_losses.py" "$tmp/np4/metrics.jsonl" "$tmp/np1/metrics.jsonl" 6 1e-9 \
  >/dev/null 2>&1 && fail "1 rank x 64 matched 4 x 16: the comparison cannot fail" || pass
out=$("$uel" train "${base[@]}" --eval.every=0 --train.accumulate=2 --train.max_steps=1 --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF -- "--train.accumulate=2 needs a loss that is a mean over samples (nce); the loss of --train.method=isif spans the batch it sees" <<<"$out" &&
  pass || fail "accumulation with isif: exit $rc, $out"
out=$("$mpiexec" -np 2 "$uel" train "${acc[@]/--train.batch_size=64/--train.batch_size=12}" --train.accumulate=4 \
  --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF -- "--train.batch_size 12 over --train.accumulate 4 leaves micro-batches of 3, not divisible by the world size 2; use a batch size that is a multiple of 8" <<<"$out" &&
  pass || fail "micro-batches 2 ranks cannot split: exit $rc, $out"
out=$("$uel" train "${acc[@]}" --train.accumulate=3 --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF "is not divisible by --train.accumulate 3" <<<"$out" && pass ||
  fail "batch 64 with accumulate 3: exit $rc, $out"

# --- LARS: resume digit for digit, trace ---------------------------------------------------------
lars=("${base[@]}" --train.log_every=1 --train.batch_size=128 --eval.every=0 --train.optimizer=lars --train.lr=0.6
  --train.lr_scaling=sqrt --train.warmup_epochs=0.1 --train.weight_decay=1e-6 --train.checkpoint_every=4)
"$mpiexec" -np 2 "$uel" train "${lars[@]}" --train.max_steps=8 --train.trace="$tmp/trace.json" \
  --out "$tmp/lars" >"$tmp/lars.log" 2>&1 || fail "LARS run"
"$mpiexec" -np 2 "$uel" train "${lars[@]}" --train.max_steps=4 --out "$tmp/lars2" >/dev/null 2>&1 &&
  "$mpiexec" -np 2 "$uel" train "${lars[@]}" --train.max_steps=8 --out "$tmp/lars2" >"$tmp/lars2.log" 2>&1 ||
  fail "LARS in two parts"
grep -q "resumed from .*step-0000004" "$tmp/lars2.log" && pass || fail "LARS did not resume"
/usr/bin/python3 "$here/compare_losses.py" "$tmp/lars/metrics.jsonl" "$tmp/lars2/metrics.jsonl" 8 0 &&
  pass || fail "resumed LARS losses differ"
/usr/bin/python3 - "$tmp/trace.json" <<'PY' && pass || fail "trace"
import json, sys
from collections import defaultdict
events = json.load(open(sys.argv[1]))["traceEvents"]
spans = [e for e in events if e["ph"] == "X"]
assert {e["pid"] for e in spans} == {0, 1}, "both ranks"
assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == {"rank 0", "rank 1"}
by_thread = defaultdict(list)
for e in spans:
    assert e["dur"] >= 0 and e["ts"] >= 0, e
    by_thread[e["pid"], e["tid"]].append(e)
for (pid, tid), es in by_thread.items():
    # Viewers nest events by time: any two on a thread are disjoint or one holds the other.
    es.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []
    for e in es:
        while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
            stack.pop()
        assert not stack or e["ts"] + e["dur"] <= stack[-1]["ts"] + stack[-1]["dur"], (stack[-1], e)
        stack.append(e)
for pid in (0, 1):
    main = by_thread[pid, 0]
    steps = [e for e in main if e["name"] == "step"]
    assert len(steps) == 8, len(steps)
    for s in steps:
        inside = {e["name"] for e in main
                  if s["ts"] <= e["ts"] and e["ts"] + e["dur"] <= s["ts"] + s["dur"]}
        assert {"data", "forward", "backward", "grad_sync", "grad_sync_wait", "optimizer"} <= inside, inside
    reduces = [e for e in by_thread[pid, 1] if e["name"] == "all_reduce"]
    buckets = {e["args"]["bucket"] for e in reduces}
    assert len(reduces) == 8 * len(buckets) and min(e["args"]["bytes"] for e in reduces) > 0
    assert sum(e["name"] == "checkpoint" for e in main) == 2
PY
grep -q "trace of 2 rank(s) written to $tmp/trace.json" "$tmp/lars.log" && pass || fail "trace log line"

# --- gradient noise scale: logged in every row, the training unchanged, 1 rank refused ---------
noise=("${base[@]}" --train.log_every=2 --train.batch_size=64 --eval.every=0 --train.max_steps=6
  --train.precision=float64 --comm.check_order=true)
"$mpiexec" -np 2 "$uel" train "${noise[@]}" --out "$tmp/quiet" >/dev/null 2>&1 || fail "run without noise scale"
"$mpiexec" -np 2 "$uel" train "${noise[@]}" --train.noise_scale=true --out "$tmp/noise" >"$tmp/noise.log" 2>&1 ||
  fail "run with noise scale"
/usr/bin/python3 "$here/compare_losses.py" "$tmp/quiet/metrics.jsonl" "$tmp/noise/metrics.jsonl" 3 0 &&
  pass || fail "measuring the noise scale changed the losses"
/usr/bin/python3 - "$tmp/noise/metrics.jsonl" <<'PY' && pass || fail "noise scale rows"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 3, rows
for r in rows:
    assert r["grad_trace"] > 0 and (r["noise_scale"] is None or r["noise_scale"] > 0), r
    if r["noise_scale"] is not None:
        assert abs(r["noise_scale"] - r["grad_trace"] / r["grad_sq"]) <= 1e-6 * r["noise_scale"] + 0.05, r
PY
grep -qE "step 6/6 loss [0-9.]+ noise scale ([0-9.]+|null) lr" "$tmp/noise.log" && pass || fail "noise scale in the log line"
out=$("$uel" train "${noise[@]}" --train.noise_scale=true --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF -- "--train.noise_scale compares each rank's gradient with the ranks' average and needs 2 or more ranks" <<<"$out" &&
  pass || fail "noise scale on 1 rank: exit $rc, $out"
out=$("$uel" train "${noise[@]}" --train.noise_scale=true --model.sync_bn=true --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF -- "--train.noise_scale needs --model.sync_bn=false: SyncBatchNorm's shared batch statistics" <<<"$out" &&
  pass || fail "noise scale with SyncBatchNorm: exit $rc, $out"
out=$("$uel" train "${noise[@]}" --train.noise_scale=true --isif.key_grad=true --out "$tmp/bad" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF -- "the loss of --train.method=isif with --isif.key_grad=true backpropagates into other ranks' samples" <<<"$out" &&
  pass || fail "noise scale with key gradients: exit $rc, $out"

# --- progress line ----------------------------------------------------------------------------
short=("${base[@]}" --train.batch_size=64 --eval.every=0 --train.max_steps=12 --train.log_every=5)
UEL_PROGRESS='' script -qec "'$uel' train ${short[*]} --out '$tmp/tty'" /dev/null >"$tmp/tty.out" 2>&1 ||
  fail "run on a terminal"
# The loss shown is the last interval's (read every log_every steps): none yet at step 1.
grep -qaP '\repoch 0 step 1/12 [0-9]+ img/s ETA [0-9]+:[0-9]{2}:[0-9]{2}\e\[K' "$tmp/tty.out" &&
  grep -qaP '\repoch 0 step 12/12 loss [0-9.]+ [0-9]+ img/s ETA [0-9]+:[0-9]{2}:[0-9]{2}\e\[K' "$tmp/tty.out" &&
  pass || fail "no progress line on a terminal: $(head -c 300 "$tmp/tty.out" | od -c | head -5)"
# The log line that follows erases the status line first.
grep -qaP '\r\e\[K\[uel [0-9:]+\] epoch 0 step 12/12' "$tmp/tty.out" && pass || fail "progress line not cleared"
"$mpiexec" -np 2 "$uel" train "${short[@]}" --out "$tmp/file" >"$tmp/file.out" 2>&1 || fail "run to a file"
grep -qa $'\r' "$tmp/file.out" && fail "a log file got the progress line" || pass
UEL_PROGRESS=line "$mpiexec" -x UEL_PROGRESS -np 2 "$uel" train "${short[@]}" --out "$tmp/forced" >"$tmp/forced.out" 2>&1
# The first and the last step are drawn whatever the machine's speed.
grep -qa $'\repoch 0 step 1/12 ' "$tmp/forced.out" && grep -qa $'\repoch 0 step 12/12 ' "$tmp/forced.out" &&
  pass || fail "UEL_PROGRESS=line under mpirun: $(grep -ao $'\repoch 0 step [0-9]*/12' "$tmp/forced.out" | tr '\r' ' ')"

# --- uel report ---------------------------------------------------------------------------------
rep=("${base[@]}" --train.log_every=1 --data.test="$tmp/fm/test.h5" --data.classes=0-3 --train.epochs=2 --eval.every=1)
"$mpiexec" -np 1 "$uel" train "${rep[@]}" --train.batch_size=128 --out "$tmp/r1" >/dev/null 2>&1 || fail "report run 1"
"$mpiexec" -np 2 "$uel" train "${rep[@]}" --train.batch_size=128 --train.noise_scale=true --out "$tmp/r2" >/dev/null 2>&1 ||
  fail "report run 2"
"$mpiexec" -np 2 "$uel" train "${rep[@]}" --train.batch_size=256 --out "$tmp/r3" >/dev/null 2>&1 || fail "report run 3"
"$uel" report "$tmp/r1" "$tmp/r2" "$tmp/r3" --out "$tmp/report" >"$tmp/report.out" 2>&1 || fail "uel report: $(cat "$tmp/report.out")"
/usr/bin/python3 - "$tmp" <<'PY' && pass || fail "report contents"
import json, re, sys
tmp = sys.argv[1]
for name in ("loss", "lr", "eval", "throughput", "noise_scale"):
    with open(f"{tmp}/report/{name}.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
md = open(f"{tmp}/report/report.md").read()
for run, ranks, batch in (("r1", 1, 128), ("r2", 2, 128), ("r3", 2, 256)):
    rows = [json.loads(l) for l in open(f"{tmp}/{run}/metrics.jsonl")]
    knn = [r["knn_top1"] for r in rows if "knn_top1" in r]
    line = next(l for l in md.splitlines() if l.startswith(f"| {run} "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == str(ranks) and cells[3] == str(batch), cells
    assert cells[7] == f"{knn[-1]:.4g} knn_top1", (cells[7], knn)
    assert cells[8].startswith(f"{max(knn):.4g} ("), (cells[8], knn)
# r1 and r2 compute the same thing on 1 and 2 ranks; r3 has another batch.
scaling = md[md.index("## Scaling"):]
assert re.search(r"\| r2 \| 2 \| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|", scaling), scaling
assert "r3" not in scaling.split("##")[1]
equal = md[md.index("at equal epochs"):]
assert re.search(r"\| 2 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|", equal), equal
PY
out=$("$uel" report "$tmp/fm" --out "$tmp/report2" 2>&1)
rc=$?
[[ $rc == 3 ]] && grep -qF "is not a run with metrics: it has no config.ini" <<<"$out" && pass || fail "report of no run: $rc $out"
out=$("$uel" report --out "$tmp/report2" 2>&1)
rc=$?
[[ $rc == 2 ]] && grep -qF "missing argument runs" <<<"$out" && pass || fail "report without runs: $rc $out"
cp -r "$tmp/r1" "$tmp/cut" && head -c 50 "$tmp/r1/metrics.jsonl" >"$tmp/cut/metrics.jsonl"
out=$("$uel" report "$tmp/cut" --out "$tmp/report2" 2>&1)
rc=$?
[[ $rc == 3 ]] && grep -qF "metrics.jsonl:1 is not a JSON line" <<<"$out" && pass || fail "report of a cut file: $rc $out"

finish e2e_large_batch
