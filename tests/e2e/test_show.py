#!/usr/bin/python3
"""uel show on hand-made embeddings whose neighbours are known.

Six rows on the unit circle (angles 0, 10, 30, 100, 120, 200 degrees, labels 0 0 1 1 2 2), whose
images are solid colours, embedded in reverse dataset order (/indices 5..0). Checked, on 1, 2 and 4
ranks (the same files): the neighbours and similarities worked out by hand; the grid's pixels
(size, frame colours counted in the PNG and per cell, each tile's colour naming the dataset
image drawn) for 28x28x1, 32x32x3 and 256x200x3 images; the map's points; the leave-one-out kNN
confusion against numpy's brute force; a file without labels draws slate frames; bad input gets a
clear message and a non-zero exit.
"""
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

import h5py
import matplotlib.image
import numpy as np

uel, mpiexec = sys.argv[1], sys.argv[2]
failures = 0


def check(ok, what):
    global failures
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    failures += 0 if ok else 1
    return ok


ANGLES = [0, 10, 30, 100, 120, 200]
LABELS = [0, 0, 1, 1, 2, 2]
INDICES = [5, 4, 3, 2, 1, 0]  # row r embeds dataset image INDICES[r]


def colour(image):  # dataset image i is the solid colour (40 i, 255 - 40 i, 20 i)
    return np.array([40 * image, 255 - 40 * image, 20 * image], np.uint8)


def write_dataset(path, shape):
    h, w, c = shape
    images = np.zeros((6, h, w, c), np.uint8)
    for i in range(6):
        images[i] = colour(i)[:c] if c == 3 else colour(i)[0]
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = np.array([LABELS[INDICES.index(i)] for i in range(6)], np.int64)
        f.attrs["name"] = "toy"
        f.attrs["num_classes"] = 3
        f.attrs["class_names"] = ["zero", "one", "two"]


def write_embeddings(path, source, labelled=True):
    e = np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES])
    with h5py.File(path, "w") as f:
        f["embeddings"] = e.astype(np.float32)
        if labelled:
            f["labels"] = np.array(LABELS, np.int64)
        f["indices"] = np.array(INDICES, np.int64)
        f.attrs["source"] = source
    return e


def show(args, ranks=1):
    cmd = [mpiexec, "-np", str(ranks), uel] if ranks > 1 else [uel]
    return subprocess.run(cmd + ["show"] + args, capture_output=True, text=True, timeout=600)


def pixel(png, x, y):
    return tuple(int(round(255 * v)) for v in png[y, x, :3])


tmp = tempfile.mkdtemp(prefix="uel_show_")
data = os.path.join(tmp, "toy.h5")
emb = os.path.join(tmp, "emb.h5")
write_dataset(data, (28, 28, 1))
e = write_embeddings(emb, data)

# Hand-worked neighbours: query 0 (0 deg, label 0) -> rows 1 (10), 2 (30), 3 (100); query 3
# (100 deg, label 1) -> rows 4 (120), 2 (30), 1 (10).
# (row, degrees from the query, frame)
want = {
    0: [(1, 10, "match"), (2, 30, "miss"), (3, 100, "miss")],
    3: [(4, 20, "miss"), (2, 70, "match"), (1, 90, "miss")],
}
runs = {}
for ranks in (1, 2, 4):
    out = os.path.join(tmp, f"show{ranks}")
    r = show(["--data", emb, "--out", out, "--query", "0,3", "--k", "3", "--map", "pca",
              "--knn_k", "2", "--comm.check_order=true"], ranks)
    if not check(r.returncode == 0, f"uel show on {ranks} rank(s): {r.stderr[-400:]}"):
        continue
    runs[ranks] = out
    rows = [json.loads(line) for line in open(os.path.join(out, "neighbours.jsonl"))]
    got = {q: [(r["index"], r["similarity"]) for r in rows if r["query"] == q] for q in (0, 3)}
    check(
        all(
            [i for i, _ in got[q]] == [i for i, _, _ in want[q]]
            and all(abs(s - math.cos(math.radians(d))) < 1e-6 for (_, s), (_, d, _) in
                    zip(got[q], want[q]))
            for q in (0, 3)
        ),
        f"{ranks} rank(s): the neighbours and cosines worked out by hand ({got})",
    )
for ranks in (2, 4):
    if 1 in runs and ranks in runs:
        same = all(
            open(os.path.join(runs[1], f)).read() == open(os.path.join(runs[ranks], f)).read()
            for f in ("neighbours.jsonl", "knn.json", "grid.json", "map.csv")
        )
        check(same, f"1 and {ranks} ranks write the same neighbours, kNN, grid and map")


def gray(image):
    return (40 * image,) * 3


def rgb(image):
    return tuple(int(v) for v in colour(image))


