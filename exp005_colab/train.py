"""exp005: exp004's recipe, ready for a hosted notebook (Colab) as well as the shell.

Change from exp004: none in the recipe. Running in a notebook is what changes, and common/
provides it: the GPU is used when present (with memory growth, so the notebook keeps some),
results go where --results-dir or FASHION_MNIST_RESULTS_DIR says (e.g. Google Drive), and
main(argv) runs the experiment from a notebook cell:

    import sys; sys.path.insert(0, "/content/fashion-mnist-experiments")
    from common.experiments import find, load_module
    load_module(find("exp005")).main(["--results-dir", "/content/drive/MyDrive/fmnist-results"])

Run: python exp005_colab/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp005"
BASE = "exp004"
EXPLANATION = "exp004's recipe made runnable in a notebook (Colab): GPU if present, results dir configurable"

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
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
