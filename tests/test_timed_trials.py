"""scripts/timed_trials.sh (pending trials within a time limit, packed for merge) and run_all's interrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from common import cli, run_all
from conftest import REPO, drop_an_interrupt, run_script, trial_path

SCRIPT = REPO / "scripts" / "timed_trials.sh"


def timed_trials(*args: str, results, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "FASHION_MNIST_RESULTS_DIR": str(results)}
    env.pop("FASHION_MNIST_DIR", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_packs_only_the_trials_this_run_finished_and_merge_files_them(tiny_data, tiny_name, tmp_path):
    results, out = tmp_path / "lent" / "results", tmp_path / "out"
    options = ["--only", "exp001", "--epochs", "1", "--data-dir", str(tiny_data)]
    first = timed_trials("5m", str(out), *options, "--trials", "1", results=results)
    assert first.returncode == 0, first.stdout + first.stderr
    trial = f"results/{tiny_name}/exp001_simple_dense/variants/epochs=1/trial_0"  # one epoch: a variant
    with tarfile.open(out / "trials.tar.gz") as archive:
        assert sorted(archive.getnames()) == [f"{trial}/history.csv", f"{trial}/metrics.json",
                                              f"{trial}/predictions.npz"]

    # A second run finds trial 0 done, trains trial 1 and packs that one alone.
    second = timed_trials("5m", str(out), *options, "--trials", "2", results=results)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 to run, 1 done" in second.stdout
    with tarfile.open(out / "trials.tar.gz") as archive:
        assert {name.rsplit("/", 1)[0] for name in archive.getnames()} == {trial.replace("trial_0", "trial_1")}
    assert (out / "run_all.out").read_text().count("ok    exp001_simple_dense/epochs=1 trial 1") == 1

    # Back home, as the script's header says: unpack, then merge files the trial under its data.
    (tmp_path / "back").mkdir()
    subprocess.run(["tar", "xzf", str(out / "trials.tar.gz"), "-C", str(tmp_path / "back")], check=True)
    home = tmp_path / "home"
    merged = run_script("-m", "common.merge", str(tmp_path / "back" / "results"), "--results-dir", str(home), cwd=REPO)
    assert merged.returncode == 0, merged.stderr
    sent = json.loads((trial_path(results, "exp001_simple_dense", 1) / "metrics.json").read_text())
    got = json.loads((trial_path(home, "exp001_simple_dense", 1) / "metrics.json").read_text())
    assert got["metrics"] == sent["metrics"]



def test_pack_weights_carries_the_kept_weights_to_a_clone_that_has_the_trial(tiny_data, tiny_name, tmp_path,
                                                                              monkeypatch):
    """PACK_WEIGHTS=1: the trained weights travel too, and merge gives them to a copy of the same trial
    without them (a clone holds committed trials, never their weights), which evaluation-only
    experiments (exp207) score."""
    results, out = tmp_path / "lent" / "results", tmp_path / "out"
    monkeypatch.setenv("PACK_WEIGHTS", "1")
    done = timed_trials("5m", str(out), "--only", "exp001", "--epochs", "1", "--trials", "1",
                        "--data-dir", str(tiny_data), results=results)
    assert done.returncode == 0, done.stdout + done.stderr
    trial = f"results/{tiny_name}/exp001_simple_dense/variants/epochs=1/trial_0"
    with tarfile.open(out / "trials.tar.gz") as archive:
        assert f"{trial}/model.weights.h5" in archive.getnames()
    subprocess.run(["tar", "xzf", str(out / "trials.tar.gz"), "-C", str(tmp_path)], check=True)

    home = tmp_path / "home"  # the clone: the committed files of the same trial, no weights
    clone_trial = home / tiny_name / "exp001_simple_dense" / "variants" / "epochs=1" / "trial_0"
    clone_trial.mkdir(parents=True)
    for name in ("metrics.json", "history.csv", "predictions.npz"):
        (clone_trial / name).write_bytes((tmp_path / trial / name).read_bytes())
    merged = run_script("-m", "common.merge", str(tmp_path / "results"), "--results-dir", str(home), cwd=REPO)
    assert merged.returncode == 0, merged.stderr
    assert "1 already there" in merged.stdout and "added the kept weights" in merged.stdout
    assert (clone_trial / "model.weights.h5").read_bytes() == (tmp_path / trial / "model.weights.h5").read_bytes()

def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    for args in (["8 minutes", str(tmp_path / "out")], ["8m"], ["8m", str(tmp_path / "out"), "--results-dir", "x"]):
        done = timed_trials(*args, results=tmp_path / "results", timeout=60)
        assert done.returncode == 2, args
        assert "usage" in done.stderr or "FASHION_MNIST_RESULTS_DIR" in done.stderr
    assert not (tmp_path / "results").exists()


def test_run_all_interrupted_keeps_the_running_trial_resumable(tiny_data, tmp_path):
    """What the time limit does: SIGINT to run_all reaches the trial, which keeps its last epoch."""
    command = [sys.executable, "-m", "common.run_all", "--only", "exp001", "--trials", "1", "--epochs", "500",
               "--data-dir", str(tiny_data), "--results-dir", str(tmp_path)]
    # started as a script's background job is (`run_all &`): with SIGINT ignored, which run_all undoes
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=ignore_sigint)
    pattern = "*/exp001_simple_dense/variants/epochs=500/trial_0/checkpoint/state.json"
    deadline = time.time() + 240
    while not any(tmp_path.glob(pattern)) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # until the trial has checkpointed its first epoch
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == run_all.EXIT_INTERRUPTED, output
    state = json.loads(next(tmp_path.glob(pattern)).read_text())
    assert 1 <= state["epoch"] < 500
    assert not list(tmp_path.glob("*/exp001_simple_dense/variants/epochs=500/trial_0/metrics.json"))
    report = next(line for line in output.splitlines()  # the report's row, after the plan's
                  if line.startswith("exp001_simple_dense/epochs=500") and line.endswith("interrupted"))
    minutes = float(report.split()[4])  # experiment, trials done, ran now, failed, minutes, error
    assert 0 <= minutes < 10, report  # the trial's own time, not a clock reading


def test_an_interrupt_python_drops_in_a_finalizer_still_stops_the_run(python_sigint):
    """A Ctrl-C whose KeyboardInterrupt is raised while a finalizer runs (TensorFlow runs many at each
    epoch's end) is dropped by Python; interrupts_kept remembers it and stop_if_interrupted raises it."""
    with cli.interrupts_kept():
        cli.stop_if_interrupted()  # no interrupt yet: nothing to raise
        drop_an_interrupt()
        assert python_sigint == [KeyboardInterrupt]  # Python printed it and went on
        with pytest.raises(KeyboardInterrupt):
            cli.stop_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cli.stop_if_interrupted()  # forgotten once the run is over
