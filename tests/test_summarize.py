"""The summary on fixture metrics.json files: CSV figures, the README region, bad files skipped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common import estimates, summarize

FINGERPRINT = "f" * 64
DATA = "data-ffffffff"  # the name summaries give the data of FINGERPRINT


def record(experiment, folder, trial, test_acc, *, smoke=False, default_trials=3, overrides=None,
           fingerprint=FINGERPRINT, name=DATA):
    return {
        "experiment": experiment, "folder": folder, "base": "exp001", "explanation": f"{experiment} idea",
        "smoke": smoke, "trial": trial, "seed": trial, "seed_fixed": True,
        "metrics": {"train": {"loss": 0.1, "accuracy": 0.99},
                    "valid": {"loss": 0.2, "accuracy": 0.95},
                    "test": {"loss": 1 - test_acc, "accuracy": test_acc}},
        "epochs_run": 10 + trial, "best_epoch": 5, "epochs_max": 100, "wall_seconds": 12.0,
        "default_trials": default_trials, "overrides": overrides or {},
        "config": {"epochs": 100, "test_time_flip": experiment == "exp207"},
        "provenance": {"hardware": {"device": "CPU"},
                       "data": {"fingerprint": fingerprint, "name": name, "source": "idx",
                                "description": f"test data {name}"}},
    }


def write(results, folder, trial, rec):
    name = rec["provenance"]["data"]["name"]
    path = results / name / folder / f"trial_{trial}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    for trial, acc in enumerate([0.90, 0.92, 0.94]):
        write(results, "exp102_conv", trial, record("exp102", "exp102_conv", trial, acc))
    write(results, "exp001_simple_dense", 0, record("exp001", "exp001_simple_dense", 0, 0.88, default_trials=1))
    # A smoke run and a real-looking record under smoke/ must both stay out of the summary.
    write(results / "smoke", "exp001_simple_dense", 0, record("exp001", "exp001_simple_dense", 0, 0.1))
    write(results, "exp003_batch_norm", 0, record("exp003", "exp003_batch_norm", 0, 0.1, smoke=True))
    return results


README_BEFORE = "# Title\n\nIntro text that must survive.\n\n"
README_AFTER = "\n\n## Later section\n\nAlso kept.\n"


def test_summary_csv_and_readme(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README_BEFORE + summarize.MARKER_START + "\nold table\n" + summarize.MARKER_END + README_AFTER)
    assert summarize.main(["--results-dir", str(results), "--readme", str(readme)]) == 0

    summary = pd.read_csv(results / "summary.csv")
    assert set(summary["folder"]) == {"exp102_conv", "exp001_simple_dense"}
    assert len(summary) == 6  # two experiments x three splits
    test = summary[(summary.folder == "exp102_conv") & (summary.split == "test")].iloc[0]
    assert test.trials == 3
    assert test.acc_mean == pytest.approx(0.92) and test.acc_std == pytest.approx(0.02)
    assert (test.acc_min, test.acc_max) == (0.90, 0.94)
    trials = pd.read_csv(results / "trials.csv")
    assert len(trials) == 12  # four trials x three splits

    text = readme.read_text()
    assert text.startswith(README_BEFORE) and text.endswith(README_AFTER)
    assert "old table" not in text
    assert "0.9200±0.0200, 0.9000–0.9400" in text  # exp102 test accuracy
    assert "| exp001 | 1 |" in text and "0.8800" in text
    assert "0.8784" in text  # the original log's exp001 test accuracy, as reference
    assert "| exp003 " not in text.split("### The original log")[0]  # smoke record left out of the table


def test_plain_crossentropy_is_averaged_only_where_every_trial_recorded_it(tmp_path):
    results = tmp_path / "results"
    for trial, crossentropy in enumerate([0.20, 0.30]):
        rec = record("exp204", "exp204_label_smoothing", trial, 0.94)
        for split, scores in rec["metrics"].items():
            scores["crossentropy"] = crossentropy + (split == "test")
        write(results, "exp204_label_smoothing", trial, rec)
    write(results, "exp203_random_erase", 0, record("exp203", "exp203_random_erase", 0, 0.94))  # from before it
    rec = record("exp203", "exp203_random_erase", 1, 0.94)
    rec["metrics"]["test"]["crossentropy"] = 0.5
    write(results, "exp203_random_erase", 1, rec)
    assert summarize.main(["--results-dir", str(results), "--no-readme"]) == 0
    summary = pd.read_csv(results / "summary.csv").set_index(["folder", "split"])
    assert summary.loc[("exp204_label_smoothing", "test"), "crossentropy_mean"] == pytest.approx(1.25)
    assert summary.loc[("exp204_label_smoothing", "valid"), "crossentropy_mean"] == pytest.approx(0.25)
    assert summary.loc[("exp203_random_erase", "test")].isna()["crossentropy_mean"]  # one of two trials only
    trials = pd.read_csv(results / "trials.csv")
    assert trials.crossentropy.isna().sum() == 5  # exp203's trial 0 (3 splits) and trial 1 (2)


def test_plots_are_valid_png_files(results, tmp_path):
    history = results / DATA / "exp102_conv" / "trial_0" / "history.csv"
    history.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,0.5,0.8,0.6,0.78\n2,0.4,0.85,0.5,0.8\n")
    readme = tmp_path / "README.md"
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    plots = sorted((results / "plots").rglob("*.png"))
    assert [p.relative_to(results / "plots").as_posix() for p in plots] == [
        f"{DATA}/curves/exp102_conv.png", f"{DATA}/test_accuracy.png"]
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert f"](results/plots/{DATA}/test_accuracy.png)" in readme.read_text()
    assert f"[exp102](results/plots/{DATA}/curves/exp102_conv.png)" in readme.read_text()


def test_rerun_rewrites_only_the_region(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README_BEFORE)
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    first = readme.read_text()
    assert first.startswith(README_BEFORE) and summarize.MARKER_END in first
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    assert readme.read_text() == first


def test_fewer_trials_than_default_and_capped_epochs_are_shown(results, tmp_path):
    write(results, "exp110_resnet", 0, record("exp110", "exp110_resnet", 0, 0.91, default_trials=10,
                                              overrides={"epochs": 20}))
    readme = tmp_path / "README.md"
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| exp110 "))
    assert "| 1 of 10 |" in row and "capped at 100" in row


@pytest.mark.parametrize("content", ['{"experiment": "exp009", "metr', "", '{"experiment": "exp009"}'])
def test_corrupt_or_half_written_file_is_named_and_skipped(results, tmp_path, content):
    bad = results / DATA / "exp009_broken" / "trial_0" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    messages = []
    assert summarize.summarize(results, tmp_path / "README.md", log=messages.append) == 0
    assert any(str(bad) in m and "skipped" in m for m in messages)
    assert set(pd.read_csv(results / "summary.csv")["folder"]) == {"exp102_conv", "exp001_simple_dense"}


def test_no_results_yet(tmp_path):
    readme = tmp_path / "README.md"
    assert summarize.main(["--results-dir", str(tmp_path / "empty"), "--readme", str(readme)]) == 0
    assert "No finished trials of the recipes yet" in readme.read_text()


def test_test_time_flip_is_shown_in_the_table(results, tmp_path):
    write(results, "exp207_test_time_flip", 0, record("exp207", "exp207_test_time_flip", 0, 0.95))
    readme = tmp_path / "README.md"
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    rows = {line.split("|")[1].strip(): line for line in readme.read_text().splitlines() if line.startswith("| exp")}
    assert "| flip |" in rows["exp207"] and "| flip |" not in rows["exp102"]


def _remaining(results, *ids, epoch_seconds=None):
    """The README's "still to run" sentence for these experiments only."""
    from common import experiments

    trials, _ = summarize.collect_trials(results)
    summary = summarize.summarize_trials(trials, results)
    folders = [experiments.find(i) for i in ids]
    return estimates.remaining_compute(summary, DATA, epoch_seconds, folders=folders)


