#!/usr/bin/python3
"""`uel cluster` end to end against scikit-learn (Debian's python3-sklearn) on generated blobs.

Checks, at 1 and 2 ranks: sklearn's NMI/ARI of uel's written assignments equal the NMI/ARI uel
prints (1e-6); uel's inertia is within 1% of sklearn KMeans(n_init=10) and equals the inertia of
its own written centroids and assignments; both world sizes write the same clustering; bad
input ends with a ConfigError (exit 2).

usage: test_cluster.py UEL_BINARY MPIEXEC
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

uel, mpiexec = sys.argv[1], sys.argv[2]
failures = []


def check(name, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not condition:
        failures.append(name)


def run(ranks, *args):
    cmd = [mpiexec, "-np", str(ranks), uel, "cluster", *args] if ranks > 1 else [uel, "cluster", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


with tempfile.TemporaryDirectory() as tmp:
    # Overlapping blobs in 16-D (sklearn: NMI ~0.69), as a `uel embed` file.
    x, labels = make_blobs(n_samples=3000, centers=8, n_features=16, cluster_std=8.0, random_state=0)
    x = x.astype(np.float32)
    data = os.path.join(tmp, "emb.h5")
    with h5py.File(data, "w") as f:
        f["embeddings"] = x
        f["labels"] = labels.astype(np.int64)

    reference = KMeans(n_clusters=8, n_init=10, random_state=0).fit(x)
    written = {}
    for ranks in (1, 2):
        out = os.path.join(tmp, f"clusters-{ranks}.h5")
        rc, stdout, stderr = run(ranks, "--data", data, "--k", "8", "--n_init", "10", "--seed", "3",
                                 "--threads", "1", "--out", out)
        check(f"np{ranks} exits 0", rc == 0, stderr[-2000:])
        if rc != 0:
            continue
        result = json.loads(stdout.strip().splitlines()[-1])
        with h5py.File(out, "r") as f:
            assigned = f["assignments"][:]
            centroids = f["centroids"][:]
            inertia_attr = float(f.attrs["inertia"])
        written[ranks] = (assigned, centroids)
        check(f"np{ranks} nmi", abs(result["nmi"] - normalized_mutual_info_score(labels, assigned)) < 1e-6,
              f'{result["nmi"]} vs sklearn {normalized_mutual_info_score(labels, assigned)}')
        check(f"np{ranks} ari", abs(result["ari"] - adjusted_rand_score(labels, assigned)) < 1e-6,
              f'{result["ari"]} vs sklearn {adjusted_rand_score(labels, assigned)}')
        own = float(((x.astype(np.float64) - centroids[assigned].astype(np.float64)) ** 2).sum())
        check(f"np{ranks} inertia of the written clustering", abs(own - result["inertia"]) < 1e-4 * own,
              f'{result["inertia"]} vs {own}')
        check(f"np{ranks} inertia attribute", abs(inertia_attr - result["inertia"]) < 1e-9 * own)
        check(f"np{ranks} inertia within 1% of sklearn", result["inertia"] <= 1.01 * reference.inertia_,
              f'uel {result["inertia"]:.6g}, sklearn KMeans(n_init=10) {reference.inertia_:.6g}')
        check(f"np{ranks} json fields", result["k"] == 8 and result["rows"] == 3000 and result["ranks"] == ranks
              and result["iterations"] >= 1 and result["seconds"] > 0, json.dumps(result))
    if 1 in written and 2 in written:
        check("np1 and np2 write the same assignments", np.array_equal(written[1][0], written[2][0]))
        check("np1 and np2 write the same centroids",
              np.abs(written[1][1] - written[2][1]).max() < 1e-4)

    rc, _, stderr = run(1, "--data", data, "--k", "8", "--metric", "manhattan", "--out", os.path.join(tmp, "x.h5"))
    check("a bad metric is a ConfigError", rc == 2 and "euclidean" in stderr, stderr[-500:])
    rc, _, stderr = run(1, "--data", os.path.join(tmp, "missing.h5"), "--k", "8", "--out", os.path.join(tmp, "x.h5"))
    check("a missing file is a DataError", rc == 3 and "uel embed" in stderr, stderr[-500:])

print(f"{len(failures)} failed" if failures else "all passed")
sys.exit(1 if failures else 0)
