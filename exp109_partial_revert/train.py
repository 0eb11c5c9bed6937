"""exp109: part of exp107 rolled back to exp106, checked without the stabilisation (seed fixing).

Change from exp107: the model and the augmentation go back to exp106's (the small batch-normalised
convnet with L2 on every kernel, zoom without mixup), while seeds stay unfixed as in exp108. The
L2 comes back with exp106's model: the log's losses show it (see README.md).
Run: python exp109_partial_revert/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp109"
BASE = "exp107, exp106"
EXPLANATION = "Part of exp107 rolled back to exp106 (model with L2, no mixup); seeds not fixed"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp1xx series: 10 trials, reported as mean±std and min–max
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    fix_seed=False,  # no seed fixing: every trial draws its own seed, and TF may be nondeterministic
    batch_size=64,  # was 32: steadier gradient estimates
    learning_rate=1e-4,  # was 1e-3: slower, steadier descent
    l2=1e-3,  # kernel L2 factor of every layer: the log's "stabilisation" (it gives no value)
    l2_layers="all",  # which kernels get it: "all", or "conv" (the dense head unpenalised; the log does not say)
    one_hot=True,  # labels as one-hot vectors, ready for mixup
    zoom_range=(0.9, 1.1),  # scale factor per axis; the log found (0.8, 1.2) worse and unstable
    zoom_fill="nearest",  # ImageDataGenerator's default fill outside the image
)


def build_model(config):
    l2 = keras.regularizers.L2(config["l2"])  # on every kernel; Keras adds it to the reported loss
    if config["l2_layers"] not in ("all", "conv"):
        raise ValueError(f"l2_layers {config['l2_layers']!r} must be 'all' or 'conv'")
    dense_l2 = l2 if config["l2_layers"] == "all" else None
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, use_bias=False, kernel_regularizer=l2),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, use_bias=False, kernel_regularizer=l2),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, use_bias=False, kernel_regularizer=l2),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, use_bias=False, kernel_regularizer=dense_l2),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10, kernel_regularizer=dense_l2),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),  # one-hot labels
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
