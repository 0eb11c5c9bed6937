"""Scoring a trained model: loss, plain cross-entropy and accuracy per split, and class probabilities."""

from __future__ import annotations

import numpy as np

from common import data as fmnist


def _outputs(model, x: np.ndarray) -> np.ndarray:
    from common import pipeline

    return model.predict(pipeline.predict_dataset(x), verbose=0)


def probabilities_of(model, outputs: np.ndarray) -> np.ndarray:
    """Class probabilities from the model's outputs (a softmax over logits where the loss takes them)."""
    outputs = outputs.astype(np.float64)
    if getattr(model.loss, "from_logits", False):
        outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs /= outputs.sum(axis=1, keepdims=True)
    return outputs


def class_probabilities(model, x: np.ndarray) -> np.ndarray:
    """The model's class probabilities for x, in order."""
    return probabilities_of(model, _outputs(model, x))


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of class probabilities against the true classes: no smoothing, no penalty."""
    true_class = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)  # Keras' epsilon
    return float(-np.mean(np.log(true_class)))


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images (N, H, W, C) moved dy pixels down and dx right, the edge they leave filled with black."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def views(x: np.ndarray, config: dict) -> list[np.ndarray]:
    """What the model scores for each image: the image; with test_time_shift s, also the image moved s
    pixels up, down, left and right; with test_time_flip, each of these and its mirror image."""
    s = config.get("test_time_shift", 0)
    if not (isinstance(s, int) and 0 <= s < 14):
        raise ValueError(f"test_time_shift {s!r} must be a whole number of pixels from 0 (off) to 13")
    moved = [x] + ([shifted(x, dy, dx) for dy, dx in ((-s, 0), (s, 0), (0, -s), (0, s))] if s else [])
    return moved + ([v[:, :, ::-1, :] for v in moved] if config["test_time_flip"] else [])


def scoring_passes(config: dict) -> int:
    """Forward passes over each split that `evaluate` makes: one per view (one without test-time
    augmentation, two with flips, five with shifts, ten with both)."""
    return (1 + 4 * bool(config.get("test_time_shift", 0))) * (2 if config["test_time_flip"] else 1)


def evaluate(model, dataset: fmnist.FashionMNIST, config: dict) -> tuple[dict, np.ndarray]:
    """Loss, cross-entropy and accuracy per split, and the test set's class probabilities.

    `loss` is what Keras reports, the compiled loss: with an L2 regulariser it includes the penalty,
    with label smoothing it is taken against the smoothed targets (the log's figures are these).
    `crossentropy` is the plain cross-entropy against the true classes, comparable across experiments.
    Each split is scored in one forward pass, the compiled loss and the probabilities both taken from
    its outputs. With test-time augmentation (test_time_flip, test_time_shift: `views`), every split is
    scored on the average of the probabilities of each image's views, the loss being the plain
    cross-entropy of that average.
    """
    from common import pipeline

    metrics, probabilities = {}, {}
    for split, (x, y) in dataset.splits().items():
        if scoring_passes(config) > 1:
            p = np.mean([class_probabilities(model, view) for view in views(x, config)], axis=0)
            loss = cross_entropy(p, y)
        else:
            outputs = _outputs(model, x)
            # Keras' compiled loss (its smoothing, its regularisers' penalty) over the whole split at once
            loss = model.compute_loss(y=pipeline.labels_for(y, config), y_pred=outputs, training=False)
            p = probabilities_of(model, outputs)
        metrics[split] = {"loss": float(loss), "accuracy": float(np.mean(p.argmax(axis=1) == y)),
                          "crossentropy": cross_entropy(p, y)}
        probabilities[split] = p
    return metrics, probabilities["test"]
