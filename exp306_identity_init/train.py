"""exp306: identity-initialised convolutions, as airbench's dirac initialisation.

Change from exp304: each 3x3 convolution starts as the identity on its input channels: its first
filters (as many as it has input channels) pass one channel through (a 1 at the centre), the rest are
Keras' random default. A net that starts near the identity trains faster from the first step.
Run: python exp306_identity_init/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp306"
BASE = "exp304"
EXPLANATION = "Identity-initialised convolutions (dirac): each conv starts passing its input channels through"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp3xx series: ten trials, the log's protocol, since they are cheap
    seed=0,  # trial i seeds everything with seed + i
    epochs=16,  # was 9: the narrower net's epochs cost 57% of exp301's, so 16 fit the same 38 TFLOP
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
    flip_prob=0.5,  # mirror half the training images left-right
    identity_init=True,  # new: every conv after the first starts as the identity on its input channels
    widths=(24, 48, 96),  # was 32, 64, 128: channels of the three conv groups (28x28 -> 14, 14 -> 7, 7 -> 3)
)


class Identity(keras.initializers.Initializer):
    """A conv kernel whose first filters (one per input channel) pass their channel through; the
    others Keras' default, Glorot uniform. A square conv starts as the identity."""

    def __call__(self, shape, dtype=None):
        kernel = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform()(shape, dtype))
        height, width, channels, filters = shape
        n = min(channels, filters)
        kernel[:, :, :, :n] = 0.0
        kernel[height // 2, width // 2, range(n), range(n)] = 1.0
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)


def conv_group(x, filters, first_init, init):
    """airbench's group: conv at the input's size, pool, then a second conv at the pooled size."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=first_init)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=init)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def build_model(config):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    init = Identity() if config["identity_init"] else "glorot_uniform"
    for i, filters in enumerate(config["widths"]):
        # The net's first conv sees one channel, the image: one pass-through filter of 24 adds little.
        x = conv_group(x, filters, init if i else "glorot_uniform", init)
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
