"""Scoring a trained model: loss, plain cross-entropy and accuracy per split, and class probabilities."""

from __future__ import annotations

import numpy as np

from common import data as fmnist


def class_probabilities(model, x: np.ndarray) -> np.ndarray:
    """The model's class probabilities for x, in order (a softmax over logits where the loss takes them)."""
    from common import pipeline

    outputs = model.predict(pipeline.predict_dataset(x), verbose=0).astype(np.float64)
    if getattr(model.loss, "from_logits", False):
        outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs /= outputs.sum(axis=1, keepdims=True)
    return outputs


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of class probabilities against the true classes: no smoothing, no penalty."""
    true_class = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)  # Keras' epsilon
    return float(-np.mean(np.log(true_class)))


def evaluate(model, dataset: fmnist.FashionMNIST, config: dict) -> tuple[dict, np.ndarray]:
    """Loss, cross-entropy and accuracy per split, and the test set's class probabilities.

    `loss` is what Keras reports, the compiled loss: with an L2 regulariser it includes the penalty,
    with label smoothing it is taken against the smoothed targets (the log's figures are these).
    `crossentropy` is the plain cross-entropy against the true classes, comparable across experiments.
    With test_time_flip, every split is scored on the average of the probabilities for each image
    and its mirror image (left-right), the loss being the plain cross-entropy of that average.
    """
    from common import pipeline

    metrics, probabilities = {}, {}
    for split, (x, y) in dataset.splits().items():
        if config["test_time_flip"]:
            p = (class_probabilities(model, x) + class_probabilities(model, x[:, :, ::-1, :])) / 2
            scores = {"loss": cross_entropy(p, y), "accuracy": np.mean(p.argmax(axis=1) == y)}
        else:
            p = class_probabilities(model, x)
            scores = model.evaluate(pipeline.eval_dataset(x, y, config), verbose=0, return_dict=True)
        metrics[split] = {"loss": float(scores["loss"]), "accuracy": float(scores["accuracy"]),
                          "crossentropy": cross_entropy(p, y)}
        probabilities[split] = p
    return metrics, probabilities["test"]
