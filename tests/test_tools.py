"""python -m common.run_all and python -m common.diff, as a user runs them."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import re
import math
import subprocess
import sys
import time

import pytest
from scipy import stats as scipy_stats

from common import diff, run_all, schedule
from conftest import REPO, run_script, trial_path
from test_summarize import record, write

# ---------------------------------------------------------------- run_all

SMOKE = ["--only", "exp001", "exp002", "--smoke"]


def test_dry_run_lists_without_running(tiny_data, tmp_path):
    done = run_script("-m", "common.run_all", *SMOKE, "--data-dir", str(tiny_data), "--results-dir",
                      str(tmp_path), "--dry-run", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "2 experiment(s), 2 trial(s): 2 to run, 0 done" in done.stdout
    assert "would run: python" in done.stdout and "exp002_conv/train.py --trial 0" in done.stdout
    assert not list(tmp_path.rglob("metrics.json"))


def test_round_robin_runs_trial_by_trial_across_experiments(tiny_data, tmp_path):
    done = run_script("-m", "common.run_all", "--only", "exp001", "exp002", "--trials", "2", "--round-robin",
                      "--dry-run", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path), cwd=REPO)
    order = [line.split("/train.py --trial ")[0].rsplit("/", 1)[1] + " " + line.split("--trial ")[1][0]
             for line in done.stdout.splitlines() if line.startswith("would run")]
    assert order == ["exp001_simple_dense 0", "exp002_conv 0", "exp001_simple_dense 1", "exp002_conv 1"]


def test_an_evaluation_only_trial_waits_for_its_bases_same_trial(tiny_data, tmp_path):
    """exp207 scores the weights exp206 keeps: run_all starts exp207 trial i only once exp206 trial i has ended."""
    import argparse
    from collections import deque

    folders = [REPO / "exp205_sgd_weight_decay", REPO / "exp206_longer_schedule", REPO / "exp207_test_time_flip"]
    args = argparse.Namespace(trials=2, smoke=False, force=False)
    trials = {(t.folder.name[:6], t.index): t for t in schedule.plan(folders, args, tmp_path, "tiny")}
    assert trials["exp207", 1].after is trials["exp206", 1] and trials["exp206", 1].after is None
    waiting = deque([trials["exp207", 0], trials["exp205", 1], trials["exp206", 1], trials["exp207", 1]])
    assert schedule.next_ready(waiting) is trials["exp205", 1]  # exp206 trial 0 still runs
    trials["exp206", 0].returncode = 0
    assert schedule.next_ready(waiting) is trials["exp207", 0]
    assert schedule.next_ready(waiting) is trials["exp206", 1] and schedule.next_ready(waiting) is None
    done = run_script("-m", "common.run_all", "--only", "exp20[67]", "--trials", "1", "--dry-run",
                      "--data-dir", str(tiny_data), "--results-dir", str(tmp_path), cwd=REPO)
    assert "(after exp206_longer_schedule trial 0: scores its weights)" in done.stdout


def test_an_evaluation_only_trial_waits_for_its_base_trial_running_elsewhere(tiny_data, tiny_name, tmp_path):
    """Another process runs exp206 trial 0: exp207 trial 0 waits for its lock rather than train its weights."""
    import argparse
    from collections import deque

    from common import results

    folders = [REPO / "exp206_longer_schedule", REPO / "exp207_test_time_flip"]
    args = argparse.Namespace(trials=1, smoke=False, force=False)
    base_dir = results.trial_dir(tmp_path, tiny_name, "exp206_longer_schedule", 0, False)
    with results.trial_lock(base_dir) as acquired:  # as a run of exp206 --trial 0 holds it
        assert acquired
        base, exp207 = schedule.plan(folders, args, tmp_path, tiny_name)
        assert base.state == "locked" and exp207.after is base
        waiting = deque([exp207])
        assert schedule.waits_elsewhere(exp207) and schedule.next_ready(waiting) is None
        with contextlib.redirect_stdout(io.StringIO()) as out:  # the plan says so
            assert run_all.main(["--only", "exp20[67]", "--trials", "1", "--dry-run", "--data-dir",
                                 str(tiny_data), "--results-dir", str(tmp_path)]) == 0
        assert "(after exp206_longer_schedule trial 0, running elsewhere: scores its weights)" in out.getvalue()
    assert not schedule.waits_elsewhere(exp207) and schedule.next_ready(waiting) is exp207  # lock let go


def test_only_given_again_queues_a_later_stage(tiny_data, tmp_path):
    done = run_script("-m", "common.run_all", "--only", "exp002", "--only", "exp001", "exp002", "--trials", "2",
                      "--round-robin", "--dry-run", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path),
                      cwd=REPO)
    order = [line.split("/train.py --trial ")[0].rsplit("/", 1)[1] + " " + line.split("--trial ")[1][0]
             for line in done.stdout.splitlines() if line.startswith("would run")]
    # exp002 in the first stage only; the second stage adds exp001's trials after it, round by round.
    assert order == ["exp002_conv 0", "exp002_conv 1", "exp001_simple_dense 0", "exp001_simple_dense 1"]
    assert "2 experiment(s), 4 trial(s): 4 to run" in done.stdout


def test_the_report_after_an_interrupt_counts_only_the_trials_that_started():
    queue = [schedule.Trial(REPO / "exp201_random_crop", i, 3) for i in range(3)]
    queue[0].returncode, queue[0].error, queue[0].seconds = 130, "interrupted", 600.0  # stopped mid-trial
    table = run_all.report(queue, queue).set_index("experiment").loc["exp201_random_crop"]
    assert (table["trials done"], table["ran now"], table["minutes"]) == ("0/3", 1, 10.0)


def test_time_left_comes_from_each_experiments_trials(monkeypatch):
    from pathlib import Path

    clock = [1000.0]
    monkeypatch.setattr(run_all.time, "time", lambda: clock[0])
    slow, fast = Path("exp110_resnet"), Path("exp001_simple_dense")
    todo = [schedule.Trial(slow, 0, 2), schedule.Trial(slow, 1, 2), schedule.Trial(fast, 0, 1)]
    progress = run_all.Progress(todo, parallel=2, typical_seconds={"exp110_resnet": 3600.0})
    # Nothing finished here yet: exp110 from the results (1 h each), exp001 from their mean (1 h).
    assert progress.counts().endswith("~1:30:00 left]")
    progress.start(todo[2])
    clock[0] += 60
    todo[2].returncode = 0
    progress.end(todo[2])  # exp001 took a minute: that is what its trials take now
    progress.start(todo[0])
    clock[0] += 1800
    # exp110 trial 0 half done (1800 s of 3600 left), trial 1 waiting (3600): 5400 s over 2 at once
    assert progress.counts() == "[1/3 trials, 0:31:00 elapsed, ~0:45:00 left]"


def test_until_reads_a_clock_time_or_a_span_and_refuses_anything_else():
    now = time.mktime((2026, 12, 6, 22, 30, 0, 0, 0, -1))  # local time, as --until's HH:MM
    assert run_all.parse_until("+90m", now) == now + 5400
    assert run_all.parse_until("+2h", now) == now + 7200
    assert run_all.parse_until("23:15", now) == now + 45 * 60
    assert run_all.parse_until("00:45", now) == time.mktime((2026, 12, 7, 0, 45, 0, 0, 0, -1))  # tomorrow's
    for bad in ("25:00", "tomorrow", "90m", "+90s", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="HH:MM"):
            run_all.parse_until(bad, now)


def test_until_starts_only_the_trials_expected_to_end_in_time(tiny_data, tiny_name, tmp_path):
    """exp001's trials take seconds, exp002's ten hours (in the results), exp003 has none to go by:
    with 30 minutes, only exp001's next trial starts; the others are held back and listed."""
    for folder, seconds in (("exp001_simple_dense", 5.0), ("exp002_conv", 36000.0)):
        finished = record(folder[:6], folder, 0, 0.9, name=tiny_name)
        finished["wall_seconds"] = seconds
        write(tmp_path, folder, 0, finished)
    options = ["--only", "exp001", "exp002", "exp003", "--trials", "2", "--epochs", "1", "--until", "+30m",
               "--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--no-readme"]
    preview = run_script("-m", "common.run_all", *options, "--dry-run", cwd=REPO)
    assert preview.returncode == 0, preview.stderr
    assert re.search(r"would run \(~0:00:05\): python \S+exp001_simple_dense/train.py --trial 0", preview.stdout)
    assert re.search(r"would hold back \(expected to take 10:00:00, to end 9:30:\d\d after --until \d\d:\d\d\)"
                     r": python \S+exp002_conv/train.py --trial 0", preview.stdout)
    done = run_script("-m", "common.run_all", *options, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = sorted(path.parent.relative_to(tmp_path).as_posix() for path in tmp_path.glob("*/*/*/*/*/metrics.json"))
    assert ran == [f"{tiny_name}/exp001_simple_dense/variants/epochs=1/trial_{i}" for i in (0, 1)]
    held = done.stdout.split("held back by --until")[1]
    assert "exp002_conv/epochs=1 trial 0: expected to take 10:00:00" in held
    assert "exp003_batch_norm/epochs=1 trial 1: no finished trial of its experiment" in held
    assert "exp001" not in held


def test_smoke_runs_do_not_take_their_time_left_from_full_trials(tiny_data, tiny_name, tmp_path):
    slow = record("exp002", "exp002_conv", 0, 0.9, name=tiny_name)
    slow["wall_seconds"] = 36000.0  # a full exp002 trial of ten hours in the results
    write(tmp_path, "exp002_conv", 0, slow)
    done = run_script("-m", "common.run_all", *SMOKE, "--data-dir", str(tiny_data), "--results-dir",
                      str(tmp_path), cwd=REPO)
    assert done.returncode == 0, done.stderr
    first = next(line for line in done.stdout.splitlines() if line.startswith("ok    exp001"))
    hours = int(first.rsplit("~", 1)[1].split(":")[0])
    assert hours == 0, first  # exp002's smoke trial is expected to take what exp001's took


def test_selection_run_resume_and_report(tiny_data, tmp_path):
    args = ["-m", "common.run_all", "--only", "exp00[12]", "--data-dir", str(tiny_data), "--results-dir",
            str(tmp_path), "--epochs", "1", "--trials", "2", "--jobs", "2"]
    done = run_script(*args, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    # one epoch is not the recipe's 100: a variant of each, epochs=1
    assert sorted(p.parent.name for p in tmp_path.glob("*/exp00*/variants/epochs=1/trial_*/metrics.json")) == [
        "trial_0", "trial_0", "trial_1", "trial_1"]
    threads = json.loads((trial_path(tmp_path, "exp002_conv", 1) / "metrics.json").read_text())
    assert threads["provenance"]["hardware"]["threads"] >= 1
    name = trial_path(tmp_path, "exp002_conv", 1).parts[-5]
    assert (tmp_path / "variants.csv").exists()
    assert (tmp_path / "plots" / name / "variants" / "exp002_conv.png").exists()
    assert f"data: {name} (" in done.stdout
    assert re.search(r"exp002_conv/epochs=1 +2/2 +2 +0", done.stdout), done.stdout
    assert "[4/4 trials, 0:0" in done.stdout and "~0:00:00 left]" in done.stdout  # progress, plain lines
    again = run_script(*args, "--dry-run", cwd=REPO)
    assert "4 trial(s): 0 to run, 4 done" in again.stdout


def test_one_failing_experiment_does_not_stop_the_others(tiny_data, tmp_path):
    # exp001 already has a trial of a recipe that has changed since: its rerun refuses to mix them and fails.
    assert run_script(str(REPO / "exp001_simple_dense" / "train.py"), "--data-dir", str(tiny_data),
                      "--results-dir", str(tmp_path), "--epochs", "3").returncode == 0
    metrics = trial_path(tmp_path, "exp001_simple_dense") / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"learning_rate": 0.001', '"learning_rate": 0.5'))
    done = run_script("-m", "common.run_all", "--only", "exp001", "exp002", "--data-dir", str(tiny_data),
                      "--results-dir", str(tmp_path), "--epochs", "3", "--trials", "2", cwd=REPO)
    assert done.returncode == run_all.EXIT_FAILED
    assert "FAIL  exp001_simple_dense/epochs=3 trial 1" in done.stderr + done.stdout
    assert "another config (learning_rate 0.5 -> 0.001)" in done.stdout
    assert "trial(s) failed" in done.stderr
    # the other trials ran all the same
    assert json.loads((trial_path(tmp_path, "exp002_conv", 1) / "metrics.json").read_text())["epochs_run"] == 3


def test_a_locked_trial_is_left_to_its_owner(tiny_data, tiny_name, tmp_path):
    lock = tmp_path / tiny_name / "exp001_simple_dense" / "variants" / "epochs=1" / "trial_0" / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a run in another process would
        done = run_script("-m", "common.run_all", "--only", "exp001", "--data-dir", str(tiny_data),
                          "--results-dir", str(tmp_path), "--epochs", "1", cwd=REPO)
        assert done.returncode == 0
        assert "1 running elsewhere" in done.stdout
        assert not (lock.parent / "metrics.json").exists()


def test_two_runs_at_once_run_each_trial_once(tiny_data, tmp_path):
    command = [sys.executable, "-m", "common.run_all", "--only", "exp001", "--data-dir", str(tiny_data),
               "--results-dir", str(tmp_path), "--epochs", "30", "--trials", "3"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    log = (tmp_path / run_all.LOG_NAME).read_text()
    finished = [line for line in log.splitlines() if " done: test accuracy" in line]
    assert len(finished) == 3, log  # three trials, each trained by exactly one of the two runs
    assert len(list(tmp_path.glob("*/exp001_simple_dense/variants/epochs=30/trial_*/metrics.json"))) == 3


# ---------------------------------------------------------------- diff

@pytest.fixture
def two_experiments(tmp_path):
    results = tmp_path / "results"
    for trial, (a, b) in enumerate([(0.90, 0.93), (0.91, 0.94), (0.92, 0.95)]):
        write(results, "exp006_zoom_aug", trial, record("exp006", "exp006_zoom_aug", trial, a))
        write(results, "exp007_mixup", trial, record("exp007", "exp007_mixup", trial, b))
    return results


def test_welch_against_a_hand_computed_value():
    a, b = [0.90, 0.91, 0.92], [0.93, 0.94, 0.95]
    # by hand: means 0.91, 0.94; each sample variance 1e-4 over n=3, so se = sqrt(2e-4/3)
    t = 0.03 / math.sqrt(2e-4 / 3)  # 3.674
    df = (2e-4 / 3) ** 2 / (2 * (1e-4 / 3) ** 2 / 2)  # Welch-Satterthwaite: 4.0
    expected = 2 * scipy_stats.t.sf(t, df)  # 0.0213
    import pandas as pd
    p = diff.welch(pd.Series(a), pd.Series(b))
    assert p == pytest.approx(expected, rel=1e-9) and p == pytest.approx(0.02131, abs=5e-5)
    assert diff.verdict("accuracy", 0.91, 0.94, p) == "B better, p=0.021"
    assert diff.verdict("loss", 0.09, 0.06, p) == "B better, p=0.021"
    assert diff.verdict("accuracy", 0.91, 0.94, 0.3).startswith("no significant difference")
    assert diff.welch(pd.Series([0.9]), pd.Series(b)) != diff.welch(pd.Series([0.9]), pd.Series(b))  # NaN


def test_diff_shows_code_config_and_metrics(two_experiments, capsys):
    assert diff.main(["exp006", "exp007_mixup", "--results-dir", str(two_experiments)]) == 0
    out = capsys.readouterr().out
    code, rest = out.split("== Config ==")
    config, metrics = rest.split("== Metrics ==")
    assert "+    mixup_alpha=0.2," in code and "--- exp006_zoom_aug/train.py" in code
    assert "mixup_alpha" in config and "one_hot" in config and "batch_size" not in config
    test_accuracy = next(line for line in metrics.splitlines() if line.strip().startswith("test accuracy"))
    assert "0.9100±0.0100 (n=3)" in test_accuracy and "0.9400±0.0100 (n=3)" in test_accuracy
    assert "+0.0300" in test_accuracy and "B better, p=0.021" in test_accuracy


def test_diff_compares_plain_crossentropy_only_where_both_recorded_it(two_experiments, capsys):
    for folder in ("exp006_zoom_aug", "exp007_mixup"):
        for path in sorted(two_experiments.glob(f"*/{folder}/trial_*/metrics.json")):
            rec = json.loads(path.read_text())
            for scores in rec["metrics"].values():
                scores["crossentropy"] = 0.3 if folder == "exp006_zoom_aug" else 0.2 + rec["trial"] / 100
            path.write_text(json.dumps(rec))
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments)]) == 0
    metrics = capsys.readouterr().out.split("== Metrics ==")[1]
    line = next(line for line in metrics.splitlines() if line.strip().startswith("test crossentropy"))
    assert "0.3000±0.0000 (n=3)" in line and "0.2100±0.0100 (n=3)" in line and "-0.0900" in line
    assert "B better" in line  # lower is better
    path = next(two_experiments.glob("*/exp007_mixup/trial_0/metrics.json"))
    rec = json.loads(path.read_text())
    del rec["metrics"]["test"]["crossentropy"]
    path.write_text(json.dumps(rec))
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments)]) == 0
    metrics = capsys.readouterr().out.split("== Metrics ==")[1]
    assert "test crossentropy" not in metrics and "valid crossentropy" in metrics


