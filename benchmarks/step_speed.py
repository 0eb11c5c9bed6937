"""How much faster is the project's training path than plain Keras, on this CPU? One process, taking turns.

    python benchmarks/step_speed.py --experiment exp206 [--threads 2] [--batches 20] [--rounds 5]
        [--jit_compile config|true|false] [--profile]

Three things take turns for `--rounds` rounds, in one process on the current CPU:

- baseline: the experiment's model as its build_model compiles it (its batch size, optimizer,
  loss), trained by plain Keras float32 `fit`: the step every trial took before common/speed.py;
- project: the same model on the runner's training path (`speed.prepare`: fused batch norm, XLA
  when the experiment's CONFIG or --jit_compile turns it on);
- the input pipeline alone: the same batches read without training;
- a 3x3 convolution of the exp2xx ResNet's shape (batch 128, 14x14, 96 -> 96 channels, forward),
  whose rate is what a convolution reaches on this CPU and these threads.

Both models train on the same random images through the experiment's own input pipeline
(common/pipeline.py, with its augmentation), `--batches` batches a turn after a warm-up that traces
and compiles; figures are medians over the rounds. The last line (one line, wrapped here):

    expNNN: baseline X ms, project Y ms per batch, speed-up R.RRx,
        Z% of the 3x3-convolution rate measured in the same run

Z is the project step's counted operations a second (common/flops.py) over the convolution's.
`--profile` adds where each path's time goes: the op types that took most of it, from
TensorFlow's profiler over one more turn.
With XLA on, TensorFlow's op-determinism flag is off in the process (XLA refuses some gradients
under it), for both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import experiments, flops, results, speed, tensorflow_setup  # noqa: E402

CONV_SHAPE = (128, 14, 14, 96)  # the exp2xx ResNet's middle stage: batch, height, width, channels
CONV_FLOPS = 2 * 128 * 14 * 14 * 96 * 96 * 9  # a multiply-add is two operations


def conv_timer():
    """A function that times `repeats` forward 3x3 convolutions of CONV_SHAPE: seconds per call."""
    from common.tensorflow_setup import tf

    x = tf.random.stateless_normal(CONV_SHAPE, [1, 2])
    kernel = tf.random.stateless_normal((3, 3, CONV_SHAPE[-1], CONV_SHAPE[-1]), [3, 4])
    conv = tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"))
    conv(x).numpy()

    def timed(repeats: int = 10) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            y = conv(x)
        y.numpy()
        return (time.perf_counter() - start) / repeats

    return timed


def random_images(config: dict, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """`batches` batches of the experiment's size: uniform images and random classes, the same each call."""
    rng = np.random.default_rng(0)
    images = rng.random((config["batch_size"] * batches, 28, 28, 1), dtype=np.float32)
    return images, rng.integers(0, 10, len(images))


def fit_timer(model, config: dict, batches: int):
    """A function that trains `model` on `batches` batches: seconds per batch (after a warm-up fit)."""
    from common import pipeline

    images, labels = random_images(config, batches)

    def timed(seed: int) -> float:
        data = pipeline.train_dataset(images, labels, config, seed)
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return (time.perf_counter() - start) / batches

    timed(0)  # tracing, XLA's compilation, oneDNN's choice of kernels
    return timed


def pipeline_timer(config: dict, batches: int):
    """A function that reads `batches` training batches without training: the input pipeline's share."""
    from common import pipeline

    images, labels = random_images(config, batches)

    def timed(seed: int) -> float:
        start = time.perf_counter()
        for _ in pipeline.train_dataset(images, labels, config, seed):
            pass
        return (time.perf_counter() - start) / batches

    return timed


def op_profile(timed, batches: int, top: int = 12) -> pd.DataFrame:
    """One more turn under TensorFlow's profiler: the op types that took the most time, per batch
    (summed over the threads that ran ops, so a batch's ops can add up to more than its step)."""
    import tempfile
    from collections import Counter

    from common.tensorflow_setup import tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            timed(0)
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    ops: Counter = Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):  # the executor's threads: one event per op run
                for event in line.events:
                    ops[names.get(event.metadata_id, "?").rsplit(":", 1)[-1]] += event.duration_ps / 1e9
    for wrapper in ("Process", "Start", "ExecutorDoneCallback"):  # an executor's whole run, not ops
        ops.pop(wrapper, None)
    total = sum(ops.values())
    return pd.DataFrame([{"op": op, "ms per batch": round(ms / batches, 2), "share of op time": f"{ms / total:.0%}"}
                         for op, ms in ops.most_common(top)])


