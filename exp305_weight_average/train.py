"""exp305: an exponential moving average of the weights, which takes over at each epoch's end.

Change from exp304: the optimizer keeps a moving average of the weights (momentum 0.99 a step, about
the last 100 steps) and the model continues from that average after every epoch ("switch EMA"), as
Keras' optimizer EMA does when fit runs one epoch at a time; the kept weights are the average. No
operations are added that the cost counts (an average is a few additions a weight a step).
Run: python exp305_weight_average/train.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so `common` imports from anywhere
from common.runner import run_experiment  # noqa: E402  (first: it also quiets TensorFlow's start-up logs)

import keras  # noqa: E402

EXPERIMENT = "exp305"
BASE = "exp304"
EXPLANATION = "Moving average of the weights (momentum 0.99 a step), taking over at each epoch's end"

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
    weight_average=0.99,  # new: momentum of the weights' moving average a step (0: none)
    one_hot=True,  # one-hot targets for label smoothing
    test_time_flip=True,  # evaluation: average the predictions for each view and its mirror image
    test_time_shift=1,  # ... and for each image moved 1 pixel up, down, left and right
    label_smoothing=0.1,
    crop_padding=2,  # pad 2 black pixels per side, crop 28x28 at a random offset
    flip_prob=0.5,  # mirror half the training images left-right
    widths=(24, 48, 96),  # was 32, 64, 128: channels of the three conv groups (28x28 -> 14, 14 -> 7, 7 -> 3)
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
                                     weight_decay=config["weight_decay"],
                                     # Keras overwrites the weights with their average at the end of
                                     # every fit, and the runner fits one epoch at a time.
                                     use_ema=config["weight_average"] > 0,
                                     ema_momentum=config["weight_average"])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=config["label_smoothing"]),
                  metrics=["accuracy"])
    return model


def main(argv=None):
    return run_experiment(__file__, EXPERIMENT, BASE, EXPLANATION, CONFIG, build_model, argv)


if __name__ == "__main__":
    sys.exit(main())