def test_diff_tests_no_loss_that_measures_something_else(tmp_path, capsys):
    results = tmp_path / "results"
    for trial, (a, b) in enumerate([(0.90, 0.93), (0.91, 0.94)]):
        write(results, "exp203_random_erase", trial, record("exp203", "exp203_random_erase", trial, a))
        write(results, "exp204_label_smoothing", trial, record("exp204", "exp204_label_smoothing", trial, b))
    assert diff.main(["exp203", "exp204", "--results-dir", str(results)]) == 0
    metrics = capsys.readouterr().out.split("== Metrics ==")[1]
    loss = next(line for line in metrics.splitlines() if line.split()[:2] == ["test", "loss"])
    accuracy = next(line for line in metrics.splitlines() if line.split()[:2] == ["test", "accuracy"])
    assert "not comparable: different losses" in loss and "p=" not in loss and "p=" in accuracy
    assert ("A's loss is the cross-entropy, B's the cross-entropy against targets smoothed by 0.1. "
            "Not every trial of the two recorded the plain cross-entropy") in metrics
    for path in results.glob("*/exp20*/trial_*/metrics.json"):
        rec = json.loads(path.read_text())
        for scores in rec["metrics"].values():
            scores["crossentropy"] = 0.2
        path.write_text(json.dumps(rec))
    assert diff.main(["exp203", "exp204", "--results-dir", str(results)]) == 0
    assert "The crossentropy rows (against the true classes, on both sides) compare." in capsys.readouterr().out
    # same loss on both sides (L2 on both): tested as before, no note
    assert diff.loss_definition({"l2": 1e-3}) == "the cross-entropy plus the L2 penalty (0.001 x the squared weights)"
    flipped = diff.loss_definition({"label_smoothing": 0.1, "test_time_flip": True})
    assert flipped.startswith("the plain cross-entropy of")


