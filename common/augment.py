"""Batch augmentation for the training pipeline: zoom, random crop, horizontal flip, random erasing,
mixup (applied in that order).

An experiment turns each op on with its own CONFIG keys:

    zoom_range=(0.9, 1.1)        scale factors per axis, as ImageDataGenerator(zoom_range=[0.9, 1.1]):
                                 < 1 zooms in, > 1 zooms out; width and height drawn independently
    zoom_fill="nearest"          what fills outside the image: "nearest" (ImageDataGenerator's default)
                                 or "constant" (black)
    crop_padding=2               pad the image with this many black pixels on each side, then crop a
                                 28x28 window at a random offset (a random shift of up to 2 pixels)
    flip_prob=0.5                probability that an image is mirrored left-right
    flip_alternate=True          airbench's alternating flip instead: a random half of the images,
                                 fixed for the trial, is mirrored in odd epochs, the other half in
                                 even ones (applied by the pipeline, which knows the epoch)
    erase_prob=0.5               probability that an image gets one erased rectangle
    erase_area=(0.02, 0.4)       rectangle area as a fraction of the image (Zhong et al.'s s_l, s_h)
    erase_aspect=(0.3, 3.3)      rectangle height/width ratio (r_1, 1/r_1)
    erase_value=(0.0, 1.0)       the rectangle is filled with one value drawn from this range
    mixup_alpha=0.2              Beta(alpha, alpha) weight per image; needs one_hot=True

Why not Keras' RandomZoom / RandomErasing / MixUp layers: they draw from a seed *state* that advances
per call, so the batches of an epoch depend on the map's call order and on what ran before a resume.
These ops draw from stateless RNGs keyed by (epoch seed, batch index): the same trial seed gives the
same batches, in parallel maps and across resumed runs. RandomErasing also samples its box per side
rather than by area and aspect ratio, which is not the random-erasing recipe the log used, and
RandomZoom's affine-transform kernel costs more than the rest of the pipeline together (see zoom).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from common.tensorflow_setup import tf  # TensorFlow, started without its start-up notices

# Every augmentation key and its value when an experiment leaves it out: all ops off.
DEFAULTS = {"zoom_range": None, "zoom_fill": "nearest", "crop_padding": 0, "flip_prob": 0.0,
            "flip_alternate": False,
            "erase_prob": 0.0, "erase_area": (0.02, 0.4), "erase_aspect": (0.3, 1 / 0.3),
            "erase_value": (0.0, 1.0), "mixup_alpha": 0.0}
ERASE_TRIES = 10  # candidate rectangles per image; the first that fits is used, as in the paper's loop

Augment = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def _seeds(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    """n independent stateless seeds from one (2,) seed."""
    return list(tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n)))


def zoom(images: tf.Tensor, seed: tf.Tensor, zoom_range, fill: str = "nearest") -> tf.Tensor:
    """Scale each image about its centre by factors drawn from zoom_range, independently per axis.

    Output pixel (y, x) samples the input at (c + (y - c) * zy, c + (x - c) * zx), c the centre, with
    bilinear interpolation: a factor below 1 samples a smaller region, i.e. zooms in
    (ImageDataGenerator's convention). A zoom along the axes is separable, so it is two batched
    matmuls with interpolation matrices, the same numbers as an affine transform without
    TensorFlow's per-pixel ImageProjectiveTransform kernel (several times slower here).
    """
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    low, high = zoom_range
    factors = tf.random.stateless_uniform([batch, 2], seed, low, high)  # (zy, zx) per image
    rows = _interpolation_matrices(factors[:, 0], height, fill)  # (batch, height, height)
    cols = _interpolation_matrices(factors[:, 1], width, fill)  # (batch, width, width)
    channels_first = tf.transpose(images, [0, 3, 1, 2])
    zoomed = tf.matmul(tf.matmul(rows[:, None], channels_first), cols[:, None], transpose_b=True)
    return tf.transpose(zoomed, [0, 2, 3, 1])


def _interpolation_matrices(factors: tf.Tensor, size: int, fill: str) -> tf.Tensor:
    """M with (M @ v)[i] = v linearly interpolated at c + (i - c) * factor: a tent kernel per row."""
    centre = (size - 1) / 2.0
    positions = tf.range(size, dtype=tf.float32)
    source = centre + (positions - centre) * factors[:, None]  # (batch, size)
    if fill == "nearest":  # samples beyond the edge take the edge pixel
        source = tf.clip_by_value(source, 0.0, size - 1.0)
    # Input pixel j weighs max(0, 1 - |source - j|); beyond the edge nothing weighs: fill 0 ("constant").
    return tf.nn.relu(1.0 - tf.abs(source[:, :, None] - positions[None, None, :]))


def random_crop(images: tf.Tensor, seed: tf.Tensor, padding: int) -> tf.Tensor:
    """Pad with `padding` black pixels per side and crop back at a random offset, per image: a shift by
    (dy, dx) in [-padding, padding], what moves out is lost and what moves in is black. Like zoom, two
    batched matmuls with shift matrices instead of a gather per image."""
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    shifts = tf.random.stateless_uniform([batch, 2], seed, -padding, padding + 1, dtype=tf.int32)
    rows = _shift_matrices(shifts[:, 0], height)
    cols = _shift_matrices(shifts[:, 1], width)
    channels_first = tf.transpose(images, [0, 3, 1, 2])
    shifted = tf.matmul(tf.matmul(rows[:, None], channels_first), cols[:, None], transpose_b=True)
    return tf.transpose(shifted, [0, 2, 3, 1])


def _shift_matrices(shifts: tf.Tensor, size: int) -> tf.Tensor:
    """M with (M @ v)[i] = v[i - shift] where that index exists, else 0."""
    positions = tf.range(size)
    source = positions[None, :] - shifts[:, None]  # (batch, size)
    return tf.cast(tf.equal(source[:, :, None], positions[None, None, :]), tf.float32)


def flip(images: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
    """Mirror each image left-right with probability prob."""
    mirrored = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < prob
    return tf.where(mirrored[:, None, None, None], tf.reverse(images, axis=[2]), images)


def alternating_flips(count: int, trial_seed: int, epoch: int) -> np.ndarray:
    """Which of `count` training images to mirror in `epoch` (from 1), airbench's way: a random half,
    drawn once for the trial, in odd epochs and the other half in even ones. Every image is seen both
    ways in any two epochs running, where random flips show half of them one way only."""
    first = np.random.default_rng([trial_seed, 2**31]).random(count) < 0.5  # not an epoch's stream
    return first if epoch % 2 else ~first


def random_erase(images: tf.Tensor, seed: tf.Tensor, prob: float, area, aspect, value) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017): with probability prob, fill one rectangle with one value."""
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    s_apply, s_area, s_aspect, s_pos, s_value = _seeds(seed, 5)
    # ERASE_TRIES candidates per image, drawn by area and aspect ratio; keep the first that fits.
    area_frac = tf.random.stateless_uniform([batch, ERASE_TRIES], s_area, area[0], area[1])
    log_aspect = tf.random.stateless_uniform([batch, ERASE_TRIES], s_aspect,
                                             tf.math.log(float(aspect[0])), tf.math.log(float(aspect[1])))
    box_area = area_frac * float(height * width)
    box_h = tf.round(tf.sqrt(box_area * tf.exp(log_aspect)))
    box_w = tf.round(tf.sqrt(box_area / tf.exp(log_aspect)))
    fits = (box_h >= 1) & (box_w >= 1) & (box_h <= height) & (box_w <= width)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1)
    box_h = tf.gather(box_h, first, batch_dims=1)
    box_w = tf.gather(box_w, first, batch_dims=1)
    erase = tf.reduce_any(fits, axis=1) & (tf.random.stateless_uniform([batch], s_apply) < prob)
    # Top-left corner uniform over the positions where the box fits.
    corner = tf.random.stateless_uniform([batch, 2], s_pos)
    top = tf.floor(corner[:, 0] * (height - box_h + 1))
    left = tf.floor(corner[:, 1] * (width - box_w + 1))
    rows = tf.range(height, dtype=tf.float32)[None, :, None]
    cols = tf.range(width, dtype=tf.float32)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
              & erase[:, None, None])
    fill = tf.random.stateless_uniform([batch], s_value, value[0], value[1])
    return tf.where(inside[..., None], fill[:, None, None, None], images)


