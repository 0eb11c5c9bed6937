"""One trial's training: the model on the project's training path, the epoch loop with early stopping
and checkpoints (a rerun resumes), then the evaluation of its best epoch."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import data as fmnist
from common import flops, results, speed
from common.checkpoint import Checkpoint, history_csv, layers_only, save_weights
from common.cli import UsageError, stop_if_interrupted
from common.evaluation import evaluate, scoring_passes
from common.experiments import config_difference


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the trial cannot finish."""


def trial_seed(config: dict, trial: int) -> int:
    """Trial i uses seed + i; without seed fixing a fresh random seed is drawn for every run."""
    if config["fix_seed"]:
        return int(config["seed"]) + trial
    return int(np.random.default_rng().integers(2**31 - 1))


def _epoch_line(prefix: str, row: dict, epochs: int, best: bool) -> str:
    speed = (f"  {row['images_per_second']:.0f} img/s" if row.get("images_per_second") else "") + (
        f" {row['gflops_per_second']:.1f} GFLOP/s" if row.get("gflops_per_second") else "")
    return (f"{prefix} epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f} acc {row['accuracy']:.4f}"
            f"  val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
            f"  {row['seconds']:.1f}s{speed}{'  *' if best else ''}")


def build(build_model: Callable[[dict], Any], config: dict, dataset: fmnist.FashionMNIST):
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


def adapt(model, images: np.ndarray) -> None:
    """Let the layers that learn from the data before training (Keras' preprocessing convention, a
    method `adapt`: a whitening first layer, say) see the training images."""
    for layer in flops.all_layers(model):
        if callable(getattr(layer, "adapt", None)):
            layer.adapt(images)


def kept_model(build_model: Callable[[dict], Any], config: dict, dataset: fmnist.FashionMNIST, seed: int,
                weights: Path):
    """The recipe's compiled model holding a trial's kept weights."""
    import keras

    if config["fix_seed"]:
        keras.utils.set_random_seed(seed)
    model, _ = build(build_model, config, dataset)
    layers_only(model).load_weights(weights)
    return model


def run_trial(trial: int, directory: Path, config: dict, build_model: Callable[[dict], Any],
              dataset: fmnist.FashionMNIST, label: str, log: Callable[[str], None],
              defaults: dict | None = None) -> tuple[dict, np.ndarray]:
    """Train one trial to the end (resuming its checkpoint if any); its metrics record and the test
    set's class probabilities. `defaults`: the experiment's CONFIG, for checkpoints of older code."""
    import keras

    from common import pipeline

    checkpoint = Checkpoint(directory / results.CHECKPOINT_DIR)
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
    model, path = build(build_model, config, dataset)
    try:  # the operations one training image costs, for the speed in each epoch line
        forward = flops.forward_flops(model)
    except (AttributeError, ValueError):  # a layer whose output shape is not known before training
        forward = None
    clock = speed.training_clock()
    if state:
        checkpoint.restore(model, state["weights"])
        log(f"{label}: resuming after epoch {state['epoch']} (best so far: epoch {state['best_epoch']})")
    else:
        start = time.perf_counter()
        adapt(model, dataset.x_train)  # a resumed trial has these weights in its checkpoint
        state = {"seed": seed, "config": config, "epoch": 0, "best_epoch": 0,
                 "best_value": math.inf if config["monitor"] == "val_loss" else -math.inf,
                 "wait": 0, "history": [], "wall_seconds": time.perf_counter() - start,
                 "started_at": results.now_iso(), "sittings": 0}
    state["sittings"] += 1

    x_valid, y_valid = dataset.x_valid, dataset.y_valid
    valid_ds = pipeline.eval_dataset(x_valid, y_valid, config)
    while state["epoch"] < config["epochs"] and state["wait"] < config["patience"]:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        train_ds = pipeline.train_dataset(dataset.x_train, dataset.y_train, config,
                                          pipeline.epoch_seed(seed, epoch), epoch=epoch, trial_seed=seed)
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
        stop_if_interrupted()  # one that came during the epoch and was dropped: the epoch is kept

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
        "scoring_passes": scoring_passes(config),
    }
    # In the trial's folder only now: an unfinished trial leaves nothing there that looks like a result.
    results.atomic_write_text(directory / results.HISTORY_FILE, history_csv(state["history"]))
    save_weights(layers_only(model), directory / results.WEIGHTS_FILE)
    return record, test_probabilities
