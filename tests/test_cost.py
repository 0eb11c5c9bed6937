"""What a trial spent (common/cost.py): operations from the epochs run and the scoring, minutes, the
time in exp206 epochs on the same machine, and the time-to-accuracy table, plot and README section."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from common import cost, summarize
from common.flops import TRAINING_PASSES

DATA = "offline-v2"
SIZES = {"train": 54000, "valid": 6000, "test": 4443}
XEON = {"device": "CPU", "gpus": [], "cpu": "Intel(R) Xeon(R) Processor", "threads": 1}
FORWARD = {"exp206_longer_schedule": 100_000_000, "exp301_fast_baseline": 25_000_000,
           "exp302_test_time_flip": 25_000_000}


def record(folder, trial, test_acc, *, epochs_run, wall_seconds, test_time_flip=False, weights_from=None,
           hardware=XEON, scoring_passes=1):
    experiment = folder.split("_")[0]
    rec = {
        "schema": 3, "experiment": experiment, "folder": folder, "base": None, "explanation": "",
        "smoke": False, "trial": trial, "seed": trial, "seed_fixed": True,
        "metrics": {split: {"loss": 0.3, "accuracy": test_acc if split == "test" else 0.95}
                    for split in ("train", "valid", "test")},
        "epochs_run": epochs_run, "best_epoch": epochs_run, "epochs_max": epochs_run, "wall_seconds": wall_seconds,
        "default_trials": 10, "overrides": {}, "variant": "", "scoring_passes": scoring_passes,
        "speed": {} if weights_from else {"forward_flops_per_image": FORWARD[folder]},
        "config": {"epochs": epochs_run, "test_time_flip": test_time_flip, "batch_size": 256},
        "provenance": {"hardware": hardware, "data": {"name": DATA, "fingerprint": "e" * 64, "split_sizes": SIZES,
                                                      "description": "test data"}},
    }
    if weights_from:
        rec["weights_from"] = weights_from
    return rec


def write(results, rec, epoch_seconds=None):
    directory = results / DATA / rec["folder"] / f"trial_{rec['trial']}"
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps(rec))
    seconds = epoch_seconds or [10.0] * rec["epochs_run"]
    n = len(seconds)
    pd.DataFrame({"epoch": range(1, n + 1), "loss": [0.5] * n, "accuracy": [0.9] * n, "val_loss": [0.6] * n,
                  "val_accuracy": [0.9] * n, "seconds": seconds}).to_csv(directory / "history.csv", index=False)


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    # exp206: two 80-epoch trials on the Xeon at 200 s an epoch (the first epoch, tracing, slower);
    # its old records lack the forward count and the scoring passes (two, then)
    for trial in (0, 1):
        rec = record("exp206_longer_schedule", trial, 0.946 + trial / 1000, epochs_run=80, wall_seconds=16000.0)
        del rec["speed"]["forward_flops_per_image"], rec["scoring_passes"]
        write(results, rec, [300.0] + [200.0] * 79)
    # exp301: three 9-epoch trials on the Xeon, 6 minutes each; one more on another CPU
    for trial, acc in enumerate([0.930, 0.932, 0.934]):
        write(results, record("exp301_fast_baseline", trial, acc, epochs_run=9, wall_seconds=360.0))
    amd = {**XEON, "cpu": "AMD EPYC"}
    write(results, record("exp301_fast_baseline", 3, 0.936, epochs_run=9, wall_seconds=180.0, hardware=amd))
    # exp302: evaluation only, test-time flips on exp301 trial 0's weights
    write(results, record("exp302_test_time_flip", 0, 0.935, epochs_run=9, wall_seconds=6.0, test_time_flip=True,
                          scoring_passes=2, weights_from={"folder": "exp301_fast_baseline", "trial": 0,
                                                          "wall_seconds": 360.0, "hardware": XEON}))
    # exp114 ran no trial here; exp999 is not shown
    return results


class CountedForward(cost.ForwardCounter):
    """The forward count of records without one, without building exp206's model."""
    def __call__(self, record, root):
        return record["speed"].get("forward_flops_per_image") or FORWARD[record["folder"]]