def build(module, config: dict):
    import keras

    keras.utils.set_random_seed(0)
    return module.build_model({**config, "steps_per_epoch": 422})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="exp206")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (default 0: one per core, "
                                                               "as a trial runs)")
    parser.add_argument("--batches", type=int, default=20, help="batches a turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jit_compile", choices=("config", "true", "false"), default="config",
                        help="XLA on the project side: as the experiment's CONFIG says (default), or on/off")
    parser.add_argument("--profile", action="store_true",
                        help="then profile a turn of each path: time by op type (TensorFlow's profiler)")
    args = parser.parse_args(argv)
    try:
        folder = experiments.find(args.experiment)
    except experiments.UnknownExperiment as e:
        parser.error(str(e))
    module = experiments.load_module(folder)
    config = {**experiments.RUNNER_DEFAULTS, **module.CONFIG}
    if args.jit_compile != "config":
        config["jit_compile"] = args.jit_compile == "true"
    threads = args.threads or os.cpu_count()
    tensorflow_setup.configure(threads, config["fix_seed"], config["jit_compile"])

    baseline = build(module, config)
    project = build(module, config)
    path = speed.prepare(project, config)
    forward = flops.forward_flops(project)
    timers = {"baseline": fit_timer(baseline, config, args.batches),
              "project": fit_timer(project, config, args.batches)}
    conv = conv_timer()
    reading = pipeline_timer(config, args.batches)
    seconds: dict[str, list[float]] = {name: [] for name in (*timers, "pipeline", "conv")}
    for round_ in range(1, args.rounds + 1):  # taking turns: a noisy neighbour slows each alike
        for name, timed in timers.items():
            seconds[name].append(timed(round_))
        seconds["pipeline"].append(reading(round_))
        seconds["conv"].append(conv())
    median = {name: statistics.median(values) for name, values in seconds.items()}
    conv_rate = CONV_FLOPS / median["conv"] / 1e9
    rows = []
    for name in timers:
        rate = flops.training_gflops_per_second(config["batch_size"] / median[name], forward)
        rows.append({"path": name, "ms per batch": round(median[name] * 1000, 1),
                     "min-max": f"{min(seconds[name]) * 1000:.1f}-{max(seconds[name]) * 1000:.1f}",
                     "images/s": round(config["batch_size"] / median[name]), "GFLOP/s": round(rate, 1),
                     "of the conv rate": f"{rate / conv_rate:.0%}"})
    print(f"{folder.name}: batch {config['batch_size']}, {forward / 1e6:.1f} MFLOP an image forward; "
          f"project path: XLA {'on' if path['jit_compile'] else 'off'}, "
          f"{path['fused_batch_norm_layers']} batch-norm layer(s) fused, {path['steps_per_execution']} steps a call; "
          f"{threads} thread(s), {args.batches} batches x {args.rounds} rounds; {results.cpu_name()} "
          f"({results.hardware()['cpu_vector_instructions']})")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"input pipeline alone (the experiment's augmentation, no training): {median['pipeline'] * 1000:.1f} ms "
          f"a batch, {median['pipeline'] / median['project']:.0%} of the project's step")
    print(f"3x3 convolution {CONV_SHAPE[0]}x{CONV_SHAPE[1]}x{CONV_SHAPE[2]}, {CONV_SHAPE[3]} -> {CONV_SHAPE[3]} "
          f"channels: {median['conv'] * 1000:.1f} ms, {conv_rate:.0f} GFLOP/s")
    if args.profile:
        for name, timed in timers.items():
            print(f"{name}: time by op type (TensorFlow's profiler, one turn of {args.batches} batches)")
            print(op_profile(timed, args.batches).to_string(index=False))
    project_rate = flops.training_gflops_per_second(config["batch_size"] / median["project"], forward)
    print(f"{module.EXPERIMENT}: baseline {median['baseline'] * 1000:.1f} ms, project {median['project'] * 1000:.1f} "
          f"ms per batch, speed-up {median['baseline'] / median['project']:.2f}x, "
          f"{project_rate / conv_rate:.0%} of the 3x3-convolution rate measured in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
