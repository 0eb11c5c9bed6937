"""exp001: a simple dense network, as in the Keras classification tutorial.

The log's starting point: Flatten, Dense(128, relu), Dense(10), trained with Adam at Keras' defaults.
Added to the tutorial: a train/valid split, early stopping on the valid loss, and a fixed seed.
Run: python exp001_simple_dense/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp001"
BASE = None
EXPLANATION = "Simple dense model: Flatten, Dense(128, relu), Dense(10)"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=1,  # the exp0xx series ran each experiment once
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    batch_size=32,  # Keras' default in model.fit
    learning_rate=1e-3,  # Adam's default
)


def build_model(config):
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
