"""run_all on Ray: every pending trial as one Ray task, on this machine or on a cluster.

    python -m common.run_all --ray                          # a local Ray on this machine
    python -m common.run_all --ray auto --gpus-per-trial 0.25   # the cluster this machine belongs to

The driver (the machine running run_all) owns the results directory; workers need no shared
filesystem. A task runs the trial's train.py as a fresh process in a scratch folder of its worker
(so TensorFlow's GPU memory is freed when the trial ends), then sends the trial's files back, with
the weights it kept; the driver checks that the trial ran on the data it expects and with the recipe
of the trials already there, and writes the files atomically into
results/<data name>/<experiment>/trial_<i>/, metrics.json last. A worker that dies mid-trial (killed,
out of memory, a lost node) has its trial retried
from the start with the same seed, `--retries` times (default 2), and so does a trial whose train.py
process is ended by a signal (a negative return code, or 128+N as a shell reports it): the OOM killer
picks the largest process, which is train.py, not the Ray worker. A train.py that exits with its own
error code (1: the trial failed, e.g. a NaN loss; 2: bad input) is reported, not retried, and the
others go on. A trial of an evaluation-only experiment (exp207)
is submitted once its base's same trial has ended, and takes that trial's kept weights along to score.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from common import experiments, results, variants
from common.schedule import next_ready, train_arguments, waits_elsewhere

# What a task sends back, metrics.json last: the weights the trial kept (local state, a few MB:
# `train.py --rescore` and evaluation-only experiments read them) and its result files (about 30 KB).
TRIAL_FILES = results.TRIAL_FILES
# The code the workers receive (Ray's working_dir); results and environments stay on the driver.
EXCLUDES = [".git", ".venv*", "results", "**/__pycache__", ".pytest_cache", "*.png"]


class TrainProcessKilled(RuntimeError):
    """The trial's train.py was ended by a signal: a dead worker's trial, which Ray retries."""


def killed_by_signal(returncode: int) -> bool:
    """A return code that means "ended by a signal": -N from subprocess, 128+N from a shell (130 for a
    Ctrl-C, 137 for SIGKILL); train.py's own codes are 0, 1 and 2."""
    return returncode < 0 or returncode > 128


def _die_with_parent() -> None:
    """In the trial's process: end when the Ray worker that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_trial_task(command: list[str], folder: str, index: int, git: dict,
                   inputs: dict[str, bytes] | None = None, variant: str = "") -> dict:
    """On a worker: run one trial (of `variant`, "" for the recipe) in a scratch folder and return its
    files and its output. `inputs`: files to put in the scratch results folder first (relative path:
    content), e.g. the base trial whose weights an evaluation-only experiment scores."""
    with tempfile.TemporaryDirectory(prefix="fmnist-trial-") as scratch:
        for relative, content in (inputs or {}).items():
            (Path(scratch) / relative).parent.mkdir(parents=True, exist_ok=True)
            (Path(scratch) / relative).write_bytes(content)
        process = subprocess.run([sys.executable, "-u", *command, "--results-dir", scratch],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, results.GIT_STATE_ENV_VAR: json.dumps(git)},
                                 preexec_fn=_die_with_parent)
        if killed_by_signal(process.returncode):  # raised, so that Ray runs the task again
            signal_number = -process.returncode if process.returncode < 0 else process.returncode - 128
            name = signal.Signals(signal_number).name if signal_number in signal.valid_signals() else "signal"
            raise TrainProcessKilled(f"{folder}/train.py --trial {index} was killed ({name}, return code "
                                     f"{process.returncode}) on {os.uname().nodename}")
        # results/<data name>/... or results/smoke/<data name>/...: the data's name is the trial's to say
        data_dirs = [*Path(scratch).iterdir(), *Path(scratch, results.SMOKE_SUBDIR).glob("*")]
        found = [path for path in (results.trial_dir(d.parent, d.name, folder, index, variant=variant)
                                   / results.METRICS_FILE for d in data_dirs if d.is_dir()) if path.exists()]
        files = ({name: (found[0].parent / name).read_bytes() for name in TRIAL_FILES
                  if (found[0].parent / name).exists()} if process.returncode == 0 and found else {})
    return {"returncode": process.returncode, "output": process.stdout, "files": files,
            "node": os.uname().nodename, "scratch": str(found[0].parent) if found else ""}


def trial_command(trial, args: argparse.Namespace, threads: int) -> list[str]:
    """The train.py command line a worker runs, relative to the code it received (no results dir:
    the worker adds its own scratch folder)."""
    return [f"{trial.folder.name}/train.py", *train_arguments(trial, args, threads)]


def accept(trial, reply: dict, copy, results_dir: Path, smoke: bool, force: bool) -> str:
    """Write a finished trial's files into the results directory; returns "" or why it was refused."""
    record = json.loads(reply["files"][results.METRICS_FILE])
    ran_on = record["provenance"]["data"]["fingerprint"]
    if ran_on != copy.fingerprint:
        return (f"refused: the trial ran on other data (sha256 {ran_on[:16]}…, expected {copy.name}, "
                f"{copy.fingerprint[:16]}…); give --data-dir a path that holds the same copy on every node")
    directory = trial.directory(results_dir, copy.name, smoke)
    if not force:  # the same rule as train.py: one recipe per experiment (or variant) and data
        defaults = experiments.read_definition(trial.folder).config
        for other in sorted(directory.parent.glob(f"trial_*/{results.METRICS_FILE}")):  # this variant's alone
            difference = experiments.config_difference(json.loads(other.read_text()).get("config", {}),
                                                        record["config"], defaults)
            if difference:
                return (f"refused: {other.parent} was run with another config ({difference}); rerun with "
                        f"--force to replace such trials, or give another --results-dir")
    for name in TRIAL_FILES:  # metrics.json last: the trial counts as finished once it is there
        if name in reply["files"]:
            results.atomic_write_bytes(directory / name, reply["files"][name])
    shutil.rmtree(directory / results.CHECKPOINT_DIR, ignore_errors=True)  # a local run's leftover, now superseded
    return ""


