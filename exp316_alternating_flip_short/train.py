"""exp316: exp308 with airbench's alternating flips instead of random ones, at target (a)'s budget.

Change from exp308: each training image is mirrored in every other epoch: a random half of them,
drawn once for the trial, in odd epochs and the other half in even ones. Random flips (p 0.5) show
half the images one way only in any two epochs running; alternating ones show every image both ways.
On exp309's 46 epochs that changed nothing (exp315); airbench counts it as a gain at 10 epochs, and
exp308 trains 16: if it pays anywhere in this series, it pays here, for no operations.
Run: python exp316_alternating_flip_short/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402
import numpy as np  # noqa: E402

EXPERIMENT = "exp316"
BASE = "exp308"
EXPLANATION = "Alternating flips (airbench's) at target (a)'s 16 epochs: each image mirrored in every other epoch"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp3xx series: ten trials, the log's protocol, since they are cheap
    seed=0,  # trial i seeds everything with seed + i
    epochs=16,  # exp308's 38 TFLOP a trial
    patience=16,  # = epochs: no early stop; the epoch with the lowest valid loss is kept
    fix_seed=True,
    batch_size=256,  # twice exp206's: fewer, larger steps are cheaper on a CPU
    learning_rate=0.4,  # the one-cycle peak: SGD's 0.1 at batch 128, scaled for batch 256 and warm-up
    warmup=0.2,  # share of the steps spent rising linearly from 0 to the peak
    momentum=0.9,  # Nesterov momentum
    weight_decay=5e-4,  # decoupled weight decay, as exp206
    one_hot=True,  # one-hot targets for label smoothing
    test_time_flip=True,  # evaluation: average the predictions for each view and its mirror image
    test_time_shift=1,  # ... and for each image moved 1 pixel up, down, left and right
    label_smoothing=0.1,
    crop_padding=2,  # pad 2 black pixels per side, crop 28x28 at a random offset
    flip_prob=0.0,  # was 0.5: no random flips ...
    flip_alternate=True,  # ... each image mirrored in every other epoch, a random half in the odd ones
    whitening_eps=5e-4,  # added to each patch eigenvalue before its square root
    widths=(24, 48, 96),  # channels of the three conv groups (28x28 -> 14, 14 -> 7, 7 -> 3)
)


class PatchWhitening(keras.layers.Conv2D):
    """airbench's whitened first layer, for one channel: a fixed 3x3 conv whose 18 filters are the
    eigenvectors of the training images' 3x3 patches, each scaled by 1/sqrt(eigenvalue + eps), and
    their negatives; its outputs are the patches decorrelated, of equal variance. The runner calls
    `adapt` with the training images before the first epoch; the kernel is saved with the other
    weights but not trained."""

    def __init__(self, eps=5e-4, **kwargs):
        super().__init__(18, 3, padding="same", use_bias=False, **kwargs)  # the batch norm after it shifts
        self.eps = eps

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel.trainable = False

    def adapt(self, images, chunk=2000):
        # the patches' second moments, summed over chunks of images (all patches at once: 2.6 GB)
        total, outer, count = np.zeros(9), np.zeros((9, 9)), 0
        for start in range(0, len(images), chunk):
            x = np.asarray(images[start:start + chunk, :, :, 0], dtype=np.float64)
            patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2)).reshape(-1, 9)
            total, outer, count = total + patches.sum(axis=0), outer + patches.T @ patches, count + len(patches)
        mean = total / count
        eigenvalues, eigenvectors = np.linalg.eigh(outer / count - np.outer(mean, mean))
        filters = eigenvectors / np.sqrt(eigenvalues + self.eps)  # a column per filter
        self.kernel.assign(np.concatenate([filters, -filters], axis=1).reshape(3, 3, 1, 18))


def conv_group(x, filters, first=None):
    """airbench's group: conv at the input's size, pool, then a second conv at the pooled size."""
    x = (first or keras.layers.Conv2D(filters, 3, padding="same", use_bias=False))(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def build_model(config):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for i, filters in enumerate(config["widths"]):
        x = conv_group(x, filters, first=None if i else PatchWhitening(config["whitening_eps"]))
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    # One cycle: linear warm-up from 0 to the peak, then cosine decay to 0 at the last step.
    steps = config["epochs"] * config["steps_per_epoch"]
    warmup_steps = round(config["warmup"] * steps)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=steps - warmup_steps,
                                                      warmup_target=config["learning_rate"],
                                                      warmup_steps=warmup_steps)
    optimizer = keras.optimizers.SGD(schedule, momentum=config["momentum"], nesterov=True,
                                     weight_decay=config["weight_decay"])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=config["label_smoothing"]),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