def test_a_trial_spent_its_epochs_and_the_scoring_of_valid_and_test(results):
    trials = cost.trial_costs(results, DATA, ["exp206_longer_schedule", "exp301_fast_baseline",
                                              "exp302_test_time_flip"], counter=CountedForward())
    by = trials.set_index(["folder", "trial"])
    epoch_images = TRAINING_PASSES * 54000 + 6000
    scored = 6000 + 4443  # the train split's re-scoring is left out
    assert by.loc[("exp301_fast_baseline", 0), "tflop"] == pytest.approx(25e6 * (9 * epoch_images + scored) / 1e12)
    # an old record: two scoring passes, its forward count from the model
    assert by.loc[("exp206_longer_schedule", 0), "tflop"] == pytest.approx(
        100e6 * (80 * epoch_images + 2 * scored) / 1e12)
    # evaluation only: its base trial's training, its own two passes (image and mirror), both times
    assert by.loc[("exp302_test_time_flip", 0), "tflop"] == pytest.approx(25e6 * (9 * epoch_images + 2 * scored) / 1e12)
    assert by.loc[("exp302_test_time_flip", 0), "minutes"] == pytest.approx(366 / 60)
    assert by.loc[("exp301_fast_baseline", 3), "machine"] == "AMD EPYC, 1 thread(s)"


def test_time_to_accuracy_rows_and_the_yardstick_of_exp206_epochs(results, monkeypatch):
    monkeypatch.setattr(cost, "ForwardCounter", CountedForward)
    assert cost.reference_epoch_seconds(results, DATA) == {("Intel(R) Xeon(R) Processor", 1): 200.0}
    rows = cost.time_to_accuracy(results, DATA).set_index("experiment")
    assert list(rows.index) == ["exp206", "exp301", "exp302"]
    exp301 = rows.loc["exp301"]
    assert exp301.trials == 4 and exp301.test_mean == pytest.approx(0.933)
    assert (exp301.test_min, exp301.test_max) == (0.930, 0.936)
    assert exp301.minutes == pytest.approx((3 * 6 + 3) / 4)
    # 6 minutes on the Xeon are 1.8 of exp206's 200-s epochs there; the AMD trial has no yardstick
    assert exp301.reference_epochs == pytest.approx(1.8)
    assert "several" not in exp301.machines and ";" in exp301.machines
    assert rows.loc["exp206"].reference_epochs == pytest.approx(80.0)
    assert math.isnan(rows.loc["exp302"].test_std)  # one trial


def test_no_fast_series_no_table(results):
    import shutil

    for folder in (results / DATA).glob("exp30*"):
        shutil.rmtree(folder)
    assert cost.time_to_accuracy(results, DATA).empty


def test_summarize_writes_the_table_the_csv_and_the_plot(results, tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "ForwardCounter", CountedForward)
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{summarize.MARKER_START}\n{summarize.MARKER_END}\n")
    assert summarize.summarize(results, readme, log=lambda *_: None) == 0
    text = readme.read_text()
    assert f"#### Time to accuracy on `{DATA}`" in text
    section = text[text.index("#### Time to accuracy"):]
    line = next(line for line in section.splitlines() if line.startswith("| exp301 "))
    assert "0.9330±0.0026, 0.9300–0.9360" in line and "| 4 |" in line and "several machines" in line
    assert "| exp206 | 2 |" in section
    csv = pd.read_csv(results / "time_to_accuracy.csv")
    assert set(csv.experiment) == {"exp206", "exp301", "exp302"} and set(csv.data) == {DATA}
    png = results / "plots" / DATA / "time_to_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "time_to_accuracy.png" in text
