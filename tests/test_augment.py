"""Properties of the augmentation ops and the training pipeline that applies them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common import augment, pipeline

SEED = tf.constant([7, 3], tf.int64)


def square_images(batch: int, side: int = 10) -> np.ndarray:
    images = np.zeros((batch, 28, 28, 1), np.float32)
    start = (28 - side) // 2
    images[:, start:start + side, start:start + side] = 1.0
    return images


def extent(mask: np.ndarray, axis: int) -> int:
    return int(mask.any(axis=axis).sum())


# ---------------------------------------------------------------- crop and flip

def test_random_crop_shifts_by_at_most_the_padding_and_fills_black():
    images = square_images(64, side=6)
    out = augment.random_crop(tf.constant(images), SEED, 2).numpy()
    assert out.shape == images.shape and set(np.unique(out)) <= {0.0, 1.0}
    shifts = set()
    for shifted in out[..., 0]:
        rows, cols = np.nonzero(shifted)
        assert len(rows) == 36  # the 6x6 square moves whole: 11 + 6 + 2 < 28, nothing is cut
        shifts.add((rows.min() - 11, cols.min() - 11))
    assert shifts <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert len(shifts) > 15  # most of the 25 shifts occur in 64 images


def test_random_crop_cuts_what_moves_out():
    images = np.zeros((32, 28, 28, 1), np.float32)
    images[:, :, 0] = 1.0  # the left column
    out = augment.random_crop(tf.constant(images), SEED, 3).numpy()
    kept = out[..., 0].sum(axis=(1, 2))
    assert set(kept) <= {0.0, 25.0, 26.0, 27.0, 28.0}  # shifted left: gone; else cut by up to 3 rows
    assert (kept == 0).any() and (kept > 0).any()


def test_flip_mirrors_about_half_the_images():
    images = np.zeros((400, 28, 28, 1), np.float32)
    images[:, :, :5] = 1.0  # a band on the left
    out = augment.flip(tf.constant(images), SEED, 0.5).numpy()
    mirrored = out[:, 0, -1, 0] == 1.0
    np.testing.assert_array_equal(out[mirrored], images[mirrored][:, :, ::-1])
    np.testing.assert_array_equal(out[~mirrored], images[~mirrored])
    assert 0.4 < mirrored.mean() < 0.6


def test_new_ops_leave_the_older_ops_draws_unchanged():
    """Turning crop and flip on must not change what zoom, erasing and mixup draw (old results stand)."""
    images = tf.constant(np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32))
    labels = tf.one_hot(tf.range(8) % 10, 10)
    base = {"zoom_range": (0.8, 1.2), "one_hot": True, "mixup_alpha": 0.2}
    a = augment.augmenter(base)(images, labels, SEED)
    b = augment.augmenter({**base, "flip_prob": 1e-9})(images, labels, SEED)  # flip on, but flips nothing
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


# ---------------------------------------------------------------- zoom

def test_zoom_keeps_shape_dtype_and_range():
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    out = augment.zoom(tf.constant(images), SEED, (0.8, 1.2)).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


@pytest.mark.parametrize("fill", ["nearest", "constant"])
def test_zoom_matches_an_affine_transform(fill):
    """Our separable zoom gives the numbers of Keras' affine transform with the same factors."""
    import keras

    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    ours = augment.zoom(tf.constant(images), SEED, (0.7, 1.3), fill).numpy()
    zy, zx = tf.random.stateless_uniform([16, 2], SEED, 0.7, 1.3).numpy().T
    c, zero = 13.5, np.zeros(16)
    transform = np.stack([zx, zero, c * (1 - zx), zero, zy, c * (1 - zy), zero, zero], 1).astype(np.float32)
    reference = keras.ops.image.affine_transform(images, transform, interpolation="bilinear",
                                                 fill_mode=fill, fill_value=0.0)
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(reference), atol=1e-5)


