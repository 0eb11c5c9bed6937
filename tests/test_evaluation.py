"""Scoring (common/evaluation.py): one forward pass a split, and the test-time views (flips, shifts)."""

from __future__ import annotations

import numpy as np
import pytest

from common import evaluation


def test_shifted_moves_the_image_and_fills_the_edge_with_black():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    down = evaluation.shifted(x, 1, 0)[0, :, :, 0]
    assert np.array_equal(down[0], np.zeros(4)) and np.array_equal(down[1:], x[0, :3, :, 0])
    left = evaluation.shifted(x, 0, -2)[0, :, :, 0]
    assert np.array_equal(left[:, :2], x[0, :, 2:, 0]) and not left[:, 2:].any()
    assert np.array_equal(evaluation.shifted(x, 0, 0), x)


@pytest.mark.parametrize("flip, shift, count", [(False, 0, 1), (True, 0, 2), (False, 1, 5), (True, 2, 10)])
def test_views_and_scoring_passes_agree(flip, shift, count):
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    config = {"test_time_flip": flip, "test_time_shift": shift}
    views = evaluation.views(x, config)
    assert len(views) == count == evaluation.scoring_passes(config)
    assert np.array_equal(views[0], x)  # the image itself always first
    if flip:
        assert np.array_equal(views[count // 2], x[:, :, ::-1, :])
    if shift:
        assert np.array_equal(views[1], evaluation.shifted(x, -shift, 0))


@pytest.mark.parametrize("shift", [-1, 14, 1.5])
def test_a_shift_out_of_range_is_refused(shift):
    with pytest.raises(ValueError, match="test_time_shift"):
        evaluation.views(np.zeros((1, 28, 28, 1), np.float32), {"test_time_flip": False, "test_time_shift": shift})


def test_evaluate_averages_the_views_probabilities(tiny_data):
    import keras

    from common import data as fmnist

    dataset = fmnist.load(tiny_data)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    config = {"test_time_flip": True, "test_time_shift": 1, "one_hot": False}
    metrics, test_probabilities = evaluation.evaluate(model, dataset, config)
    x, y = dataset.x_test, dataset.y_test
    by_hand = np.mean([evaluation.class_probabilities(model, v) for v in evaluation.views(x, config)], axis=0)
    assert np.allclose(test_probabilities, by_hand, atol=1e-6)
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(by_hand.argmax(axis=1) == y))
    assert metrics["test"]["loss"] == metrics["test"]["crossentropy"] == pytest.approx(
        evaluation.cross_entropy(by_hand, y), rel=1e-6)
    plain, _ = evaluation.evaluate(model, dataset, {**config, "test_time_flip": False, "test_time_shift": 0})
    assert plain["test"]["crossentropy"] != metrics["test"]["crossentropy"]