def test_the_compute_still_to_run_is_estimated_from_the_finished_trials(results, tmp_path):
    hour_long = record("exp110", "exp110_resnet", 0, 0.91, default_trials=10)
    hour_long["wall_seconds"] = 3600.0
    write(results, "exp110_resnet", 0, hour_long)
    # exp110: 9 more trials of 1 hour; exp102: 7 more of 12 s; exp001: done (its train.py asks for 1).
    text = _remaining(results, "exp001", "exp102", "exp110")
    assert f"*Still to run on `{DATA}`* to reach every experiment's own trial count: about 9 trial-hours" in text
    assert "two cores take about 5 hours" in text and "not run yet" not in text
    readme = tmp_path / "README.md"  # the whole repository's sentence, in the README
    summarize.main(["--results-dir", str(results), "--readme", str(readme)])
    assert f"*Still to run on `{DATA}`*" in readme.read_text()


def test_the_estimate_takes_the_faster_paths_trials_where_an_experiment_has_them(results):
    text = _remaining(results, "exp001", "exp102")
    assert "0 of the 4 finished trials trained on the faster path" in text  # the fixture's, as from before it
    assert "exp102 still lacks trials and has none on the faster path: its share is high" in text
    fast = record("exp102", "exp102_conv", 3, 0.9, default_trials=10)
    fast["speed"] = {"jit_compile": False, "fused_batch_norm_layers": 0, "steps_per_execution": 16}
    fast["wall_seconds"] = 3600.0
    write(results, "exp102_conv", 3, fast)
    text = _remaining(results, "exp001", "exp102")
    # exp102 lacks 6 of its 10 trials: at its one faster-path trial's hour, 6 hours; at the median of
    # all four (12, 12, 12 and 3600 s), seconds
    assert "about 6 trial-hours" in text and "1 of the 5 finished trials trained on the faster path" in text
    assert "plain Keras' step included, the estimate would be 0 trial-hours" in text
    assert "none on the faster path" not in text


