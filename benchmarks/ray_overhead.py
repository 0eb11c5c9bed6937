"""What running the trials through Ray costs: the same smoke trials with plain run_all and with --ray.

    python benchmarks/ray_overhead.py --data-dir ../shared/data/fashion-mnist [--rounds 3] [--trials 2]

Each round runs `run_all --only exp001 exp002 --smoke --trials N` twice into fresh results
directories, once plain (`--jobs` = cores, one thread per trial) and once on a local Ray
(`--ray --cpus-per-trial 1`, which starts Ray, ships the code, and starts a fresh worker process per
trial), alternating which goes first. It prints each run's wall time, the medians, and the overhead
per trial. Both give the same metrics (tests/test_ray.py checks that); this measures only the time.

Run it on an otherwise idle machine: Ray starts its workers at nice 15, so beside other busy
processes its trials get less CPU than plain run_all's (measured: 4x slower beside two niced
training runs, 1.4x on an idle machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_run(extra: list[str], data_dir: str, trials: int) -> float:
    with tempfile.TemporaryDirectory() as results_dir:
        command = [sys.executable, "-m", "common.run_all", "--only", "exp001", "exp002", "--smoke",
                   "--trials", str(trials), "--data-dir", data_dir, "--results-dir", results_dir, *extra]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra) or 'plain'} run failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2, help="trials per experiment (two experiments)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ways = {"plain": ["--jobs", str(cores)], "ray": ["--ray", "--cpus-per-trial", "1"]}
    seconds = {name: [] for name in ways}
    for round_ in range(args.rounds):
        order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
        for name in order:
            seconds[name].append(timed_run(ways[name], args.data_dir, args.trials))
            print(f"round {round_ + 1}: {name:5s} {seconds[name][-1]:6.1f} s", flush=True)
    trials = 2 * args.trials
    plain, ray = statistics.median(seconds["plain"]), statistics.median(seconds["ray"])
    print(f"\n{trials} smoke trials on {cores} cores, median of {args.rounds} rounds:")
    print(f"  plain run_all (--jobs {cores}):          {plain:6.1f} s")
    print(f"  run_all --ray (local Ray, 1 CPU/trial): {ray:6.1f} s")
    print(f"  Ray costs {ray - plain:+.1f} s in all, {(ray - plain) / trials:+.1f} s per trial "
          f"({ray / plain:.2f}x); a real trial takes minutes to hours, so this is what matters on a cluster: "
          f"the start of Ray and of one fresh worker per trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
