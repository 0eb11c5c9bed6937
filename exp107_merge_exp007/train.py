"""exp107: exp106 merged with exp007.

Change from exp106: exp007's deeper fully convolutional network (six conv3x3 layers, global
average pooling head), here with this series' batch normalisation, and exp007's mixup. No L2: the
log's own losses show that its merged model carried none (see README.md).
Run: python exp107_merge_exp007/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp107"
BASE = "exp106, exp007"
EXPLANATION = "exp106 merged with exp007: the deeper fully convolutional net and mixup"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp1xx series: 10 trials, reported as mean±std and min–max
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    batch_size=64,  # was 32: steadier gradient estimates
    learning_rate=1e-4,  # was 1e-3: slower, steadier descent
    one_hot=True,  # labels as one-hot vectors, ready for mixup
    zoom_range=(0.9, 1.1),  # scale factor per axis; the log found (0.8, 1.2) worse and unstable
    zoom_fill="nearest",  # ImageDataGenerator's default fill outside the image
    mixup_alpha=0.2,  # Beta(alpha, alpha) mixing weight, as in exp007
    batch_norm=True,  # this series' batch normalisation after every conv (exp007's model had none)
)


def build_model(config):
    def conv(filters):  # conv3x3, padding "same"; with batch norm, the bias is the norm's offset
        if config["batch_norm"]:
            return [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
                    keras.layers.BatchNormalization(), keras.layers.ReLU()]
        return [keras.layers.Conv2D(filters, 3, padding="same", activation="relu")]

    # exp007's deeper fully convolutional net, with this series' batch normalisation after each conv.
    # No kernel regulariser: exp007's model had none, and the log's losses say the merge kept it so.
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        *conv(32), *conv(32), keras.layers.MaxPooling2D(),
        *conv(64), *conv(64), keras.layers.MaxPooling2D(),
        *conv(128), *conv(128),
        keras.layers.Conv2D(10, 1),
        keras.layers.GlobalAveragePooling2D(),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),  # one-hot labels
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
