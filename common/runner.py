"""The trial loop every experiment's train.py hands over to.

`run_experiment` parses the command line (common flags plus one flag per CONFIG key), loads the
data, and runs the trials that are not finished yet. A trial writes, under
results/<data name>/<experiment folder>/trial_<i>/ (the data's name: offline-v2, official, ...), or,
run with overrides, under its variant's folder, <experiment folder>/variants/<key=value,...>/trial_<i>/
(common.variants): a variant is a result of its own and never touches the recipe's trials:

    metrics.json   loss, cross-entropy and accuracy per split, epochs, seed, config, provenance (written last)
    history.csv    one row per epoch, written when the trial ends
    predictions.npz  the test set's class probabilities (see results.write_predictions)
    model.weights.h5  the weights it evaluated (its best epoch), without optimizer state: local,
                   never committed; an evaluation-only experiment (exp207) scores its base's
                   instead of training the same weights again
    checkpoint/    weights, optimizer and early-stopping state after the last finished epoch, and
                   history.csv so far (watch a running trial there); deleted once metrics.json
                   exists. A rerun resumes from it. Never committed: only finished trials are results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from common import augment, flops, results, speed, variants
from common import data as fmnist
from common import experiments
from common.experiments import RUNNER_DEFAULTS, config_difference
from common.variants import parse_like

# Config keys the runner itself reads; every other key is the experiment's own (build_model reads it).
REQUIRED_KEYS = ("trials", "seed", "epochs", "patience", "batch_size")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A problem the user fixes by changing the command; the message says how."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the trial cannot finish."""


# ---------------------------------------------------------------- command line

def build_parser(folder: str, explanation: str, config: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python {folder}/train.py", description=f"{folder}: {explanation}",
        epilog="Rerunning the same command resumes: finished trials are kept, an interrupted "
               "trial continues from its last finished epoch.")
    parser.add_argument("--data-dir", help=f"folder with the four Fashion-MNIST IDX files "
                        f"(default: ${fmnist.ENV_VAR}, else Keras' download)")
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir(),
                        help=f"where trial folders go (default: ${results.RESULTS_ENV_VAR}, else %(default)s)")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check: a tiny stratified subset, 1 epoch and 1 trial unless "
                             "--epochs/--trials say otherwise; results go under <results-dir>/smoke/")
    parser.add_argument("--force", action="store_true",
                        help="rerun trials that are already finished, even with another config")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow CPU threads (default 0: one per core). Conv results depend "
                             "slightly on it: rerun with the same value to reproduce a trial exactly")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: add to each finished trial what the evaluation records now "
                             "and its metrics.json lacks (the plain cross-entropy), from the weights it "
                             "kept, after checking that they reproduce its recorded loss and accuracy")
    parser.add_argument("--trial", type=int, metavar="I",
                        help="run only trial I (0-based) of the --trials; python -m common.run_all "
                             "--jobs uses it to run trials side by side")
    group = parser.add_argument_group("config", "override the experiment's CONFIG values (and the "
                                      "runner's fix_seed, one_hot, ...): a run with overrides is a variant, "
                                      "filed under <experiment>/variants/<key=value,...>/ beside the recipe "
                                      "(--trials aside, which is no change of recipe)")
    for key, default in {**RUNNER_DEFAULTS, **config}.items():
        flags = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        group.add_argument(*flags, dest=f"config.{key}", type=parse_like(default, key),
                           metavar=type(default).__name__.upper(), help=f"(default: {default!r})")
    return parser


