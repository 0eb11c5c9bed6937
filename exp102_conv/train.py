"""exp102: the convolutional model, stabilised.

Change from exp101: the dense model becomes exp002's CNN (Conv32-Pool-Conv64-Pool-Conv64-
Dense64-Dense10), every kernel with the L2 regulariser.
Run: python exp102_conv/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp102"
BASE = "exp101"
EXPLANATION = "Convolutional model (TF CNN tutorial) with L2"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp1xx series: 10 trials, reported as mean±std and min–max
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    batch_size=32,  # Keras' default in model.fit
    learning_rate=1e-3,  # Adam's default
    l2=1e-3,  # kernel L2 factor of every layer: the log's "stabilisation" (it gives no value)
    l2_layers="all",  # which kernels get it: "all", or "conv" (the dense head unpenalised; the log does not say)
)


def build_model(config):
    l2 = keras.regularizers.L2(config["l2"])  # on every kernel; Keras adds it to the reported loss
    if config["l2_layers"] not in ("all", "conv"):
        raise ValueError(f"l2_layers {config['l2_layers']!r} must be 'all' or 'conv'")
    dense_l2 = l2 if config["l2_layers"] == "all" else None
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", kernel_regularizer=l2),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_regularizer=l2),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_regularizer=l2),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", kernel_regularizer=dense_l2),
        keras.layers.Dense(10, kernel_regularizer=dense_l2),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
