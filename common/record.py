"""A finished trial's record, the metrics.json the runner writes last: its fields, typed, and a schema
version, so that every tool reads one shape whatever code wrote the file.

Records from before a field existed are read with the value that field's absence meant (`upgrade`):
no variant is the recipe, no overrides none, no speed section a trial on plain Keras' step, and so
on. Version 1 is every record written before the version was (2026-12-01); version 2 adds `schema`;
version 3 `scoring_passes` (the final scoring took two passes over each split before it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

SCHEMA_VERSION = 3


class SplitMetrics(TypedDict, total=False):
    loss: float  # Keras' compiled loss (with an L2 penalty, against smoothed targets), as the log reports it
    accuracy: float
    crossentropy: float  # plain, against the true classes; absent in records from before it existed


class TrialRecord(TypedDict):
    schema: int
    experiment: str  # expNNN
    folder: str  # expNNN_<slug>
    base: str | None  # "exp106, exp007" where it merges two
    explanation: str
    smoke: bool
    trial: int
    seed: int | None
    seed_fixed: bool
    metrics: dict[str, SplitMetrics]  # train, valid, test
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    wall_seconds: float
    sittings: int
    started_at: str | None
    finished_at: str | None
    parameters: int | None
    speed: dict[str, Any]  # how it ran (XLA, fused batch norm, steps a call) and its median speed
    scoring_passes: int  # forward passes over each split in the final scoring (common/evaluation.py)
    epochs_max: int
    default_trials: int
    overrides: dict[str, Any]  # what the command line changed (--trials among them)
    variant: str  # "" for the recipe, else the variant's name (common.variants)
    config: dict[str, Any]  # the effective config
    provenance: dict[str, Any]  # data, code (git), versions, hardware


# What a field's absence means in an older record.
DEFAULTS: dict[str, Any] = {
    "schema": 1, "base": None, "explanation": "", "smoke": False, "seed": None, "seed_fixed": True,
    "stopped_early": False, "sittings": 1, "started_at": None, "finished_at": None, "parameters": None,
    "speed": {}, "scoring_passes": 2, "default_trials": 1, "overrides": {}, "variant": "", "config": {},
    "provenance": {},
}


def upgrade(raw: dict) -> TrialRecord:
    """A record of any version in the current shape: missing fields at what their absence meant."""
    record = {**{key: (value.copy() if isinstance(value, dict) else value) for key, value in DEFAULTS.items()}, **raw}
    record["variant"] = record["variant"] or ""
    return record  # type: ignore[return-value]


def read(path: Path) -> TrialRecord | None:
    """The record in a finished trial's metrics.json; None where there is none or it cannot be read."""
    try:
        return upgrade(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def data_fingerprint(record: TrialRecord) -> str | None:
    return record["provenance"].get("data", {}).get("fingerprint")
