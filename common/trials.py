"""Every finished trial's metrics.json read into one table: a row per trial and split, with its data,
experiment, variant, epochs, time and hardware. A file that cannot be read is reported and skipped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from common import data as fmnist
from common import experiments, results, variants
from common.record import TrialRecord, upgrade


SPLITS = ("train", "valid", "test")


def _trial_rows(path: Path, record: TrialRecord) -> list[dict]:
    """One row per split; raises KeyError/TypeError/ValueError when the record is incomplete."""
    data = record["provenance"]["data"]
    common = {
        "data": str(data.get("name") or fmnist.data_name(data["fingerprint"])),
        "experiment": str(record["experiment"]), "folder": str(record["folder"]),
        "base": record["base"], "explanation": record["explanation"],
        "trial": int(record["trial"]), "seed": record["seed"], "seed_fixed": record["seed_fixed"],
        "epochs_run": int(record["epochs_run"]), "best_epoch": int(record["best_epoch"]),
        "epochs_max": int(record["epochs_max"]), "epochs_capped": "epochs" in record["overrides"],
        "default_trials": int(record["default_trials"]),
        "wall_seconds": float(record["wall_seconds"]),
        "device": record["provenance"]["hardware"]["device"],
        "cpu_model": str(record["provenance"]["hardware"].get("cpu_model") or ""),
        "threads": int(record["provenance"]["hardware"].get("threads") or 0),
        # trained on common/speed.py's path (fused batch norm, steps a call), which records itself
        "fast_path": "steps_per_execution" in record["speed"],
        "test_time_flip": bool(record["config"].get("test_time_flip", False)),
        "test_time_shift": int(record["config"].get("test_time_shift", 0)),
        "data_fingerprint": str(data["fingerprint"]), "data_description": str(data.get("description", "")),
        "path": path.as_posix(),
    }
    # crossentropy: plain, against the true classes; trials from before it was recorded have none
    return [{**common, "split": split, "loss": float(record["metrics"][split]["loss"]),
             "accuracy": float(record["metrics"][split]["accuracy"]),
             "crossentropy": float(record["metrics"][split].get("crossentropy", math.nan))} for split in SPLITS]


def collect_trials(results_dir: Path, with_variants: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """All finished real (non-smoke) trials of the recipes as rows (`with_variants`: of their variants
    too, told apart by the `variant` column, "" for a recipe), and a list of the files skipped.

    The `path` column is relative to `results_dir`: no machine paths in the CSV files.
    """
    rows, problems = [], []
    for path in sorted(results_dir.glob(f"*/trial_*/{results.METRICS_FILE}")):
        if experiments.FOLDER_PATTERN.match(path.parts[-3]):
            problems.append(f"{path}: filed in the layout before results were kept per data; skipped. "
                            f"file them by data with: python -m common.merge {results_dir}")
    patterns = results.TRIAL_PATTERNS if with_variants else results.TRIAL_PATTERNS[:1]
    for path in sorted(p for pattern in patterns for p in results_dir.glob(pattern)):
        relative = path.relative_to(results_dir)
        if relative.parts[0] in (results.SMOKE_SUBDIR, results.PLOTS_SUBDIR):
            continue
        variant = results.trial_location(relative)[2]
        try:
            record = upgrade(json.loads(path.read_text()))
            if record["smoke"]:
                continue
            trial_rows = _trial_rows(relative, record)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(f"{path}: unreadable ({type(e).__name__}: {e}); skipped")
            continue
        if trial_rows[0]["data"] != relative.parts[0]:
            problems.append(f"{path}: ran on {trial_rows[0]['data']} but is filed under {relative.parts[0]}; "
                            f"skipped (move it to {trial_rows[0]['data']}/)")
            continue
        recorded = record["variant"]  # trials from before variants existed: recipes
        if recorded != variant:
            problems.append(f"{path}: ran as {variants.label(record['folder'], recorded)} but is filed as "
                            f"{variants.label(record['folder'], variant)}; skipped")
            continue
        if with_variants:
            for row in trial_rows:
                row["variant"] = variant
        rows.extend(trial_rows)
    trials = pd.DataFrame(rows)
    if not trials.empty:
        order = ["data", "folder", *(["variant"] if with_variants else []), "trial", "split"]
        trials = trials.sort_values(order, key=_split_order).reset_index(drop=True)
    return trials, problems


def _split_order(column: pd.Series) -> pd.Series:
    return column.map(SPLITS.index) if column.name == "split" else column

