"""exp301: exp206's ideas at a thirty-sixth of its cost, the baseline of the fast series.

Change from exp206: a net shaped for 28x28 and a short budget. Three conv groups in airbench's shape
(a 3x3 conv, 2x2 max pooling, batch norm, ReLU, a second 3x3 conv at the pooled size), widths 32, 64,
128 (25 MFLOP an image against the ResNet's 100), a global max pool and a linear head; 9 epochs of a
one-cycle schedule (linear warm-up for a fifth of it, then cosine to 0), batch 256, Nesterov SGD at
peak 0.4; crop and flip kept, erasing and mixup dropped (regularisers a 9-epoch run has no use for).
Run: python exp301_fast_baseline/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp301"
BASE = "exp206"
EXPLANATION = "Fast baseline: 3 airbench-shaped conv groups (32/64/128), 9 epochs one-cycle, batch 256"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=10,  # the exp3xx series: ten trials, the log's protocol, since they are cheap
    seed=0,  # trial i seeds everything with seed + i
    epochs=9,  # the whole schedule, the learning rate at 0 at its end: 40 TFLOP a trial at most
    patience=9,  # = epochs: no early stop; the epoch with the lowest valid loss is kept
    fix_seed=True,
    batch_size=256,  # twice exp206's: fewer, larger steps are cheaper on a CPU
    learning_rate=0.4,  # the one-cycle peak: SGD's 0.1 at batch 128, scaled for batch 256 and warm-up
    warmup=0.2,  # share of the steps spent rising linearly from 0 to the peak
    momentum=0.9,  # Nesterov momentum
    weight_decay=5e-4,  # decoupled weight decay, as exp206
    one_hot=True,  # one-hot targets for label smoothing
    label_smoothing=0.1,
    crop_padding=2,  # pad 2 black pixels per side, crop 28x28 at a random offset
    flip_prob=0.5,  # mirror half the training images left-right
    widths=(32, 64, 128),  # channels of the three conv groups (28x28 -> 14, 14 -> 7, 7 -> 3)
)


def conv_group(x, filters):
    """airbench's group: conv at the input's size, pool, then a second conv at the pooled size."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def build_model(config):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for filters in config["widths"]:
        x = conv_group(x, filters)
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
