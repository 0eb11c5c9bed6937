"""The training path's speed: what makes a step faster without changing what it computes, and the
figures that show the speed (each epoch's images a second and GFLOP/s, a trial's medians).

Profiled on two cores (`benchmarks/step_speed.py`; op times from TensorFlow's profiler), Keras 3's
BatchNormalization is where a step loses most of its time outside the convolutions: it computes
the batch's moments and the normalisation from a dozen element-wise ops (Mean, SquaredDifference,
Mul, Sub, RealDiv, BroadcastTo, ...), each a pass over the activations, and the backward pass adds
their gradients; TensorFlow's wheels build those ops without AVX2. `fuse_batch_norm` hands the
layer's training step to TensorFlow's fused kernel (oneDNN's on x86: one pass forward, one
backward, the ReLU after it fused in), which Keras 2 used: the same function, to float noise.
Small nets lose their time elsewhere, in Python's work around each step: `STEPS_PER_EXECUTION`.
oneDNN's kernels themselves TensorFlow uses only on CPUs with AVX-512's neural-network instructions
unless asked; common/__init__.py asks on every CPU (an AVX2-only one gains most), a trial records it.

XLA (`jit_compile`) is an option per trial, off unless an experiment's CONFIG or the command line
turns it on: it compiles the whole step for the CPU it runs on, which pays where TensorFlow's own
kernels are slow and loses where its oneDNN convolutions are faster than XLA's (measured per CPU
and model family with benchmarks/step_speed.py). A trial records how it ran under `speed`.
"""

from __future__ import annotations

import time
import types

import numpy as np

from common import flops

FUSED_MIN_EPSILON = 1.001e-5  # TensorFlow's fused kernel raises a smaller epsilon to this
# Batches a call of Keras' compiled train function runs in a loop of its own: Python's per-batch
# work (the call, callbacks' hooks, handing over tensors) once for 16 batches. The same steps,
# the same numbers (tests/test_speed.py); the small nets, whose step takes milliseconds, gain most.
STEPS_PER_EXECUTION = 16


def _fused_training_call(layer, inputs, training=None, mask=None):
    """BatchNormalization.call with the training step on the fused kernel; anything the kernel does
    not cover exactly (a mask, renorm, synchronised statistics, another dtype or axis, a tiny
    epsilon) and inference keep Keras' own code."""
    from common.tensorflow_setup import tf

    rank = len(inputs.shape)
    if (not (training and layer.trainable) or mask is not None or layer.renorm or layer.synchronized
            or inputs.dtype != tf.float32 or layer.compute_dtype != "float32" or rank not in (2, 4)
            or layer.axis not in (-1, rank - 1) or layer.epsilon < FUSED_MIN_EPSILON):
        return type(layer).call(layer, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    x = inputs if rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])  # the kernel wants NHWC
    gamma = layer.gamma if layer.scale else tf.ones([channels])
    beta = layer.beta if layer.center else tf.zeros([channels])
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=layer.epsilon, is_training=True)
    # The kernel returns the batch variance with Bessel's correction; Keras' moving average takes
    # the biased one, which is also what normalised the batch.
    count = tf.cast(tf.size(x) // channels, tf.float32)
    variance = variance * (count - 1.0) / count
    layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
    layer.moving_variance.assign(layer.moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
    return y if rank == 4 else tf.reshape(y, tf.shape(inputs))


def fuse_batch_norm(model) -> int:
    """Route every BatchNormalization layer of `model` (nested models too) through the fused kernel
    in training; the number of layers changed. Weights, their names and saved files are unchanged."""
    import keras

    changed = 0
    for layer in flops.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and "call" not in vars(layer):
            layer.call = types.MethodType(_fused_training_call, layer)
            changed += 1
    return changed


def prepare(model, config: dict) -> dict:
    """The project's training path for a compiled model: fused batch norm, several steps a call,
    XLA if the config asks. Returns how the trial runs, for metrics.json."""
    model.jit_compile = bool(config.get("jit_compile", False))  # Keras refuses it under op determinism
    if config.get("jit_compile") and not model.jit_compile:
        raise ValueError("--jit_compile true: XLA does not run under TensorFlow's op determinism, which "
                         "seed fixing turns on where a GPU trains; give --jit_compile false or --fix_seed false")
    model.steps_per_execution = STEPS_PER_EXECUTION
    return {"jit_compile": bool(model.jit_compile), "fused_batch_norm_layers": fuse_batch_norm(model),
            "steps_per_execution": STEPS_PER_EXECUTION, "onednn": onednn_enabled()}


def onednn_enabled() -> bool:
    """Whether TensorFlow runs oneDNN's kernels in this process (common/__init__.py asks for them)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def training_clock():
    """A Keras callback whose `seconds` is the training part of the last epoch, validation left out."""
    import keras

    class TrainingClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.seconds = time.perf_counter(), None

        def on_test_begin(self, logs=None):  # validation starts: training is over for this epoch
            if self.seconds is None:
                self.seconds = time.perf_counter() - self.start

        def on_epoch_end(self, epoch, logs=None):
            if self.seconds is None:  # no validation data
                self.seconds = time.perf_counter() - self.start

    return TrainingClock()


def trial_figures(history: list[dict], forward: int | None) -> dict:
    """The trial's median training speed over its epochs (those that recorded it), for metrics.json."""
    images = [row["images_per_second"] for row in history if row.get("images_per_second")]
    if not images:
        return {}
    median = float(np.median(images))
    figures = {"images_per_second_median": round(median, 1)}
    if forward:
        figures.update(forward_flops_per_image=forward,
                       gflops_per_second_median=round(flops.training_gflops_per_second(median, forward), 2))
    return figures