def test_diff_markdown_and_no_results(tmp_path):
    out = tmp_path / "diff.md"
    assert diff.main(["exp001", "exp002", "--format", "markdown", "--results-dir", str(tmp_path / "none"),
                      "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# exp001_simple_dense vs exp002_conv") and "```diff" in text
    assert "No results yet for exp001_simple_dense and exp002_conv" in text


def test_diff_says_when_one_experiment_only_evaluates_the_others_weights(tmp_path, capsys):
    assert diff.main(["exp206", "exp207", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "exp207_test_time_flip trains exactly what exp206_longer_schedule trains" in out
    assert diff.main(["exp205", "exp206", "--results-dir", str(tmp_path)]) == 0
    assert "trains exactly what" not in capsys.readouterr().out  # 80 epochs against 40: another training


def test_diff_unknown_name(capsys):
    assert diff.main(["exp001", "exp999"]) == 2
    assert "no experiment 'exp999'; candidates:" in capsys.readouterr().err


def test_diff_compares_each_data_copy_on_its_own(two_experiments, capsys):
    other = dict(fingerprint="e" * 64, name="data-eeeeeeee")
    for trial, (a, b) in enumerate([(0.80, 0.70), (0.81, 0.71)]):
        write(two_experiments, "exp006_zoom_aug", trial, record("exp006", "exp006_zoom_aug", trial, a, **other))
        write(two_experiments, "exp007_mixup", trial, record("exp007", "exp007_mixup", trial, b, **other))
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments)]) == 0
    metrics = capsys.readouterr().out.split("== Metrics ==")[1]
    on_e, on_f = metrics.split("On data-ffffffff")
    assert on_e.strip().startswith("On data-eeeeeeee (test data data-eeeeeeee)")
    assert "0.8050±0.0071 (n=2)" in on_e and "A better" in on_e and "0.9100" not in on_e
    assert "0.9100±0.0100 (n=3)" in on_f and "B better, p=0.021" in on_f
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments), "--data", "data-eeeeeeee"]) == 0
    assert "data-ffffffff" not in capsys.readouterr().out


