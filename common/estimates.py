"""How much training the tables still lack: trial-hours from the finished trials' times, the
running trials' epochs, or a base's; and the planned variants' missing trials."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from common import experiments, results


def running_epoch_seconds(results_dir: Path, data: str) -> dict[str, float]:
    """{experiment folder: median seconds per epoch} of the unfinished trials' checkpoints on this data."""
    seconds: dict[str, list[float]] = {}
    for state in sorted((results_dir / data).glob(f"*/trial_*/{results.CHECKPOINT_DIR}/{results.CHECKPOINT_STATE}")):
        try:
            rows = json.loads(state.read_text())["history"]
            seconds.setdefault(state.parents[2].name, []).extend(float(row["seconds"]) for row in rows)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a checkpoint being written or of older code: no estimate from it
    return {folder: float(np.median(values)) for folder, values in seconds.items() if values}


def trial_minutes(rows: pd.DataFrame, fast_only: bool = True) -> pd.Series:
    """Each experiment's median trial minutes: of its trials on the faster path (`common/speed.py`)
    where it has any and `fast_only`, else of all its finished trials."""
    if fast_only and "fast_trial_minutes" in rows:
        return rows.fast_trial_minutes.fillna(rows.trial_minutes)
    return rows.trial_minutes


def planned_compute(summary: pd.DataFrame, variant_rows: pd.DataFrame) -> str:
    """The trial-hours the planned variants still need on this data, at their recipes' trial times."""
    if variant_rows.empty:
        return ""
    minutes = trial_minutes(summary[summary.split == "test"].set_index("folder"))
    missing = (variant_rows.planned_trials.fillna(0) - variant_rows.trials).clip(lower=0)
    hours = float((missing * variant_rows.folder.map(minutes).fillna(0)).sum() / 60)
    count = int(missing.sum())
    return (f" The variants the experiments plan (`variants.txt`) lack {count} trial(s) here: about {hours:.0f} "
            f"trial-hours at their recipes' median trial times.") if count else ""


def remaining_compute(summary: pd.DataFrame, data: str, epoch_seconds: dict[str, float] | None = None,
                      folders: list[Path] | None = None) -> str:
    """How much training is still missing on this data for every experiment's own trial count.

    From the median wall time of each experiment's finished trials. For an experiment with none yet:
    the epoch time of its running trial (`epoch_seconds`), else of its nearest base that has one (a
    fair guess where the step keeps the model, as the exp2xx steps do), times the epochs a trial will
    likely run: all of them without early stopping, else the share of its epochs that its nearest
    finished base ran (or the median run of the finished experiments). An evaluation-only experiment
    (exp207) scores its base's weights: minutes, not counted. `folders`: the experiments to count
    (default: all of them).
    """
    rows = summary[summary.split == "test"].set_index("folder")
    typical_epochs = float(((rows.epochs_run_min + rows.epochs_run_max) / 2).median()) if len(rows) else math.inf
    evaluation_only, unknown, from_epochs, from_base, plain = [], [], [], {}, []
    trials_left: dict[str, int] = {}  # finished experiments: trials still to run at their own trial time
    epochs_left: dict[str, float] = {}  # the others: epochs still to run at the epoch time of `timed`
    for folder in experiments.all_folders() if folders is None else folders:
        config = experiments.read_definition(folder).config
        if folder.name in rows.index:
            trials_left[folder.name] = max(0, config["trials"] - int(rows.loc[folder.name].trials))
            if trials_left[folder.name] and rows.loc[folder.name].get("fast_path_trials", 1) == 0 \
                    and not experiments.trains_like_base(folder):
                plain.append(experiments.experiment_id(folder))
            continue
        if experiments.trains_like_base(folder):
            evaluation_only.append(experiments.experiment_id(folder))
            continue
        timed = folder if folder.name in (epoch_seconds or {}) or folder.name in rows.index else next(
            (base for base in experiments.base_chain(folder)
             if base.name in (epoch_seconds or {}) or base.name in rows.index), None)
        if timed is None:
            unknown.append(experiments.experiment_id(folder))
            continue
        epochs = config["epochs"]
        if config["patience"] < epochs:  # early stopping: as its nearest finished base did, in proportion
            finished = next((base for base in experiments.base_chain(folder) if base.name in rows.index), None)
            share = ((rows.loc[finished.name, "epochs_run_min"] + rows.loc[finished.name, "epochs_run_max"]) / 2
                     / rows.loc[finished.name, "epochs_max"]) if finished else typical_epochs / epochs
            epochs = min(epochs, epochs * share)
        epochs_left[timed.name] = epochs_left.get(timed.name, 0.0) + config["trials"] * epochs
        if timed == folder:
            from_epochs.append(experiments.experiment_id(folder))
        else:
            from_base.setdefault(experiments.experiment_id(timed), []).append(experiments.experiment_id(folder))

    def hours(minutes: pd.Series) -> float:
        """The trial-hours left at these per-experiment trial minutes (a running trial's epochs first)."""
        seconds = {folder: minutes[folder] * 60 / max(1.0, (row.epochs_run_min + row.epochs_run_max) / 2)
                   for folder, row in rows.iterrows()} | dict(epoch_seconds or {})
        return (sum(left * minutes[name] / 60 for name, left in trials_left.items())
                + sum(epochs * seconds[name] / 3600 for name, epochs in epochs_left.items()))

    fast_hours, all_hours = hours(trial_minutes(rows)), hours(trial_minutes(rows, fast_only=False))
    text = (f"*Still to run on `{data}`* to reach every experiment's own trial count: about {fast_hours:.0f} "
            f"trial-hours (median wall time of each experiment's finished trials as they ran here, of those on "
            f"the faster path (`common/speed.py`) where it has any"
            + (f"; for {', '.join(from_epochs)}, the epoch time of a running trial" if from_epochs else "")
            + "".join(f"; for {', '.join(ids)}, not run yet, the epoch time of {base}"
                      for base, ids in from_base.items())
            + ("; times the epochs a trial will likely run: where early stopping ends it, the share of "
               "its epochs that its nearest finished base ran" if from_epochs or from_base else "")
            + f"; two trials side by side on two cores take about {fast_hours / 2:.0f} hours)")
    if len(rows) and "fast_path_trials" in rows:
        fast, finished = int(rows.fast_path_trials.sum()), int(rows.trials.sum())
        text += f"; {fast} of the {finished} finished trials trained on the faster path"
        if round(all_hours) != round(fast_hours):
            text += (f", and at the median of all of them, plain Keras' step included, the estimate would be "
                     f"{all_hours:.0f} trial-hours (a difference of the path's speed-up and of the CPUs the "
                     f"trials met)")
        if plain:
            text += (f"; {', '.join(plain)} still lack{'s' if len(plain) == 1 else ''} trials and "
                     f"{'has' if len(plain) == 1 else 'have'} none on the faster path: "
                     f"{'its' if len(plain) == 1 else 'their'} share is high by its speed-up "
                     f"(docs/benchmarks.md)")
    if evaluation_only:
        one = len(evaluation_only) == 1
        text += f"; {', '.join(evaluation_only)} only score{'s its' if one else ' their'} base's weights (minutes)"
    if unknown:
        text += f", plus {', '.join(unknown)}, which have no measured epoch to estimate from"
    return text + "."
