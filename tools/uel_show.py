#!/usr/bin/python3
"""Pictures of an embedding; `uel show` computes the neighbours and kNN votes and runs it.

Reads the embeddings file (/embeddings, /labels, /indices: the rows of its source dataset), the
dataset holding the images (/images uint8 [N, H, W, C], attribute class_names), the neighbours
uel found (neighbours.jsonl, `uel neighbours` lines) and the leave-one-out kNN confusion
(knn.json), and writes to DIR:
  grid.png     each query (blue frame) and its nearest rows, framed green when the label matches
               the query's and red when not (slate: the file has no labels), cosine under each
  grid.json    the grid's cells: query, rank, row, dataset index, frame and pixel box
  map.png      2-D projection (t-SNE or PCA) of the embedding beside the same rows' pixels
               (less their mean, L2-normalised: eval.features=pixels), coloured by class
  map.csv      the points drawn: row, index, label, embedding_x/y, pixels_x/y
  classes.png  per-class leave-one-out weighted kNN accuracy (labelled files)
  show.md      the page: the pictures, per-class accuracy and the pairs most mixed up
Exit status: 0 done, 2 bad arguments, 3 a file is missing or malformed (uel's).
"""
import argparse
import csv
import json
import os
import sys

import numpy as np


def fail(status, message):
    print(f"uel show: error: {message}", file=sys.stderr)
    sys.exit(status)


try:
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:
    fail(3, f"{e}; apt-get install python3-h5py python3-matplotlib (tools/setup.sh does)")

TILE = 84  # pixels of an image in the grid (28x28 drawn 3x)
FRAME = 4
GAP = 8
QUERY_GAP = 24
MARGIN = 10
TITLE = 26
CAPTION = 18
COLOURS = {
    "query": (0, 90, 200),
    "match": (0, 160, 0),
    "miss": (220, 0, 0),
    "unlabelled": (110, 110, 150),  # not a gray: captions anti-alias to grays
}


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_inputs(args):
    try:
        with h5py.File(args.embeddings, "r") as f:
            embeddings = np.asarray(f["embeddings"], dtype=np.float32)
            labels = np.asarray(f["labels"], dtype=np.int64) if "labels" in f else None
            n = embeddings.shape[0]
            indices = np.asarray(f["indices"], dtype=np.int64) if "indices" in f else np.arange(n)
            source = text(f.attrs.get("source", ""))
    except (OSError, KeyError) as e:
        fail(3, f"{args.embeddings} is not a uel embeddings file: {e}")
    images_path = args.images or source
    if not images_path or not os.path.isfile(images_path):
        fail(
            3,
            f"the images of {args.embeddings} ('{images_path}', its source attribute) are not "
            "there; give --images DATASET.h5",
        )
    try:
        with h5py.File(images_path, "r") as f:
            images = f["images"]
            if images.ndim != 4 or images.dtype != np.uint8:
                fail(3, f"{images_path}/images must be uint8 [N, H, W, C]")
            if indices.size and (indices.min() < 0 or indices.max() >= images.shape[0]):
                fail(
                    3,
                    f"{args.embeddings} embeds rows up to {indices.max()} but {images_path} has "
                    f"{images.shape[0]} images; give the dataset it embedded with --images",
                )
            # h5py reads increasing indices; map back to the embeddings' order.
            unique, inverse = np.unique(indices, return_inverse=True)
            pictures = np.asarray(images[unique])[inverse]
            names = [text(c) for c in f.attrs.get("class_names", [])]
    except (OSError, KeyError) as e:
        fail(3, f"{images_path} is not a uel dataset: {e}")
    return embeddings, labels, indices, pictures, names


def tile(image):
    """An image as TILE x TILE RGB: the longer side scaled to TILE (nearest), centred on white."""
    h, w, c = image.shape
    scale = TILE / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(th) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(tw) / scale).astype(int), w - 1)
    scaled = image[rows][:, cols]
    if c == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    out = np.full((TILE, TILE, 3), 255, np.uint8)
    top, left = (TILE - th) // 2, (TILE - tw) // 2
    out[top : top + th, left : left + tw] = scaled[:, :, :3]
    return out