def test_a_mistyped_data_name_is_refused_not_taken_for_missing_results(two_experiments, capsys):
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments), "--data", "no-such-copy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no data named 'no-such-copy': results here are on data-ffffffff" in err
    assert "known copies: official, offline-v1, offline-v2" in err
    # A known copy without results here is not a typo: code and config, and "no results yet".
    assert diff.main(["exp006", "exp007", "--results-dir", str(two_experiments), "--data", "offline-v1"]) == 0
    assert "No results yet for exp006_zoom_aug and exp007_mixup on offline-v1" in capsys.readouterr().out
    cost = run_script(str(REPO / "benchmarks" / "trial_cost.py"), "--experiments", "exp001", "--results-dir",
                      str(two_experiments), "--data", "offline-v3")
    assert cost.returncode == 2 and "no data named 'offline-v3': results here are on data-ffffffff" in cost.stderr


def test_run_all_plans_per_data(tiny_data, tmp_path):
    """Trials finished on one copy do not count for another: the dry run on the second lists them to run."""
    from conftest import make_dataset

    args = ["-m", "common.run_all", "--only", "exp001", "--results-dir", str(tmp_path / "results"),
            "--epochs", "1"]
    assert run_script(*args, "--data-dir", str(tiny_data), cwd=REPO).returncode == 0
    assert "1 trial(s): 0 to run, 1 done" in run_script(*args, "--data-dir", str(tiny_data), "--dry-run",
                                                        cwd=REPO).stdout
    other = make_dataset(tmp_path / "other", seed=7)
    done = run_script(*args, "--data-dir", str(other), "--dry-run", cwd=REPO)
    assert done.returncode == 0 and "1 trial(s): 1 to run, 0 done" in done.stdout


