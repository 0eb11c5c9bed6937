"""Show what an experiment's augmentation does: a PNG grid of training images and augmented draws.

    python -m common.preview exp008 [--data-dir DIR] [--out PNG] [--draws 3] [--seed 0]

The first row holds one training image per class; each further row is one augmented batch of
them, made by the same code and settings as the experiment's training pipeline. Where labels are
mixed (mixup), each image's title shows its two largest label weights. The default output is
<experiment folder>/augmentation_preview.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.cli import EXIT_USAGE  # noqa: E402
from common import data as fmnist  # noqa: E402
from common import experiments  # noqa: E402


def one_per_class(labels: np.ndarray) -> np.ndarray:
    return np.array([np.flatnonzero(labels == c)[0] for c in range(10) if np.any(labels == c)])


def label_title(label_row: np.ndarray) -> str:
    order = np.argsort(label_row)[::-1]
    top = [(fmnist.CLASS_NAMES[i].split("/")[0], label_row[i]) for i in order[:2] if label_row[i] > 0.005]
    if len(top) == 1:
        return top[0][0]
    return "\n".join(f"{name} {weight:.2f}" for name, weight in top)


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render(folder: Path, data_dir: str | None, out: Path, draws: int, seed: int) -> Path:
    from common.tensorflow_setup import tf

    from common import augment, pipeline

    config = experiments.read_definition(folder).effective_config()
    augment_batch = augment.augmenter(config)
    if augment_batch is None:
        raise ValueError(f"{folder.name} configures no augmentation (zoom_range, crop_padding, flip_prob, "
                         f"erase_prob, mixup_alpha)")
    dataset = fmnist.load(data_dir, smoke=True)
    chosen = one_per_class(dataset.y_train)
    images = dataset.x_train[chosen]
    labels = pipeline.labels_for(dataset.y_train[chosen], config)

    rows = [(images, None)]
    for draw in range(draws):
        batch_seed = tf.constant([pipeline.epoch_seed(seed, 1), draw], tf.int64)
        x, y = augment_batch(tf.constant(images), tf.constant(labels), batch_seed)
        rows.append((x.numpy(), y.numpy() if config.get("mixup_alpha") else None))

    fig, axes = plt.subplots(len(rows), len(chosen), figsize=(1.3 * len(chosen), 1.55 * len(rows)),
                             squeeze=False)
    for r, (batch, mixed_labels) in enumerate(rows):
        for c in range(len(chosen)):
            ax = axes[r, c]
            ax.imshow(batch[c, :, :, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(fmnist.CLASS_NAMES[dataset.y_train[chosen[c]]].split("/")[0], fontsize=8)
            elif mixed_labels is not None:
                ax.set_title(label_title(mixed_labels[c]), fontsize=6)
        axes[r, 0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=8)
    settings = {k: v for k, v in augment.settings(config).items()
                if k in config and v not in (None, 0, 0.0)}
    fig.suptitle(f"{folder.name}: " + ", ".join(f"{k}={_short(v)}" for k, v in settings.items()), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="an id (exp008) or folder name")
    parser.add_argument("--data-dir", help=f"IDX folder (default: ${fmnist.ENV_VAR}, else Keras' download)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <experiment>/augmentation_preview.png)")
    parser.add_argument("--draws", type=int, default=3, help="augmented rows (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="trial seed of the draws (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        folder = experiments.find(args.experiment)
        out = render(folder, args.data_dir, args.out or folder / "augmentation_preview.png", args.draws, args.seed)
    except (experiments.UnknownExperiment, fmnist.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
