#!/usr/bin/env bash
# Two hosts on one machine (tools/netns-hosts.sh: two network namespaces joined by a veth link,
# OpenMPI over TCP between them, a launcher agent in place of ssh):
#  - mpirun places ranks on both hosts, and the training's gradients cross the link,
#  - uel train on 2 hosts x 1 rank and 2 hosts x 2 ranks logs the float64 losses of the
#    one-host run with as many ranks, digit for digit, and those of 1 rank within 1e-5,
#  - uel bench step over the hosts times the gradient all-reduce and its exposed part; with the
#    link capped at 20 Mbit/s the all-reduce takes at least the gradient's bytes at that rate.
# Skipped (exit 77) without root or network namespaces. The namespaces, their link and the
# route go at exit, also on failure.
# usage: test_hosts.sh UEL MPIEXEC NETNS_HOSTS_SH
set -uo pipefail
uel=$1 mpiexec=$2 hosts=$3
if ! why=$(bash "$hosts" check 2>&1); then
  echo "SKIPPED: $why"
  exit 77
fi
# Hosts of an earlier run that was killed (SIGKILL skips its trap): its pid is in their names.
for name in $(ip netns list | awk '{print $1}' | grep -E '^uel-t[0-9]+-1$'); do
  pid=${name#uel-t} pid=${pid%-1}
  kill -0 "$pid" 2>/dev/null || UEL_HOSTS=uel-t$pid- bash "$hosts" down
done
export UEL_HOSTS=uel-t$$-  # hosts uel-t<pid>-1 and -2: tests running side by side do not meet
tmp=$(mktemp -d)
trap 'bash "$hosts" down; rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../support/tally.sh"

bash "$hosts" up || { echo "FAIL: could not make the hosts"; exit 1; }
placed=$(bash "$hosts" mpirun -np 4 hostname 2>&1 | sort | uniq -c | awk '{print $1 "x" $2}' | xargs)
[[ $placed == "2x${UEL_HOSTS}1 2x${UEL_HOSTS}2" ]] && pass || fail "ranks placed as: $placed"

"$uel" prepare fashion-mnist --src /usr/share/datasets/fashion-mnist --out "$tmp/fm" >/dev/null || exit 1
# Options may be given once: the model's width is each run's.
base=(--data.train="$tmp/fm/test.h5" --data.test="$tmp/fm/test.h5" --aug.mean=0.286 --aug.std=0.353
  --model.low_dim=32 --model.sync_bn=true --train.threads=1 --train.batch_size=64 --eval.every=0)
common=("${base[@]}" --model.width=8 --train.log_every=1 --train.max_steps=10 --train.precision=float64)
losses() { /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "loss" in row: print(row["step"], repr(row["loss"]))' "$1"; }

for np in 1 2 4; do
  "$mpiexec" -np $np "$uel" train "${common[@]}" --out "$tmp/one$np" >"$tmp/one$np.log" 2>&1 ||
    { fail "one host, $np ranks"; tail -5 "$tmp/one$np.log"; }
done
for np in 2 4; do
  read -r sent_before _ < <(bash "$hosts" stats)
  bash "$hosts" mpirun -np $np "$uel" train "${common[@]}" --out "$tmp/two$np" >"$tmp/two$np.log" 2>&1 ||
    { fail "two hosts, $np ranks"; tail -5 "$tmp/two$np.log"; }
  read -r sent _ < <(bash "$hosts" stats)
  # 10 all-reduces of the model's float64 gradients at least (~0.3 MB) left host 1.
  ((sent - sent_before > 1000000)) && pass || fail "$np ranks: only $((sent - sent_before)) bytes crossed the link"
  if [[ $(losses "$tmp/two$np/metrics.jsonl" | wc -l) == 10 ]] &&
    diff <(losses "$tmp/one$np/metrics.jsonl") <(losses "$tmp/two$np/metrics.jsonl") >/dev/null; then pass; else
    fail "two hosts x $((np / 2)) ranks differ from one host x $np"
    diff <(losses "$tmp/one$np/metrics.jsonl") <(losses "$tmp/two$np/metrics.jsonl") | head -6
  fi
  /usr/bin/python3 "$(dirname "$0")/compare_losses.py" "$tmp/one1/metrics.jsonl" "$tmp/two$np/metrics.jsonl" 10 1e-5 &&
    pass || fail "two hosts x $((np / 2)) ranks differ from 1 rank"
done

# --- bench step: all-reduce and exposed time, unshaped and capped -------------------------------
# 0.39 MB of float32 gradients in 3 buckets.
bench=("${base[@]}" --model.width=16 --comm.first_bucket_mb=0.05 --comm.bucket_mb=0.1
  --bench.steps=6 --bench.warmup=1)
for cap in none 20mbit; do
  bash "$hosts" cap $cap
  bash "$hosts" mpirun -np 2 "$uel" bench step "${bench[@]}" >"$tmp/bench-$cap.log" 2>&1 ||
    { fail "bench step ($cap)"; tail -5 "$tmp/bench-$cap.log"; }
  grep "gradient all-reduce" "$tmp/bench-$cap.log"
  /usr/bin/python3 - "$tmp/bench-$cap.log" $cap <<'PY' && pass || fail "bench step figures ($cap)"
import json, sys
row = json.loads([l for l in open(sys.argv[1]) if l.startswith('{"bench": "step"')][-1])
ms, exposed, mb = row["allreduce_ms"], row["exposed_ms"], row["gradient_mb"]
assert row["ranks"] == 2 and row["buckets"] >= 3, row
assert 0 < ms and 0 <= exposed, row
if sys.argv[2] != "none":
    # Of two ranks each sends its whole bucket to the other (2(n-1)/n of it); the token bucket
    # (16 KiB at this rate) may be full as each bucket starts, the rest waits for the rate.
    floor = 1e3 * (mb * 2**20 - row["buckets"] * 16384) * 8 / 20e6
    print(f"capped at 20 Mbit/s: {ms:.1f} ms all-reducing per step, at least {floor:.1f}")
    assert floor > 5 and ms >= 0.9 * floor, (ms, floor, row)
PY
done

finish hosts