@pytest.mark.parametrize("factor, side", [(0.5, 20), (2.0, 5), (1.0, 10)])
def test_zoom_factor_below_one_zooms_in(factor, side):
    """ImageDataGenerator's convention: factor 0.5 doubles the object, 2.0 halves it."""
    out = augment.zoom(tf.constant(square_images(2)), SEED, (factor, factor), fill="constant").numpy()
    mask = out[0, :, :, 0] > 0.5
    assert abs(extent(mask, 0) - side) <= 1 and abs(extent(mask, 1) - side) <= 1


def test_zoom_factors_stay_in_range_and_axes_are_independent():
    out = augment.zoom(tf.constant(square_images(400, side=20)), SEED, (0.8, 1.25), fill="constant").numpy()
    masks = out[..., 0] > 0.5
    widths = np.array([extent(m, 0) for m in masks])
    heights = np.array([extent(m, 1) for m in masks])
    # side 20 / factor: between 16 and 25 pixels, give or take one for interpolation at the edge
    assert widths.min() >= 15 and widths.max() <= 26 and heights.min() >= 15 and heights.max() <= 26
    assert widths.std() > 1.5  # factors really vary
    assert np.mean(widths != heights) > 0.5  # drawn per axis


# ---------------------------------------------------------------- mixup

def test_mixup_is_a_convex_combination_with_the_labels_weights():
    batch = 10
    values = np.linspace(0.05, 0.95, batch, dtype=np.float32)
    images = np.broadcast_to(values[:, None, None, None], (batch, 28, 28, 1)).copy()
    labels = np.eye(batch, dtype=np.float32)  # label k belongs to image k, value values[k]
    mixed, weights = (t.numpy() for t in augment.mixup(tf.constant(images), tf.constant(labels), SEED, 0.4))
    assert mixed.shape == images.shape and weights.shape == labels.shape
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (weights >= 0).all() and ((weights > 1e-7).sum(axis=1) <= 2).all()
    # Each mixed image equals the label-weighted sum of the originals: the same lambda for both.
    np.testing.assert_allclose(mixed[:, 0, 0, 0], weights @ values, rtol=1e-5)
    assert np.allclose(mixed.std(axis=(1, 2, 3)), 0, atol=1e-6)  # whole images are mixed, not pixels
    assert (weights.max(axis=1) < 0.999).any()  # something was really mixed


def test_mixup_weights_follow_beta_alpha():
    images = tf.zeros((4000, 28, 28, 1))
    labels = tf.one_hot(tf.range(4000) % 10, 10)
    seen = []
    for alpha in (0.2, 4.0):
        _, weights = augment.mixup(images, labels, SEED, alpha)
        seen.append(np.median(weights.numpy().max(axis=1)))
    # Beta(0.2, 0.2) puts most weight near 0 or 1, Beta(4, 4) near one half.
    assert seen[0] > 0.95 and seen[1] < 0.75


# ---------------------------------------------------------------- random erasing

def test_erasing_fills_one_rectangle_within_bounds():
    images = np.full((500, 28, 28, 1), 2.0, np.float32)  # 2.0: outside the fill range, so erased pixels show
    out = augment.random_erase(tf.constant(images), SEED, 1.0, (0.05, 0.3), (0.5, 2.0), (0.0, 1.0)).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    areas, aspects = [], []
    for image in out[..., 0]:
        mask = image != 2.0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.any()
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all(), "the erased pixels form one filled rectangle"
        assert len(np.unique(image[mask])) == 1 and 0.0 <= image[mask][0] <= 1.0
        h, w = len(rows), len(cols)
        areas.append(h * w / 784)
        aspects.append(h / w)
    # Sides are whole pixels, so allow the rounding of each side (about +-1 pixel).
    assert 0.04 <= min(areas) and max(areas) <= 0.33
    assert 0.4 <= min(aspects) and max(aspects) <= 2.5


def test_erasing_probability():
    images = tf.fill((2000, 28, 28, 1), 2.0)
    out = augment.random_erase(images, SEED, 0.3, (0.02, 0.4), (0.3, 1 / 0.3), (0.0, 1.0)).numpy()
    erased = (out != 2.0).any(axis=(1, 2, 3)).mean()
    assert abs(erased - 0.3) < 0.04  # binomial sd is 0.01


