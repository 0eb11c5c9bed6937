"""Trials scored from kept weights instead of trained: an evaluation-only experiment scoring its
base's weights (exp207 over exp206), and rescoring a finished trial with what the evaluation records now."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import data as fmnist
from common import experiments, results
from common.record import TrialRecord, data_fingerprint, read as read_record
from common.checkpoint import layers_only, save_weights
from common.cli import UsageError
from common.evaluation import evaluate, scoring_passes
from common.training import kept_model, trial_seed


def reusable_base_trial(base_directory: Path | None, config: dict, trial: int, fingerprint: str,
                        defaults: dict | None = None) -> TrialRecord | None:
    """The base experiment's finished record of this trial when its kept weights are what this trial
    would train: same data, same seed, same config but for the evaluation keys. Else None."""
    if base_directory is None or not (base_directory / results.WEIGHTS_FILE).exists():
        return None
    record = read_record(base_directory / results.METRICS_FILE)
    if record is None or data_fingerprint(record) != fingerprint:
        return None
    if config["fix_seed"] and record["seed"] != trial_seed(config, trial):
        return None
    if experiments.training_difference(record["config"], config, defaults):
        return None
    return record


def score_base_weights(trial: int, directory: Path, base: dict, base_directory: Path, config: dict,
                       build_model: Callable[[dict], Any], dataset: fmnist.FashionMNIST, label: str,
                       log: Callable[[str], None]) -> tuple[dict, np.ndarray]:
    """An evaluation-only trial: score the weights the base's same trial trained, without training."""
    start, started_at = time.perf_counter(), results.now_iso()
    model = kept_model(build_model, config, dataset, base["seed"], base_directory / results.WEIGHTS_FILE)
    log(f"{label}: scoring the weights {base['folder']} trial {base['trial']} trained (same seed, data and "
        f"training config; {base['wall_seconds'] / 60:.0f} min of training not repeated)")
    metrics, test_probabilities = evaluate(model, dataset, config)
    results.atomic_write_bytes(directory / results.HISTORY_FILE, (base_directory / results.HISTORY_FILE).read_bytes())
    record = {
        "trial": trial, "seed": base["seed"], "seed_fixed": config["fix_seed"], "metrics": metrics,
        "epochs_run": base["epochs_run"], "best_epoch": base["best_epoch"],
        "stopped_early": base["stopped_early"],
        "wall_seconds": round(time.perf_counter() - start, 1), "sittings": 1,
        "started_at": started_at, "finished_at": results.now_iso(),
        "parameters": int(model.count_params()), "scoring_passes": scoring_passes(config),
        "weights_from": {"folder": base["folder"], "trial": base["trial"], "wall_seconds": base["wall_seconds"],
                         "finished_at": base["finished_at"], "hardware": base["provenance"].get("hardware")},
    }
    save_weights(layers_only(model), directory / results.WEIGHTS_FILE)
    return record, test_probabilities


RESCORE_LOSS_RTOL = 1e-4  # another CPU or thread count moves an evaluation by float noise (about 1e-6)


def rescore_trial(directory: Path, config: dict, build_model: Callable[[dict], Any],
                  dataset: fmnist.FashionMNIST, hardware: dict, label: str, log: Callable[[str], None]) -> None:
    """Add to a finished trial's metrics what `evaluate` records now and the trial lacks, from its kept
    weights. The recorded figures stay as they were; the weights must first reproduce them (loss to
    RESCORE_LOSS_RTOL, accuracy to an image in a thousand, for near-ties), or nothing is written."""
    record = read_record(directory / results.METRICS_FILE)
    if not (directory / results.WEIGHTS_FILE).exists():
        log(f"{label}: no kept weights ({results.WEIGHTS_FILE}: trained elsewhere or before they were kept); "
            f"not rescored")
        return
    model = kept_model(build_model, config, dataset, record["seed"], directory / results.WEIGHTS_FILE)
    metrics, _ = evaluate(model, dataset, config)
    for split, recorded in record["metrics"].items():
        now = metrics[split]
        if (abs(now["loss"] - recorded["loss"]) > RESCORE_LOSS_RTOL * abs(recorded["loss"])
                or abs(now["accuracy"] - recorded["accuracy"]) > 1e-3):
            raise UsageError(f"{directory}: its kept weights score {split} loss {now['loss']:.6f}, accuracy "
                             f"{now['accuracy']:.4f} where the trial recorded {recorded['loss']:.6f}, "
                             f"{recorded['accuracy']:.4f}: not the weights it evaluated; nothing rescored "
                             f"(rerun the trial with --force to record everything afresh)")
    added = sorted({key for split in metrics for key in metrics[split]} - {
        key for split in record["metrics"] for key in record["metrics"][split]})
    if not added:
        log(f"{label}: records everything the evaluation gives; nothing to add")
        return
    record["metrics"] = {split: {**metrics[split], **recorded} for split, recorded in record["metrics"].items()}
    record.setdefault("rescored", []).append({"at": results.now_iso(), "added": added, "hardware": hardware})
    results.atomic_write_json(directory / results.METRICS_FILE, record)
    log(f"{label}: added {', '.join(added)} from its kept weights (loss and accuracy reproduced) "
        f"-> {directory / results.METRICS_FILE}")