def mixup(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float
          ) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each image and its one-hot label with a random partner from the batch, same weight for both."""
    batch = tf.shape(images)[0]
    s_perm, s_a, s_b = _seeds(seed, 3)
    partner = tf.argsort(tf.random.stateless_uniform([batch], s_perm))
    # Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha).
    x = tf.random.stateless_gamma([batch], s_a, alpha)
    y = tf.random.stateless_gamma([batch], s_b, alpha)
    lam = x / (x + y)
    mixed_images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, partner)
    mixed_labels = lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, partner)
    return mixed_images, mixed_labels


def settings(config: dict) -> dict:
    """The augmentation keys of a config, with DEFAULTS for those it leaves out."""
    return {key: config.get(key, default) for key, default in DEFAULTS.items()}


def check_config(config: dict) -> None:
    """Raise ValueError naming the key and the fix when an augmentation setting cannot work."""
    s = settings(config)
    if s["zoom_range"] is not None:
        low, high = s["zoom_range"]
        if not 0 < low <= high:
            raise ValueError(f"zoom_range {s['zoom_range']} must be two scale factors 0 < low <= high, "
                             f"e.g. (0.9, 1.1)")
        if s["zoom_fill"] not in ("nearest", "constant"):
            raise ValueError(f"zoom_fill {s['zoom_fill']!r} must be 'nearest' or 'constant'")
    if not (isinstance(s["crop_padding"], int) and 0 <= s["crop_padding"] < 14):
        raise ValueError(f"crop_padding {s['crop_padding']!r} must be a whole number of pixels from 0 (off) to 13")
    if not 0 <= s["flip_prob"] <= 1:
        raise ValueError(f"flip_prob {s['flip_prob']} must lie in [0, 1]")
    if s["flip_alternate"] not in (True, False):
        raise ValueError(f"flip_alternate {s['flip_alternate']!r} must be True or False")
    if s["flip_alternate"] and s["flip_prob"]:
        raise ValueError("flip_alternate mirrors half the images every epoch already: set flip_prob=0")
    if s["erase_prob"]:
        if not 0 <= s["erase_prob"] <= 1:
            raise ValueError(f"erase_prob {s['erase_prob']} must lie in [0, 1]")
        low, high = s["erase_area"]
        if not 0 < low <= high <= 1:
            raise ValueError(f"erase_area {s['erase_area']} must satisfy 0 < low <= high <= 1")
        low, high = s["erase_aspect"]
        if not 0 < low <= high:
            raise ValueError(f"erase_aspect {s['erase_aspect']} must satisfy 0 < low <= high")
        low, high = s["erase_value"]
        if not low <= high:
            raise ValueError(f"erase_value {s['erase_value']} must satisfy low <= high")
    if s["mixup_alpha"]:
        if s["mixup_alpha"] < 0:
            raise ValueError(f"mixup_alpha {s['mixup_alpha']} must be positive (0 turns mixup off)")
        if not config.get("one_hot", False):
            raise ValueError("mixup mixes labels, so it needs one_hot=True (and a categorical loss)")


def augmenter(config: dict) -> Augment | None:
    """The batch augmentation an experiment's config asks for, or None when it asks for none."""
    check_config(config)
    s = settings(config)
    if (s["zoom_range"] is None and not s["crop_padding"] and not s["flip_prob"] and not s["erase_prob"]
            and not s["mixup_alpha"]):
        return None

    def augment(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Seeds 3 and 4 came later; a split's first seeds do not depend on how many are drawn, so
        # the zoom, erasing and mixup of earlier experiments draw exactly what they drew before.
        s_zoom, s_erase, s_mix, s_crop, s_flip = _seeds(seed, 5)
        if s["zoom_range"] is not None:
            images = zoom(images, s_zoom, s["zoom_range"], s["zoom_fill"])
        if s["crop_padding"]:
            images = random_crop(images, s_crop, s["crop_padding"])
        if s["flip_prob"]:
            images = flip(images, s_flip, s["flip_prob"])
        if s["erase_prob"]:
            images = random_erase(images, s_erase, s["erase_prob"], s["erase_area"], s["erase_aspect"],
                                  s["erase_value"])
        if s["mixup_alpha"]:
            images, labels = mixup(images, labels, s_mix, s["mixup_alpha"])
        return images, labels

    return augment
