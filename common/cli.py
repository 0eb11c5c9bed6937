"""The command line of every experiment's train.py: the common flags, one flag per CONFIG key, and
the checks on the effective config; the exit codes every tool returns, the error a user fixes by
changing the command, and Ctrl-C made certain to stop a run. Importing it does not start TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from pathlib import Path

from common import results
from common import data as fmnist
from common.experiments import RUNNER_DEFAULTS
from common.variants import parse_like

# Config keys the runner itself reads; every other key is the experiment's own (build_model reads it).
REQUIRED_KEYS = ("trials", "seed", "epochs", "patience", "batch_size")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# Ctrl-C (SIGINT) raises KeyboardInterrupt, and Python drops an exception raised while a finalizer
# (__del__) runs: TensorFlow runs many at each epoch's end, so an interrupt can vanish and the trial
# run on to its end. Within `interrupts_kept` each SIGINT is also remembered, and the loops that run
# long (a trial's epochs, run_all's trials) check for one at each turn.
_interrupted = threading.Event()


@contextlib.contextmanager
def interrupts_kept():
    """SIGINT raises KeyboardInterrupt as Python's own handler does, and is remembered for
    `stop_if_interrupted`. Only where Python's handler is in place (the main thread; not a process
    started with SIGINT ignored, which stays as it is)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum, frame):
        _interrupted.set()
        raise KeyboardInterrupt

    _interrupted.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _interrupted.clear()


def stop_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a SIGINT whose own was dropped (see `interrupts_kept`)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


class UsageError(Exception):
    """A problem the user fixes by changing the command; the message says how."""


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
    from common import augment  # here: augment starts TensorFlow, which tools that only plan never need

    try:
        augment.check_config(effective)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if effective["monitor"] not in ("val_loss", "val_accuracy"):
        raise UsageError(f"--monitor {effective['monitor']!r}: early stopping watches val_loss or val_accuracy")
    if effective["valid_split"] not in fmnist.VALID_SPLITS:
        raise UsageError(f"--valid_split {effective['valid_split']!r}: one of {', '.join(fmnist.VALID_SPLITS)}")
    return args, effective, overrides
