"""exp205: SGD with momentum and weight decay instead of Adam.

Change from exp204: the optimizer, SGD with Nesterov momentum 0.9 and weight decay 5e-4, peak learning
rate 0.1, same cosine decay.
Run: python exp205_sgd_weight_decay/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp205"
BASE = "exp204"
EXPLANATION = "SGD (Nesterov momentum 0.9, weight decay 5e-4, peak rate 0.1) instead of Adam"

# Config: plain values. Any of them can be overridden on the command line, e.g. --epochs=5.
CONFIG = dict(
    trials=3,  # the exp2xx series: 3 trials, their mean and their ensemble
    seed=0,  # trial i seeds everything with seed + i
    epochs=40,  # the cosine schedule's length: the learning rate reaches 0 at epoch 40
    patience=10,  # epochs without a lower valid loss before stopping (best weights are restored)
    fix_seed=True,  # seeds fixed again: our own series is reproducible trial by trial
    batch_size=128,
    learning_rate=0.1,  # was Adam's 1e-3: SGD's usual peak for batch 128 with batch norm
    momentum=0.9,  # Nesterov momentum
    weight_decay=5e-4,  # decoupled weight decay, the published ResNet recipes' value
    one_hot=True,  # labels as one-hot vectors, ready for mixup
    crop_padding=2,  # pad 2 black pixels per side, crop 28x28 at a random offset
    flip_prob=0.5,  # mirror half the training images left-right
    erase_prob=0.5,  # share of training images that get a rectangle erased (Zhong et al.)
    erase_area=(0.02, 0.4),  # rectangle area as a fraction of the image
    erase_aspect=(0.3, 1 / 0.3),  # rectangle height / width
    erase_value=(0.0, 1.0),  # the fill: one grey level drawn from this range
    label_smoothing=0.1,  # targets 0.91 / 0.01 instead of 1 / 0
    mixup_alpha=0.2,  # Beta(alpha, alpha) mixing weight, as in exp007
    widths=(48, 96, 192),  # channels of the three residual stages
    blocks_per_stage=2,  # basic blocks per stage: 12 conv layers in the stages, ResNet-14-like
)


def residual_block(x, filters, stride):
    """He et al.'s basic block: two 3x3 convs with batch norm; a 1x1 projection when the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))


def build_model(config):
    inputs = keras.Input(shape=(28, 28, 1))
    x = keras.layers.Conv2D(config["widths"][0], 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    # Pool once before the residual stages: 14x14 costs a quarter of 28x28, which two CPU cores need.
    x = keras.layers.MaxPooling2D()(x)
    for stage, filters in enumerate(config["widths"]):  # 14x14, 7x7, 4x4
        for block in range(config["blocks_per_stage"]):
            x = residual_block(x, filters, stride=2 if stage > 0 and block == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    # Cosine decay from learning_rate to 0 over the epoch budget (Loshchilov & Hutter's SGDR, no restarts).
    schedule = keras.optimizers.schedules.CosineDecay(config["learning_rate"],
                                                      decay_steps=config["epochs"] * config["steps_per_epoch"])
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