def parse_config(parser: argparse.ArgumentParser, config: dict, argv: list[str] | None
                 ) -> tuple[argparse.Namespace, dict, dict]:
    """The parsed common flags, the effective config and the overrides the user gave."""
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, f"config.{key}") for key in {**RUNNER_DEFAULTS, **config}
                 if getattr(args, f"config.{key}") is not None}
    effective = {**RUNNER_DEFAULTS, **config, **overrides}
    if args.smoke:  # one quick epoch and trial unless asked otherwise
        effective["epochs"] = overrides.get("epochs", 1)
        effective["trials"] = overrides.get("trials", 1)
    # Values as they come back from metrics.json (tuples become lists), so configs compare equal.
    effective = json.loads(json.dumps(effective))
    missing = [k for k in REQUIRED_KEYS if k not in effective]
    if missing:
        raise UsageError(f"CONFIG lacks {', '.join(missing)}; every train.py sets {', '.join(REQUIRED_KEYS)}")
    for key in ("trials", "epochs", "batch_size"):
        if effective[key] < 1:
            raise UsageError(f"--{key} must be at least 1, got {effective[key]}")
    if args.trial is not None and not 0 <= args.trial < effective["trials"]:
        raise UsageError(f"--trial {args.trial} is not among the {effective['trials']} trials (0 to "
                         f"{effective['trials'] - 1})")
    try:
        augment.check_config(effective)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if effective["monitor"] not in ("val_loss", "val_accuracy"):
        raise UsageError(f"--monitor {effective['monitor']!r}: early stopping watches val_loss or val_accuracy")
    if effective["valid_split"] not in fmnist.VALID_SPLITS:
        raise UsageError(f"--valid_split {effective['valid_split']!r}: one of {', '.join(fmnist.VALID_SPLITS)}")
    return args, effective, overrides


# ---------------------------------------------------------------- seeding and devices