def test_merge_files_old_layout_trials_by_data_without_machine_paths(tmp_path, capsys):
    from common import merge

    results = tmp_path / "results"
    old = record("exp001", "exp001_simple_dense", 0, 0.88)
    old["provenance"]["data"] = {"source": "idx:/home/someone/fashion-mnist",
                                 "fingerprint": "a60bdaaf00013063" + "0" * 48,
                                 "description": "offline stand-in copy (genuine images, not the official test split)"}
    legacy = results / "exp001_simple_dense" / "trial_0"
    legacy.mkdir(parents=True)
    (legacy / "metrics.json").write_text(json.dumps(old))
    (legacy / "history.csv").write_text("epoch,loss\n1,0.5\n")
    messages = []
    from common import summarize
    summarize.summarize(results, None, log=messages.append)
    assert any("layout before results were kept per data" in m and "common.merge" in m for m in messages)

    assert merge.main([str(results), "--results-dir", str(results)]) == 0
    moved = results / "offline-v1" / "exp001_simple_dense" / "trial_0"
    merged = json.loads((moved / "metrics.json").read_text())
    assert merged["provenance"]["data"]["source"] == "idx" and merged["provenance"]["data"]["name"] == "offline-v1"
    assert merged["metrics"] == old["metrics"] and (moved / "history.csv").read_text() == "epoch,loss\n1,0.5\n"
    assert not (results / "exp001_simple_dense").exists() and "/home/someone" not in json.dumps(merged)

    # From another results directory: copied, an identical trial is skipped, a different one is a conflict.
    elsewhere = tmp_path / "gpu_results"
    write(elsewhere, "exp001_simple_dense", 0, merged)
    write(elsewhere, "exp001_simple_dense", 1, {**merged, "trial": 1})
    (elsewhere / "offline-v1" / "exp001_simple_dense" / "trial_1" / "predictions.npz").write_bytes(b"npz bytes")
    assert merge.main([str(elsewhere), "--results-dir", str(results)]) == 0
    assert (results / "offline-v1" / "exp001_simple_dense" / "trial_1" / "metrics.json").exists()
    assert (results / "offline-v1" / "exp001_simple_dense" / "trial_1" / "predictions.npz").read_bytes() == b"npz bytes"
    assert (elsewhere / "offline-v1" / "exp001_simple_dense" / "trial_1").exists()  # copied, not moved
    rescored = json.loads(json.dumps(merged))  # the same trial after --rescore added a metric here
    for scores in rescored["metrics"].values():
        scores["crossentropy"] = scores["loss"]
    (moved / "metrics.json").write_text(json.dumps(rescored))
    capsys.readouterr()
    assert merge.main([str(elsewhere), "--results-dir", str(results)]) == 0
    assert "2 already there" in capsys.readouterr().out
    changed = {**merged, "metrics": {**merged["metrics"], "test": {"loss": 0.5, "accuracy": 0.5}}}
    (elsewhere / "offline-v1" / "exp001_simple_dense" / "trial_0" / "metrics.json").write_text(json.dumps(changed))
    capsys.readouterr()
    assert merge.main([str(elsewhere), "--results-dir", str(results)]) == 1
    assert "conflict:" in capsys.readouterr().out
    assert json.loads((moved / "metrics.json").read_text())["metrics"] == rescored["metrics"]