def test_an_experiment_without_finished_trials_is_estimated_from_its_running_trials_epochs(results):
    checkpoint = results / DATA / "exp111_cosine_decay" / "trial_0" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"epoch": 3, "history": [
        {"epoch": 1, "seconds": 100.0}, {"epoch": 2, "seconds": 110.0}, {"epoch": 3, "seconds": 120.0}]}))
    broken = results / DATA / "exp112_lr_retune" / "trial_0" / "checkpoint"
    broken.mkdir(parents=True)
    (broken / "state.json").write_text("{half a fi")  # being written, or damaged: no estimate from it
    epoch_seconds = estimates.running_epoch_seconds(results, DATA)
    assert epoch_seconds == {"exp111_cosine_decay": 110.0}
    text = _remaining(results, "exp001", "exp102", "exp111", "exp109", epoch_seconds=epoch_seconds)
    # exp111: 10 trials x 10.5 epochs (early stopping, and no finished base: the finished runs' median,
    # 10 to 12 epochs) x 110 s = 3.2 hours; exp102's seven 12-second trials add a minute.
    assert "about 3 trial-hours" in text and "for exp111, the epoch time of a running trial" in text
    unknown = text.split("which have no measured epoch")[0].rsplit("plus ", 1)[1]
    assert unknown.strip(" ,") == "exp109"  # its base, "exp107, exp106", is no single chain
    # exp112 has no epoch of its own (its checkpoint is broken): its base exp111's epoch time.
    text = _remaining(results, "exp111", "exp112", epoch_seconds=epoch_seconds)
    assert "about 6 trial-hours" in text and "for exp112, not run yet, the epoch time of exp111" in text


def test_a_new_experiment_is_estimated_from_its_bases_epochs_and_an_evaluation_only_one_is_free(results):
    finished = record("exp114", "exp114_mixup_resnet", 0, 0.93, default_trials=10)
    finished.update(epochs_run=30, epochs_max=40, wall_seconds=6000.0)  # 200 s an epoch, 30 of 40 epochs
    write(results, "exp114_mixup_resnet", 0, finished)
    text = _remaining(results, "exp114", "exp201", "exp206", "exp207")
    # exp114: 9 more trials of 6000 s = 15 h. exp201 (3 trials, 40 epochs, patience 10) runs 3/4 of its
    # epochs as exp114 did: 3 x 30 x 200 s = 5 h; exp206 (80 epochs): 3 x 60 x 200 s = 10 h.
    assert "about 30 trial-hours" in text and "two cores take about 15 hours" in text
    assert "for exp201, exp206, not run yet, the epoch time of exp114" in text
    assert "exp207 only scores its base's weights (minutes)" in text and "no measured epoch" not in text


