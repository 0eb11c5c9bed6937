"""Start TensorFlow quietly, the same way everywhere: `from common.tensorflow_setup import tf`.

Importing TensorFlow 2.19+ prints C++ start-up notices that TF_CPP_MIN_LOG_LEVEL no longer hides
(they come before its logging is set up): oneDNN's, "Could not find cuda drivers", absl's
"All log messages before absl::InitializeLog()", and on a machine without a GPU the first device
query adds "failed call to cuInit". While TensorFlow starts, the process's standard error is
captured and these known notices are dropped; every other line (a real warning or error) is
written out as it came. After start-up, TF_CPP_MIN_LOG_LEVEL=2 (set in common/__init__.py) keeps
TensorFlow's C++ info and warning lines quiet, errors still show. `configure` then sets the threads
and, for seeded trials, op determinism.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

START_UP_NOTICES = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
]))


@contextlib.contextmanager
def start_up_notices_dropped() -> Iterator[None]:
    """Capture file descriptor 2 (C++ and Python alike); on exit, write back all but the notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not START_UP_NOTICES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


with start_up_notices_dropped():
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")  # the first device query is where cuInit complains


def configure(threads: int, fix_seed: bool, jit_compile: bool = False) -> None:
    """TensorFlow's threads, and op determinism for seeded trials (not under XLA, which refuses some
    gradients under it); ValueError where the threads can no longer change in this process."""
    if threads and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow fixes its thread pools when it first runs an op
            raise ValueError(f"--threads {threads}: TensorFlow already runs in this process with "
                             f"another thread count; start a new process (or notebook kernel)") from None
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # share a notebook's GPU politely
    # Same seed, same numbers: TF then refuses or serialises the few nondeterministic ops. XLA
    # refuses some ops' gradients under that flag (MaxPool's) and Keras then turns XLA off; an XLA
    # step on a CPU is deterministic by itself (tests/test_speed.py reruns a trial to check).
    from tensorflow.python.framework import config as tf_config  # the only way to turn the flag off

    if fix_seed and not (jit_compile and not tf.config.list_physical_devices("GPU")):
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


__all__ = ["tf", "configure"]