def base_trial_files(trial, results_dir: Path, data_name: str, smoke: bool) -> dict[str, bytes]:
    """For a trial of an evaluation-only experiment (exp207 over exp206) or variant (test_time_flip
    only): the same trial of what trains alike (variants.weights_source) as the driver holds it
    (record, history, kept weights), to be scored on the worker instead of retrained. Empty when
    there is no such trial here: the worker then trains the weights itself."""
    source = variants.weights_source(trial.folder, trial.variant)
    if source is None:
        return {}
    directory = results.trial_dir(results_dir, data_name, source[0].name, trial.index, smoke, source[1])
    names = (results.WEIGHTS_FILE, results.HISTORY_FILE, results.METRICS_FILE)
    if not all((directory / name).exists() for name in names):
        return {}
    relative = directory.relative_to(results_dir)
    return {(relative / name).as_posix(): (directory / name).read_bytes() for name in names}


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install -r requirements.txt (it lists ray)") from None
    return ray


def execute(todo: list, args: argparse.Namespace, copy, log_path: Path, progress) -> bool:
    """Run the trials as Ray tasks; returns False when interrupted. Fills each trial's outcome."""
    ray = import_ray()

    address = None if args.ray == "local" else args.ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"working_dir": str(results.REPO_ROOT), "excludes": EXCLUDES})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"cannot start or reach Ray at {args.ray!r} ({type(e).__name__}: {e}); for a "
                             f"cluster, give the head's address (ray://host:10001 or 'auto' on a node of it) "
                             f"and set RAY_AUTH_MODE=token with the cluster's token (docs/cluster.md)") from None
    threads = max(1, int(args.cpus_per_trial))
    progress.parallel = max(1, int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_trial))
    # The trial runs in a process of its own under the task (so TensorFlow, and its GPU memory, end
    # with the trial); the Ray worker itself never starts TensorFlow, so Ray may reuse it.
    remote = ray.remote(run_trial_task).options(
        num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial, max_retries=args.retries,
        retry_exceptions=[TrainProcessKilled])
    in_flight, interrupted = {}, False
    waiting = deque(todo)
    with open(log_path, "a") as log, contextlib.ExitStack() as locks:
        resources = ray.cluster_resources()
        log.write(f"\n=== run_all --ray started {results.now_iso()}: {len(todo)} trial(s), "
                  f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs ===\n")

        def submit(trial) -> None:
            directory = trial.directory(args.results_dir, copy.name, args.smoke)
            progress.start(trial, " (Ray task)")
            if not locks.enter_context(results.trial_lock(directory)):  # held until the trial is written
                trial.returncode = 0
                trial.tail.append(f"{trial.name}: another process is running it; skipped")
                progress.end(trial)
                return
            code = results.git_state(["common", "requirements.txt", f"{trial.folder.name}/train.py"])
            inputs = base_trial_files(trial, args.results_dir, copy.name, args.smoke)
            in_flight[remote.remote(trial_command(trial, args, threads), trial.folder.name, trial.index,
                                    code, inputs, trial.variant_name)] = trial

        try:
            while waiting or in_flight:
                # Submit every trial that waits for no other; Ray runs what the resources allow. An
                # evaluation-only trial (exp207) goes once its base's same trial has ended (schedule.plan).
                while (trial := next_ready(waiting)) is not None:
                    submit(trial)
                if waiting and not in_flight and not any(map(waits_elsewhere, waiting)):
                    submit(waiting.popleft())  # nothing runs that they wait for: never hang
                if not in_flight:  # they wait for a base trial that another process runs
                    time.sleep(1.0)
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    trial = in_flight.pop(ref)
                    try:
                        reply = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a worker that kept dying, a lost node...
                        cause = getattr(e, "cause", None) or e  # a task's own exception, not Ray's wrapper
                        trial.returncode, trial.error = 1, f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
                        if isinstance(cause, TrainProcessKilled):
                            trial.error += f" (each of its {args.retries + 1} attempts)"
                    else:
                        directory = trial.directory(args.results_dir, copy.name, args.smoke)
                        output = reply["output"].replace(reply["scratch"], str(directory)) if reply["scratch"] \
                            else reply["output"]  # name the trial's place in the results, not the scratch folder
                        trial.tail.extend(output.splitlines()[-15:])
                        log.write("".join(f"[{trial.name} on {reply['node']}] {line}\n"
                                          for line in output.splitlines()))
                        trial.returncode = reply["returncode"]
                        if trial.returncode == 0 and reply["files"]:
                            trial.error = accept(trial, reply, copy, args.results_dir, args.smoke, args.force)
                        elif trial.returncode == 0:
                            trial.error = "the trial wrote no result files"
                    progress.end(trial)
                    log.flush()
        except KeyboardInterrupt:
            interrupted = True
            for ref, trial in in_flight.items():
                ray.cancel(ref, force=True)
                progress.interrupted(trial)
        finally:
            progress.close()
            ray.shutdown()
    return not interrupted
