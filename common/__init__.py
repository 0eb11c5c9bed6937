"""Shared machinery of the Fashion-MNIST experiment collection: data, pipeline, trials, results, summary."""

import os

# Quiet TensorFlow's C++ start-up chatter (oneDNN and CUDA notices); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's kernels on every x86 CPU. TensorFlow turns them on by itself only where the CPU has
# AVX-512's neural-network instructions (VNNI, bf16, AMX); on an AVX2-only AMD EPYC its own Eigen
# kernels trained exp206's step 1.2-1.5x slower (docs/benchmarks.md). Other kernels for the same
# step, as another CPU's are; TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's, and a trial records which ran.
# Read once, when TensorFlow first asks: import `common` before TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
