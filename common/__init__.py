"""Shared machinery of the Fashion-MNIST experiment collection: data, pipeline, trials, results, summary."""

import os

# Quiet TensorFlow's C++ start-up chatter (oneDNN and CUDA notices); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
