"""Protect old experiments: every experiment's smoke run on synthetic data reproduces recorded metrics.

A change to common/ (the data split, the pipeline, augmentation, the trial loop) that alters what
any experiment computes makes tests/test_experiments.py fail with the experiments it changed. When
the change is intended, re-record the reference and commit it with the change:

    python tests/regression.py --record            # all experiments
    python tests/regression.py --record exp007     # only these

Each reference run: the tests' synthetic IDX dataset (300 images, the class a bright band's row),
seed fixed (also for experiments that normally run unseeded), 1 trial, TensorFlow's default threads,
and the smoke configuration of the experiment's family (SMOKE_ARGS below): enough steps that every
recipe learns something (test accuracy at least MIN_TEST_ACCURACY, loss below chance's ln 10), so
that a change in shared code moves a loss that depends on what the net learned, not a net stuck at
chance or a diverged one. Batch norm's moving averages run at momentum 0.9 instead of Keras' 0.99
(BATCH_NORM_MOMENTUM): at 0.99 they need some 500 steps to forget their initial values, and the
evaluation of a net that fitted its batches would still sit at chance.

What is compared, and why only that: the loss on train, valid and test, to a relative tolerance of
its own: five times the float noise `--record` measured for it (by running it again on one thread
and with oneDNN off, stand-ins for another CPU), at least 1e-3. `python tests/regression.py
--threads 1` prints each experiment's largest relative difference and its tolerance. Real changes
to shared code move the losses by more: the tests make some (another shuffle order, zoom's other
fill mode, crops of 1 pixel instead of 2, test-time flips of the wrong axis) and expect them
caught. Accuracy is recorded but not compared: on 30 to 100 images float noise alone may flip an
image.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import experiments  # noqa: E402
from conftest import make_dataset  # noqa: E402

REFERENCE = Path(__file__).with_name("regression_reference.json")
ARGS = ["--trials", "1", "--fix_seed", "true"]
# Smoke configurations, per family of recipes: enough steps to leave chance, few enough (and a rate
# low enough) that the run is still early in its learning, where float noise grows slowly. Trained
# further on 270 images, the nets get chaotic: one thread against two then moves their losses as
# much as a real change does, and no tolerance could tell the two apart.
SMOKE_ARGS = {
    # dense and plain conv nets (exp001, exp002, exp101, exp102): 18 steps of 32 images
    "plain": ["--epochs", "2", "--batch_size", "32"],
    # nets with batch norm and Adam (exp003, exp103-exp114, exp201-exp204): 68 steps of 8 at 1e-4
    "batch_norm": ["--epochs", "2", "--batch_size", "8", "--learning_rate", "1e-4"],
    # the deep fully convolutional net without batch norm (exp004, exp005): 68 steps of 8 at 3e-4;
    # with zoom, mixup and erasing (exp006-exp008) it needs 102
    "deep_plain": ["--epochs", "2", "--batch_size", "8", "--learning_rate", "3e-4"],
    "deep_plain_augmented": ["--epochs", "3", "--batch_size", "8", "--learning_rate", "3e-4"],
    # SGD, Nesterov, weight decay, cosine or one-cycle schedule (exp205-exp207, exp3xx): 68 steps of 8,
    # peak 0.001 (at the recipes' 0.1 the tiny run diverges)
    "sgd": ["--epochs", "2", "--batch_size", "8", "--learning_rate", "0.001"],
    # ... with the weights' moving average taking over each epoch (exp305): at its 0.99 a step the
    # average of 34 steps has barely left the start, so the smoke run averages at 0.9
    "sgd_averaged": ["--epochs", "2", "--batch_size", "8", "--learning_rate", "0.001", "--weight_average", "0.9"],
}
FAMILY_OF = {"exp001": "plain", "exp002": "plain", "exp101": "plain", "exp102": "plain",
             "exp004": "deep_plain", "exp005": "deep_plain", **{f"exp00{i}": "deep_plain_augmented" for i in (6, 7, 8)},
             "exp205": "sgd", "exp206": "sgd", "exp207": "sgd",
             "exp305": "sgd_averaged"}  # any other: batch_norm (exp3xx: sgd)
BATCH_NORM_MOMENTUM = 0.9
MIN_TEST_ACCURACY = 0.3  # chance is 0.1
# The relative loss tolerance of each experiment: NOISE_FACTOR times the float noise recorded with
# its reference (the largest relative loss difference between the reference run and the same run
# on one thread or with oneDNN off: stand-ins for another CPU, PERTURBED below), at least
# LOSS_RTOL_MIN. The noise each reference holds is in regression_reference.json ("noise").
LOSS_RTOL_MIN, NOISE_FACTOR = 1e-3, 5
SPLITS = ("train", "valid", "test")


def family(folder: Path) -> str:
    experiment = experiments.experiment_id(folder)
    if experiment.startswith("exp3"):  # the fast series: SGD with Nesterov, a one-cycle schedule
        return FAMILY_OF.get(experiment, "sgd")
    return FAMILY_OF.get(experiment, "batch_norm")


def smoke_args(folder: Path) -> list[str]:
    return ARGS + SMOKE_ARGS[family(folder)]


@contextlib.contextmanager
def fast_batch_norm_averages():
    """Keras' BatchNormalization built with momentum BATCH_NORM_MOMENTUM unless a model says otherwise."""
    import keras

    layer = keras.layers.BatchNormalization
    original = layer.__init__

    def init(self, *args, momentum=BATCH_NORM_MOMENTUM, **kwargs):
        original(self, *args, momentum=momentum, **kwargs)

    layer.__init__ = init
    try:
        yield
    finally:
        layer.__init__ = original