def draw_grid(args, neighbours, labels, indices, pictures, names):
    queries = list(dict.fromkeys(row["query"] for row in neighbours))
    by_query = {q: [r for r in neighbours if r["query"] == q] for q in queries}
    k = max(len(v) for v in by_query.values())
    cell = TILE + 2 * FRAME
    width = 2 * MARGIN + cell + QUERY_GAP + k * cell + (k - 1) * GAP
    height = 2 * MARGIN + TITLE + len(queries) * (cell + CAPTION) + (len(queries) - 1) * GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    cells, captions = [], []

    def put(row, x, y, frame, caption, query, rank):
        canvas[y : y + cell, x : x + cell] = COLOURS[frame]
        canvas[y + FRAME : y + FRAME + TILE, x + FRAME : x + FRAME + TILE] = tile(pictures[row])
        captions.append((x + cell / 2, y + cell + 2, caption))
        cells.append(
            {
                "query": query,
                "rank": rank,
                "row": int(row),
                "index": int(indices[row]),
                "frame": frame,
                "box": [x, y, cell],
            }
        )

    def name(label):
        return names[label] if 0 <= label < len(names) else str(label)

    for i, q in enumerate(queries):
        y = MARGIN + TITLE + i * (cell + CAPTION + GAP)
        label = None if labels is None else int(labels[q])
        put(q, MARGIN, y, "query", f"#{q}" + ("" if label is None else f" {name(label)}"), q, 0)
        for j, row in enumerate(by_query[q]):
            if labels is None:
                frame = "unlabelled"
            else:
                frame = "match" if int(labels[row["index"]]) == label else "miss"
            x = MARGIN + cell + QUERY_GAP + j * (cell + GAP)
            put(row["index"], x, y, frame, f"{row['similarity']:.3f}", q, row["rank"])

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    fig.figimage(canvas, 0, 0, origin="upper")
    title = f"{len(queries)} queries (blue) and their {k} nearest rows, cosine below"
    title += "" if labels is None else "; green: same class, red: another"
    fig.text(MARGIN / width, 1 - (MARGIN + 4) / height, title, va="top", fontsize=9)
    for x, y, caption in captions:
        fig.text(x / width, 1 - y / height, caption, ha="center", va="top", fontsize=7)
    fig.savefig(os.path.join(args.out, "grid.png"), dpi=100)
    plt.close(fig)
    with open(os.path.join(args.out, "grid.json"), "w") as f:
        json.dump({"width": width, "height": height, "colours": COLOURS, "cells": cells}, f)
    return queries, k


def project(values, args):
    if args.map == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=args.seed).fit_transform(values)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(values) - 1) / 3)
    return TSNE(
        n_components=2, init="pca", learning_rate="auto", perplexity=perplexity,
        random_state=args.seed,
    ).fit_transform(values)