def check_grid(out, what, tile_colour, labelled=True):
    grid = json.load(open(os.path.join(out, "grid.json")))
    png = matplotlib.image.imread(os.path.join(out, "grid.png"))
    check(png.shape[:2] == (grid["height"], grid["width"]), f"{what}: grid.png is {png.shape}")
    colours = {k: tuple(v) for k, v in grid["colours"].items()}
    cells = grid["cells"]
    check(len(cells) == 2 * 4, f"{what}: 2 queries x (1 + 3) cells ({len(cells)})")
    for cell in cells:
        x, y, size = cell["box"]
        expect = "query" if cell["rank"] == 0 else (
            [f for i, _, f in want[cell["query"]]][cell["rank"] - 1] if labelled else "unlabelled")
        frame = pixel(png, x + 1, y + 1)
        centre = pixel(png, x + size // 2, y + size // 2)
        image = INDICES[cell["row"]]
        ok = frame == colours[expect] and cell["index"] == image and centre == tile_colour(image)
        if not check(ok, f"{what}: query {cell['query']} rank {cell['rank']}: frame {frame} "
                         f"({expect}), tile {centre} = image {image}"):
            break
    # Count the frames in the picture itself: each frame is a ring of (size^2 - inner^2) pixels
    # of exactly its colour (captions are black, anti-aliased).
    rgb = np.round(png[:, :, :3] * 255).astype(int)
    size = cells[0]["box"][2]
    ring = size * size - (size - 8) ** 2
    for name, count in (("match", 2), ("miss", 4)) if labelled else (("unlabelled", 6),):
        n = int(np.all(rgb == colours[name], axis=2).sum())
        check(n == count * ring, f"{what}: {n / ring:g} {name} frames counted in the PNG")


if 1 in runs:
    check_grid(runs[1], "28x28x1", gray)
    points = list(csv.DictReader(open(os.path.join(runs[1], "map.csv"))))
    check(len(points) == 6 and sorted(int(p["row"]) for p in points) == list(range(6)),
          f"the map draws the 6 rows ({len(points)})")
    # numpy's leave-one-out weighted kNN (k=2, tau=0.1) against uel's confusion matrix
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    confusion = np.zeros((3, 3), int)
    for q in range(6):
        top = np.argsort(-s[q], kind="stable")[:2]
        votes = np.zeros(3)
        for t in top:
            votes[LABELS[t]] += math.exp(s[q, t] / 0.1)
        confusion[LABELS[q], int(np.argmax(votes))] += 1
    got = json.load(open(os.path.join(runs[1], "knn.json")))
    check(got["k"] == 2 and np.array_equal(np.array(got["confusion"]), confusion),
          f"leave-one-out kNN confusion {got['confusion']} equals numpy's {confusion.tolist()}")
    page = open(os.path.join(runs[1], "show.md")).read()
    check(all(p in page for p in ("grid.png", "map.png", "classes.png", "| zero |")),
          "show.md links the pictures and names the classes")
    for f in ("map.png", "classes.png"):
        check(matplotlib.image.imread(os.path.join(runs[1], f)).ndim == 3, f"{f} decodes")

# Colour images of other shapes render in their colours (nearest scaling keeps solid colours).
for shape in ((32, 32, 3), (256, 200, 3)):
    d = os.path.join(tmp, f"toy{shape[0]}.h5")
    write_dataset(d, shape)
    out = os.path.join(tmp, f"show{shape[0]}")
    r = show(["--data", emb, "--images", d, "--out", out, "--query", "0,3", "--k", "3",
              "--map", "pca"])
    if check(r.returncode == 0, f"{shape}: {r.stderr[-300:]}"):
        check_grid(out, "x".join(map(str, shape)), rgb)

# Without labels: slate frames, no per-class page, and said so.
bare = os.path.join(tmp, "bare.h5")
write_embeddings(bare, data, labelled=False)
out = os.path.join(tmp, "bare")
r = show(["--data", bare, "--out", out, "--query", "0,3", "--k", "3", "--map", "tsne"])
if check(r.returncode == 0, f"unlabelled file: {r.stderr[-300:]}"):
    check_grid(out, "unlabelled", gray, labelled=False)
    check(not os.path.exists(os.path.join(out, "classes.png"))
          and "has no labels" in open(os.path.join(out, "show.md")).read(),
          "unlabelled: no classes.png, and show.md says the file has no labels")

# Bad input: a clear message and a non-zero exit.
gone = os.path.join(tmp, "gone.h5")
orphan = os.path.join(tmp, "orphan.h5")
write_embeddings(orphan, gone)
small = os.path.join(tmp, "small.h5")
with h5py.File(small, "w") as f:
    f["images"] = np.zeros((3, 28, 28, 1), np.uint8)
    f["labels"] = np.zeros(3, np.int64)
for args, status, message in [
    (["--data", emb, "--out", tmp + "/q", "--query", "0,6"], 2, "row 6 is outside the 6 rows"),
    (["--data", emb, "--run", tmp, "--out", tmp + "/q"], 2, "give one of --run RUN and --data"),
    (["--data", emb], 2, "--out DIR is required"),
    (["--data", gone, "--out", tmp + "/q"], 3, "does not exist; write one with `uel embed`"),
    (["--data", orphan, "--out", tmp + "/q"], 3, "give --images DATASET.h5"),
    (["--data", emb, "--images", small, "--out", tmp + "/q"], 3, "has 3 images"),
    (["--data", emb, "--out", tmp + "/q", "--map", "umap"], 2, "umap"),
]:
    r = show(args)
    check(r.returncode == status and message in r.stderr,
          f"{' '.join(args[-2:])}: exit {r.returncode} (want {status}), {r.stderr.strip()[-200:]}")

print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
