"""How much faster is the project's training path than plain Keras, on this CPU? Taking turns, side by side.

    python benchmarks/step_speed.py --experiment exp206 [--threads 2] [--batches 20] [--rounds 5]
        [--jit_compile config|true|false] [--profile]

Two worker processes, started here and never running at once, take turns for `--rounds` rounds:

- baseline: the experiment's model as its build_model compiles it (its batch size, optimizer,
  loss), trained by plain Keras float32 `fit` under TensorFlow's own defaults: the step every trial
  took before common/speed.py (TensorFlow picks its kernels by the CPU: oneDNN's only where it has
  AVX-512's neural-network instructions, Eigen's on an AVX2-only CPU);
- project: the same model on the runner's training path: oneDNN's kernels on every CPU
  (common/__init__.py), fused batch norm and 16 steps a call (`speed.prepare`), XLA when the
  experiment's CONFIG or --jit_compile turns it on.

Two processes because TensorFlow reads its oneDNN switch once per process. The project's worker also
times its input pipeline alone (the same batches read without training) and a 3x3 convolution of
the exp2xx ResNet's shape (batch 128, 14x14, 96 -> 96 channels, forward), whose rate is what a
convolution reaches on this CPU, these threads and the project's kernels; the baseline's worker
times the convolution on its kernels too.

Both models train on the same random images through the experiment's own input pipeline
(common/pipeline.py, with its augmentation), `--batches` batches a turn after a warm-up that traces
and compiles; figures are medians over the rounds. The last line (one line, wrapped here):

    expNNN: baseline X ms, project Y ms per batch, speed-up R.RRx,
        Z% of the 3x3-convolution rate measured in the same run

Z is the project step's counted operations a second (common/flops.py) over the convolution's on the
project's kernels. `--profile` adds where each path's time goes: the op types that took most of it,
from TensorFlow's profiler over one more turn.
With XLA on, TensorFlow's op-determinism flag is off in the project's worker (XLA refuses some
gradients under it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# The user's own oneDNN switch, read before `common` sets its default: the project's worker keeps it.
USER_ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def worker(side: str, name: str, threads: int, batches: int, jit_compile: str) -> int:
    """One side of the benchmark: build, warm up, say what runs, then time what the parent asks for
    (one JSON line in, one out) until its input ends."""
    replies = os.fdopen(os.dup(1), "w")  # the protocol's channel; anything printed goes to stderr
    os.dup2(2, 1)
    from common import experiments, flops, results, speed, tensorflow_setup

    module = experiments.load_module(experiments.find(name))
    config = {**experiments.RUNNER_DEFAULTS, **module.CONFIG}
    if jit_compile != "config" and side == "project":
        config["jit_compile"] = jit_compile == "true"
    if side == "baseline":
        config["jit_compile"] = False
    tensorflow_setup.configure(threads, config["fix_seed"], config["jit_compile"])
    model = build(module, config)
    path = speed.prepare(model, config) if side == "project" else {"onednn": speed.onednn_enabled()}
    timers = {"fit": fit_timer(model, config, batches), "pipeline": pipeline_timer(config, batches),
              "conv": conv_timer()}
    replies.write(json.dumps({"experiment": module.EXPERIMENT, "batch_size": config["batch_size"],
                              "forward": flops.forward_flops(model), "path": path, "cpu": results.cpu_name(),
                              "vector": results.hardware()["cpu_vector_instructions"]}) + "\n")
    replies.flush()
    for line in sys.stdin:
        task = json.loads(line)
        if task["do"] == "profile":
            answer = op_profile(timers["fit"], batches).to_dict("records")
        elif task["do"] == "conv":
            answer = timers["conv"]()
        else:
            answer = timers[task["do"]](task["seed"])
        replies.write(json.dumps(answer) + "\n")
        replies.flush()
    return 0


class Side:
    """A worker process and its answers."""

    def __init__(self, side: str, args, env: dict):
        command = [sys.executable, __file__, "--side", side, "--experiment", args.experiment, "--threads",
                   str(args.threads), "--batches", str(args.batches), "--jit_compile", args.jit_compile]
        self.side, self.errors = side, tempfile.TemporaryFile("w+")  # TensorFlow's chatter, shown if it fails
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, text=True)
        self.info = self.read()

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.errors.seek(0)
            sys.stderr.write(self.errors.read()[-4000:])
            raise SystemExit(f"step_speed: the {self.side} worker stopped (exit {self.process.returncode}; "
                             f"its last output is above)")
        return json.loads(line)

    def ask(self, do: str, seed: int = 0):
        self.process.stdin.write(json.dumps({"do": do, "seed": seed}) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def kernels(info: dict) -> str:
    path = info["path"]
    text = "oneDNN's kernels" if path["onednn"] else "TensorFlow's Eigen kernels"
    if "jit_compile" in path:
        text += (f", XLA {'on' if path['jit_compile'] else 'off'}, {path['fused_batch_norm_layers']} batch-norm "
                 f"layer(s) fused, {path['steps_per_execution']} steps a call")
    return text


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
    parser.add_argument("--side", choices=("baseline", "project"), help=argparse.SUPPRESS)  # a worker
    args = parser.parse_args(argv)
    args.threads = args.threads or os.cpu_count()
    if args.side == "baseline":  # TensorFlow's own kernel choice, fixed before `common` asks for oneDNN
        import tensorflow as tf  # noqa: F401
        from tensorflow.python.util import _pywrap_util_port

        _pywrap_util_port.IsMklEnabled()
    from common import experiments, flops  # neither imports TensorFlow: the workers do

    try:
        folder = experiments.find(args.experiment)
    except experiments.UnknownExperiment as e:
        parser.error(str(e))
    if args.side:
        return worker(args.side, args.experiment, args.threads, args.batches, args.jit_compile)

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    sides = {"baseline": Side("baseline", args, env)}  # one after the other: warm-ups do not overlap
    project_env = env if USER_ONEDNN is None else {**env, "TF_ENABLE_ONEDNN_OPTS": USER_ONEDNN}
    sides["project"] = Side("project", args, project_env)
    timed = ("baseline", "project", "pipeline", "conv", "baseline conv")
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for round_ in range(1, args.rounds + 1):  # taking turns: a noisy neighbour slows each alike
        for name, side in sides.items():
            seconds[name].append(side.ask("fit", round_))
        seconds["pipeline"].append(sides["project"].ask("pipeline", round_))
        seconds["conv"].append(sides["project"].ask("conv"))
        seconds["baseline conv"].append(sides["baseline"].ask("conv"))
    profiles = {name: side.ask("profile") for name, side in sides.items()} if args.profile else {}
    for side in sides.values():
        side.close()

    info = sides["project"].info
    batch, forward = info["batch_size"], info["forward"]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    conv_rate = CONV_FLOPS / median["conv"] / 1e9
    rows = []
    for name in sides:
        rate = flops.training_gflops_per_second(batch / median[name], forward)
        rows.append({"path": name, "ms per batch": round(median[name] * 1000, 1),
                     "min-max": f"{min(seconds[name]) * 1000:.1f}-{max(seconds[name]) * 1000:.1f}",
                     "images/s": round(batch / median[name]), "GFLOP/s": round(rate, 1),
                     "of the conv rate": f"{rate / conv_rate:.0%}"})
    print(f"{folder.name}: batch {batch}, {forward / 1e6:.1f} MFLOP an image forward; "
          f"{args.threads} thread(s), {args.batches} batches x {args.rounds} rounds; {info['cpu']} ({info['vector']})")
    for name, side in sides.items():
        print(f"{name}: {kernels(side.info)}")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"input pipeline alone (the experiment's augmentation, no training): {median['pipeline'] * 1000:.1f} ms "
          f"a batch, {median['pipeline'] / median['project']:.0%} of the project's step")
    print(f"3x3 convolution {CONV_SHAPE[0]}x{CONV_SHAPE[1]}x{CONV_SHAPE[2]}, {CONV_SHAPE[3]} -> {CONV_SHAPE[3]} "
          f"channels: {median['conv'] * 1000:.1f} ms, {conv_rate:.0f} GFLOP/s on the project's kernels; "
          f"{CONV_FLOPS / median['baseline conv'] / 1e9:.0f} GFLOP/s on the baseline's")
    for name, rows in profiles.items():
        print(f"{name}: time by op type (TensorFlow's profiler, one turn of {args.batches} batches)")
        print(pd.DataFrame(rows).to_string(index=False))
    project_rate = flops.training_gflops_per_second(batch / median["project"], forward)
    print(f"{info['experiment']}: baseline {median['baseline'] * 1000:.1f} ms, project {median['project'] * 1000:.1f} "
          f"ms per batch, speed-up {median['baseline'] / median['project']:.2f}x, "
          f"{project_rate / conv_rate:.0%} of the 3x3-convolution rate measured in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
