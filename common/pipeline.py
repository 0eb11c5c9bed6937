"""tf.data input pipelines: shuffled (and, when configured, augmented) training batches; plain evaluation batches.

Randomness here depends only on (trial seed, epoch, batch index), never on hidden state, so an
epoch's batches are the same whether the trial ran straight through or was resumed.
"""

from __future__ import annotations

import numpy as np

from common.augment import alternating_flips, augmenter
from common.tensorflow_setup import tf  # TensorFlow, started without its start-up notices

NUM_CLASSES = 10


def labels_for(y: np.ndarray, config: dict) -> np.ndarray:
    """Sparse int labels, or one-hot float32 rows when the experiment asks for them (mixup needs them)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[y] if config.get("one_hot", False) else y


def _options() -> tf.data.Options:
    """On a CPU, one tf.data thread: training already uses every core, and tf.data's own thread pool
    and autotuning compete with it (measured here on 2 cores: 24% faster training, augmented or not;
    benchmarks/augmentation_speed.py). A GPU trains elsewhere, so there the pipeline stays parallel."""
    options = tf.data.Options()
    options.deterministic = True
    if not tf.config.list_physical_devices("GPU"):
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        options.autotune.enabled = False
    return options


def epoch_seed(trial_seed: int, epoch: int) -> int:
    """A seed for one epoch's shuffle and augmentation, derived from the trial seed alone."""
    return int(np.random.default_rng([trial_seed, epoch]).integers(2**31 - 1))


def train_dataset(x: np.ndarray, y: np.ndarray, config: dict, seed: int, epoch: int = 1,
                  trial_seed: int = 0) -> tf.data.Dataset:
    """One epoch of training batches: shuffled by `seed`, then augmented batch by batch. `epoch` and
    `trial_seed` matter only to alternating flips, which depend on the image and the epoch's parity."""
    order = np.random.default_rng(seed).permutation(len(x))
    images = x[order]
    if config.get("flip_alternate"):
        mirrored = alternating_flips(len(x), trial_seed, epoch)[order]
        images[mirrored] = images[mirrored, :, ::-1]  # in place: x[order] is already a copy
    ds = tf.data.Dataset.from_tensor_slices((images, labels_for(y[order], config)))
    ds = ds.batch(config["batch_size"])
    augment = augmenter(config)
    if augment is not None:
        # Each batch gets its own stateless seed pair (epoch seed, batch index): deterministic
        # even with parallel calls, and independent of how many batches came before a resume.
        ds = ds.enumerate().map(
            lambda i, batch: augment(batch[0], batch[1], tf.stack([tf.constant(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2).with_options(_options())


def eval_dataset(x: np.ndarray, y: np.ndarray, config: dict, batch_size: int = 512) -> tf.data.Dataset:
    """Evaluation batches: never augmented, in file order. Batch size does not change the metrics."""
    ds = tf.data.Dataset.from_tensor_slices((x, labels_for(y, config)))
    return ds.batch(batch_size).prefetch(2).with_options(_options())


def predict_dataset(x: np.ndarray, batch_size: int = 512) -> tf.data.Dataset:
    """Images alone, in file order, for model.predict. (Given numpy arrays, Keras builds its own
    pipeline, and under op determinism TensorFlow then logs a spurious NodeDef error.)"""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).prefetch(2).with_options(_options())
