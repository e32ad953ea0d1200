#!/usr/bin/env python3
"""Runs every ```bash test``` block of README.md and docs/*.md, so the docs cannot drift from uel.

usage: test_docs.py UEL_BINARY REPO_ROOT

A file's blocks run in order, each with `bash -euo pipefail` and a 300 s limit (a hang guard), in one fresh folder
per file that holds what a reader at the repository root has after the two commands:
  configs/, launch/          links to the repository's
  build/src/cli/uel          a link to UEL_BINARY, also first on PATH as `uel`
  data/fmnist/{train,test}.h5  Fashion-MNIST from `uel prepare` (Debian's dataset-fashion-mnist),
                             except in a file whose own blocks prepare it
so a block may use what an earlier block of the same file made. Prints file:line PASS or FAIL
per block (UEL_DOCS_VERBOSE=1: with each block's output); exits 1 on any failure or when no
block was found. UEL_DOCS_KEEP=1 keeps the folders.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK_TIMEOUT_S = 300  # a hang guard: blocks take seconds alone, 13 s beside busy loops
FASHION_MNIST_SRC = Path("/usr/share/datasets/fashion-mnist")
FENCE_OPEN = re.compile(r"^```bash test\s*$")
# A file that prepares data/fmnist itself gets no prepared copy (its block shows how).
PREPARES_FMNIST = re.compile(r"uel prepare fashion-mnist .*--out data/fmnist\b")


def blocks_of(path):
    """[(line of the opening fence, text)] of the file's ```bash test``` blocks."""
    found, current, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if current is None:
            if FENCE_OPEN.match(line):
                current, start = [], number
        elif line.strip() == "```":
            found.append((start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line)
    if current is not None:
        raise SystemExit(f"{path}:{start}: a ```bash test``` block is never closed")
    return found


def run_block(text, cwd, env):
    """(passed, output, seconds): the block under bash -euo pipefail, its process group killed
    at the limit (mpirun's ranks included)."""
    start = time.monotonic()
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
        passed = process.returncode == 0
        note = "" if passed else f"\n[exit status {process.returncode}]"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        passed, note = False, f"\n[still running after {BLOCK_TIMEOUT_S} s: killed]"
    return passed, output.decode(errors="replace") + note, time.monotonic() - start


def prepared_fmnist(uel, scratch):
    """data/fmnist made once by `uel prepare`, linked into each folder that wants it."""
    folder = scratch / "fixture" / "fmnist"
    if not folder.exists():
        if not (FASHION_MNIST_SRC / "train-images-idx3-ubyte.gz").exists():
            raise SystemExit(f"{FASHION_MNIST_SRC} is missing: apt-get install dataset-fashion-mnist "
                             "(tools/setup.sh installs it)")
        subprocess.run([uel, "prepare", "fashion-mnist", "--src", str(FASHION_MNIST_SRC),
                        "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def make_folder(folder, repo, uel, fmnist):
    folder.mkdir(parents=True)
    for name in ("configs", "launch"):
        (folder / name).symlink_to(repo / name)
    (folder / "build/src/cli").mkdir(parents=True)
    (folder / "build/src/cli/uel").symlink_to(uel)
    if fmnist is not None:
        (folder / "data/fmnist").mkdir(parents=True)
        for name in ("train.h5", "test.h5"):
            try:  # a hard link: uel prepare writing there replaces it, never changes the copy
                os.link(fmnist / name, folder / "data/fmnist" / name)
            except OSError:
                shutil.copy(fmnist / name, folder / "data/fmnist" / name)


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: test_docs.py UEL_BINARY REPO_ROOT")
    uel, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    if not os.access(uel, os.X_OK):
        raise SystemExit(f"{uel}: not an executable (build uel first)")
    files = [repo / "README.md"] + sorted((repo / "docs").glob("*.md"))
    files = [(path, blocks_of(path)) for path in files if path.exists()]
    total = sum(len(blocks) for _, blocks in files)
    if total == 0:
        print("FAIL: no ```bash test``` block in README.md or docs/*.md")
        return 1

    scratch = Path(tempfile.mkdtemp(prefix="uel-docs-"))
    try:
        (scratch / "bin").mkdir()
        (scratch / "bin/uel").symlink_to(uel)
        env = dict(os.environ)
        env.pop("UEL", None)  # launch/uel-run would take it over the folder's build/src/cli/uel
        env["PATH"] = f"{scratch / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1", UEL_PROGRESS="plain")
        env.setdefault("OMPI_MCA_btl", "self,vader")
        failed = []
        for path, blocks in files:
            if not blocks:
                continue
            name = path.relative_to(repo)
            prepares = any(PREPARES_FMNIST.search(text) for _, text in blocks)
            fmnist = None if prepares else prepared_fmnist(str(uel), scratch)
            folder = scratch / "work" / str(name).replace("/", "_")
            make_folder(folder, repo, uel, fmnist)
            broken = False
            for line, text in blocks:
                where = f"{name}:{line}"
                if broken:  # later blocks may need what the failed one makes
                    print(f"{where} FAIL (not run: an earlier block of {name} failed)", flush=True)
                    failed.append(where)
                    continue
                passed, output, seconds = run_block(text, folder, env)
                print(f"{where} {'PASS' if passed else 'FAIL'} ({seconds:.1f} s)", flush=True)
                if passed and os.environ.get("UEL_DOCS_VERBOSE"):
                    print("  | " + "\n  | ".join(output.rstrip().splitlines()), flush=True)
                if not passed:
                    failed.append(where)
                    broken = True
                    print("  $ " + text.rstrip().replace("\n", "\n  $ "))
                    tail = output.rstrip().splitlines()[-40:]
                    print("  | " + "\n  | ".join(tail), flush=True)
        print(f"{total - len(failed)} of {total} blocks passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    finally:
        if os.environ.get("UEL_DOCS_KEEP"):
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