def configure_tensorflow(threads: int, fix_seed: bool, jit_compile: bool = False) -> None:
    from common.tensorflow_setup import tf

    if threads and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow fixes its thread pools when it first runs an op
            raise UsageError(f"--threads {threads}: TensorFlow already runs in this process with "
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


def trial_seed(config: dict, trial: int) -> int:
    """Trial i uses seed + i; without seed fixing a fresh random seed is drawn for every run."""
    if config["fix_seed"]:
        return int(config["seed"]) + trial
    return int(np.random.default_rng().integers(2**31 - 1))


# ---------------------------------------------------------------- one trial

def save_weights(model, path: Path) -> None:
    """model.save_weights, atomically: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp.weights.h5")  # Keras insists on the .weights.h5 suffix
    model.save_weights(tmp)
    os.replace(tmp, path)


class Checkpoint:
    """Weights, optimizer and early-stopping state after the last finished epoch of one trial.

    Each epoch's weights go to a new file and state.json (written atomically, last) names the
    files it belongs to, so a kill at any moment leaves a consistent checkpoint behind.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.state_path = directory / "state.json"

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, model, state: dict, improved: bool) -> None:
        """Save after an epoch; records the weight files' names in `state`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        epoch = state["epoch"]
        state["weights"] = f"epoch_{epoch}.weights.h5"
        save_weights(model, self.directory / state["weights"])
        if improved:
            state["best_weights"] = f"best_epoch_{epoch}.weights.h5"
            shutil.copyfile(self.directory / state["weights"], self.directory / state["best_weights"])
        results.atomic_write_json(self.state_path, state)
        results.atomic_write_text(self.directory / results.HISTORY_FILE, history_csv(state["history"]))
        keep = {state["weights"], state.get("best_weights"), self.state_path.name, results.HISTORY_FILE}
        for path in self.directory.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def restore(self, model, name: str) -> None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / name)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _epoch_line(prefix: str, row: dict, epochs: int, best: bool) -> str:
    speed = (f"  {row['images_per_second']:.0f} img/s" if row.get("images_per_second") else "") + (
        f" {row['gflops_per_second']:.1f} GFLOP/s" if row.get("gflops_per_second") else "")
    return (f"{prefix} epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f} acc {row['accuracy']:.4f}"
            f"  val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
            f"  {row['seconds']:.1f}s{speed}{'  *' if best else ''}")


def _build(build_model: Callable[[dict], Any], config: dict, dataset: fmnist.FashionMNIST):
    """The experiment's compiled model on the project's training path (speed.prepare), and how it runs."""
    # build_model also learns the steps per epoch, for schedules such as cosine decay.
    steps_per_epoch = math.ceil(len(dataset.y_train) / config["batch_size"])
    try:
        model = build_model({**config, "steps_per_epoch": steps_per_epoch})
    except ValueError as e:  # a config value the experiment's model cannot take
        raise UsageError(str(e)) from None
    if getattr(model, "optimizer", None) is None:
        raise UsageError("build_model(config) must return a compiled model (call model.compile)")
    try:
        return model, speed.prepare(model, config)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _layers_only(model):
    """The same layers as a model without optimizer: its weights files hold the trained weights alone
    (a third of the size with Adam), and load into any compiled model of the recipe without warnings."""
    import keras

    return keras.Model(model.inputs, model.outputs)


def _kept_model(build_model: Callable[[dict], Any], config: dict, dataset: fmnist.FashionMNIST, seed: int,
                weights: Path):
    """The recipe's compiled model holding a trial's kept weights."""
    import keras

    if config["fix_seed"]:
        keras.utils.set_random_seed(seed)
    model, _ = _build(build_model, config, dataset)
    _layers_only(model).load_weights(weights)
    return model


def reusable_base_trial(base_directory: Path | None, config: dict, trial: int, fingerprint: str,
                        defaults: dict | None = None) -> dict | None:
    """The base experiment's finished record of this trial when its kept weights are what this trial
    would train: same data, same seed, same config but for the evaluation keys. Else None."""
    if base_directory is None or not (base_directory / results.WEIGHTS_FILE).exists():
        return None
    record = _finished_record(base_directory / results.METRICS_FILE)
    if record is None or record.get("provenance", {}).get("data", {}).get("fingerprint") != fingerprint:
        return None
    if config["fix_seed"] and record.get("seed") != trial_seed(config, trial):
        return None
    if experiments.training_difference(record.get("config", {}), config, defaults):
        return None
    return record


def score_base_weights(trial: int, directory: Path, base: dict, base_directory: Path, config: dict,
                       build_model: Callable[[dict], Any], dataset: fmnist.FashionMNIST, label: str,
                       log: Callable[[str], None]) -> tuple[dict, np.ndarray]:
    """An evaluation-only trial: score the weights the base's same trial trained, without training."""
    start, started_at = time.perf_counter(), results.now_iso()
    model = _kept_model(build_model, config, dataset, base["seed"], base_directory / results.WEIGHTS_FILE)
    log(f"{label}: scoring the weights {base['folder']} trial {base['trial']} trained (same seed, data and "
        f"training config; {base['wall_seconds'] / 60:.0f} min of training not repeated)")
    metrics, test_probabilities = evaluate(model, dataset, config)
    results.atomic_write_bytes(directory / results.HISTORY_FILE, (base_directory / results.HISTORY_FILE).read_bytes())
    record = {
        "trial": trial, "seed": base["seed"], "seed_fixed": config["fix_seed"], "metrics": metrics,
        "epochs_run": base["epochs_run"], "best_epoch": base["best_epoch"],
        "stopped_early": base["stopped_early"],
        "wall_seconds": round(time.perf_counter() - start, 1), "sittings": 1,
        "started_at": started_at, "finished_at": results.now_iso(),
        "parameters": int(model.count_params()),
        "weights_from": {"folder": base["folder"], "trial": base["trial"], "wall_seconds": base["wall_seconds"],
                         "finished_at": base.get("finished_at"),
                         "hardware": base.get("provenance", {}).get("hardware")},
    }
    save_weights(_layers_only(model), directory / results.WEIGHTS_FILE)
    return record, test_probabilities


RESCORE_LOSS_RTOL = 1e-4  # another CPU or thread count moves an evaluation by float noise (about 1e-6)


