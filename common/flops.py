"""Floating-point operations of a model, counted from its layers, and the rate a training step reaches.

A multiply-add is two operations, in Conv2D, DepthwiseConv2D and Dense layers (batch norm,
activations, pooling and additions are left out: a few percent). A training image costs three
forward passes: the forward pass, and the backward pass's gradients with respect to activations and
to weights (Kaplan et al. 2020).
"""

from __future__ import annotations

import math
from pathlib import Path

TRAINING_PASSES = 3  # forward, and backward to activations and to weights


def all_layers(model):
    """Every layer, nested models opened."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def model_of(folder: Path, config: dict, train_images: int):
    """The model an experiment's build_model makes from `config`, built afresh to be counted (its
    schedule given the steps an epoch of `train_images` takes)."""
    from common import experiments
    from common.tensorflow_setup import tf  # noqa: F401  (TensorFlow started quietly)
    import keras

    keras.utils.clear_session()
    steps = math.ceil(train_images / config["batch_size"])
    return experiments.load_module(folder).build_model({**config, "steps_per_epoch": steps})


def forward_flops(model) -> int:
    """Operations of one image's forward pass through the model's convolution and dense layers."""
    import keras

    total = 0
    for layer in all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            out = layer.output.shape[1:]  # without the batch axis
            kernel = layer.kernel.shape
            if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, in, multiplier): one filter per output
                per_output = kernel[0] * kernel[1]
            else:  # Conv2D (kh, kw, in / groups, out) and Dense (in, out): the kernel's inputs per output
                per_output = math.prod(kernel[:-1])
            total += 2 * math.prod(out) * per_output
    return total


def training_gflops_per_second(images_per_second: float, forward: int) -> float:
    """The rate of the counted operations a training step reaches at this many images a second."""
    return images_per_second * TRAINING_PASSES * forward / 1e9