def draw_maps(args, embeddings, labels, indices, pictures, names):
    rng = np.random.default_rng(args.seed)
    n = len(embeddings)
    rows = np.sort(rng.choice(n, size=min(args.points, n), replace=False))
    pixels = pictures[rows].reshape(len(rows), -1).astype(np.float64)
    pixels -= pixels.mean(axis=0)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-12)
    maps = [project(embeddings[rows].astype(np.float64), args), project(pixels, args)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), dpi=100)
    colours = labels[rows] if labels is not None else None
    classes = np.unique(colours) if colours is not None else []
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, points, title in zip(axes, maps, ["embedding", "pixels"]):
        if colours is None:
            ax.scatter(points[:, 0], points[:, 1], s=3, c="0.3")
        for i, c in enumerate(classes):
            at = colours == c
            label = names[c] if 0 <= c < len(names) else str(c)
            ax.scatter(points[at, 0], points[at, 1], s=3, color=cmap(i % cmap.N), label=label)
        ax.set_title(f"{title} ({args.map}, {len(rows)} rows)")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes):
        axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "map.png"))
    plt.close(fig)
    with open(os.path.join(args.out, "map.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "index", "label", "embedding_x", "embedding_y", "pixels_x", "pixels_y"])
        for i, row in enumerate(rows):
            label = "" if labels is None else int(labels[row])
            w.writerow([int(row), int(indices[row]), label, *maps[0][i], *maps[1][i]])
    return len(rows)


def draw_classes(args, knn, names):
    confusion = np.asarray(knn["confusion"], dtype=np.int64)
    totals = confusion.sum(axis=1)
    present = np.flatnonzero(totals)
    accuracy = np.diag(confusion)[present] / totals[present]
    label = [names[c] if c < len(names) else str(c) for c in present]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(present) + 2), 4), dpi=100)
    ax.bar(range(len(present)), 100 * accuracy, color="tab:blue")
    ax.set_xticks(range(len(present)))
    ax.set_xticklabels(label, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("leave-one-out kNN accuracy (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "classes.png"))
    plt.close(fig)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [
        (int(off[i, j]), i, j) for i in range(len(off)) for j in range(len(off)) if off[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return present, accuracy, pairs[:5], confusion


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--neighbours", required=True)
    parser.add_argument("--images")
    parser.add_argument("--knn")
    parser.add_argument("--map", choices=["tsne", "pca"], default="tsne")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.points < 1:
        parser.error("--points must be positive")
    os.makedirs(args.out, exist_ok=True)
    embeddings, labels, indices, pictures, names = read_inputs(args)
    with open(args.neighbours) as f:
        neighbours = [json.loads(line) for line in f if line.strip()]
    if not neighbours:
        fail(3, f"{args.neighbours} lists no neighbours")
    queries, k = draw_grid(args, neighbours, labels, indices, pictures, names)
    points = draw_maps(args, embeddings, labels, indices, pictures, names)
    page = [
        f"# {os.path.basename(os.path.normpath(args.out))}",
        "",
        f"{len(embeddings)} embeddings of {pictures.shape[1]}x{pictures.shape[2]}x"
        f"{pictures.shape[3]} images (`{args.embeddings}`).",
        "",
        "## Retrieval",
        "",
        f"{len(queries)} queries (blue), each followed by its {k} nearest rows by cosine "
        + (
            "(green: same class as the query, red: another)."
            if labels is not None
            else "(slate frames: the file has no labels, so matches are not coloured)."
        ),
        "",
        "![retrieval grid](grid.png)",
        "",
        "## Maps",
        "",
        f"{points} rows projected to 2-D with {args.map}: the embedding (left) and the same "
        "images' pixels, less their mean and L2-normalised (right)"
        + (", coloured by class." if labels is not None else "."),
        "",
        "![maps](map.png)",
        "",
    ]
    if args.knn:
        with open(args.knn) as f:
            knn = json.load(f)
        present, accuracy, pairs, confusion = draw_classes(args, knn, names)
        total = confusion.sum()
        name = lambda c: names[c] if c < len(names) else str(c)  # noqa: E731
        page += [
            "## Classes",
            "",
            f"Leave-one-out weighted kNN within these rows (k={knn['k']}, tau={knn['tau']}): "
            f"{100 * np.trace(confusion) / max(total, 1):.2f}% overall.",
            "",
            "![per-class accuracy](classes.png)",
            "",
            "| class | rows | kNN accuracy (%) |",
            "|---|---|---|",
        ]
        page += [
            f"| {name(c)} | {confusion[c].sum()} | {100 * a:.2f} |"
            for c, a in zip(present, accuracy)
        ]
        page += ["", "Most often mixed up (true class -> predicted class):", ""]
        page += ["| true | predicted | rows | share of the true class (%) |", "|---|---|---|---|"]
        page += [
            f"| {name(i)} | {name(j)} | {n} | {100 * n / confusion[i].sum():.2f} |"
            for n, i, j in pairs
        ]
        page.append("")
    with open(os.path.join(args.out, "show.md"), "w") as f:
        f.write("\n".join(page))
    print(f"uel show: wrote grid.png, map.png{', classes.png' if args.knn else ''} and show.md "
          f"to {args.out}")


if __name__ == "__main__":
    main()