# ---------------------------------------------------------------- tools start without TensorFlow

WITHOUT_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
                      "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
START_UP_NOISE = ("cuda", "oneDNN", "absl::InitializeLog", "cuInit")


@pytest.mark.parametrize("command", [
    ["common.diff", "exp103", "exp104"],
    ["common.summarize", "--no-readme", "--results-dir", "{tmp}"],
    ["common.run_all", "--only", "exp00[12]", "exp11*", "--dry-run", "--data-dir", "{data}", "--results-dir", "{tmp}"],
    *[[tool, "--help"] for tool in ("common.diff", "common.summarize", "common.run_all", "common.merge",
                                     "common.preview")],
], ids=lambda command: " ".join(command[:2]))
def test_tools_run_without_importing_tensorflow(command, tiny_data, tmp_path):
    """Reading configs, code and results needs no TensorFlow: these tools start at once, and quietly."""
    argv = [arg.format(tmp=tmp_path, data=tiny_data) for arg in command]
    done = run_script("-c", WITHOUT_TENSORFLOW, *argv, cwd=REPO)  # importing tensorflow would fail here
    assert done.returncode == 0, done.stderr
    assert not any(noise in done.stderr for noise in START_UP_NOISE), done.stderr


def test_start_up_notices_are_dropped_and_real_messages_kept():
    code = ("import os, sys; sys.path.insert(0, '.')\n"
            "from common.tensorflow_setup import start_up_notices_dropped\n"
            "with start_up_notices_dropped():\n"
            "    os.write(2, b'I0000 00:00:1 port.cc:153] oneDNN custom operations are on. You may see...\\n')\n"
            "    os.write(2, b'W0000 something.cc:1] a real warning\\n')\n"
            "    print('a Python warning', file=sys.stderr)\n")
    done = run_script("-c", code, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "a real warning" in done.stderr and "a Python warning" in done.stderr
    assert not any(noise in done.stderr for noise in START_UP_NOISE)


# ---------------------------------------------------------------- benchmarks/trial_cost.py

def _trial_cost():
    import importlib.util

    spec = importlib.util.spec_from_file_location("trial_cost", REPO / "benchmarks" / "trial_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trial_cost_counts_multiply_adds_by_hand():
    import keras

    inner = keras.Sequential([keras.Input((14, 14, 4)), keras.layers.DepthwiseConv2D(3, padding="same")])
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 14x14x4 outputs of 3*3*1 inputs
    x = keras.layers.BatchNormalization()(inner(x))  # depthwise: 14x14x4 outputs of 3*3 inputs; BN not counted
    x = keras.layers.Conv2D(6, 1, groups=2)(x)  # 14x14x6 outputs of 1*1*(4/2) inputs
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))  # 10 outputs of 6 inputs
    by_hand = 2 * (14 * 14 * 4 * 9 + 14 * 14 * 4 * 9 + 14 * 14 * 6 * 2 + 10 * 6)
    assert _trial_cost().forward_flops(keras.Model(inputs, outputs)) == by_hand == 33_048