# ---------------------------------------------------------------- the pipeline

CONFIG = {"batch_size": 8, "one_hot": True, "zoom_range": (0.9, 1.1), "mixup_alpha": 0.2,
          "erase_prob": 0.5}


def data(n=40):
    rng = np.random.default_rng(1)
    return rng.random((n, 28, 28, 1), dtype=np.float32), np.arange(n) % 10


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_same_seed_same_batches_other_seed_other_batches():
    x, y = data()
    first = batches(pipeline.train_dataset(x, y, CONFIG, seed=5))
    again = batches(pipeline.train_dataset(x, y, CONFIG, seed=5))
    other = batches(pipeline.train_dataset(x, y, CONFIG, seed=6))
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(first[0][0], other[0][0])


def test_augmented_training_batches_stay_in_range_and_labels_sum_to_one():
    x, y = data()
    for images, labels in batches(pipeline.train_dataset(x, y, CONFIG, seed=1)):
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)


def test_nothing_is_augmented_at_evaluation():
    x, y = data()
    images, labels = zip(*batches(pipeline.eval_dataset(x, y, CONFIG, batch_size=16)))
    np.testing.assert_array_equal(np.concatenate(images), x)
    np.testing.assert_array_equal(np.concatenate(labels), np.eye(10, dtype=np.float32)[y])


def test_without_augmentation_training_batches_are_a_shuffle_of_the_data():
    x, y = data()
    plain = {"batch_size": 8}
    assert augment.augmenter(plain) is None
    images = np.concatenate([b[0] for b in batches(pipeline.train_dataset(x, y, plain, seed=2))])
    order = np.argsort(images.reshape(len(x), -1)[:, 0])
    np.testing.assert_array_equal(images[order], x[np.argsort(x.reshape(len(x), -1)[:, 0])])


def test_alternating_flips_mirror_each_image_in_exactly_one_of_two_epochs():
    x, y = data(400)
    config = {"batch_size": 64, "flip_alternate": True}
    assert augment.augmenter(config) is None  # nothing left for the batch ops: the pipeline flips
    order = np.random.default_rng(5).permutation(len(x))  # the order train_dataset's seed=5 gives
    mirrored = {}
    for epoch in (1, 2, 3):
        images = np.concatenate([b[0] for b in batches(
            pipeline.train_dataset(x, y, config, seed=5, epoch=epoch, trial_seed=3))])
        flipped = np.all(images == x[order][:, :, ::-1], axis=(1, 2, 3))
        assert np.all(flipped | np.all(images == x[order], axis=(1, 2, 3)))  # each image whole, one way
        mirrored[epoch] = flipped
    assert np.all(mirrored[1] ^ mirrored[2]) and np.array_equal(mirrored[1], mirrored[3])
    assert 150 < mirrored[1].sum() < 250  # about half, drawn per trial
    other = augment.alternating_flips(len(x), trial_seed=4, epoch=1)
    assert not np.array_equal(other, augment.alternating_flips(len(x), trial_seed=3, epoch=1))


@pytest.mark.parametrize("config, message", [
    ({"zoom_range": (1.1, 0.9)}, "zoom_range"),
    ({"zoom_range": (0.9, 1.1), "zoom_fill": "black"}, "zoom_fill"),
    ({"erase_prob": 1.5}, "erase_prob"),
    ({"erase_prob": 0.5, "erase_area": (0.5, 0.1)}, "erase_area"),
    ({"mixup_alpha": 0.2}, "one_hot=True"),
    ({"crop_padding": 2.5}, "crop_padding"),
    ({"crop_padding": -1}, "crop_padding"),
    ({"flip_prob": 2}, "flip_prob"),
    ({"flip_alternate": True, "flip_prob": 0.5}, "flip_prob=0"),
    ({"flip_alternate": "yes"}, "flip_alternate"),
])
def test_bad_settings_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        augment.check_config(config)
