"""exp101: exp001's dense model with the stabilisation of the exp1xx series.

Change from exp001: an L2 regulariser on every kernel, and 10 trials per experiment whose
statistics (mean±std, min–max) are reported. The log names exp101 only as exp102's base.
Run: python exp101_dense_stabilized/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp101"
BASE = "exp001"
EXPLANATION = "Dense model with the stabilisation: L2 kernel regulariser, 10 trials"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp1xx series: 10 trials, reported as mean±std and min–max
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    batch_size=32,  # Keras' default in model.fit
    learning_rate=1e-3,  # Adam's default
    l2=1e-3,  # kernel L2 factor of every layer: the log's "stabilisation" (it gives no value)
)


def build_model(config):
    l2 = keras.regularizers.L2(config["l2"])  # on every kernel; Keras adds it to the reported loss
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", kernel_regularizer=l2),
        keras.layers.Dense(10, kernel_regularizer=l2),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
