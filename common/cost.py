"""What a trial spent: floating-point operations (the same on every machine) and minutes on the CPU it
ran on; the fast series' "time to accuracy" table and plot are made from them.

Operations are common/flops.py's count of one image's forward pass, times the images a trial pushed
through the model for its result: three passes per training image and one per valid image in every
epoch it ran, then the final scoring of the valid and test splits, as many passes each as the trial
recorded (one; two with test-time flips, the image and its mirror; two in trials from before the
scoring took the loss and the probabilities from one pass). The runner scores the train split too, a
report of the fit that every experiment gets alike and no result needs: it is left out. An
evaluation-only trial (one that scored its base's kept weights) spent its base trial's training and
its own scoring.

Minutes are the trial's wall time. Machines differ several-fold, so beside them stands the trial's
time in epochs of exp206 on the same CPU with the same threads (the median epoch of exp206's trials
there): a figure that carries from one machine to another.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from common import experiments, results
from common.flops import TRAINING_PASSES
from common.record import read as read_record

REFERENCE = "exp206"  # the strongest long recipe: the yardstick of time across machines
BESIDE = ("exp114", "exp206", "exp207")  # the long recipes the fast series is shown against
SERIES_PREFIX = "exp3"
# The fast series' targets (docs/fast-series.md): (TFLOP a trial at most, mean test accuracy at least)
TARGETS = ((40, 0.940), (200, 0.9468), (700, 0.950))


def training_flops(forward: int, epochs_run: int, sizes: dict[str, int]) -> float:
    """Operations of the epochs a trial ran: its training images three times, its valid images once."""
    return float(forward) * epochs_run * (TRAINING_PASSES * sizes["train"] + sizes["valid"])


def scoring_flops(forward: int, sizes: dict[str, int], passes: int) -> float:
    """Operations of the final scoring of the valid and test splits, `passes` forward passes over each."""
    return float(forward) * passes * (sizes["valid"] + sizes["test"])


def ran_on(machines: str) -> str:
    """A row's machines (`time_to_accuracy`'s "; "-joined list) as the tables say it."""
    return "several machines" if ";" in machines else machines


def machine(hardware: dict) -> str:
    """Where a trial ran, as the tables name it: the CPU with its widest vector instructions where
    recorded (or the GPUs), and the threads."""
    if hardware.get("device", "CPU") == "CPU":
        vector = hardware.get("cpu_vector_instructions")
        where = hardware["cpu"] + (f" ({vector})" if vector else "")
    else:
        where = ", ".join(hardware.get("gpus") or ["GPU"])
    return f"{where}, {hardware.get('threads', '?')} thread(s)"


def trained_epochs(results_dir: Path, data: str, folder: str) -> Iterator[tuple[dict, pd.Series]]:
    """Each finished trial of an experiment's recipe that trained (not one that scored another's kept
    weights): its record, and the seconds of its epochs after the first (which also traces the step)."""
    for path in sorted(results.experiment_dir(results_dir, data, folder).glob(f"trial_*/{results.METRICS_FILE}")):
        record = read_record(path)
        if record is None or record["smoke"] or record.get("weights_from"):
            continue
        yield record, pd.read_csv(path.with_name(results.HISTORY_FILE))["seconds"].iloc[1:]


class ForwardCounter:
    """Forward operations per image of an experiment's model: from the trial's record where it holds them
    (trials record them since the faster path), else counted once per experiment (its recipe's trials
    all build one model) from the model the record's config builds; `known` gives counts made already."""

    def __init__(self, known: dict[str, int] | None = None):
        self._counted: dict[str, int] = dict(known or {})

    def __call__(self, record: dict, root: Path) -> int:
        recorded = (record.get("speed") or {}).get("forward_flops_per_image")
        if recorded:
            return int(recorded)
        folder = record["folder"]
        if folder not in self._counted:
            from common import flops

            config = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()}
            self._counted[folder] = flops.forward_flops(flops.model_of(root / folder, config, _sizes(record)["train"]))
        return self._counted[folder]