def rescore_trial(directory: Path, config: dict, build_model: Callable[[dict], Any],
                  dataset: fmnist.FashionMNIST, hardware: dict, label: str, log: Callable[[str], None]) -> None:
    """Add to a finished trial's metrics what `evaluate` records now and the trial lacks, from its kept
    weights. The recorded figures stay as they were; the weights must first reproduce them (loss to
    RESCORE_LOSS_RTOL, accuracy to an image in a thousand, for near-ties), or nothing is written."""
    record = _finished_record(directory / results.METRICS_FILE)
    if not (directory / results.WEIGHTS_FILE).exists():
        log(f"{label}: no kept weights ({results.WEIGHTS_FILE}: trained elsewhere or before they were kept); "
            f"not rescored")
        return
    model = _kept_model(build_model, config, dataset, record["seed"], directory / results.WEIGHTS_FILE)
    metrics, _ = evaluate(model, dataset, config)
    for split, recorded in record["metrics"].items():
        now = metrics[split]
        if (abs(now["loss"] - recorded["loss"]) > RESCORE_LOSS_RTOL * abs(recorded["loss"])
                or abs(now["accuracy"] - recorded["accuracy"]) > 1e-3):
            raise UsageError(f"{directory}: its kept weights score {split} loss {now['loss']:.6f}, accuracy "
                             f"{now['accuracy']:.4f} where the trial recorded {recorded['loss']:.6f}, "
                             f"{recorded['accuracy']:.4f}: not the weights it evaluated; nothing rescored "
                             f"(rerun the trial with --force to record everything afresh)")
    added = sorted({key for split in metrics for key in metrics[split]} - {
        key for split in record["metrics"] for key in record["metrics"][split]})
    if not added:
        log(f"{label}: records everything the evaluation gives; nothing to add")
        return
    record["metrics"] = {split: {**metrics[split], **recorded} for split, recorded in record["metrics"].items()}
    record.setdefault("rescored", []).append({"at": results.now_iso(), "added": added, "hardware": hardware})
    results.atomic_write_json(directory / results.METRICS_FILE, record)
    log(f"{label}: added {', '.join(added)} from its kept weights (loss and accuracy reproduced) "
        f"-> {directory / results.METRICS_FILE}")


