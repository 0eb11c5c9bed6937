"""Protect old experiments: every experiment's smoke run on synthetic data reproduces recorded metrics.

A change to common/ (the data split, the pipeline, augmentation, the trial loop) that alters what
any experiment computes makes tests/test_experiments.py fail with the experiments it changed. When
the change is intended, re-record the reference and commit it with the change:

    python tests/regression.py --record            # all experiments
    python tests/regression.py --record exp007     # only these

Each reference run: the tests' synthetic IDX dataset, seed fixed (also for experiments that
normally run unseeded), 2 epochs, 1 trial, batch size 32, TensorFlow's default threads (one per
core: 2 on the project's machines).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import experiments  # noqa: E402
from conftest import make_dataset  # noqa: E402

REFERENCE = Path(__file__).with_name("regression_reference.json")
ARGS = ["--epochs", "2", "--trials", "1", "--batch_size", "32", "--fix_seed", "true"]
LOSS_RTOL = 1e-3  # float noise across machines is far smaller; any real change is far larger
ACCURACY_ATOL = 0.0101  # one image of the 100 test images may flip on a near-tie


def run(folder: Path, data_dir: Path, results_dir: Path) -> dict:
    """Metrics of the reference run of one experiment: {split: {loss, accuracy}}."""
    module = experiments.load_module(folder)
    code = module.main(["--data-dir", str(data_dir), "--results-dir", str(results_dir), *ARGS])
    if code != 0:
        raise RuntimeError(f"{folder.name}: reference run exited with {code}")
    record = json.loads((results_dir / folder.name / "trial_0" / "metrics.json").read_text())
    return record["metrics"]


def load_reference() -> dict:
    return json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}


def differences(folder: Path, metrics: dict, reference: dict | None = None) -> list[str]:
    """What differs from the recorded reference, as readable lines (empty when it matches)."""
    reference = load_reference() if reference is None else reference
    recorded = reference.get(folder.name)
    if recorded is None:
        return [f"{folder.name}: no recorded reference; run python tests/regression.py --record {folder.name}"]
    found = []
    for split, values in recorded.items():
        for metric, expected in values.items():
            actual = metrics[split][metric]
            ok = (abs(actual - expected) <= LOSS_RTOL * abs(expected) if metric == "loss"
                  else abs(actual - expected) <= ACCURACY_ATOL)
            if not ok:
                found.append(f"{folder.name} {split} {metric}: {actual:.6f}, recorded {expected:.6f}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="write the reference (default: only check)")
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    args = parser.parse_args(argv)
    folders = experiments.select(args.names or None)
    reference = load_reference()
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_dataset(Path(tmp) / "data")
        for folder in folders:
            metrics = run(folder, data_dir, Path(tmp) / "results")
            if args.record:
                reference[folder.name] = {split: {k: round(v, 7) for k, v in m.items()} for split, m in metrics.items()}
            else:
                problems += differences(folder, metrics, reference)
    if args.record:
        REFERENCE.write_text(json.dumps(dict(sorted(reference.items())), indent=1) + "\n")
        print(f"recorded {len(folders)} experiment(s) in {REFERENCE}")
        return 0
    print("\n".join(problems) if problems else f"{len(folders)} experiment(s) match the reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