def test_trial_cost_gives_an_evaluation_only_experiment_no_epochs(tmp_path):
    from common import experiments

    trial_cost = _trial_cost()
    table = trial_cost.cost_table([experiments.find("exp206"), experiments.find("exp207")], tmp_path, "none")
    exp206, exp207 = table.loc["exp206_longer_schedule"], table.loc["exp207_test_time_flip"]
    assert exp206["epochs"] == 80 and exp207["epochs"] == 0 and exp207["TFLOP/trial"] == 0
    assert exp206["TFLOP/trial"] == pytest.approx(80 * exp206["TFLOP/epoch"])
    # the epoch: 3 forward passes per training image, one per valid image
    assert exp206["TFLOP/epoch"] == pytest.approx(exp206["MFLOP/image"] * 1e6 * (3 * 54_000 + 6_000) / 1e12)
    assert exp206["trials run"] == 0 and "s/epoch" not in table.columns  # nothing measured under tmp_path



def test_trial_cost_gives_each_machine_its_own_epoch_time(tmp_path):
    """Trials of one experiment on two machines: the fastest machine's figures, each machine's median."""
    trial_cost = _trial_cost()
    folder = tmp_path / "offline-v2" / "exp206_longer_schedule"
    machines = [({"device": "CPU", "cpu": "Intel Xeon", "threads": 1}, [90, 200, 210, 206], 5 * 3600),
                ({"device": "CPU", "cpu": "AMD EPYC", "cpu_vector_instructions": "AVX-512", "threads": 2},
                 [70, 57, 56, 58], 4500),
                ({"device": "CPU", "cpu": "AMD EPYC", "cpu_vector_instructions": "AVX-512", "threads": 2},
                 [70, 55, 59, 60], 4700)]
    for trial, (hardware, seconds, wall) in enumerate(machines):
        directory = folder / f"trial_{trial}"
        directory.mkdir(parents=True)
        (directory / "metrics.json").write_text(json.dumps({"provenance": {"hardware": hardware},
                                                            "wall_seconds": wall}))
        (directory / "history.csv").write_text("epoch,seconds\n" + "".join(
            f"{epoch},{second}\n" for epoch, second in enumerate(seconds, 1)))
    measured = trial_cost.measured_epochs(tmp_path, "offline-v2", "exp206_longer_schedule")
    # first epochs left out (tracing); AMD: 57, 56, 58, 55, 59, 60 -> median 57.5; Xeon: 200, 210, 206 -> 206
    assert measured["trials"] == 3 and measured["s/epoch"] == 57.5
    assert measured["hours/trial"] == pytest.approx(4600 / 3600)
    assert measured["ran on"] == "AMD EPYC (AVX-512), 2 thread(s): 58 s; Intel Xeon, 1 thread(s): 206 s"


def test_vector_instructions_names_the_widest_extension():
    from common.results import vector_instructions

    assert vector_instructions("flags : fpu sse2 avx avx2 fma avx512f avx512bw") == "AVX-512"
    assert vector_instructions("flags : fpu sse2 avx avx2 fma") == "AVX2"
    assert vector_instructions("flags : fpu sse2 avx") == "AVX"
    assert vector_instructions("flags : fpu sse2") == "none of AVX, AVX2, AVX-512"
    assert vector_instructions("Features : fp asimd") is None  # not an x86 /proc/cpuinfo


def test_cpu_model_reads_family_and_model_of_the_first_processor():
    from common.results import cpu_model

    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
               "model name\t: AMD EPYC 9B14\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    assert cpu_model(cpuinfo) == "family 25, model 17"  # "model name" is not "model"
    assert cpu_model("Features : fp asimd") is None  # not an x86 /proc/cpuinfo

