"""Statistics over trials, checked against values computed by hand."""

import math

import pandas as pd
import pytest

from common import stats


def test_aggregate_against_hand_computed_values():
    trials = pd.DataFrame({
        "experiment": ["a", "a", "a", "b"],
        "split": ["test"] * 4,
        "loss": [0.30, 0.20, 0.25, 0.5],
        "accuracy": [0.90, 0.92, 0.94, 0.8],
    })
    table = stats.aggregate(trials, ["experiment", "split"]).set_index("experiment")
    a = table.loc["a"]
    assert a.trials == 3
    assert a.acc_mean == pytest.approx(0.92)
    # sample std, ddof=1: sqrt(((-0.02)^2 + 0 + 0.02^2) / (3 - 1)) = 0.02
    assert a.acc_std == pytest.approx(0.02)
    assert (a.acc_min, a.acc_max) == (0.90, 0.94)
    assert a.loss_mean == pytest.approx(0.25)
    assert a.loss_std == pytest.approx(0.05)
    b = table.loc["b"]
    assert b.trials == 1 and math.isnan(b.acc_std) and b.acc_mean == 0.8


def test_format_like_the_log():
    assert stats.format_stat(0.91344, 0.00372, 0.90991, 0.92188, 10) == "0.9134±0.0037, 0.9099–0.9219"
    assert stats.format_stat(0.8784, float("nan"), 0.8784, 0.8784, 1) == "0.8784"
    assert stats.format_stat(0.5, 0.1, 0.4, 0.6, 2, digits=2) == "0.50±0.10, 0.40–0.60"


def test_our_rows_against_the_log():
    import pandas as pd

    log = pd.Series({"trials": 10, "acc_mean": 0.9127, "acc_std": 0.0022, "acc_min": 0.9079, "acc_max": 0.9161})
    ours = pd.Series({"trials": 5, "acc_mean": 0.9050, "acc_std": 0.0018})
    # Welch by hand: t = 0.0077 / sqrt(0.0022**2/10 + 0.0018**2/5) = 7.24, df = 9.8: p about 3e-5
    assert stats.versus_reference(ours, log) == "-0.0077, p<0.001"
    close = pd.Series({"trials": 3, "acc_mean": 0.9117, "acc_std": 0.0030})
    p = stats.welch_p(0.9127, 0.0022, 10, 0.9117, 0.0030, 3)
    assert 0.5 < p < 0.7 and stats.versus_reference(close, log) == f"-0.0010, p={p:.2g}"
    single = pd.Series({"trials": 1, "acc_mean": 0.9170, "acc_std": float("nan")})
    assert stats.versus_reference(single, log) == "+0.0043, outside the log's min–max"
    single_log = pd.Series({"trials": 1, "acc_mean": 0.8784, "acc_std": float("nan"), "acc_min": float("nan"),
                            "acc_max": float("nan")})
    assert stats.versus_reference(single, single_log) == "+0.0386"
