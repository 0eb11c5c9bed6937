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

import os
import sys
from pathlib import Path
from typing import Any, Callable

from common import data as fmnist
from common import results, variants
from common.checkpoint import Checkpoint
from common.cli import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, build_parser,
                        interrupts_kept, parse_config, stop_if_interrupted)
from common.experiments import RUNNER_DEFAULTS, config_difference
from common.record import SCHEMA_VERSION, data_fingerprint, read as read_record
from common.kept_weights import rescore_trial, reusable_base_trial, score_base_weights
from common import tensorflow_setup
from common.training import TrainingDiverged, run_trial


def configure_tensorflow(threads: int, fix_seed: bool, jit_compile: bool) -> None:
    try:
        tensorflow_setup.configure(threads, fix_seed, jit_compile)
    except ValueError as e:  # the threads of a process that already runs TensorFlow
        raise UsageError(str(e)) from None


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
        with interrupts_kept():  # Ctrl-C stops the trials even where Python would drop it
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
        record = read_record(directory / results.METRICS_FILE)
        finished += record is not None and not args.force  # --force replaces them
        if record is not None:
            recorded = str(data_fingerprint(record))
            if recorded != copy.fingerprint:
                raise UsageError(
                    f"{directory} holds a trial on other data (sha256 {recorded[:16]}…, this data "
                    f"{copy.fingerprint[:16]}…) under the same name; move it away or give another "
                    f"--results-dir")
        if record is not None and not args.force:
            difference = config_difference(record["config"], config, default_config)
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
        stop_if_interrupted()  # one dropped while the trial before was scored
        with results.trial_lock(directory) as acquired:
            if not acquired:
                log(f"{where} trial {trial}: another process is running it; skipped")
                skipped += 1
                continue
            if not args.force and (directory / results.METRICS_FILE).exists():
                continue  # another process finished it while we were busy with earlier trials
            if args.force:
                Checkpoint(directory / results.CHECKPOINT_DIR).remove()
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
            record = {"schema": SCHEMA_VERSION, "experiment": experiment, "folder": folder, "base": base,
                      "explanation": explanation, "smoke": args.smoke, **record,
                      "epochs_max": config["epochs"], "default_trials": default_config["trials"],
                      "overrides": overrides, "variant": variant_name, "config": config, "provenance": provenance}
            results.atomic_write_json(directory / results.METRICS_FILE, record)
            Checkpoint(directory / results.CHECKPOINT_DIR).remove()
            test = record["metrics"]["test"]
            log(f"{label} done: test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}), "
                f"best epoch {record['best_epoch']} of {record['epochs_run']}, "
                f"{record['wall_seconds'] / 60:.1f} min -> {directory / results.METRICS_FILE}")
    if skipped:
        log(f"{where}: {skipped} trial(s) left to the other process running them")
    return EXIT_OK