def run_trial(trial: int, directory: Path, config: dict, build_model: Callable[[dict], Any],
              dataset: fmnist.FashionMNIST, label: str, log: Callable[[str], None],
              defaults: dict | None = None) -> tuple[dict, np.ndarray]:
    """Train one trial to the end (resuming its checkpoint if any); its metrics record and the test
    set's class probabilities. `defaults`: the experiment's CONFIG, for checkpoints of older code."""
    import keras

    from common import pipeline

    checkpoint = Checkpoint(directory / "checkpoint")
    for litter in directory.rglob(".*.tmp*"):  # temporary files of a process killed mid-write
        litter.unlink(missing_ok=True)
    state = checkpoint.load_state()
    difference = config_difference(state.get("config", {}), config, defaults) if state is not None else ""
    if difference:
        log(f"{label}: checkpoint was made with another config ({difference}); starting the trial afresh")
        checkpoint.remove()
        state = None
    seed = state["seed"] if state else trial_seed(config, trial)
    if config["fix_seed"]:
        keras.utils.set_random_seed(seed)  # weight initialisation; the data order has its own seeds
    model, path = _build(build_model, config, dataset)
    try:  # the operations one training image costs, for the speed in each epoch line
        forward = flops.forward_flops(model)
    except (AttributeError, ValueError):  # a layer whose output shape is not known before training
        forward = None
    clock = speed.training_clock()
    if state:
        checkpoint.restore(model, state["weights"])
        log(f"{label}: resuming after epoch {state['epoch']} (best so far: epoch {state['best_epoch']})")
    else:
        state = {"seed": seed, "config": config, "epoch": 0, "best_epoch": 0,
                 "best_value": math.inf if config["monitor"] == "val_loss" else -math.inf,
                 "wait": 0, "history": [], "wall_seconds": 0.0,
                 "started_at": results.now_iso(), "sittings": 0}
    state["sittings"] += 1

    x_valid, y_valid = dataset.x_valid, dataset.y_valid
    valid_ds = pipeline.eval_dataset(x_valid, y_valid, config)
    while state["epoch"] < config["epochs"] and state["wait"] < config["patience"]:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        train_ds = pipeline.train_dataset(dataset.x_train, dataset.y_train, config,
                                          pipeline.epoch_seed(seed, epoch))
        # In a terminal, Keras' progress bar within the epoch; in a log file or pipe, only our line.
        logs = model.fit(train_ds, validation_data=valid_ds, epochs=1, shuffle=False, callbacks=[clock],
                         verbose=1 if sys.stdout.isatty() else 0).history
        row = {"epoch": epoch, **{k: float(v[-1]) for k, v in logs.items()},
               "learning_rate": float(model.optimizer.learning_rate.numpy()),
               "seconds": round(time.perf_counter() - start, 2),
               # training images a second (validation left out) and the counted operations' rate
               "train_seconds": round(clock.seconds, 2),
               "images_per_second": round(len(dataset.y_train) / max(clock.seconds, 1e-9), 1)}
        if forward:
            row["gflops_per_second"] = round(flops.training_gflops_per_second(row["images_per_second"], forward), 2)
        if not all(math.isfinite(row[k]) for k in ("loss", "val_loss")):
            raise TrainingDiverged(f"{label}: the loss became {row['loss']} (valid {row['val_loss']}) "
                                   f"at epoch {epoch}; lower the learning rate or check the model")
        # Early stopping watches the valid loss (lower is better) or the valid accuracy (higher).
        best = state.get("best_value", state.get("best_val_loss"))  # checkpoints before `monitor` existed
        value = row[config["monitor"]]
        improved = value < best if config["monitor"] == "val_loss" else value > best
        if improved:
            state.update(best_value=value, best_epoch=epoch, wait=0)
        else:
            state["wait"] += 1
        state["history"].append(row)
        state["epoch"] = epoch
        state["wall_seconds"] += row["seconds"]
        checkpoint.save(model, state, improved)
        log(_epoch_line(label, row, config["epochs"], improved))

    # Early stopping's restore_best_weights: evaluate the best epoch (lowest valid loss by default).
    checkpoint.restore(model, state["best_weights"])
    start = time.perf_counter()
    metrics, test_probabilities = evaluate(model, dataset, config)
    state["wall_seconds"] += time.perf_counter() - start
    record = {
        "trial": trial, "seed": seed, "seed_fixed": config["fix_seed"], "metrics": metrics,
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "stopped_early": state["wait"] >= config["patience"],
        "wall_seconds": round(state["wall_seconds"], 1), "sittings": state["sittings"],
        "started_at": state["started_at"], "finished_at": results.now_iso(),
        "parameters": int(model.count_params()),
        "speed": {**path, **speed.trial_figures(state["history"], forward)},
    }
    # In the trial's folder only now: an unfinished trial leaves nothing there that looks like a result.
    results.atomic_write_text(directory / results.HISTORY_FILE, history_csv(state["history"]))
    save_weights(_layers_only(model), directory / results.WEIGHTS_FILE)
    return record, test_probabilities


def history_csv(history: list[dict]) -> str:
    return pd.DataFrame(history).to_csv(index=False)


