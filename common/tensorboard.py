"""Every finished trial in TensorBoard: its epochs as scalars, its config as HParams, from results/.

    python -m common.tensorboard [--results-dir results] [--logdir tensorboard] [--only 'exp2*']
    tensorboard --logdir tensorboard

Nothing is trained or rerun: each finished trial (recipes and variants, never smoke runs) becomes
one TensorBoard run named `<data>/<experiment>[/<variant>]/trial_<i>`, written with TensorFlow's
summary API from its result files:

- Scalars: its history.csv per epoch (loss, accuracy, val_loss, val_accuracy, the learning rate,
  and images a second and GFLOP/s where the trial recorded them), so exp110's curves sit beside
  exp206's;
- HParams: its config (every key, lists and None as text) with its experiment, variant, data and
  seed, and as the metrics its final train, valid and test accuracy and plain cross-entropy: the
  HParams dashboard sorts and filters every trial by any config value;
- Text: its provenance (versions, hardware, git commit, data) and its variant.

The logdir is local state (git ignores `tensorboard/`). Each run keeps a stamp of the result files it
came from; a rerun rewrites only the runs whose trials changed, removes those whose trials are
gone, and starts TensorFlow only when it has something to write.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import sys
from pathlib import Path

from common import experiments, results
from common.cli import EXIT_OK, EXIT_USAGE
from common.record import TrialRecord, read as read_record

DEFAULT_LOGDIR = results.REPO_ROOT / "tensorboard"
STAMP = ".source"  # in each run's folder: the hash of the result files it was written from
SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_second", "gflops_per_second")
FINAL = [(split, metric) for split in ("train", "valid", "test") for metric in ("accuracy", "crossentropy")]


def finished_trials(results_dir: Path) -> dict[str, Path]:
    """{run name: trial folder} of every finished, non-smoke trial (recipes and variants)."""
    runs = {}
    for pattern in results.TRIAL_PATTERNS:
        for path in sorted(results_dir.glob(pattern)):
            relative = path.relative_to(results_dir)
            if relative.parts[0] != "smoke":
                data, folder, variant = results.trial_location(relative)
                runs["/".join(filter(None, [data, folder, variant, path.parent.name]))] = path.parent
    return runs


def chosen(name: str, only: list[str]) -> bool:
    """Whether a run's experiment (its id or folder, the name's second part) matches one of `only`."""
    folder = name.split("/")[1]
    return any(fnmatch.fnmatch(experiments.experiment_id(folder), p) or fnmatch.fnmatch(folder, p) for p in only)


def stamp(trial: Path) -> str:
    digest = hashlib.sha256()
    for name in (results.METRICS_FILE, results.HISTORY_FILE):
        if (trial / name).exists():
            digest.update(name.encode() + (trial / name).read_bytes())
    return digest.hexdigest()


def hparam_value(value):
    """HParams take bool, int, float and str: lists, dicts and None become their JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def hparams_of(record: TrialRecord) -> dict:
    values = {key: hparam_value(value) for key, value in sorted(record["config"].items())}
    values.update(experiment=record["experiment"], variant=record["variant"] or "(recipe)",
                  data=record["provenance"].get("data", {}).get("name", ""), trial=int(record["trial"]),
                  seed=hparam_value(record["seed"]))
    return values


def trial_record(trial: Path) -> TrialRecord:
    record = read_record(trial / results.METRICS_FILE)
    if record is None:
        raise ValueError(f"{trial / results.METRICS_FILE} cannot be read")
    return record


def write_run(directory: Path, name: str, trial: Path, record: TrialRecord, source: str) -> None:
    """One trial's event file: scalars per epoch, hparams with the final metrics, provenance as text;
    `source`, the stamp of the result files it is written from, goes beside it."""
    import pandas as pd

    from common.tensorflow_setup import tf  # first: TensorFlow starts without its start-up notices
    from tensorboard.plugins.hparams import api as hp

    history = pd.read_csv(trial / results.HISTORY_FILE) if (trial / results.HISTORY_FILE).exists() else pd.DataFrame()
    shutil.rmtree(directory, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        hp.hparams(hparams_of(record), trial_id=name)
        for row in history.to_dict("records"):
            for tag in SCALARS:
                if tag in row and pd.notna(row[tag]):
                    tf.summary.scalar(f"epoch/{tag}", float(row[tag]), step=int(row["epoch"]))
        last = int(record.get("epochs_run", len(history)))
        for split, metric in FINAL:
            value = record["metrics"].get(split, {}).get(metric)
            if value is not None:
                tf.summary.scalar(f"final/{split}_{metric}", float(value), step=last)
        tf.summary.text("provenance", "```\n" + json.dumps(record["provenance"], indent=1) + "\n```", step=0)
    writer.close()
    results.atomic_write_text(directory / STAMP, source)


def write_hparams_config(logdir: Path, names: set[str]) -> None:
    """The HParams dashboard's columns: every config key seen, and the final metrics."""
    from common.tensorflow_setup import tf  # first: TensorFlow starts without its start-up notices
    from tensorboard.plugins.hparams import api as hp

    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in sorted(names)],
                          metrics=[hp.Metric(f"final/{split}_{metric}", display_name=f"{split} {metric}")
                                   for split, metric in FINAL])
    writer.close()


def export(results_dir: Path, logdir: Path, only: list[str] | None = None) -> tuple[int, int, int]:
    """Write what changed; returns (runs written, runs unchanged, runs removed)."""
    every = finished_trials(results_dir)
    runs = {name: trial for name, trial in every.items() if chosen(name, only)} if only else every
    stamps = {name: stamp(trial) for name, trial in runs.items()}
    stale = [name for name in runs
             if not (logdir / name / STAMP).exists() or (logdir / name / STAMP).read_text() != stamps[name]]
    removed = 0
    if not only:  # runs whose trials are gone (a partial export leaves the others alone)
        for old in sorted(logdir.rglob(STAMP)) if logdir.exists() else []:  # listed before any is removed
            if old.parent.relative_to(logdir).as_posix() not in runs:
                shutil.rmtree(old.parent)
                removed += 1
    if not stale and not removed:
        return 0, len(runs), 0
    records = {name: trial_record(trial) for name, trial in every.items()}  # the dashboard's columns: all
    for name in stale:
        write_run(logdir / name, name, runs[name], records[name], stamps[name])
    write_hparams_config(logdir, set().union(*(hparams_of(record) for record in records.values())))
    return len(stale), len(runs) - len(stale), removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.tensorboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir())
    parser.add_argument("--logdir", type=Path, default=DEFAULT_LOGDIR, help="where the runs go (default: %(default)s)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="experiments (ids, folders or globs)")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"error: no results directory {args.results_dir}; give --results-dir", file=sys.stderr)
        return EXIT_USAGE
    try:
        written, unchanged, removed = export(args.results_dir, args.logdir, args.only)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{written} run(s) written, {unchanged} unchanged, {removed} removed -> {args.logdir}\n"
          f"start TensorBoard with: tensorboard --logdir {args.logdir}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
