"""Which trials a run makes, what state each is in, and in which order they may start.

run_all (local processes) and ray_backend (Ray tasks) both plan with this module: `plan` lists every
trial of a selection (each variant of each experiment) with its state on one data copy; an
evaluation-only trial waits for the trial whose weights it scores (`Trial.after`, `next_ready`);
`train_arguments` are the train.py arguments a trial runs with, wherever it runs.
"""

from __future__ import annotations

import argparse
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from common import experiments, results, variant_summary, variants


@dataclass(eq=False)  # identity: a trial is a unit of work, hashable as such
class Trial:
    folder: Path
    index: int
    trials: int  # how many trials the experiment runs in this invocation
    variant: dict = field(default_factory=dict)  # the overrides that make a variant of the recipe ({}: the recipe)
    planned_trials: int | None = None  # the trial count the experiment's variants.txt gives this variant
    state: str = "pending"  # done | pending | resumable | locked
    after: Trial | None = None  # the base's same trial, for an evaluation-only experiment: it waits for it
    lock: Path | None = None  # the trial folder's lock file, held while some process runs the trial
    returncode: int | None = None
    error: str = ""
    held: str = ""  # why it was not started (run_all --until), "" if it was or may be
    seconds: float = 0.0
    last_line: str = ""
    tail: deque = field(default_factory=lambda: deque(maxlen=15))

    @property
    def variant_name(self) -> str:
        return variants.name(self.variant)

    @property
    def label(self) -> str:
        """The experiment, or the variant: exp104_bs64_lr1e-4/l2=0.01."""
        return variants.label(self.folder.name, self.variant_name)

    @property
    def name(self) -> str:
        return f"{self.label} trial {self.index}"

    def directory(self, results_dir: Path, data_name: str, smoke: bool) -> Path:
        return results.trial_dir(results_dir, data_name, self.folder.name, self.index, smoke, self.variant_name)


def experiment_variants(folder: Path, args: argparse.Namespace) -> list[tuple[dict, int | None]]:
    """The variants of one experiment that the run asks for, each with its own trial count (None: the
    run's): every combination of --set's values, the variants its variants.txt lists (--planned), each
    with --epochs; [({}, None)], the recipe, without --set and --planned. Raises variants.VariantError
    for a key the experiment lacks."""
    recipe = experiments.read_definition(folder).effective_config()
    sets, planned = getattr(args, "set", None) or [], getattr(args, "planned", False)
    epochs = {"epochs": str(args.epochs)} if getattr(args, "epochs", None) else {}
    chosen: dict[str, tuple[dict, int | None]] = {}
    wanted = [(combination, None) for combination in variants.grid(sets)] if sets or not planned else []
    if planned:
        wanted += [({k: variants.command_value(v) for k, v in plan.variant.items()}, plan.trials)
                   for plan in variant_summary.planned(folder)]
    for raw, trials in wanted:
        variant = variants.of(variants.typed(folder, {**raw, **epochs}), recipe)
        chosen.setdefault(variants.name(variant), (variant, trials))  # two combinations may make one variant
    return list(chosen.values())


def plan(folders: list[Path], args: argparse.Namespace, results_dir: Path, data_name: str) -> list[Trial]:
    """Every trial of the selection (each variant of each experiment) and its state on this data
    (trials on other data never count)."""
    trials = []
    for folder in folders:
        default = experiments.read_definition(folder).config["trials"]
        for variant, planned_trials in experiment_variants(folder, args):
            count = args.trials or (1 if args.smoke else planned_trials or default)
            for index in range(count):
                trial = Trial(folder, index, count, variant, planned_trials)
                directory = trial.directory(results_dir, data_name, args.smoke)
                trial.lock = directory / results.LOCK_FILE
                if (directory / results.METRICS_FILE).exists() and not args.force:
                    trial.state = "done"
                elif results.is_locked(trial.lock):
                    trial.state = "locked"
                elif (directory / results.CHECKPOINT_DIR / results.CHECKPOINT_STATE).exists():
                    trial.state = "resumable"
                trials.append(trial)
    # An evaluation-only experiment (exp207 over exp206), or a variant of evaluation keys only, scores the
    # weights that the same trial of what trains alike keeps (variants.weights_source): where that trial
    # is still to run, here or in another process, wait for it rather than train the same weights twice.
    to_run = {(t.folder, t.variant_name, t.index): t for t in trials if t.state in ("pending", "resumable", "locked")}
    sources = {}  # (folder, variant name): its weights' source; reading train.py files once for each
    for trial in trials:
        key = (trial.folder, trial.variant_name)
        if key not in sources:
            sources[key] = variants.weights_source(trial.folder, trial.variant)
        source = sources[key]
        if source is not None:
            trial.after = to_run.get((*source, trial.index))
    return trials


def threads_per_trial(jobs: int) -> int:
    """TensorFlow threads for each of `jobs` trials side by side: the cores shared out; 0 (TensorFlow's
    default, every core) for one trial at a time."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0


def train_arguments(trial: Trial, args: argparse.Namespace, threads: int) -> list[str]:
    """The train.py arguments that come from run_all's options, wherever the trial runs."""
    arguments = ["--trial", str(trial.index), *variants.arguments(trial.variant)]  # --epochs among them
    if args.trials or (trial.planned_trials and not args.smoke):
        arguments += ["--trials", str(trial.trials)]
    if args.data_dir:
        arguments += ["--data-dir", args.data_dir]
    if args.smoke:
        arguments.append("--smoke")
    if threads:
        arguments += ["--threads", str(threads)]
    return arguments


def waits_elsewhere(trial: Trial) -> bool:
    """True while the trial waits for a base trial that another process is running."""
    return trial.after is not None and trial.after.state == "locked" and results.is_locked(trial.after.lock)


def next_ready(waiting: deque[Trial]) -> Trial | None:
    """Take the first waiting trial that waits for no other (see Trial.after)."""
    for trial in waiting:
        after = trial.after  # ended here, or let go by the process that ran it elsewhere
        if (after is None or after.returncode is not None
                or (after.state == "locked" and not results.is_locked(after.lock))):
            waiting.remove(trial)
            return trial
    return None
