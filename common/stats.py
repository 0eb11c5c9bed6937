"""Statistics over trials: count, mean, sample std (ddof=1), min, max; and the log's cell format."""

from __future__ import annotations

import math
import warnings

import pandas as pd
from scipy import stats as scipy_stats

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


def welch_p(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test from summary figures; NaN with fewer than 2 trials a side."""
    if n_a < 2 or n_b < 2:
        return math.nan
    if std_a == 0 and std_b == 0:
        return 1.0 if mean_a == mean_b else 0.0
    with warnings.catch_warnings():  # near-identical trials: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_ind_from_stats(mean_b, std_b, n_b, mean_a, std_a, n_a,
                                                      equal_var=False).pvalue)


def versus_reference(ours: pd.Series, reference: pd.Series) -> str:
    """Our test accuracy against the log's: the difference, and Welch's p where both have 2+ trials,
    else whether ours lies inside the log's min–max (rows of stats.aggregate / the reference CSV)."""
    n_ours, n_ref = int(ours["trials"]), int(reference["trials"])
    difference = ours["acc_mean"] - reference["acc_mean"]
    text = f"{difference:+.4f}"
    if n_ours >= 2 and n_ref >= 2:
        p = welch_p(reference["acc_mean"], reference["acc_std"], n_ref, ours["acc_mean"], ours["acc_std"], n_ours)
        return f"{text}, p={p:.2g}" if p >= 0.001 else f"{text}, p<0.001"
    if n_ref >= 2 and not math.isnan(reference["acc_min"]):
        inside = reference["acc_min"] <= ours["acc_mean"] <= reference["acc_max"]
        return f"{text}, {'inside' if inside else 'outside'} the log's min–max"
    return text