def test_trial_cost_counts_a_variant_no_folder_holds(tmp_path):
    from common import experiments
    from common.cli import UsageError

    trial_cost = _trial_cost()
    folder = [experiments.find("exp206")]
    plain = trial_cost.cost_table(folder, tmp_path, "none").iloc[0]
    wide = trial_cost.cost_table(folder, tmp_path, "none", ["widths=96,192,384", "--trials=1"]).iloc[0]
    assert wide.name == "exp206_longer_schedule [widths=96,192,384, --trials=1]" and wide["trials"] == 1
    # twice the channels: the 3x3 convs between stages cost four times as much; stem and head only twice
    assert 3.9 < wide["MFLOP/image"] / plain["MFLOP/image"] < 4.0
    assert wide["parameters"] > 3.9 * plain["parameters"]
    for bad in (["width=3"], ["widths=abc"], ["widths"]):
        with pytest.raises(UsageError, match="--set"):
            trial_cost.cost_table(folder, tmp_path, "none", bad)


# ---------------------------------------------------------------- benchmarks/precision.py

def test_precision_benchmark_times_each_variant_of_an_experiments_own_model():
    done = run_script(str(REPO / "benchmarks" / "precision.py"), "--experiment", "exp002", "--batches", "2",
                      "--rounds", "1", "--variants", "float32", "mixed_bfloat16")
    assert done.returncode == 0, done.stderr
    header, table = done.stdout.split("\n", 1)
    assert header.startswith("exp002_conv, 1 thread(s), 2 batches x 1 rounds;") and "bfloat16 instructions" in header
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert set(rows) == {"float32", "mixed_bfloat16"} and rows["float32"][2] == "1.00x"
    assert all(float(row[1]) > 0 for row in rows.values())  # milliseconds per batch
    done = run_script(str(REPO / "benchmarks" / "precision.py"), "--experiment", "exp999")
    assert done.returncode == 2 and "error: no experiment 'exp999'" in done.stderr


# ---------------------------------------------------------------- common.new

def test_new_starts_an_experiment_whose_diff_shows_only_its_declarations(tmp_path, capsys):
    from common import diff, experiments, new

    for name in ("exp205_sgd_weight_decay", "exp206_longer_schedule"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.py").write_text((REPO / name / "train.py").read_text())
    target = new.create("exp208", "exp206", "Wider ResNet: widths 96, 192, 384", root=tmp_path)
    assert target.name == "exp208_wider_resnet_widths"
    definition = experiments.read_definition(target)
    assert (definition.experiment, definition.base, definition.explanation) == (
        "exp208", "exp206", "Wider ResNet: widths 96, 192, 384")
    assert definition.config == experiments.read_definition(tmp_path / "exp206_longer_schedule").config
    changed = [line for line in diff.code_diff(tmp_path / "exp206_longer_schedule", target, colour=False)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) == 12 and all(  # three docstring lines and three declarations, out and in
        line[1:].startswith(('"""exp20', "Change from", "Run: python", "EXPERIMENT =", "BASE =", "EXPLANATION ="))
        for line in changed)
    assert '+EXPERIMENT = "exp208"' in changed and '+BASE = "exp206"' in changed
    assert diff.config_diff(diff.Side(tmp_path / "exp206_longer_schedule"), diff.Side(target)).empty
    readme = (target / "README.md").read_text()
    assert readme.startswith("# exp208: Wider ResNet") and "**Change from exp206**" in readme
    assert variant_summary_markers(readme)
    # the model of the base, built from the new file: it runs as its base does
    module = experiments.load_module(target)
    assert module.EXPERIMENT == "exp208" and callable(module.build_model)

    for args, message in (
            (("exp208", "exp206", "again"), "exp208 exists already (exp208_wider_resnet_widths)"),
            (("exp206_other", "exp205", "x"), "exp206 exists already"),
            (("exp209", "exp999", "x"), "--from: no experiment 'exp999'"),
            (("208", "exp206", "x"), "'208' is not an experiment id")):
        with pytest.raises(new.NewError, match=re.escape(message)):
            new.create(*args, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp205_sgd_weight_decay", "exp206_longer_schedule",
                                                           "exp208_wider_resnet_widths"]
    done = run_script("-m", "common.new", "exp001", "--from", "exp002", "x", cwd=REPO)
    assert done.returncode == 2 and "error: exp001 exists already" in done.stderr


def variant_summary_markers(text: str) -> bool:
    """The README skeleton holds both generated parts' markers: the result line's and the variants'."""
    from common import result_lines, variant_summary

    return all(marker in text for marker in (result_lines.MARKER_START, result_lines.MARKER_END,
                                             variant_summary.MARKER_START, variant_summary.MARKER_END))
