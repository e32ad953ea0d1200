#!/usr/bin/env python3
"""Chaos: a 2-rank float64 run killed (SIGKILL, one rank) again and again, each time restarted
with the same command, ends exactly where the uninterrupted run ends.

Kills are drawn from a fixed seed, at moments that do not depend on the machine's speed:
  step    the driver waits until metrics.jsonl reaches a drawn step, then kills a rank (it is
          somewhere in the next step: its forward, backward or a collective);
  commit  strace kills rank 0 as it enters its n-th rename: while a checkpoint's files are
          being committed (its last one is DONE), or at start-up (config.ini);
  prune   strace kills rank 0 as it enters its n-th unlink: right after a checkpoint's DONE,
          while older checkpoints are being pruned, or at start-up.
After each death at most train.keep + 1 checkpoint folders are on disk (keep complete ones and
one being written, or keep + 1 complete ones being pruned: each start prunes what a killed job
left), and the next run resumes from a checkpoint that was complete before it started. At the end,
metrics.jsonl equals the uninterrupted run's row for row (losses digit for digit). ISIF takes 20
kills; NCE (the memory bank's shards) and UDML-SS (across re-clusterings) take 6 each.
usage: test_chaos.py UEL MPIEXEC
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

uel, mpiexec = sys.argv[1], sys.argv[2]
tmp = Path(tempfile.mkdtemp())
failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message, flush=True)


subprocess.run([uel, "prepare", "fashion-mnist", "--src", "/usr/share/datasets/fashion-mnist",
                "--out", str(tmp / "fm")], check=True, stdout=subprocess.DEVNULL)
KEEP, EVERY = 2, 5
BASE = [f"--data.train={tmp}/fm/test.h5", "--aug.mean=0.286",
        "--aug.std=0.353", "--model.width=4", "--model.low_dim=16", "--model.sync_bn=true",
        "--train.precision=float64", "--train.threads=1", "--train.log_every=1",
        "--eval.every=0", f"--train.checkpoint_every={EVERY}", f"--train.keep={KEEP}"]
CASES = {
    # Classes 0-1 of the test split: 2,000 images / 32 = 62 steps per epoch.
    "isif": (20, ["--data.classes=0-1", "--train.batch_size=32", "--train.epochs=4"]),
    "nce": (6, ["--data.classes=0-1", "--train.method=nce", "--train.batch_size=32",
                "--train.epochs=2", "--nce.k=64"]),
    # Re-clustered every epoch of 25 steps (class 0's 1,000 images, batch 40).
    "udml": (6, ["--data.classes=0", "--train.method=udml", "--train.batch_size=40",
                 "--udml.rotation_items=8", "--pseudo.clusters=10", "--pseudo.recluster_every=1",
                 "--train.optimizer=adam", "--train.lr=1e-3", "--train.epochs=3"]),
}
TIMING = {"img_per_s", "comm_seconds", "elapsed_s"}  # they differ from run to run


def rows(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def last_step(run):
    return max((row.get("step", 0) for row in rows(run)), default=0)


def checkpoints(run):
    folder = run / "checkpoints"
    if not folder.exists():
        return {}
    return {p.name: (p / "DONE").exists() for p in sorted(folder.iterdir())}


def rank_pid(run, rank):
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if not cmdline[0].endswith(b"/uel") or f"--out={run}".encode() not in cmdline:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, IndexError):
            continue
    return None


def launch(run, options, victim=None, inject=None):
    """mpirun -np 2 uel train ...; with inject (a strace --inject spec), rank `victim` runs
    under strace, which kills it at that syscall."""
    command = [uel, "train", *BASE, *options, f"--out={run}"]
    if inject is None:
        return subprocess.Popen([mpiexec, "-np", "2", *command], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    wrapper = ('if [[ $OMPI_COMM_WORLD_RANK == "$0" ]]; then exec strace -f -qq -o /dev/null '
               '-e trace="$1" -e inject="$1":signal=KILL:when="$2" "${@:3}"; '
               'else exec "${@:3}"; fi')
    return subprocess.Popen([mpiexec, "-np", "2", "bash", "-c", wrapper, str(victim), *inject,
                             *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, guard=600):
    try:
        out, _ = process.communicate(timeout=guard)  # only a hang guard
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        fail("a run hung")
    return process.returncode, out


def chaos(method, kills, options):
    rng = random.Random(f"chaos-{method}")
    ref, run = tmp / f"{method}-ref", tmp / f"{method}-chaos"
    code, out = finish(launch(ref, options))
    if code != 0:
        fail(f"{method}: the uninterrupted run failed: {out[-2000:]}")
        return
    total = last_step(ref)
    done, resumes, redone, killed, kinds, at = False, 0, 0, 0, {}, []
    for _ in range(kills):
        before = checkpoints(run)
        start = last_step(run)
        kind = rng.choice(["step", "step", "commit", "prune"])
        victim = rng.randrange(2) if kind == "step" else 0  # rank 0 writes the checkpoints
        if kind == "step":
            target = min(start + rng.randint(1, 3 * EVERY), total)
            process = launch(run, options)
            while process.poll() is None and last_step(run) < target:
                time.sleep(0.01)
            pid = rank_pid(run, victim)
            if pid is not None and process.poll() is None:
                os.kill(pid, signal.SIGKILL)
        elif kind == "commit":
            process = launch(run, options, victim, ("rename,renameat,renameat2", str(rng.randint(1, 12))))
        else:
            process = launch(run, options, victim, ("unlink,unlinkat,rmdir", str(rng.randint(1, 4))))
        code, out = finish(process)
        resumed = re.search(r"resumed from \S+/(step-([0-9]+)) ", out)
        if resumed:
            resumes += 1
            if not before.get(resumed.group(1)):
                fail(f"{method}: resumed from {resumed.group(1)}, not complete before the run")
        redone += start - (int(resumed.group(2)) if resumed else 0)
        if code == 0:
            done = True
            break
        killed += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        at.append(last_step(run))
        now = checkpoints(run)
        # keep complete ones and one being written, or keep + 1 complete ones being pruned.
        if len(now) > KEEP + 1:
            fail(f"{method}: {len(now)} checkpoints on disk after a kill, train.keep={KEEP}: {now}")
    if not done:
        start = last_step(run)
        code, out = finish(launch(run, options))
        resumed = re.search(r"resumed from \S+/step-([0-9]+) ", out)
        resumes += bool(resumed)
        redone += start - (int(resumed.group(1)) if resumed else 0)
        if code != 0:
            fail(f"{method}: the last run failed: {out[-2000:]}")
    print(f"{method}: {killed} kills ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), "
          f"{resumes} resumes, {redone} of {total} steps redone; logged steps at the kills: "
          f"{' '.join(map(str, at))}", flush=True)
    if method == "udml" and not any(step > 25 for step in at):
        fail("udml: no kill after the first re-clustering (step 25)")
    if rows(run) != rows(ref):
        fail(f"{method}: metrics.jsonl differs from the uninterrupted run's")
        for a, b in zip(rows(ref), rows(run)):
            if a != b:
                print("  uninterrupted:", a, "\n  chaos:        ", b)
                break
        print(f"  rows: {len(rows(ref))} uninterrupted, {len(rows(run))} chaos")


try:
    for method, (kills, options) in CASES.items():
        chaos(method, kills, options)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print(f"test_chaos: {'FAILED' if failures else 'passed'}")
sys.exit(1 if failures else 0)