def test_each_step_against_its_bases_by_welch_mcnemar_and_the_log(results, tmp_path, monkeypatch):
    from common import results as results_module

    labels = np.arange(10)
    def probabilities(right):  # one-hot on the true class for the images in `right`, else on the next class
        predicted = np.where(np.isin(np.arange(10), right), labels, (labels + 1) % 10)
        return np.eye(10)[predicted]
    results_module.write_predictions(results / DATA / "exp001_simple_dense" / "trial_0" / "predictions.npz",
                                     probabilities(range(0, 6)), labels)
    for trial in range(3):  # trial 0 right on images 2-9, trials 1 and 2 on all ten
        results_module.write_predictions(results / DATA / "exp102_conv" / f"trial_{trial}" / "predictions.npz",
                                         probabilities(range(2, 10) if trial == 0 else range(10)), labels)
    merged = record("exp103", "exp103_batch_norm", 0, 0.95)
    merged["base"] = "exp102, exp001"  # two bases, as the log's merges have: a step from each
    write(results, "exp103_batch_norm", 0, merged)
    readme = tmp_path / "README.md"
    read, reader = [], results_module.read_predictions
    monkeypatch.setattr(results_module, "read_predictions", lambda path: read.append(path) or reader(path))
    assert summarize.main(["--results-dir", str(results), "--readme", str(readme)]) == 0
    # each trial's predictions read once, for the ensembles, the steps and the plots alike
    assert len(read) == len(set(read)) == 4
    steps = pd.read_csv(results / "steps.csv").set_index("step")
    assert list(steps.index) == ["exp001 → exp102", "exp102 → exp103", "exp001 → exp103"]
    step = steps.loc["exp001 → exp102"]
    assert step.test_delta == pytest.approx(0.92 - 0.88) and np.isnan(step.welch_p)  # one trial of exp001
    # The trial both ran, trial 0 (exp102's three-trial ensemble would get all ten right): exp102's
    # gets images 2-9 right, exp001's images 0-5: 4 fixed (6-9), 2 broken (0, 1);
    # McNemar's exact p = 2 * P(X <= 2), X ~ Binomial(6, 1/2) = 2 * 22/64.
    assert (step.paired_trials, step.fixed, step.broken, step.ensemble_base, step.ensemble) == (1, 4, 2, 0.6, 0.8)
    assert step.mcnemar_p == pytest.approx(44 / 64)
    assert step.log_delta == pytest.approx(0.8970 - 0.8784)  # the reference CSV's test means
    assert np.isnan(steps.loc["exp102 → exp103"].mcnemar_p)  # exp103 kept no predictions
    text = readme.read_text()
    assert "#### Step by step on `data-ffffffff`" in text
    assert ("| exp001 → exp102 | exp102 idea | 1 → 3 | +0.0400 | 1 a side: 0.6000 → 0.8000, 4/2, p=0.69 | +0.0186 |"
            in text)


def test_each_experiment_readme_gets_its_generated_result_line(results, tmp_path):
    """Between its markers: trials of the planned count, mean±std and min–max, ensemble, the step
    against its base with Welch's and McNemar's tests, the log's figure as reference; rewritten in
    place, the README's own text kept."""
    from common import result_lines

    root = tmp_path / "repo"
    for folder in ("exp001_simple_dense", "exp102_conv"):
        (root / folder).mkdir(parents=True)
        (root / folder / "train.py").write_text("")
    readme = root / "exp102_conv" / "README.md"
    readme.write_text(f"# exp102\n\n**Hypothesis.** H.\n\n{result_lines.MARKER_START}\nold\n"
                      f"{result_lines.MARKER_END}\n\nWhat it means.\n")
    trials, _ = summarize.collect_trials(results)
    ensembles = summarize.test_ensembles(trials, results)
    summary = summarize.summarize_trials(trials, results, ensembles)
    reference = summarize.load_reference()
    steps = summarize.step_comparisons(trials, reference, results)
    written = result_lines.update_experiment_readmes(root, summary, steps, reference)
    assert set(written) == {readme, root / "exp001_simple_dense" / "README.md"}
    text = readme.read_text()
    assert text.startswith("# exp102\n\n**Hypothesis.** H.\n\n") and text.endswith("What it means.\n")
    assert "old" not in text and text.count(result_lines.MARKER_START) == 1
    line = text.split(result_lines.MARKER_START)[1].split(result_lines.MARKER_END)[0]
    assert f"**Result on `{DATA}`**: 3 trials, test accuracy 0.9200±0.0200, 0.9000–0.9400" in line
    assert "against exp001: +0.0400" in line
    logged = reference[(reference.experiment == "exp102") & (reference.split == "test")].iloc[0]
    assert f"The log (reference): {logged.acc_mean:.4f}±{logged.acc_std:.4f}" in line
    # a second run with the same results writes nothing
    assert result_lines.update_experiment_readmes(root, summary, steps, reference) == []
