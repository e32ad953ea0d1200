#!/usr/bin/python3
"""Plots and a table of uel training runs; `uel report RUN [RUN ...] --out DIR` runs it.

Reads each run's config.ini (the resolved options) and metrics.jsonl (training rows: step,
epoch, loss, lr, img_per_s, ranks, elapsed_s; evaluation rows: knn_top1, recall@K, nmi) and
writes to DIR:
  loss.png, lr.png        per global step, every run on one axis
  eval.png                kNN top-1 / Recall@1 / NMI per epoch
  throughput.png          img/s per step
  noise_scale.png         gradient noise scale per logging interval (runs with train.noise_scale)
  report.md               final and best figures, wall time, img/s, ranks, global batch; a
                          scaling table for runs that differ only in ranks, and kNN at equal
                          epochs for runs that differ in batch size
Exit status: 0 done, 2 bad arguments, 3 a run's files are missing or malformed (uel's).
"""
import argparse
import configparser
import json
import os
import statistics
import sys


def fail(status, message):
    print(f"uel report: error: {message}", file=sys.stderr)
    sys.exit(status)


class Run:
    def __init__(self, path, run_control):
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        ini = configparser.ConfigParser(interpolation=None)
        try:
            ini.read(os.path.join(path, "config.ini"))
        except configparser.Error as e:
            fail(3, f"{path}/config.ini is not a uel configuration: {e}")
        self.options = {f"{s}.{k}": v for s in ini.sections() for k, v in ini[s].items()}
        # What the run computes: two runs with equal identities differ only in how they ran.
        self.identity = {k: v for k, v in self.options.items() if k not in run_control}
        self.train, self.evals = [], []
        metrics = os.path.join(path, "metrics.jsonl")
        with open(metrics) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(3, f"{metrics}:{number} is not a JSON line ({e}); was the file cut?")
                (self.train if "loss" in row else self.evals).append(row)
        if not self.train:
            fail(3, f"{metrics} has no training rows yet; report a run after its first log line")
        self.batch = int(self.options.get("train.batch_size", "0"))
        self.ranks = self.train[-1].get("ranks")
        # A resumed run restarts its clock: sum the segments.
        rows = sorted(self.train + self.evals, key=lambda r: (r["step"], "loss" not in r))
        self.wall_s, last = 0.0, 0.0
        for row in rows:
            t = row.get("elapsed_s")
            if t is None:
                continue
            self.wall_s += t - last if t >= last else t
            last = t
        # The first interval carries start-up (threads, first batches): leave it out when
        # there are others, as benchmarks drop warm-up steps.
        speeds = [r["img_per_s"] for r in self.train]
        self.img_per_s = statistics.median(speeds[1:] if len(speeds) > 2 else speeds)

    def metric(self):
        """The headline evaluation metric the run logged, or None."""
        for key in ("knn_top1", "recall@1", "nmi"):
            if any(key in r for r in self.evals):
                return key
        return None


def differing(runs):
    """Options that tell the runs apart (what they compute, not how they ran)."""
    keys = sorted({k for r in runs for k in r.identity if not k.startswith("data.")})
    return [k for k in keys if len({r.identity.get(k) for r in runs}) > 1]


def label(run, keys):
    # A sweep of one or two options names them; longer differences stay in the table.
    parts = [f"{k.removeprefix('train.')}={run.options.get(k, '-')}" for k in keys]
    parts = parts if len(parts) <= 3 else [p for p in parts if p.startswith("batch_size=")]
    if run.ranks is not None:
        parts.append(f"{run.ranks} ranks")
    return f"{run.name} ({', '.join(parts)})" if parts else run.name


def has_noise_scale(run):
    return any("noise_scale" in row for row in run.train)


