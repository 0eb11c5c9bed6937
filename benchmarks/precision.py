"""Would bfloat16 or XLA train an experiment's model faster on this CPU? Step times side by side.

    python benchmarks/precision.py [--experiment exp205] [--threads 1] [--batches 20] [--rounds 2]
        [--variants float32 mixed_bfloat16 float32+xla mixed_bfloat16+xla]

Each variant trains the experiment's own model (its build_model and CONFIG: batch size, optimizer,
loss) on random images for `--batches` batches after a few warm-up batches, in a fresh process (a
Keras dtype policy is global), the variants taking turns for `--rounds` rounds. No augmentation
and no data files: this times the model's training step alone. It prints the median milliseconds
per batch, the ratio to the first variant, and which share of the step oneDNN spent in
convolutions (from ONEDNN_VERBOSE; "–" where XLA compiles them itself).

bfloat16 pays off only where the CPU multiplies it in hardware: AMX or AVX512_BF16 (Intel Xeon
since Sapphire Rapids); on AVX2-only CPUs (the AMD EPYC of some sessions) it is emulated. The
figures printed name the CPU and its bfloat16 instructions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import experiments, results  # noqa: E402

VARIANTS = ("float32", "mixed_bfloat16", "float32+xla", "mixed_bfloat16+xla")

# One variant in its own process: build, warm up, time; print "ms_per_batch conv_ms_per_batch".
WORKER = r"""
import os, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from common import experiments, tensorflow_setup
tensorflow_setup.configure({threads}, fix_seed=True, jit_compile={xla})  # XLA is off under op determinism
import keras
import tensorflow as tf

keras.mixed_precision.set_global_policy({policy!r})
module = experiments.load_module(experiments.find({experiment!r}))
config = {{**experiments.RUNNER_DEFAULTS, **module.CONFIG}}
model = module.build_model({{**config, "steps_per_epoch": 422}})
model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile={xla})
assert model.jit_compile == {xla}, "Keras turned XLA off"
batch = config["batch_size"]
rng = np.random.default_rng(0)
x = rng.random((batch * ({batches} + 3), 28, 28, 1), dtype=np.float32)
labels = rng.integers(0, 10, len(x))
y = np.eye(10, dtype=np.float32)[labels] if config["one_hot"] else labels
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
model.fit(data.take(3), epochs=1, verbose=0)  # tracing, compilation, oneDNN's kernel choice
print("TIMING-START", flush=True)
start = time.perf_counter()
model.fit(data.skip(3), epochs=1, verbose=0)
print("TIMED", (time.perf_counter() - start) / {batches} * 1000, flush=True)
"""


def run_variant(variant: str, experiment: str, threads: int, batches: int) -> tuple[float, float]:
    """Milliseconds per batch, and of them the milliseconds oneDNN spent in convolutions."""
    policy, _, xla = variant.partition("+")
    code = WORKER.format(repo=str(REPO), threads=threads, policy=policy, experiment=experiment,
                         xla=xla == "xla", batches=batches)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    timed = done.stdout.split("TIMING-START", 1)[1]
    per_batch = float(next(line.split()[1] for line in timed.splitlines() if line.startswith("TIMED")))
    # oneDNN's verbose lines: onednn_verbose,<time>,primitive,exec,cpu,<kind>,<impl>,...,<ms>
    conv_ms = sum(float(line.rsplit(",", 1)[1]) for line in timed.splitlines()
                  if line.startswith("onednn_verbose") and ",exec,cpu,convolution," in line)
    return per_batch, conv_ms / batches


def bfloat16_instructions() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(found) or "none (emulated)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="exp205")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (the campaign: 1 a trial)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        folder = experiments.find(args.experiment)
    except experiments.UnknownExperiment as e:
        parser.error(str(e))
    measured: dict[str, list[tuple[float, float]]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):  # taking turns: a noisy neighbour slows every variant alike
        for variant in args.variants:
            measured[variant].append(run_variant(variant, folder.name, args.threads, args.batches))
    first = statistics.median(ms for ms, _ in measured[args.variants[0]])
    rows = []
    for variant, runs in measured.items():
        ms = statistics.median(m for m, _ in runs)
        conv = statistics.median(c for _, c in runs)
        rows.append({"variant": variant, "ms per batch": round(ms), f"vs {args.variants[0]}": f"{first / ms:.2f}x",
                     "convolutions (oneDNN)": f"{conv / ms:.0%}" if conv else "–"})
    print(f"{folder.name}, {args.threads} thread(s), {args.batches} batches x {args.rounds} rounds; "
          f"{results.cpu_name()}, bfloat16 instructions: {bfloat16_instructions()}")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
