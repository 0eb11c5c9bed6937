"""exp307: batch norm as airbench has it: no learned scale, the biases at 64 times the rate.

Change from exp304: every BatchNormalization keeps its shift (beta) but not its scale (gamma, fixed at 1),
and the optimizer moves the shifts at 64 times the learning rate of the other weights (weight decay
unchanged), as airbench's bias scaler: a BN layer's shift decides which units a ReLU lets through,
and at the common rate it moves slowly in a schedule this short.
Run: python exp307_batch_norm_bias_rate/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp307"
BASE = "exp304"
EXPLANATION = "Batch norm as airbench: no learned scale, shifts at 64 times the rate"

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
    bias_rate=64.0,  # new: the batch-norm shifts' learning rate, as a multiple of the others'
    norm_scale=False,  # new: batch norm without a learned scale (gamma fixed at 1)
    one_hot=True,  # one-hot targets for label smoothing
    test_time_flip=True,  # evaluation: average the predictions for each view and its mirror image
    test_time_shift=1,  # ... and for each image moved 1 pixel up, down, left and right
    label_smoothing=0.1,
    crop_padding=2,  # pad 2 black pixels per side, crop 28x28 at a random offset
    flip_prob=0.5,  # mirror half the training images left-right
    widths=(24, 48, 96),  # was 32, 64, 128: channels of the three conv groups (28x28 -> 14, 14 -> 7, 7 -> 3)
)


class BiasRateSGD(keras.optimizers.SGD):
    """SGD whose batch-norm shifts (variables named beta) step `bias_rate` times as far."""

    def __init__(self, *args, bias_rate=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_rate = bias_rate

    def update_step(self, gradient, variable, learning_rate):
        # the TensorFlow variable under Keras' one: its name is the path, "batch_normalization/beta:0"
        if variable.name.split(":")[0].endswith("/beta"):
            learning_rate = learning_rate * self.bias_rate
        super().update_step(gradient, variable, learning_rate)


def conv_group(x, filters, scale):
    """airbench's group: conv at the input's size, pool, then a second conv at the pooled size."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.BatchNormalization(scale=scale)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(scale=scale)(x)
    return keras.layers.ReLU()(x)


def build_model(config):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for filters in config["widths"]:
        x = conv_group(x, filters, config["norm_scale"])
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    # One cycle: linear warm-up from 0 to the peak, then cosine decay to 0 at the last step.
    steps = config["epochs"] * config["steps_per_epoch"]
    warmup_steps = round(config["warmup"] * steps)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=steps - warmup_steps,
                                                      warmup_target=config["learning_rate"],
                                                      warmup_steps=warmup_steps)
    optimizer = BiasRateSGD(schedule, momentum=config["momentum"], nesterov=True,
                            weight_decay=config["weight_decay"], bias_rate=config["bias_rate"])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=config["label_smoothing"]),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
