"""run_all on a local Ray: same metrics as without Ray at the same threads, failures reported, dead workers
and killed trials retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common import schedule
from conftest import REPO, run_script

pytest.importorskip("ray")
# One worker runs these one after another (pytest -n): the kill test finds its trial among all processes.
pytestmark = pytest.mark.xdist_group("ray")


# A Ray task that asks for no GPU sees none (Ray empties CUDA_VISIBLE_DEVICES for it): the plain runs
# compared with Ray trials run on the CPU too, so that on a machine with a GPU both sides compute alike.
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def metrics_by_trial(results):
    return {p.relative_to(results).as_posix(): json.loads(p.read_text())["metrics"]
            for p in sorted(results.rglob("metrics.json"))}


def test_ray_gives_the_same_metrics_as_plain_run_all_and_the_driver_writes_the_files(tiny_data, tmp_path):
    from common import ray_backend

    # --jobs 2 on both sides: plain run_all gives each trial cores/2 threads, and Ray by default reserves
    # as many CPUs per trial and gives it as many threads (on any core count; exact equality needs that).
    common = ["-m", "common.run_all", "--only", "exp001", "exp002", "--smoke", "--jobs", "2"]
    plain = run_script(*common, "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "plain"), cwd=REPO,
                       env=CPU_ONLY)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    # The data named relative to the driver's folder: the workers, in a folder of their own, get it too.
    on_ray = run_script(*common, "--ray", "--data-dir", tiny_data.name,
                        "--results-dir", str(tmp_path / "ray"), cwd=tiny_data.parent, env={"PYTHONPATH": str(REPO)})
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    assert "(Ray task)" in on_ray.stdout and "exp002_conv         1/1        1       0" in on_ray.stdout
    ours, theirs = metrics_by_trial(tmp_path / "plain"), metrics_by_trial(tmp_path / "ray")
    assert len(ours) == 2 and ours == theirs  # the same threads per trial on both sides: the same numbers
    threads = {json.loads(p.read_text())["provenance"]["hardware"]["threads"] for p in (tmp_path / "ray").rglob(
        "metrics.json")}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}
    # Workers train in their own scratch folders; only the driver writes into the results directory.
    log = (tmp_path / "ray" / "run_all.log").read_text()
    assert "/fmnist-trial-" not in on_ray.stdout and str(tmp_path / "ray") in on_ray.stdout
    trial = next((tmp_path / "ray").rglob("exp002_conv/trial_0"))
    assert sorted(p.name for p in trial.iterdir() if not p.name.startswith(".")) == [
        "history.csv", "metrics.json", "model.weights.h5", "predictions.npz"]  # the weights kept, as locally
    assert " on " in log  # each trial's output, with the node that ran it
    record = json.loads((trial / "metrics.json").read_text())
    assert record["provenance"]["git"]["commit"]  # the driver's account of the code the worker ran

    class Args:
        trials, epochs, data_dir, smoke = 2, None, "/data/on/the/workers", False
    trial = schedule.Trial(REPO / "exp002_conv", 1, 2, {"learning_rate": 0.01})  # a variant: its overrides go along
    command = ray_backend.trial_command(trial, Args, 1)
    assert command == ["exp002_conv/train.py", "--trial", "1", "--learning_rate", "0.01", "--trials", "2",
                       "--data-dir", "/data/on/the/workers", "--threads", "1"]  # no results directory: the
    # worker picks a scratch one


def test_an_evaluation_only_trial_scores_its_bases_weights_on_ray_too(tiny_data, tmp_path):
    """exp207 goes to a worker once exp206's same trial has ended, with that trial's kept weights."""
    results = tmp_path / "results"
    done = run_script("-m", "common.run_all", "--ray", "--only", "exp206", "exp207", "--smoke", "--cpus-per-trial", "1",
                      "--data-dir", str(tiny_data), "--results-dir", str(results), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scoring the weights exp206_longer_schedule trial 0 trained" in (results / "run_all.log").read_text()
    base, flip = (next(results.rglob(f"{folder}/trial_0")) for folder in ("exp206_longer_schedule",
                                                                          "exp207_test_time_flip"))
    record = json.loads((flip / "metrics.json").read_text())
    assert record["weights_from"]["folder"] == "exp206_longer_schedule" and (flip / "model.weights.h5").exists()
    assert (flip / "history.csv").read_bytes() == (base / "history.csv").read_bytes()


def test_a_failing_trial_is_reported_and_the_others_finish(tiny_data, tmp_path):
    results = tmp_path / "results"
    # exp001 already has a trial of its recipe as it was before a change: a trial of the recipe as it
    # is now may not join it, Ray or not.
    assert run_script(str(REPO / "exp001_simple_dense" / "train.py"), "--data-dir", str(tiny_data),
                      "--results-dir", str(results), "--epochs", "3").returncode == 0
    metrics = next(results.rglob("exp001_simple_dense/variants/epochs=3/trial_0/metrics.json"))
    metrics.write_text(metrics.read_text().replace('"learning_rate": 0.001', '"learning_rate": 0.5'))
    before = metrics_by_trial(results)
    done = run_script("-m", "common.run_all", "--ray", "--only", "exp001", "exp002", "--trials", "2", "--epochs", "3",
                      "--data-dir", str(tiny_data), "--results-dir", str(results), cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  exp001_simple_dense/epochs=3 trial 1" in done.stdout
    assert "another config (learning_rate 0.5 -> 0.001)" in done.stdout
    after = metrics_by_trial(results)
    assert {k: v for k, v in after.items() if k in before} == before  # the old trial untouched
    assert sum("exp002_conv/variants/epochs=3" in k for k in after) == 2
    assert not any("exp001_simple_dense/variants/epochs=3/trial_1" in k for k in after)


def test_a_dead_worker_and_a_killed_train_py_are_both_retried(tiny_data, tmp_path):
    """Trial 0: its Ray worker is killed (the trial's process dies with it). Trial 1: its train.py
    process itself is killed, as the OOM killer does, the worker living on. Both run again from the
    start and are filed with the numbers of an uninterrupted run at the same thread count."""
    command = [sys.executable, "-m", "common.run_all", "--ray", "--only", "exp001", "--epochs", "25", "--trials", "2",
               "--cpus-per-trial", "1", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "results")]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **CPU_ONLY})
    killed = {}  # trial index: the pid killed
    deadline = time.time() + 120
    while len(killed) < 2 and time.time() < deadline and driver.poll() is None:
        for pid in os.listdir("/proc"):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                if not (any(b"/fmnist-trial-" in part for part in cmdline)
                        and b"exp001_simple_dense/train.py" in cmdline[2]):
                    continue
                index = int(cmdline[cmdline.index(b"--trial") + 1])
                if index in killed:
                    continue  # its retry: left to finish
                time.sleep(3)  # let it train a little
                if index == 0:  # the Ray worker, the trial's parent
                    victim = int(open(f"/proc/{pid}/stat").read().split(")")[1].split()[1])
                else:  # the training process itself
                    victim = int(pid)
                os.kill(victim, signal.SIGKILL)
                killed[index] = victim
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.2)
    out = driver.communicate(timeout=300)[0]
    assert sorted(killed) == [0, 1], out
    assert driver.returncode == 0, out
    assert "ok    exp001_simple_dense/epochs=25 trial 0" in out and "ok    exp001_simple_dense/epochs=25 trial 1" in out
    plain = run_script(str(REPO / "exp001_simple_dense" / "train.py"), "--data-dir", str(tiny_data), "--epochs", "25",
                       "--trials", "2", "--threads", "1", "--results-dir", str(tmp_path / "plain"), env=CPU_ONLY)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    ours, theirs = metrics_by_trial(tmp_path / "results"), metrics_by_trial(tmp_path / "plain")
    assert len(ours) == 2 and ours == theirs  # restarted with the same seed, one thread each: the same numbers


@pytest.mark.parametrize("code, retried", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", True),  # killed: return code -9
    ("import sys; sys.exit(137)", True),  # 128 + 9, as a shell reports a killed child
    ("import sys; sys.exit(1)", False),  # train.py's own failure (a NaN loss): reported, not retried
    ("import sys; sys.exit(2)", False),  # bad input: it would fail again
])
def test_which_endings_of_train_py_count_as_a_dead_worker(code, retried):
    from common import ray_backend

    if retried:
        with pytest.raises(ray_backend.TrainProcessKilled, match=r"exp001_simple_dense/train.py --trial 0 was killed"):
            ray_backend.run_trial_task(["-c", code], "exp001_simple_dense", 0, {})
    else:
        reply = ray_backend.run_trial_task(["-c", code], "exp001_simple_dense", 0, {})
        assert reply["returncode"] == int(code[-2]) and reply["files"] == {}
