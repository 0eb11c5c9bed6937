"""What the trials' stored test-set predictions tell beyond their accuracy: the ensemble of an
experiment's trials, accuracy per class, the confusion matrix, and the paired test of two experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from common import results
from common.data import CLASS_NAMES

NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class Ensemble:
    """The average of some trials' class probabilities on the test set (one trial: that trial)."""

    probabilities: np.ndarray  # (n, 10)
    predicted: np.ndarray  # (n,)
    labels: np.ndarray  # (n,)
    trials: int

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def load(results_dir: Path, metrics_paths: list[str]) -> list[results.Predictions]:
    """The predictions of the given trials (paths of metrics.json relative to results_dir) that have them."""
    found = []
    for metrics_path in metrics_paths:
        path = results_dir / Path(metrics_path).with_name(results.PREDICTIONS_FILE)
        if path.exists():
            found.append(results.read_predictions(path))
    return found


def load_by_trial(results_dir: Path, rows) -> dict[int, results.Predictions]:
    """{trial: its test predictions}, in trial order, of the trials in `rows` (trials.csv rows with
    `split`, `trial` and `path`) that kept them."""
    found = {}
    for trial, path in rows[rows.split == "test"][["trial", "path"]].itertuples(index=False):
        loaded = load(results_dir, [path])
        if loaded:
            found[int(trial)] = loaded[0]
    return dict(sorted(found.items()))


ByExperiment = dict[tuple[str, str], dict[int, results.Predictions]]  # {(data, folder): {trial: predictions}}


def by_experiment(results_dir: Path, trials) -> ByExperiment:
    """{(data, folder): load_by_trial of its rows} for every experiment in `trials`: each file read once
    for all the tables that use it (the ensembles, the step table, the variants against their recipe)."""
    return {(data, folder): load_by_trial(results_dir, rows)
            for (data, folder), rows in trials.groupby(["data", "folder"], sort=True)}


def ensemble(trials: list[results.Predictions]) -> Ensemble | None:
    """Average the trials' probabilities; None without trials. All must be on the same test images.

    Exact on every machine: the stored integers (probability x 255) are summed as integers, and the
    class with the largest sum wins; an exact tie goes to the lower class index (numpy's argmax on
    integers). Averaging floats instead lets the float type and the summation order break such ties.
    """
    if not trials:
        return None
    labels = trials[0].labels
    if any(len(t.labels) != len(labels) or not np.array_equal(t.labels, labels) for t in trials):
        raise ValueError("the trials' predictions are not on the same test images (labels differ)")
    if len(trials) == 1:  # one trial: its exact prediction, not the argmax of rounded probabilities
        return Ensemble(trials[0].probabilities, trials[0].predicted, labels, 1)
    sums = np.sum([t.counts.astype(np.int64) for t in trials], axis=0)
    mean = (sums / (results.PROBABILITY_SCALE * len(trials))).astype(np.float32)
    return Ensemble(mean, sums.argmax(axis=1), labels, len(trials))


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """counts[true class, predicted class]."""
    return np.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    counts = confusion_matrix(predicted, labels)
    return np.diag(counts) / np.maximum(counts.sum(axis=1), 1)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of predictions made with the given top-class
    probabilities: the images binned by that probability into equal-width bins [i/bins, (i+1)/bins);
    the mean over bins, weighted by their share of the images, of the gap between the bin's mean
    probability and its accuracy. 0 for a model whose 0.9s are right 90% of the time. (Stored
    probabilities are rounded to 1/255, at most 0.002 each.)"""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(confidence[which == i].mean() - correct[which == i].mean()) * np.mean(which == i)
            for i in np.unique(which)]
    return float(np.sum(gaps))


@dataclass(frozen=True)
class McNemar:
    only_a: int  # images A gets right and B wrong
    only_b: int  # images B gets right and A wrong
    p_value: float  # exact two-sided: the smaller count under Binomial(only_a + only_b, 1/2)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test on paired predictions of the same images: only discordant images count."""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    n = only_a + only_b
    p = 1.0 if n == 0 else min(1.0, 2 * float(scipy_stats.binom.cdf(min(only_a, only_b), n, 0.5)))
    return McNemar(only_a, only_b, p)


@dataclass(frozen=True)
class Paired:
    """Two experiments' ensembles of the same trial numbers, and McNemar's test between them."""

    trials: list[int]  # the trial numbers both ran: the same seeds, where the seeds are fixed
    a: Ensemble
    b: Ensemble
    test: McNemar


def same_trials(a: dict[int, results.Predictions], b: dict[int, results.Predictions]) -> Paired | None:
    """McNemar's exact test between the ensembles of the trials both sides ran (load_by_trial's
    dicts). An ensemble of more members scores higher by itself; with the same members on each side
    the test sees the recipes, not the counts. None where they share no trial number, or their
    predictions are not on the same test images."""
    both = sorted(set(a) & set(b))
    if not both:
        return None
    ensemble_a, ensemble_b = (ensemble([side[trial] for trial in both]) for side in (a, b))
    if not np.array_equal(ensemble_a.labels, ensemble_b.labels):
        return None
    return Paired(both, ensemble_a, ensemble_b, mcnemar(ensemble_a.correct, ensemble_b.correct))
