"""Statistics over trials: count, mean, sample std (ddof=1), min, max; and the log's cell format."""

from __future__ import annotations

import math

import pandas as pd

METRICS = ("loss", "accuracy")
STATS = ("mean", "std", "min", "max")
SHORT = {"loss": "loss", "accuracy": "acc"}


def aggregate(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group: trials, then <metric>_<stat> for loss and accuracy (std with ddof=1).

    `trials` has one row per trial and split with numeric columns `loss` and `accuracy`.
    A single trial has std NaN: one value has no spread.
    """
    grouped = trials.groupby(by, sort=False)[list(METRICS)]
    table = grouped.agg(list(STATS))  # pandas' std is the sample std, ddof=1
    table.columns = [f"{SHORT[metric]}_{stat}" for metric, stat in table.columns]
    table.insert(0, "trials", grouped.size())
    return table.reset_index()


def format_stat(mean: float, std: float, low: float, high: float, trials: int, digits: int = 4) -> str:
    """`mean±std, min–max` as the log writes it; a single trial shows its value alone."""
    if trials <= 1 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}±{std:.{digits}f}, {low:.{digits}f}–{high:.{digits}f}"


def format_row_stat(row: pd.Series, metric: str, digits: int = 4) -> str:
    short = SHORT[metric]
    return format_stat(row[f"{short}_mean"], row[f"{short}_std"], row[f"{short}_min"],
                       row[f"{short}_max"], int(row["trials"]), digits)
