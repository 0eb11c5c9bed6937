"""How much does augmentation cost? exp007's model and settings, three input pipelines, one run.

    python benchmarks/augmentation_speed.py [--data-dir DIR] [--steps 40] [--rounds 12]

(i)   none:       the tf.data pipeline without augmentation
(ii)  project:    the project's pipeline with exp007's zoom and mixup (common/augment.py)
(iii) per-image:  the old way the log used: Keras' legacy ImageDataGenerator zooming each image in
                  Python (scipy), with mixup added on each batch in numpy

For each it measures training throughput (images/s through model.fit) and input throughput
(images/s the pipeline alone delivers), in short chunks interleaved across the variants; the median
chunk is kept, so the slow spells of a shared machine hit all variants alike. Targets: (ii) costs at most 10%
of training throughput over (i), and its input pipeline is at least 5x faster than (iii)'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import augment, experiments, pipeline  # noqa: E402
from common import data as fmnist  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def image_data_generator_with_mixup(x, y_onehot, batch_size, zoom_range, alpha, seed):
    """The log's way: ImageDataGenerator zooms image by image in Python (scipy), mixup in numpy per batch."""
    # Keras 3 still ships the old class, unexported; it needs scipy.
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    flow = ImageDataGenerator(zoom_range=list(zoom_range), fill_mode="nearest").flow(
        x, y_onehot, batch_size=batch_size, seed=seed)
    rng = np.random.default_rng(seed)
    for images, labels in flow:
        lam = rng.beta(alpha, alpha, len(images)).astype(np.float32)
        partner = rng.permutation(len(images))
        images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[partner]
        labels = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
        yield images, labels


def load_images(data_dir: str | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        dataset = fmnist.load(data_dir)
        return dataset.x_train[:n], dataset.y_train[:n]
    except fmnist.DataError as e:
        print(f"({e}; using random images: speed does not depend on the pixels)")
        rng = np.random.default_rng(0)
        return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved chunks per variant; the median is kept")
    args = parser.parse_args(argv)

    exp007 = experiments.load_module(experiments.find("exp007"))
    config = dict(exp007.CONFIG)
    batch = config["batch_size"]
    n = batch * 200
    x, y = load_images(args.data_dir, n)
    plain = {k: v for k, v in config.items() if k not in augment.DEFAULTS}
    sources = {
        "(i) none": lambda: pipeline.train_dataset(x, y, plain, seed=1),
        "(ii) project (tf.data, zoom+mixup)": lambda: pipeline.train_dataset(x, y, config, seed=1),
        "(iii) per-image Python (ImageDataGenerator)": lambda: image_data_generator_with_mixup(
            x, pipeline.labels_for(y, config), batch, config["zoom_range"], config["mixup_alpha"], seed=1),
    }

    # One model and one endless input per variant, warmed up (traced) before any clock starts.
    models, inputs = {}, {}
    for name, make in sources.items():
        keras.utils.set_random_seed(0)
        models[name] = exp007.build_model(config)
        source = make()
        inputs[name] = source.repeat() if hasattr(source, "repeat") else source
        models[name].fit(inputs[name], steps_per_epoch=5, epochs=1, verbose=0)

    def train_rate(name) -> float:
        start = time.perf_counter()
        models[name].fit(inputs[name], steps_per_epoch=args.steps, epochs=1, verbose=0)
        return args.steps * batch / (time.perf_counter() - start)

    def input_rate(name) -> float:
        iterator = iter(inputs[name])
        next(iterator)  # the first batch pays for starting the pipeline
        start = time.perf_counter()
        count = sum(len(next(iterator)[0]) for _ in range(args.steps))
        return count / (time.perf_counter() - start)

    # Short chunks, variants interleaved: a slow spell of the machine hits all of them alike.
    measured = {name: {"train": [], "input": []} for name in sources}
    for round_ in range(args.rounds):
        for name in sources:
            measured[name]["train"].append(train_rate(name))
            measured[name]["input"].append(input_rate(name))
    print(f"{args.rounds} rounds done", flush=True)

    table = pd.DataFrame({
        "training img/s": {k: np.median(v["train"]) for k, v in measured.items()},
        "input img/s": {k: np.median(v["input"]) for k, v in measured.items()},
    })
    none, project, python = table.index
    table["training vs (i)"] = table["training img/s"] / table.loc[none, "training img/s"]
    table["input vs (iii)"] = table["input img/s"] / table.loc[python, "input img/s"]
    print(f"\nexp007 model, batch {batch}: median of {args.rounds} chunks of {args.steps} steps per variant\n")
    print(table.round(2).to_string())
    overhead = 1 - table.loc[project, "training vs (i)"]
    speedup = table.loc[project, "input vs (iii)"]
    print(f"\nproject augmentation: {overhead:+.1%} training cost over no augmentation (target <= 10%): "
          f"{'ok' if overhead <= 0.10 else 'MISSED'}")
    print(f"project input pipeline vs per-image Python: {speedup:.1f}x (target >= 5x): "
          f"{'ok' if speedup >= 5 else 'MISSED'}")
    print(f"per-image Python training throughput vs project: "
          f"{table.loc[python, 'training img/s'] / table.loc[project, 'training img/s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