def class_probabilities(model, x: np.ndarray) -> np.ndarray:
    """The model's class probabilities for x, in order (a softmax over logits where the loss takes them)."""
    from common import pipeline

    outputs = model.predict(pipeline.predict_dataset(x), verbose=0).astype(np.float64)
    if getattr(model.loss, "from_logits", False):
        outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs /= outputs.sum(axis=1, keepdims=True)
    return outputs


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of class probabilities against the true classes: no smoothing, no penalty."""
    true_class = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)  # Keras' epsilon
    return float(-np.mean(np.log(true_class)))


def evaluate(model, dataset: fmnist.FashionMNIST, config: dict) -> tuple[dict, np.ndarray]:
    """Loss, cross-entropy and accuracy per split, and the test set's class probabilities.

    `loss` is what Keras reports, the compiled loss: with an L2 regulariser it includes the penalty,
    with label smoothing it is taken against the smoothed targets (the log's figures are these).
    `crossentropy` is the plain cross-entropy against the true classes, comparable across experiments.
    With test_time_flip, every split is scored on the average of the probabilities for each image
    and its mirror image (left-right), the loss being the plain cross-entropy of that average.
    """
    from common import pipeline

    metrics, probabilities = {}, {}
    for split, (x, y) in dataset.splits().items():
        if config["test_time_flip"]:
            p = (class_probabilities(model, x) + class_probabilities(model, x[:, :, ::-1, :])) / 2
            scores = {"loss": cross_entropy(p, y), "accuracy": np.mean(p.argmax(axis=1) == y)}
        else:
            p = class_probabilities(model, x)
            scores = model.evaluate(pipeline.eval_dataset(x, y, config), verbose=0, return_dict=True)
        metrics[split] = {"loss": float(scores["loss"]), "accuracy": float(scores["accuracy"]),
                          "crossentropy": cross_entropy(p, y)}
        probabilities[split] = p
    return metrics, probabilities["test"]


# ---------------------------------------------------------------- the experiment

def _finished_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_experiment(train_file: str, experiment: str, base: str | None, explanation: str,
                   config: dict, build_model: Callable[[dict], Any],
                   argv: list[str] | None = None) -> int:
    """Run an experiment's trials from its command line; returns the process exit code."""
    folder = Path(train_file).resolve().parent.name
    parser = build_parser(folder, explanation, config)
    try:
        args, effective, overrides = parse_config(parser, config, argv)
        variant = variants.of(overrides, {**RUNNER_DEFAULTS, **config})
        try:
            source = variants.weights_source(Path(train_file).resolve().parent, variant)
        except (OSError, SyntaxError, ValueError):  # a base whose train.py cannot be read: train
            source = None
        return _run(folder, experiment, base, explanation, config, effective, overrides, args, build_model,
                    variant, source)
    except (fmnist.DataError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials and the last finished epoch are kept; rerun the same "
              "command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(folder, experiment, base, explanation, default_config, config, overrides, args,
         build_model, variant: dict, source: tuple[Path, str] | None = None) -> int:
    """`variant`: the overrides that change the recipe (variants.of), {} for the recipe itself.
    `source`: the experiment folder and variant whose trials train exactly what this one's do and
    differ in evaluation only (variants.weights_source); its trials then score their kept weights."""
    def log(message: str) -> None:
        print(message, flush=True)

    variant_name = variants.name(variant)
    where = variants.label(folder, variant_name)  # exp104_bs64_lr1e-4 or exp104_bs64_lr1e-4/l2=0.01

    results_dir = args.results_dir.expanduser().resolve()
    # Trials belong to their data: they are filed under its name, results/<data name>/<folder>/.
    dataset = fmnist.load(args.data_dir, smoke=args.smoke, valid_split=config["valid_split"])
    copy = dataset.copy
    sizes = {split: len(y) for split, (_, y) in dataset.splits().items()}
    log(f"data: {copy.name} ({copy.description}; sha256 {copy.fingerprint[:16]}…) from {copy.location}; "
        + ", ".join(f"{split} {n}" for split, n in sizes.items()))
    # Refuse to mix configs before spending time on training: every finished trial of the experiment
    # on this data (not only the ones to run now) must match, or the summary would average different
    # recipes. With --force every trial of the run is being replaced: by this process, or (with
    # --trial, as run_all --force --jobs N does) by the other workers, so their old configs are no
    # objection.
    selected = range(config["trials"]) if args.trial is None else [args.trial]
    pending = []
    finished = 0
    for trial in range(config["trials"]):
        directory = results.trial_dir(results_dir, copy.name, folder, trial, args.smoke, variant_name)
        record = _finished_record(directory / results.METRICS_FILE)
        finished += record is not None and not args.force  # --force replaces them
        if record is not None:
            recorded = str(record.get("provenance", {}).get("data", {}).get("fingerprint"))
            if recorded != copy.fingerprint:
                raise UsageError(
                    f"{directory} holds a trial on other data (sha256 {recorded[:16]}…, this data "
                    f"{copy.fingerprint[:16]}…) under the same name; move it away or give another "
                    f"--results-dir")
        if record is not None and not args.force:
            difference = config_difference(record.get("config", {}), config, default_config)
            if difference and args.rescore:
                raise UsageError(f"{directory} was run with another config ({difference}); to rescore it, "
                                 f"give the overrides it ran with (its metrics.json lists them)")
            if difference:
                raise UsageError(
                    f"{directory} was run with another config ({difference}): the recipe changed since; "
                    f"rerun with --force to replace such trials, or give another --results-dir to keep both")
        if trial in selected and (record is None or args.force):
            pending.append((trial, directory))
    if args.rescore:
        configure_tensorflow(args.threads, config["fix_seed"], config["jit_compile"])
        hardware = {**results.hardware(), "threads": args.threads or os.cpu_count()}
        for trial in selected:
            directory = results.trial_dir(results_dir, copy.name, folder, trial, args.smoke, variant_name)
            label = f"{where} trial {trial + 1}/{config['trials']}"
            if not (directory / results.METRICS_FILE).exists():
                log(f"{label}: not finished; nothing to rescore")
                continue
            with results.trial_lock(directory) as acquired:
                if acquired:
                    rescore_trial(directory, config, build_model, dataset, hardware, label, log)
                else:
                    log(f"{label}: another process is running it; not rescored")
        return EXIT_OK
    # Finished trials are counted over the whole experiment, also when --trial picks one of them.
    log(f"{where}: {config['trials']} trial(s), {finished} already finished on {copy.name}"
        + (f"; trial {args.trial + 1}/{config['trials']} " + ("to run" if pending else "finished")
           if args.trial is not None else "")
        + (f", overrides {overrides}" if overrides else "")
        + (f"; a variant, filed under "
           f"{results.experiment_dir(results_dir, copy.name, folder, args.smoke, variant_name)}" if variant else "")
        + (" [smoke]" if args.smoke else ""))
    if not pending:
        return EXIT_OK

    configure_tensorflow(args.threads, config["fix_seed"], config["jit_compile"])
    provenance = results.provenance({**copy.record(), "split_sizes": sizes}, folder)
    provenance["hardware"]["threads"] = args.threads or os.cpu_count()
    log(f"device: {provenance['hardware']['device']}, {provenance['hardware']['threads']} thread(s)")
    skipped = 0
    for trial, directory in pending:
        with results.trial_lock(directory) as acquired:
            if not acquired:
                log(f"{where} trial {trial}: another process is running it; skipped")
                skipped += 1
                continue
            if not args.force and (directory / results.METRICS_FILE).exists():
                continue  # another process finished it while we were busy with earlier trials
            if args.force:
                Checkpoint(directory / "checkpoint").remove()
            label = f"{where} trial {trial + 1}/{config['trials']}"
            base_directory = (results.trial_dir(results_dir, copy.name, source[0].name, trial, args.smoke, source[1])
                              if source else None)
            base_record = reusable_base_trial(base_directory, config, trial, copy.fingerprint, default_config)
            if base_record is not None:
                record, test_probabilities = score_base_weights(trial, directory, base_record, base_directory,
                                                                config, build_model, dataset, label, log)
            else:
                if source:
                    trains = variants.label(source[0].name, source[1])
                    log(f"{label}: {trains} trial {trial} has not kept trained weights for this "
                        f"recipe; training them here (the same training as {trains}'s)")
                record, test_probabilities = run_trial(trial, directory, config, build_model, dataset, label,
                                                       log, default_config)
            results.write_predictions(directory / results.PREDICTIONS_FILE, test_probabilities, dataset.y_test)
            record = {"experiment": experiment, "folder": folder, "base": base,
                      "explanation": explanation, "smoke": args.smoke, **record,
                      "epochs_max": config["epochs"], "default_trials": default_config["trials"],
                      "overrides": overrides, "variant": variant_name, "config": config, "provenance": provenance}
            results.atomic_write_json(directory / results.METRICS_FILE, record)
            Checkpoint(directory / "checkpoint").remove()
            test = record["metrics"]["test"]
            log(f"{label} done: test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}), "
                f"best epoch {record['best_epoch']} of {record['epochs_run']}, "
                f"{record['wall_seconds'] / 60:.1f} min -> {directory / results.METRICS_FILE}")
    if skipped:
        log(f"{where}: {skipped} trial(s) left to the other process running them")
    return EXIT_OK
