"""Stored test predictions: ensembles, per-class accuracy, confusion, McNemar's test; in summary and diff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common import diff, predictions, results, summarize
from test_summarize import DATA, record, write

LABELS = np.arange(20) % 10


def stored(tmp_path, probabilities, labels=LABELS, name="p.npz") -> results.Predictions:
    path = tmp_path / name
    results.write_predictions(path, np.asarray(probabilities, dtype=np.float64), labels)
    return results.read_predictions(path)


def one_hot(classes, confidence=0.91):
    p = np.full((len(classes), 10), (1 - confidence) / 9)
    p[np.arange(len(classes)), classes] = confidence
    return p


def test_predictions_round_trip_within_the_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=20)
    back = stored(tmp_path, p)
    assert back.probabilities.dtype == np.float32 and np.abs(back.probabilities - p).max() <= 0.5 / 255 + 1e-7
    assert np.array_equal(back.predicted, p.argmax(axis=1)) and np.array_equal(back.labels, LABELS)


def test_ensemble_averages_probabilities(tmp_path):
    # Image 0 (class 0): trial a says class 1 (0.55 against 0.45), b and c say class 0 (0.7 against 0.3);
    # the average, (0.45 + 0.7 + 0.7) / 3 = 0.617 for class 0, picks class 0.
    a = np.zeros((20, 10))
    a[np.arange(20), LABELS] = 1.0
    a[0] = 0
    a[0, 1], a[0, 0] = 0.55, 0.45
    b = a.copy()
    b[0] = 0
    b[0, 0], b[0, 1] = 0.7, 0.3
    c = b.copy()
    trials = [stored(tmp_path, x, name=f"{i}.npz") for i, x in enumerate((a, b, c))]
    assert [t.correct[0] for t in trials] == [False, True, True]
    combined = predictions.ensemble(trials)
    assert combined.trials == 3 and combined.predicted[0] == 0 and combined.accuracy == 1.0
    assert combined.probabilities[0, 0] == pytest.approx((0.45 + 0.7 + 0.7) / 3, abs=1 / 255)
    single = predictions.ensemble(trials[:1])
    assert single.trials == 1 and single.accuracy == pytest.approx(19 / 20)
    assert predictions.ensemble([]) is None
    with pytest.raises(ValueError, match="not on the same test images"):
        predictions.ensemble([trials[0], stored(tmp_path, a, labels=(LABELS + 1) % 10, name="other.npz")])


def test_ensemble_sums_the_stored_integers_and_breaks_exact_ties_by_the_lower_class(tmp_path):
    # Image 0: class 2 gets 208 + 171 + 74 = 453 of 3 x 255 over three trials, class 7 143 + 239 + 71
    # = 453: an exact tie, which the ensemble gives to class 2. Summed as float32 probabilities in
    # trial order, class 7 comes out ahead (1.7764707 against 1.7764705): floats would pick by rounding.
    counts = np.zeros((3, 20, 10))
    counts[:, np.arange(20), LABELS] = 255
    counts[:, 0] = 0
    counts[:, 0, 2], counts[:, 0, 7] = (208, 171, 74), (143, 239, 71)
    trials = [stored(tmp_path, c / 255, name=f"{i}.npz") for i, c in enumerate(counts)]
    assert [t.counts[0, 2] for t in trials] == [208, 171, 74] and [t.counts[0, 7] for t in trials] == [143, 239, 71]
    as_floats = [np.float32(0), np.float32(0)]
    for t in trials:
        as_floats = [as_floats[0] + t.probabilities[0, 2], as_floats[1] + t.probabilities[0, 7]]
    assert as_floats[1] > as_floats[0]  # the float sum's verdict, which the ensemble must not follow
    for order in (trials, trials[::-1], trials[1:] + trials[:1]):
        combined = predictions.ensemble(order)
        assert combined.predicted[0] == 2 and combined.probabilities[0, 2] == combined.probabilities[0, 7]
        assert combined.accuracy == 19 / 20  # image 0's true class is 0


def test_confusion_and_per_class_accuracy_by_hand():
    labels = np.array([6, 6, 6, 6, 0, 0, 2, 4])
    predicted = np.array([6, 0, 0, 2, 0, 6, 2, 2])
    counts = predictions.confusion_matrix(predicted, labels)
    assert counts[6, 6] == 1 and counts[6, 0] == 2 and counts[6, 2] == 1 and counts[0, 6] == 1 and counts[4, 2] == 1
    assert counts.sum() == 8
    accuracy = predictions.per_class_accuracy(predicted, labels)
    assert accuracy[6] == 0.25 and accuracy[0] == 0.5 and accuracy[2] == 1.0 and accuracy[4] == 0.0
    assert accuracy[1] == 0.0  # a class without images counts as 0, not NaN


def test_calibration_error_by_hand():
    probabilities = np.zeros((4, 10))
    probabilities[0, :2] = probabilities[1, :2] = [0.9, 0.1]  # sure at 0.9: one right, one wrong
    probabilities[2, :2] = [0.65, 0.35]  # right at 0.65
    probabilities[3, :2] = [0.3, 0.7]  # right at 0.7
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == np.array([0, 1, 0, 1])
    # by hand, 15 bins: 0.9 in bin 13 (two images, sure 0.9, right 0.5: gap 0.4, weight 1/2),
    # 0.65 in bin 9 (gap 0.35, weight 1/4), 0.7 in bin 10 (gap 0.3, weight 1/4)
    assert predictions.calibration_error(confidence, correct) == pytest.approx(0.4 / 2 + 0.35 / 4 + 0.3 / 4)
    # one bin: 0.9, 0.65 and 0.7 are not told apart, a mean confidence 0.7875 against accuracy 0.75
    assert predictions.calibration_error(confidence, correct, bins=1) == pytest.approx(0.0375)
    assert predictions.calibration_error(np.array([1.0, 1.0, 0.5, 0.5]), np.array([True, True, True, False])) == 0.0


@pytest.mark.parametrize("only_a, only_b, expected", [
    # by hand: 2 * P(X <= 3), X ~ Binomial(15, 1/2) = 2 * (1 + 15 + 105 + 455) / 2**15
    (3, 12, 2 * 576 / 2 ** 15),
    (12, 3, 2 * 576 / 2 ** 15),
    (0, 6, 2 / 2 ** 6),  # 0.03125
    (5, 5, 1.0),  # 2 * P(X <= 5) > 1: capped
    (0, 0, 1.0),  # no discordant image: nothing to tell them apart
])
def test_mcnemar_exact_against_hand_computed_values(only_a, only_b, expected):
    agree = 30
    correct_a = np.array([True] * only_a + [False] * only_b + [True] * agree + [False] * 4)
    correct_b = np.array([False] * only_a + [True] * only_b + [True] * agree + [False] * 4)
    test = predictions.mcnemar(correct_a, correct_b)
    assert (test.only_a, test.only_b) == (only_a, only_b)
    assert test.p_value == pytest.approx(expected, rel=1e-12)


@pytest.fixture
def results_with_predictions(tmp_path):
    """exp006: 3 trials, each 17 of 20 right, each wrong on other images (0-2, 3-5, 6-8), so that their
    ensemble gets all 20 right; exp007: 2 trials, both wrong on image 19 only."""
    results_dir = tmp_path / "results"
    for trial in range(3):
        classes = LABELS.copy()
        wrong = [3 * trial + k for k in range(3)]
        classes[wrong] = (classes[wrong] + 1) % 10
        path = write(results_dir, "exp006_zoom_aug", trial, record("exp006", "exp006_zoom_aug", trial, 0.7))
        results.write_predictions(path.with_name("predictions.npz"), one_hot(classes), LABELS)
    for trial in range(2):
        classes = LABELS.copy()
        classes[19] = 0
        path = write(results_dir, "exp007_mixup", trial, record("exp007", "exp007_mixup", trial, 0.95))
        results.write_predictions(path.with_name("predictions.npz"), one_hot(classes), LABELS)
    return results_dir


def test_summary_and_readme_show_the_ensemble_and_the_confusion_plots(results_with_predictions, tmp_path):
    readme = tmp_path / "README.md"
    assert summarize.main(["--results-dir", str(results_with_predictions), "--readme", str(readme)]) == 0
    summary = pd.read_csv(results_with_predictions / "summary.csv")
    test = summary[summary.split == "test"].set_index("folder")
    # exp006: every image is wrong in one trial at most, so the average of three is always right.
    assert test.loc["exp006_zoom_aug", "ensemble_trials"] == 3
    assert test.loc["exp006_zoom_aug", "ensemble_acc"] == pytest.approx(1.0)
    assert test.loc["exp007_mixup", "ensemble_acc"] == pytest.approx(19 / 20)
    assert summary[summary.split == "valid"].ensemble_acc.isna().all()
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| exp006 "))
    assert "| 1.0000 (3) | – |" in row  # the ensemble, then TTA: not used
    assert not test.loc["exp006_zoom_aug", "test_time_flip"]
    plot = results_with_predictions / "plots" / DATA / "confusion" / "exp006_zoom_aug.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"[exp006](results/plots/{DATA}/confusion/exp006_zoom_aug.png)" in readme.read_text()


def test_confusion_plot_shows_wrong_images_when_the_data_is_at_hand(results_with_predictions, tmp_path):
    from common import plots

    trials, _ = summarize.collect_trials(results_with_predictions)
    reference = summarize.load_reference()
    plain = plots.write_all(results_with_predictions, trials, reference)[DATA]["confusion"][0].stat().st_size
    images = {DATA: np.random.default_rng(0).random((20, 28, 28, 1)).astype(np.float32)}
    with_images = plots.write_all(results_with_predictions, trials, reference, images)[DATA]["confusion"][0]
    assert with_images.stat().st_size > plain + 5_000  # the grid of images adds to the picture


def test_diff_adds_the_paired_test_and_the_classes(results_with_predictions, capsys):
    assert diff.main(["exp006", "exp007", "--results-dir", str(results_with_predictions)]) == 0
    out = capsys.readouterr().out
    # The ensembles: exp006's gets all 20 right, exp007's all but image 19: one discordant image.
    assert "A right and B wrong on 1, A wrong and B right on 0; McNemar's exact test p=1: no significant" in out
    assert "all 1.0000 0.9500 -0.0500" in " ".join(out.split())
    assert "(the ensembles of trials 0, 1 on each side)" in out  # exp007 ran two: exp006's third stays out
    assert "Test accuracy per class:" in out and "Ankle boot" in out
    assert "McNemar's exact test" in out and "Welch's t-test" in out
    assert "Calibration of the same predictions" in out and "lower is better): A 0." in out


def test_the_paired_test_compares_ensembles_of_the_trials_both_ran():
    """An ensemble of more members scores higher by itself: the test takes the same trial numbers a side."""
    def trial(wrong):
        classes = LABELS.copy()
        classes[wrong] = (classes[wrong] + 1) % 10
        return results.Predictions(np.round(one_hot(classes) * 255).astype(np.uint8), classes, LABELS)

    a = {0: trial([0, 1, 2]), 1: trial([3, 4, 5]), 2: trial([6, 7, 8])}  # the three together: all right
    b = {0: trial([0, 1, 2]), 3: trial([])}
    paired = predictions.same_trials(a, b)
    assert paired.trials == [0] and paired.a.trials == paired.b.trials == 1
    assert (paired.a.accuracy, paired.b.accuracy) == (0.85, 0.85) and paired.test.p_value == 1.0
    assert predictions.ensemble(list(a.values())).accuracy == 1.0  # what the unequal comparison would give
    assert predictions.same_trials(a, {5: trial([])}) is None  # no trial number in common


def test_diff_without_predictions_says_so(tmp_path, capsys):
    results_dir = tmp_path / "results"
    for trial in range(2):
        write(results_dir, "exp006_zoom_aug", trial, record("exp006", "exp006_zoom_aug", trial, 0.9))
        write(results_dir, "exp007_mixup", trial, record("exp007", "exp007_mixup", trial, 0.9))
    assert diff.main(["exp006", "exp007", "--results-dir", str(results_dir)]) == 0
    assert "No paired test: exp006_zoom_aug and exp007_mixup kept no test predictions" in capsys.readouterr().out