def plot(runs, labels, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def figure(name, ylabel, series, xlabel="step", logy=False):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=80)
        for run, text in zip(runs, labels):
            xs, ys = series(run)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, markersize=3, label=text)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name))
        plt.close(fig)

    def per_step(key):
        return lambda r: ([row["step"] for row in r.train], [row[key] for row in r.train])

    figure("loss.png", "loss", per_step("loss"))
    figure("lr.png", "learning rate", per_step("lr"), logy=True)
    figure("throughput.png", "img/s", per_step("img_per_s"))
    if any(has_noise_scale(r) for r in runs):
        def noise(r):  # rows where the |G|^2 estimate was positive (null otherwise)
            rows = [row for row in r.train if row.get("noise_scale") is not None]
            return [row["step"] for row in rows], [row["noise_scale"] for row in rows]

        figure("noise_scale.png", "gradient noise scale B_simple (instances)", noise, logy=True)
    metric = next((r.metric() for r in runs if r.metric()), None)
    if metric:
        def per_epoch(r):
            rows = [row for row in r.evals if metric in row]
            return [row["epoch"] + 1 for row in rows], [row[metric] for row in rows]

        figure("eval.png", metric, per_epoch, xlabel="epoch")


def fmt_time(seconds):
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def table(runs, labels):
    lines = [
        "| run | method | ranks | global batch | optimizer | lr | epochs | final | best (epoch) "
        "| wall | img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, text in zip(runs, labels):
        metric = run.metric()
        final = best = "-"
        if metric:
            rows = [row for row in run.evals if metric in row]
            top = max(rows, key=lambda row: row[metric])
            final = f"{rows[-1][metric]:.4g} {metric}"
            best = f"{top[metric]:.4g} ({top['epoch'] + 1})"
        o = run.options
        lines.append(
            f"| {text} | {o.get('train.method', '-')} | {run.ranks or '-'} | {run.batch} | "
            f"{o.get('train.optimizer', '-')} | {o.get('train.lr', '-')} "
            f"({o.get('train.lr_scaling', 'none')}) | {run.evals[-1]['epoch'] + 1 if run.evals else '-'} | "
            f"{final} | {best} | {fmt_time(run.wall_s) if run.wall_s else '-'} | {run.img_per_s:.0f} |"
        )
    return lines


def scaling(runs):
    """Speed-up and efficiency of runs that compute the same thing on different ranks."""
    groups = {}
    for run in runs:
        if run.ranks:
            groups.setdefault(json.dumps(run.identity, sort_keys=True), []).append(run)
    lines = []
    for group in groups.values():
        if len({r.ranks for r in group}) < 2:
            continue
        group.sort(key=lambda r: r.ranks)
        base = group[0]
        lines += ["", f"## Scaling (runs that differ only in ranks; against {base.name})", "",
                  "| run | ranks | img/s | speed-up | efficiency |", "|---|---|---|---|---|"]
        for r in group:
            # The same global batch, so time per epoch T ~ 1 / img/s: speed-up T_base / T_N,
            # efficiency speed-up / (N / base ranks), 1 for perfect scaling.
            speedup = r.img_per_s / base.img_per_s
            lines.append(f"| {r.name} | {r.ranks} | {r.img_per_s:.0f} | {speedup:.2f} | "
                         f"{speedup * base.ranks / r.ranks:.2f} |")
    return lines


def equal_epochs(runs):
    """The headline metric at each epoch for runs of different global batches."""
    with_eval = [r for r in runs if r.metric()]
    if len({r.batch for r in with_eval}) < 2:
        return []
    with_eval.sort(key=lambda r: r.batch)
    metric = with_eval[0].metric()
    by_run = [{row["epoch"] + 1: row[metric] for row in r.evals if metric in row}
              for r in with_eval]
    epochs = sorted(set().union(*by_run))
    lines = ["", f"## {metric} at equal epochs (runs of different global batch)", "",
             "| epoch | " + " | ".join(f"{r.name} (batch {r.batch})" for r in with_eval) + " |",
             "|---|" + "---|" * len(with_eval)]
    for e in epochs:
        cells = [f"{m[e]:.4g}" if e in m else "-" for m in by_run]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-control", default="")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(1, "python3-matplotlib is missing: apt-get install python3-matplotlib")
    run_control = set(filter(None, args.run_control.split(",")))
    runs = [Run(p, run_control) for p in args.runs]
    keys = differing(runs)
    labels = [label(r, keys) for r in runs]
    os.makedirs(args.out, exist_ok=True)
    plot(runs, labels, args.out)
    text = ["# uel report", "", *table(runs, labels), *scaling(runs), *equal_epochs(runs), "",
            "Plots: loss.png, lr.png, throughput.png" +
            (", eval.png" if any(r.metric() for r in runs) else "") +
            (", noise_scale.png" if any(has_noise_scale(r) for r in runs) else "") + "."]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