def _sizes(record: dict) -> dict[str, int]:
    data = record["provenance"]["data"]
    if "split_sizes" in data:
        return {k: int(v) for k, v in data["split_sizes"].items()}
    train = int(data["sizes"]["train"])
    return {"train": train - train // 10, "valid": train // 10, "test": int(data["sizes"]["test"])}


def trial_costs(results_dir: Path, data: str, folders: list[str], root: Path = results.REPO_ROOT,
                counter: ForwardCounter | None = None) -> pd.DataFrame:
    """One row per finished trial of these experiments' recipes on one data copy: test accuracy, TFLOP
    spent, minutes, machine; evaluation-only trials with their base trial's training added."""
    counter = counter or ForwardCounter()
    rows = []
    for folder in folders:
        for path in sorted(results.experiment_dir(results_dir, data, folder).glob(f"trial_*/{results.METRICS_FILE}")):
            record = read_record(path)
            if record is None or record["smoke"]:
                continue
            sizes, source = _sizes(record), record.get("weights_from")
            trained, seconds, hardware = record, record["wall_seconds"], record["provenance"]["hardware"]
            if source:  # trained by its base's trial: that trial's epochs, time and machine
                trained = read_record(results.trial_dir(results_dir, data, source["folder"], int(source["trial"]))
                                      / results.METRICS_FILE)
                if trained is None:
                    continue  # its base trial is gone: what it cost is unknown
                seconds, hardware = seconds + source["wall_seconds"], source.get("hardware") or hardware
            spent = (training_flops(counter(trained, root), trained["epochs_run"], sizes)
                     + scoring_flops(counter(record, root), sizes, record["scoring_passes"]))
            rows.append({"experiment": record["experiment"], "folder": folder, "trial": int(record["trial"]),
                         "test_accuracy": float(record["metrics"]["test"]["accuracy"]),
                         "valid_accuracy": float(record["metrics"]["valid"]["accuracy"]),
                         "tflop": spent / 1e12, "minutes": float(seconds) / 60, "cpu": hardware.get("cpu", ""),
                         "threads": hardware.get("threads"), "machine": machine(hardware)})
    return pd.DataFrame(rows)


def reference_epoch_seconds(results_dir: Path, data: str) -> dict[tuple, float]:
    """{(cpu, threads): the median epoch of exp206's trials there}, the first epoch of each left out (tracing)."""
    seconds: dict[tuple, list[float]] = {}
    for folder in sorted(p.name for p in (results_dir / data).glob(f"{REFERENCE}_*")):
        for record, epochs in trained_epochs(results_dir, data, folder):
            hardware = record["provenance"]["hardware"]
            seconds.setdefault((hardware.get("cpu"), hardware.get("threads")), []).extend(epochs)
    return {key: float(np.median(values)) for key, values in seconds.items() if values}


def time_to_accuracy(results_dir: Path, data: str, root: Path = results.REPO_ROOT) -> pd.DataFrame:
    """One row per experiment of the fast series, and the long recipes beside it: test accuracy over its
    trials, TFLOP and minutes a trial, and the trial's time in exp206 epochs on the same machine."""
    on_data = results_dir / data
    ran = [p.name for p in on_data.iterdir() if p.is_dir() and experiments.FOLDER_PATTERN.match(p.name)] \
        if on_data.is_dir() else []
    series = sorted(f for f in ran if f.startswith(SERIES_PREFIX))
    if not series:
        return pd.DataFrame()
    beside = sorted(f for f in ran if experiments.experiment_id(Path(f)) in BESIDE)
    trials = trial_costs(results_dir, data, beside + series, root)
    if trials.empty:
        return trials
    yardstick = reference_epoch_seconds(results_dir, data)
    trials["reference_epochs"] = [t.minutes * 60 / yardstick[(t.cpu, t.threads)]
                                  if (t.cpu, t.threads) in yardstick else math.nan for t in trials.itertuples()]
    rows = []
    for folder, group in trials.groupby("folder", sort=True):
        test = group.test_accuracy
        rows.append({"experiment": group.experiment.iloc[0], "folder": folder, "trials": len(group),
                     "test_mean": test.mean(), "test_std": test.std(ddof=1) if len(group) > 1 else math.nan,
                     "test_min": test.min(), "test_max": test.max(), "valid_mean": group.valid_accuracy.mean(),
                     "tflop": group.tflop.mean(), "minutes": group.minutes.mean(),
                     "reference_epochs": group.reference_epochs.mean(),
                     "machines": "; ".join(sorted(set(group.machine)))})
    return pd.DataFrame(rows)