def not_learned(metrics: dict) -> str:
    """Why a reference run did not learn the task ("" when it did)."""
    test, losses = metrics["test"], [metrics[split]["loss"] for split in SPLITS]
    if not all(math.isfinite(loss) and loss < math.log(10) for loss in losses):
        return f"a loss at or above chance's ln 10 = 2.303, or not finite: {losses}"
    if test["accuracy"] < MIN_TEST_ACCURACY:
        return f"test accuracy {test['accuracy']:.3f} < {MIN_TEST_ACCURACY}"
    return ""


def run(folder: Path, data_dir: Path, results_dir: Path, threads: int = 0, extra: tuple[str, ...] = ()) -> dict:
    """Metrics of the reference run of one experiment: {split: {loss, accuracy}}. `extra`: more flags,
    ones that change how it runs and not what it computes (--jit_compile true)."""
    module = experiments.load_module(folder)
    with fast_batch_norm_averages():
        code = module.main(["--data-dir", str(data_dir), "--results-dir", str(results_dir), *smoke_args(folder),
                            *(["--threads", str(threads)] if threads else []), *extra])
    if code != 0:
        raise RuntimeError(f"{folder.name}: reference run exited with {code}")
    record = json.loads(next(results_dir.glob(f"*/{folder.name}/**/trial_0/metrics.json")).read_text())  # a variant
    return record["metrics"]


def load_reference() -> dict:
    return json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}


def tolerance(recorded: dict) -> float:
    return max(LOSS_RTOL_MIN, NOISE_FACTOR * recorded.get("noise", 0.0))


def largest_difference(metrics: dict, recorded: dict) -> float:
    return max(abs(metrics[s]["loss"] - recorded[s]["loss"]) / abs(recorded[s]["loss"]) for s in SPLITS)


def differences(folder: Path, metrics: dict, reference: dict | None = None, slack: float = 1.0) -> list[str]:
    """What differs from the recorded reference, as readable lines (empty when it matches); `slack`
    widens the tolerance for kernels whose noise the recording did not measure (XLA)."""
    reference = load_reference() if reference is None else reference
    recorded = reference.get(folder.name)
    if recorded is None:
        return [f"{folder.name}: no recorded reference; run python tests/regression.py --record {folder.name}"]
    found = []
    for split in SPLITS:
        actual, expected = metrics[split]["loss"], recorded[split]["loss"]
        if abs(actual - expected) > slack * tolerance(recorded) * abs(expected):
            found.append(f"{folder.name} {split} loss: {actual:.6f}, recorded {expected:.6f} "
                         f"(relative difference {abs(actual - expected) / abs(expected):.1e}, "
                         f"tolerance {slack * tolerance(recorded):.1e})")
    return found


# Two stand-ins for another CPU, each a process of its own (threads and kernels are set once a
# process): one TensorFlow thread (other summation orders), and oneDNN off (Eigen's kernels instead
# of oneDNN's: other code for every convolution and matmul).
PERTURBED = {"one thread": (["--threads", "1"], {}), "oneDNN off": ([], {"TF_ENABLE_ONEDNN_OPTS": "0"})}


def perturbed_runs(names: list[str]) -> dict[str, dict]:
    """{stand-in: {experiment: metrics}}: the same runs under each of PERTURBED."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (args, env) in PERTURBED.items():
            out = Path(tmp) / "metrics.json"
            subprocess.run([sys.executable, __file__, *args, "--dump", str(out), *names], check=True,
                           stdout=subprocess.DEVNULL, env={**os.environ, **env})
            found[label] = json.loads(out.read_text())
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="write the reference, with each run's float noise (its runs on one thread, oneDNN off)")
    parser.add_argument("--threads", type=int, default=0,
                        help="check with this many TensorFlow threads: how far float noise moves the loss")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # write the metrics, compare nothing
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    args = parser.parse_args(argv)
    folders = experiments.select(args.names or None)
    reference = load_reference()
    problems, ran = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_dataset(Path(tmp) / "data")
        for folder in folders:
            metrics = ran[folder.name] = run(folder, data_dir, Path(tmp) / "results", args.threads)
            if args.record or args.dump:
                continue
            problems += differences(folder, metrics, reference)
            if folder.name in reference:
                print(f"{folder.name}: largest relative loss difference "
                      f"{largest_difference(metrics, reference[folder.name]):.1e} "
                      f"(tolerance {tolerance(reference[folder.name]):.1e})")
    if args.dump:
        args.dump.write_text(json.dumps(ran))
        return 0
    if args.record:
        perturbed = perturbed_runs([f.name for f in folders])
        for name, metrics in ran.items():
            why = not_learned(metrics)
            if why:
                problems.append(f"{name}: not recorded, the run learned nothing: {why}; "
                                f"give its family more steps (SMOKE_ARGS)")
                continue
            reference[name] = {split: {k: round(v, 7) for k, v in metrics[split].items()} for split in SPLITS}
            noise = max(largest_difference(runs[name], metrics) for runs in perturbed.values())
            reference[name]["noise"] = float(f"{noise:.2e}")
        REFERENCE.write_text(json.dumps(dict(sorted(reference.items())), indent=1) + "\n")
        print(f"recorded {len(folders) - len(problems)} experiment(s) in {REFERENCE}")
        print("\n".join(problems))
        return 1 if problems else 0
    print("\n".join(problems) if problems else f"{len(folders)} experiment(s) match the reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
