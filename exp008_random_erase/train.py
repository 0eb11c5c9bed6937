"""exp008: random erasing on top of zoom and mixup.

Change from exp007: with probability 0.5 a training image gets one rectangle filled with a single
random grey level; its area is 2-40% of the image and its height/width ratio 0.3-3.3
(Zhong et al. 2017, with the defaults of the Keras random-eraser the log's era used).
Run: python exp008_random_erase/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp008"
BASE = "exp007"
EXPLANATION = "Random erasing (p 0.5, area 2-40%, aspect 0.3-3.3) added to zoom and mixup"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=1,  # the exp0xx series ran each experiment once
    seed=0,  # trial i seeds everything with seed + i
    epochs=100,  # an upper bound: early stopping ends the run well before
    patience=5,  # epochs without a lower valid loss before stopping (best weights are restored)
    batch_size=32,  # Keras' default in model.fit
    learning_rate=1e-3,  # Adam's default
    zoom_range=(0.9, 1.1),  # scale factor per axis: < 1 zooms in, > 1 zooms out
    zoom_fill="nearest",  # ImageDataGenerator's default fill outside the image
    one_hot=True,  # mixup mixes labels, so they are one-hot vectors
    mixup_alpha=0.2,  # Beta(alpha, alpha); 0.2 keeps most images close to one of the two
    erase_prob=0.5,  # share of training images that get a rectangle erased
    erase_area=(0.02, 0.4),  # rectangle area as a fraction of the image
    erase_aspect=(0.3, 1 / 0.3),  # rectangle height / width
    erase_value=(0.0, 1.0),  # the fill: one grey level drawn from this range (pixels are in [0, 1])
)


def build_model(config):
    # Six conv3x3 layers, padding "same" so depth does not eat the 28x28 image; channels double
    # at each pooling. A 1x1 convolution to the 10 classes and global average pooling replace the
    # dense head: a fully convolutional network.
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(10, 1),
        keras.layers.GlobalAveragePooling2D(),
    ])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),  # one-hot, mixed labels
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
