"""Reads uel's metrics.jsonl for tools/gpu-check.sh; one summary line per call, on stdout.

  losses.py compare RUN REF --bar B [--at 1,10,50,200]
      RUN's per-step losses against REF (a metrics.jsonl, or a reference .tsv of `step loss`
      lines): the largest relative difference |run - ref| / |ref| over steps 1..k for each k of
      --at, and PASS when it is <= B over every step both have (B = 0: digit for digit). The
      figures are printed whatever the verdict; exit 0 PASS, 1 FAIL, 2 nothing to compare.
  losses.py stats RUN
      loss first -> last and the median img/s (the first step, which pays for start-up, left out).
"""
import argparse
import json
import math
import sys


def run_losses(path):
    losses = {}
    try:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "loss" in row and "step" in row:
                    losses[int(row["step"])] = float(row["loss"])
    except FileNotFoundError:
        pass
    return losses


def reference_losses(path):
    if path.endswith(".jsonl"):
        return run_losses(path)
    losses = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                step, loss = line.split()
                losses[int(step)] = float(loss)
    return losses


def compare(args):
    run, ref = run_losses(args.run), reference_losses(args.ref)
    steps = sorted(set(run) & set(ref))
    if not steps:
        print(f"no common steps (run has {len(run)}, reference {len(ref)})")
        return 2
    rel = {}
    for s in steps:
        a, b = run[s], ref[s]
        rel[s] = abs(a - b) / abs(b) if b != 0 else abs(a - b)
        if math.isnan(rel[s]):
            rel[s] = math.inf  # a NaN loss never passes
    worst = max(rel.values())
    parts = []
    for k in (int(x) for x in args.at.split(",")):
        upto = [rel[s] for s in steps if s <= k]
        parts.append(f"{k}: {max(upto):.1e}" if k <= steps[-1] and upto else f"{k}: n/a")
    ok = worst <= args.bar
    last = max(run) if run else 0
    print(
        f"max rel. diff. over steps 1..k, k = {', '.join(parts)} ({len(steps)} steps compared, "
        f"run ended at step {last}); {'PASS' if ok else 'FAIL'} at {args.bar:g}"
    )
    return 0 if ok else 1


def stats(args):
    rows = []
    try:
        with open(args.run) as f:
            rows = [json.loads(line) for line in f]
    except FileNotFoundError:
        pass
    loss = [r["loss"] for r in rows if "loss" in r]
    ips = sorted(r["img_per_s"] for r in rows[1:] if "img_per_s" in r)
    if not loss:
        print("no steps logged")
        return 2
    median = f"{ips[len(ips) // 2]:.0f} img/s (median of {len(ips)} steps)" if ips else "no img/s"
    print(f"loss {loss[0]:.6f} -> {loss[-1]:.6f} over {len(loss)} steps, {median}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("run")
    c.add_argument("ref")
    c.add_argument("--bar", type=float, required=True)
    c.add_argument("--at", default="1,10,50,200")
    s = sub.add_parser("stats")
    s.add_argument("run")
    args = parser.parse_args()
    return compare(args) if args.command == "compare" else stats(args)


if __name__ == "__main__":
    sys.exit(main())
