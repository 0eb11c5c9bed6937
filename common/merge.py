"""Bring finished trials into a results directory, filed by their data: from another machine's results
(a GPU run, a colleague's), or from the layout before results were kept per data.

    python -m common.merge /path/to/other/results          # copy its finished trials into results/
    python -m common.merge results                          # move old-layout trials into results/<data>/

Each finished trial (metrics.json, with its history.csv, predictions.npz and, where the source kept
them, its trained weights, model.weights.h5, which exp207 scores) is filed under
<results-dir>/<data name>/<experiment folder>/trial_<i>/ (a variant's under
<experiment folder>/variants/<name>/), the data name taken from the trial's
recorded fingerprint. Records of the old layout named the data by a machine path
(`idx:/home/.../fashion-mnist`); that path is dropped, and the name and kind of source are kept.
A trial already present with the same loss and accuracy is skipped (one copy may hold a metric the
other lacks, added by `train.py --rescore`), but gains the source's weights if it has none (a clone
holds the committed trial, never its weights); one present with other figures is a
conflict: reported, left as it is, exit code 1. Unfinished trials (a checkpoint without
metrics.json) are not merged: their data is not recorded until they finish.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from common.cli import EXIT_USAGE
from common import experiments, results
from common.data import data_name, describe_fingerprint


def finished_trials(source: Path) -> list[tuple[Path, str, str]]:
    """(metrics.json, experiment folder, variant name) of every finished non-smoke trial under `source`:
    recipes and variants by data, or recipes in the layout before results were kept per data."""
    found = []
    for pattern in (f"*/trial_*/{results.METRICS_FILE}", *results.TRIAL_PATTERNS):
        for path in sorted(source.glob(pattern)):
            relative = path.relative_to(source)
            if relative.parts[0] in (results.SMOKE_SUBDIR, results.PLOTS_SUBDIR):
                continue
            old_layout = len(relative.parts) == 3  # <folder>/trial_<i>/metrics.json
            _, folder, variant = ("", relative.parts[0], "") if old_layout else results.trial_location(relative)
            if experiments.FOLDER_PATTERN.match(folder):
                found.append((path, folder, variant))
    return found


def normalised(record: dict) -> dict:
    """The record with its data named and without a machine path (old records held one)."""
    data = dict(record["provenance"]["data"])
    fingerprint = str(data["fingerprint"])
    source = str(data.get("source", ""))
    data["source"] = source.split(":", 1)[0] if ":" in source else source  # "idx:/a/path" -> "idx"
    data.setdefault("name", data_name(fingerprint))
    if data.get("description") in (None, "", f"data {fingerprint[:16]}"):
        data["description"] = describe_fingerprint(fingerprint)
    return {**record, "provenance": {**record["provenance"], "data": data}}


def merge(sources: list[Path], results_dir: Path, move: bool, log=print) -> int:
    merged = skipped = conflicts = 0
    for source in sources:
        for path, folder, variant in finished_trials(source):
            try:
                record = normalised(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                log(f"warning: {path}: unreadable ({type(e).__name__}: {e}); not merged")
                conflicts += 1
                continue
            if record.get("smoke"):
                continue
            name = record["provenance"]["data"]["name"]
            target = results.trial_dir(results_dir, name, folder, int(record["trial"]), variant=variant)
            if target == path.parent:
                continue  # already filed where it belongs
            existing = target / results.METRICS_FILE
            if existing.exists():
                if same_result(json.loads(existing.read_text()).get("metrics", {}), record["metrics"]):
                    skipped += 1
                    weights = path.with_name(results.WEIGHTS_FILE)
                    if weights.exists() and not (target / results.WEIGHTS_FILE).exists():
                        # a clone holds the committed trial; its weights (never committed) come from here
                        results.atomic_write_bytes(target / results.WEIGHTS_FILE, weights.read_bytes())
                        log(f"added the kept weights of {path.parent} to {target}")
                else:
                    log(f"conflict: {target} already holds another result than {path}; left as it is")
                    conflicts += 1
                continue
            for name in results.TRIAL_FILES[:-1]:
                if path.with_name(name).exists():
                    results.atomic_write_bytes(target / name, path.with_name(name).read_bytes())
            results.atomic_write_json(existing, record)  # last: a trial counts once metrics.json is there
            if move:
                shutil.rmtree(path.parent)
                for emptied in path.parents[1:]:  # the experiment's (or variant's) folder, if now empty
                    if emptied == source or any(emptied.iterdir()):
                        break
                    emptied.rmdir()
            merged += 1
            log(f"{'moved' if move else 'copied'} {path.parent} -> {target}")
    log(f"merged {merged} trial(s) into {results_dir}; {skipped} already there"
        + (f"; {conflicts} conflict(s)" if conflicts else ""))
    return 1 if conflicts else 0


def same_result(metrics_a: dict, metrics_b: dict) -> bool:
    """The same trial's result: loss and accuracy of every split alike. A copy that gained a metric
    later (train.py --rescore adds the plain cross-entropy from the kept weights) is still the same."""
    def core(metrics: dict) -> dict:
        return {split: (scores.get("loss"), scores.get("accuracy")) for split, scores in metrics.items()}

    return core(metrics_a) == core(metrics_b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.merge", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("sources", nargs="+", type=Path, help="results directories to take trials from")
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir())
    parser.add_argument("--move", action="store_true",
                        help="remove each trial from its source once merged (always so within --results-dir)")
    args = parser.parse_args(argv)
    results_dir = args.results_dir.expanduser().resolve()
    code = 0
    for source in args.sources:
        source = source.expanduser().resolve()
        if not source.is_dir():
            print(f"error: {source}: no such directory", file=sys.stderr)
            return EXIT_USAGE
        code |= merge([source], results_dir, move=args.move or source == results_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
