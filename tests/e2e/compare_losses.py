"""Compares the losses of two metrics.jsonl files: both have `steps` rows and every loss of the
second is within relative `tolerance` of the first's. Exit status 0 when they agree.
usage: compare_losses.py REFERENCE.jsonl OTHER.jsonl STEPS TOLERANCE"""
import json
import sys

a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
steps, tolerance = int(sys.argv[3]), float(sys.argv[4])
assert len(a) == len(b) == steps, (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"max relative loss difference vs the reference: {worst:.2e}")
assert worst <= tolerance, worst
