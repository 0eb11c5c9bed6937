"""How to split the cores between trials: one trial on all of them, or one trial per core side by side.

    python benchmarks/parallelism.py --data-dir ../shared/data/fashion-mnist [--rounds 2] [--epochs 5]
        [--experiments exp004 exp110]

For each experiment, alternately: (a) one trial with as many TensorFlow threads as there are cores,
(b) as many trials as cores at once, one thread each (what `run_all --jobs <cores>` does). Each
trial is a smoke run (1,000 training images per epoch); an epoch's time comes from its history.csv,
so process start-up and data loading do not count, and the first epoch (tracing) is left out.
It prints the training throughput of both, in images per second over all trials, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import data as fmnist  # noqa: E402
from common import experiments  # noqa: E402


def images_per_second(folder: Path, data_dir: str, epochs: int, processes: int, threads: int) -> float:
    """Training images per second over `processes` smoke trials run at once."""
    with tempfile.TemporaryDirectory() as results_dir:
        running = [subprocess.Popen(
            [sys.executable, str(folder / "train.py"), "--smoke", "--epochs", str(epochs), "--patience", str(epochs),
             "--trials", str(processes), "--trial", str(i), "--threads", str(threads), "--data-dir", data_dir,
             "--results-dir", results_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]
        for process in running:
            if process.wait() != 0:
                raise SystemExit(f"{folder.name} failed: {process.stderr.read()}")
        seconds = [statistics.median(pd.read_csv(path).seconds.iloc[1:])
                   for path in Path(results_dir).rglob("history.csv")]
    return sum(fmnist.SMOKE_SIZES["train"] / s for s in seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--experiments", nargs="+", default=["exp004", "exp110"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    for name in args.experiments:
        folder = experiments.find(name)
        measured = {"one trial, all threads": [], "trials side by side": []}
        for _ in range(args.rounds):
            measured["one trial, all threads"].append(images_per_second(folder, args.data_dir, args.epochs, 1, cores))
            measured["trials side by side"].append(images_per_second(folder, args.data_dir, args.epochs, cores, 1))
        one, side = (statistics.median(v) for v in measured.values())
        print(f"{folder.name}: one trial with {cores} threads {one:7.0f} images/s; {cores} trials with 1 thread "
              f"each {side:7.0f} images/s in all; side by side / one = {side / one:.2f} (median of {args.rounds})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
