"""The trial runner end to end: train.py from any directory, result files, resume, reproducibility."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from common import results as results_module
from common import evaluation, runner
from common import record as trial_record
from conftest import REPO, drop_an_interrupt, run_script, trial_path

EXP001 = REPO / "exp001_simple_dense" / "train.py"
EXP002 = REPO / "exp002_conv" / "train.py"


def load_train_module(path):
    spec = importlib.util.spec_from_file_location(f"train_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_metrics(results, folder, trial=0):
    return json.loads((trial_path(results, folder, trial) / "metrics.json").read_text())


def test_exp001_and_exp002_end_to_end(tmp_path, tiny_data):
    results = tmp_path / "results"
    for script in (EXP001, EXP002):
        done = run_script(str(script), "--data-dir", str(tiny_data), "--results-dir", str(results),
                          "--epochs", "2", "--trials", "2")
        assert done.returncode == 0, done.stderr
        assert "epoch   1/2" in done.stdout and "done: test accuracy" in done.stdout
        # TensorFlow's start-up notices, and the spurious NodeDef error Keras' numpy pipeline causes
        # under op determinism (our predictions go through a tf.data pipeline of our own).
        noises = ("oneDNN", "cuda drivers", "absl::", "cuInit", "NodeDef")
        assert not any(noise in done.stderr for noise in noises), done.stderr
    record = read_metrics(results, "exp002_conv", 1)
    assert record["experiment"] == "exp002" and record["base"] == "exp001"
    assert record["seed"] == 1 and record["trial"] == 1 and record["epochs_run"] == 2
    for split in ("train", "valid", "test"):
        assert 0 <= record["metrics"][split]["accuracy"] <= 1 and record["metrics"][split]["loss"] > 0
    assert record["config"]["epochs"] == 2 and record["overrides"] == {"epochs": 2, "trials": 2}
    provenance = record["provenance"]
    assert provenance["data"]["fingerprint"] and provenance["data"]["source"] == "idx"
    assert provenance["data"]["name"] == "data-" + provenance["data"]["fingerprint"][:8]
    assert provenance["data"]["split_sizes"] == {"train": 270, "valid": 30, "test": 100}
    assert str(tiny_data) not in json.dumps(record)  # no machine paths in result files
    assert {"python", "tensorflow", "keras", "numpy"} <= set(provenance["versions"])
    # CPU, or GPU on a machine with one: the device agrees with the GPUs TensorFlow saw
    assert provenance["hardware"]["device"] == ("GPU" if provenance["hardware"]["gpus"] else "CPU")
    assert "commit" in provenance["git"]
    assert {"cpu_vector_instructions", "cpu_model"} <= set(provenance["hardware"])  # same CPU name, other CPUs
    predictions = results_module.read_predictions(trial_path(results, "exp002_conv", 1) / "predictions.npz")
    assert predictions.probabilities.shape == (100, 10) and list(predictions.labels) == [i % 10 for i in range(100)]
    assert abs(predictions.probabilities.sum(axis=1) - 1).max() < 0.02  # each probability within 1/510
    assert predictions.correct.mean() == pytest.approx(record["metrics"]["test"]["accuracy"], abs=1e-6)
    history = pd.read_csv(trial_path(results, "exp002_conv", 1) / "history.csv")
    assert list(history["epoch"]) == [1, 2] and {"loss", "val_accuracy"} <= set(history.columns)
    assert not (trial_path(results, "exp002_conv", 1) / "checkpoint").exists()
    # Without label smoothing or an L2 penalty, Keras' loss is the plain cross-entropy recorded beside it.
    for split, scores in record["metrics"].items():
        assert scores["crossentropy"] == pytest.approx(scores["loss"], rel=1e-4), split

    # The speed of each epoch: training images a second and the counted operations' rate, in the line,
    # history.csv and the record's medians. exp001's forward pass by hand: Dense(128) on 784 pixels and
    # Dense(10) on 128, two operations a multiply-add; three passes a training image.
    assert re.search(r"epoch   2/2 .* \d+ img/s [\d.]+ GFLOP/s", done.stdout), done.stdout
    first = read_metrics(results, "exp001_simple_dense")
    history = pd.read_csv(trial_path(results, "exp001_simple_dense") / "history.csv")
    assert (history.train_seconds <= history.seconds).all() and (history.images_per_second > 0).all()
    speed = first["speed"]
    assert speed["forward_flops_per_image"] == 2 * 784 * 128 + 2 * 128 * 10
    assert speed["images_per_second_median"] == pytest.approx(history.images_per_second.median(), abs=0.1)
    assert speed["gflops_per_second_median"] == pytest.approx(
        speed["images_per_second_median"] * 3 * speed["forward_flops_per_image"] / 1e9, abs=0.01)

    readme = tmp_path / "README.md"
    done = run_script("-m", "common.summarize", "--results-dir", str(results), "--readme", str(readme), cwd=REPO)
    assert done.returncode == 0, done.stderr
    table = readme.read_text()
    # Two epochs are not the recipe's 100: the runs are variants, tabled apart from the recipes (none here).
    assert "| `exp001/epochs=2` | epochs 100 → 2 | 0, 2 |" in table and "| `exp002/epochs=2` |" in table
    assert "_No finished trials of the recipes yet._" in table
    summary = pd.read_csv(results / "variants.csv")
    assert set(summary.experiment) == {"exp001", "exp002"} and set(summary.trials) == {2}
    assert set(summary.variant) == {"epochs=2"} and set(summary.recipe_trials) == {0}


def test_help_works_from_any_directory(tmp_path):
    done = run_script(str(EXP002), "--help", cwd=tmp_path)
    assert done.returncode == 0
    for flag in ("--trials", "--epochs", "--seed", "--data-dir", "--results-dir", "--smoke", "--force",
                 "--learning_rate"):
        assert flag in done.stdout


def test_bad_override_is_a_usage_error(tiny_data, tmp_path):
    done = run_script(str(EXP001), "--data-dir", str(tiny_data), "--batch_size", "big")
    assert done.returncode == 2 and "--batch_size takes a value like 32 (int), not 'big'" in done.stderr


def test_smoke_results_are_kept_apart(tiny_data, tmp_path):
    module = load_train_module(EXP001)
    results = tmp_path / "results"
    assert module.main(["--data-dir", str(tiny_data), "--results-dir", str(results), "--smoke"]) == 0
    record = json.loads((trial_path(results / "smoke", "exp001_simple_dense") / "metrics.json").read_text())
    assert record["smoke"] is True and record["epochs_run"] == 1 and record["config"]["trials"] == 1
    assert sorted(p.name for p in results.iterdir()) == ["smoke"]


def test_finished_trials_are_not_rerun(tiny_data, tmp_path, capsys):
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1"]
    assert module.main(args + ["--trials", "1"]) == 0
    first = (trial_path(tmp_path, "exp001_simple_dense") / "metrics.json").read_text()
    capsys.readouterr()
    assert module.main(args + ["--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s), 1 already finished" in out and "trial 1/2 epoch" not in out and "trial 2/2 epoch" in out
    assert (trial_path(tmp_path, "exp001_simple_dense") / "metrics.json").read_text() == first
    assert module.main(args + ["--trials", "2"]) == 0
    assert "2 already finished" in capsys.readouterr().out
    # --trial (as run_all's workers run) counts the whole experiment's finished trials, not only its own
    assert module.main(args + ["--trials", "3", "--trial", "2"]) == 0
    assert "3 trial(s), 2 already finished on" in capsys.readouterr().out
    assert module.main(args + ["--trials", "3", "--trial", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 already finished on" in out and "; trial 1/3 finished" in out


def _recipe_changed_since(trial, key: str, value) -> None:
    """Make a finished trial look as if the recipe's CONFIG had held `value` for `key` when it ran."""
    record = json.loads((trial / "metrics.json").read_text())
    record["config"][key] = value
    (trial / "metrics.json").write_text(json.dumps(record))


def test_a_variant_is_filed_apart_and_leaves_the_recipes_trials_as_they_are(tiny_data, tmp_path, capsys):
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1"]
    assert module.main(args) == 0
    first = trial_path(tmp_path, "exp001_simple_dense")
    assert first.parent.name == "epochs=1" and first.parent.parent.name == "variants"
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    capsys.readouterr()
    # Another value, two keys (sorted in the name; 1e-2 written as 0.01), a value equal to the recipe's:
    assert module.main(args + ["--learning_rate", "1e-2", "--patience", "5"]) == 0
    assert "a variant, filed under" in capsys.readouterr().out
    assert module.main(args[:4] + ["--epochs", "2"]) == 0
    assert sorted(p.name for p in first.parent.parent.iterdir()) == ["epochs=1", "epochs=1,learning_rate=0.01",
                                                                     "epochs=2"]
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before
    record = read_metrics(tmp_path, "exp001_simple_dense/variants/epochs=1,learning_rate=0.01")
    assert record["variant"] == "epochs=1,learning_rate=0.01" and record["config"]["learning_rate"] == 0.01
    # A rerun of a variant resumes it like a recipe: its trial is finished, more trials add to it.
    capsys.readouterr()
    assert module.main(args + ["--learning_rate", "0.01", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s), 1 already finished" in out and "trial 2/2 epoch" in out and "trial 1/2 epoch" not in out


def test_a_recipe_changed_since_its_trials_ran_is_refused_unless_forced(tiny_data, tmp_path, capsys):
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1"]
    assert module.main(args) == 0
    _recipe_changed_since(trial_path(tmp_path, "exp001_simple_dense"), "learning_rate", 0.5)
    assert module.main(args) == runner.EXIT_USAGE
    assert "another config (learning_rate 0.5 -> 0.001): the recipe changed since" in capsys.readouterr().err
    assert module.main(args + ["--force"]) == 0
    assert read_metrics(tmp_path, "exp001_simple_dense")["config"]["learning_rate"] == 0.001


def test_forced_trials_run_side_by_side_with_a_new_config(tiny_data, tmp_path, capsys):
    # run_all --force --jobs 2 starts trial 1 while trial 0 still holds the old config: no refusal.
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--trials", "2", "--epochs", "1"]
    assert module.main(args + ["--trial", "0"]) == 0
    _recipe_changed_since(trial_path(tmp_path, "exp001_simple_dense"), "learning_rate", 0.5)
    assert module.main(args + ["--trial", "1"]) == runner.EXIT_USAGE
    assert "trial_0 was run with another config (learning_rate 0.5 -> 0.001)" in capsys.readouterr().err
    assert module.main(args + ["--trial", "1", "--force"]) == 0
    assert read_metrics(tmp_path, "exp001_simple_dense", 1)["config"]["learning_rate"] == 0.001


def test_same_seed_same_metrics_and_resume_continues_exactly(tiny_data, tmp_path, monkeypatch, capsys):
    """A trial interrupted after epoch 2 resumes at epoch 3 and ends exactly where an uninterrupted one does."""
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--epochs", "4", "--patience", "10"]
    assert module.main(args + ["--results-dir", str(tmp_path / "straight")]) == 0
    assert module.main(args + ["--results-dir", str(tmp_path / "again")]) == 0
    straight = read_metrics(tmp_path / "straight", "exp001_simple_dense")
    assert read_metrics(tmp_path / "again", "exp001_simple_dense")["metrics"] == straight["metrics"]

    save = runner.Checkpoint.save
    calls = []

    def save_then_die(self, model, state, improved):
        save(self, model, state, improved)
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner.Checkpoint, "save", save_then_die)
    interrupted = tmp_path / "interrupted"
    capsys.readouterr()
    assert module.main(args + ["--results-dir", str(interrupted)]) == runner.EXIT_INTERRUPTED
    trial = trial_path(interrupted, "exp001_simple_dense")
    assert not (trial / "metrics.json").exists()
    assert json.loads((trial / "checkpoint" / "state.json").read_text())["epoch"] == 2
    assert "rerun the same command to resume" in capsys.readouterr().err

    monkeypatch.setattr(runner.Checkpoint, "save", save)
    # Asking for more trials is the same recipe: the checkpoint is kept (only trial 0 is run here).
    assert module.main(args + ["--results-dir", str(interrupted), "--trials", "3", "--trial", "0"]) == 0
    assert "resuming after epoch 2" in capsys.readouterr().out
    resumed = read_metrics(interrupted, "exp001_simple_dense")
    assert resumed["sittings"] == 2 and resumed["epochs_run"] == 4
    assert resumed["metrics"] == straight["metrics"]
    history = pd.read_csv(trial / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]


def test_killed_process_resumes_from_its_last_epoch(tiny_data, tiny_name, tmp_path):
    """SIGKILL in the middle of training: nothing half-written, and the rerun picks up the checkpoint."""
    trial = tmp_path / tiny_name / "exp001_simple_dense" / "variants" / "epochs=40,patience=40" / "trial_0"
    args = [str(EXP001), "--data-dir", str(tiny_data), "--results-dir", str(tmp_path),
            "--epochs", "40", "--patience", "40"]
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        state = trial / "checkpoint" / "state.json"
        while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["epoch"] >= 3):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert not (trial / "metrics.json").exists()
    killed_at = json.loads(state.read_text())["epoch"]
    assert 3 <= killed_at < 40
    # The history so far lives with the checkpoint, whole rows, never half a file; nothing in the
    # trial's folder looks like a finished result.
    assert len(pd.read_csv(trial / "checkpoint" / "history.csv")) in (killed_at - 1, killed_at)
    assert sorted(p.name for p in trial.iterdir() if not p.name.startswith(".")) == ["checkpoint"]

    done = run_script(*args)
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {killed_at}" in done.stdout
    assert f"epoch {killed_at:>3}/40" not in done.stdout and f"epoch {killed_at + 1:>3}/40" in done.stdout
    history = pd.read_csv(trial / "history.csv")
    assert list(history["epoch"]) == list(range(1, 41))
    assert read_metrics(tmp_path, "exp001_simple_dense")["sittings"] == 2
    assert not list(trial.rglob("*.tmp*")), "temporary files of the killed process are cleaned up"


def test_nan_loss_fails_the_trial_clearly(tiny_data, tmp_path, capsys):
    import keras

    def build_diverging_model(config):
        model = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10),
                                  keras.layers.Lambda(lambda logits: logits * float("nan"))])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    config = {"trials": 1, "seed": 0, "epochs": 3, "patience": 5, "batch_size": 32}
    code = runner.run_experiment(str(tmp_path / "exp900_diverges" / "train.py"), "exp900", None, "NaN",
                                 config, build_diverging_model,
                                 ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "results")])
    assert code == runner.EXIT_FAILED
    assert "the loss became nan (valid nan) at epoch 1" in capsys.readouterr().err
    assert not list((tmp_path / "results").rglob("metrics.json"))


def test_a_dropped_interrupt_stops_the_trial_after_the_epoch_it_checkpointed(tiny_data, tmp_path, python_sigint):
    """Ctrl-C during training whose KeyboardInterrupt Python dropped in a finalizer: the trial stops
    after the epoch it was in, checkpointed and resumable, instead of running to its end."""
    import keras

    def build_model(config):
        drop_an_interrupt()
        model = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    config = {"trials": 1, "seed": 0, "epochs": 50, "patience": 50, "batch_size": 32}
    code = runner.run_experiment(str(tmp_path / "exp900_interrupted" / "train.py"), "exp900", None, "Ctrl-C",
                                 config, build_model,
                                 ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "results")])
    assert code == runner.EXIT_INTERRUPTED
    state = json.loads(next((tmp_path / "results").rglob("checkpoint/state.json")).read_text())
    assert state["epoch"] == 1
    assert not list((tmp_path / "results").rglob("metrics.json"))


def test_single_trial_flag(tiny_data, tmp_path):
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1", "--trials", "3"]
    assert module.main(args + ["--trial", "2"]) == 0
    assert sorted(p.name for p in trial_path(tmp_path, "exp001_simple_dense", 2).parent.iterdir()) == ["trial_2"]
    assert read_metrics(tmp_path, "exp001_simple_dense", 2)["seed"] == 2
    assert module.main(args + ["--trial", "3"]) == runner.EXIT_USAGE


def test_without_seed_fixing_trials_differ_with_it_they_repeat(tiny_data, tmp_path):
    """exp108 runs unseeded: the same trial index gives other numbers on every run, unless --fix_seed."""
    module = load_train_module(REPO / "exp108_no_reg_no_seed" / "train.py")
    args = ["--data-dir", str(tiny_data), "--epochs", "1", "--trials", "1"]
    runs = {}
    for name, extra in (("free_a", []), ("free_b", []), ("fixed_a", ["--fix_seed", "true"]),
                        ("fixed_b", ["--fix_seed", "true"])):
        assert module.main(args + extra + ["--results-dir", str(tmp_path / name)]) == 0
        runs[name] = read_metrics(tmp_path / name, "exp108_no_reg_no_seed")
    assert runs["free_a"]["seed_fixed"] is False and runs["free_a"]["seed"] != runs["free_b"]["seed"]
    assert runs["free_a"]["metrics"] != runs["free_b"]["metrics"]
    assert runs["fixed_a"]["seed_fixed"] is True and runs["fixed_a"]["seed"] == 0
    assert runs["fixed_a"]["metrics"] == runs["fixed_b"]["metrics"]


def test_trials_on_other_data_are_neither_finished_nor_touched(tiny_data, tmp_path, capsys):
    """Two data copies side by side: the second one's run trains, the first one's trials stay as they were."""
    from conftest import data_name_of, make_dataset

    other = make_dataset(tmp_path / "other_data", seed=7)
    first_name, other_name = data_name_of(tiny_data), data_name_of(other)
    assert first_name != other_name
    module = load_train_module(EXP001)
    results = tmp_path / "results"
    args = ["--results-dir", str(results), "--epochs", "1"]
    assert module.main(["--data-dir", str(tiny_data), *args]) == 0
    first = results / first_name / "exp001_simple_dense" / "variants" / "epochs=1" / "trial_0" / "metrics.json"
    before = first.read_text()
    capsys.readouterr()

    assert module.main(["--data-dir", str(other), *args]) == 0
    out = capsys.readouterr().out
    assert f"1 trial(s), 0 already finished on {other_name}" in out and "trial 1/1 epoch" in out
    assert first.read_text() == before
    second = json.loads((results / other_name / "exp001_simple_dense" / "variants" / "epochs=1" / "trial_0"
                         / "metrics.json").read_text())
    assert second["provenance"]["data"]["name"] == other_name

    # A rerun on either copy finds its own trial finished.
    assert module.main(["--data-dir", str(tiny_data), *args]) == 0
    assert f"1 already finished on {first_name}" in capsys.readouterr().out

    readme = tmp_path / "README.md"
    done = run_script("-m", "common.summarize", "--results-dir", str(results), "--readme", str(readme), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "2 variant(s)" in done.stdout
    text = readme.read_text()
    for name in (first_name, other_name):
        section = text.split(f"#### Variants on `{name}`")[1].split("### ")[0]
        assert "| `exp001/epochs=1` | epochs 100 → 1 | 0, 1 |" in section
    summary = pd.read_csv(results / "variants.csv")
    assert sorted(summary.data.unique()) == sorted([first_name, other_name])


def _output_in_a_terminal(args: list[str]) -> str:
    """Run a command with its standard output on a pseudo-terminal, as a user at a shell sees it."""
    import os

    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, *args], stdout=slave, stderr=subprocess.STDOUT, cwd="/")
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_progress_within_the_epoch_only_in_a_terminal(tiny_data, tmp_path):
    args = [str(EXP001), "--data-dir", str(tiny_data), "--epochs", "2"]
    terminal = _output_in_a_terminal(args + ["--results-dir", str(tmp_path / "tty")])
    assert "/step" in terminal and "9/9" in terminal  # Keras' bar: 270 images in 9 batches of 32
    assert "epoch   2/2" in terminal  # our line still ends each epoch
    redirected = run_script(*args, "--results-dir", str(tmp_path / "file"))
    assert redirected.returncode == 0 and "/step" not in redirected.stdout and "9/9" not in redirected.stdout
    assert "epoch   2/2" in redirected.stdout


def test_test_time_flip_is_an_evaluation_choice_recorded_in_the_config(tiny_data, tmp_path):
    module = load_train_module(EXP002)
    args = ["--data-dir", str(tiny_data), "--epochs", "1"]
    assert module.main(args + ["--results-dir", str(tmp_path / "plain")]) == 0
    assert module.main(args + ["--results-dir", str(tmp_path / "flip"), "--test_time_flip", "true"]) == 0
    plain, flip = read_metrics(tmp_path / "plain", "exp002_conv"), read_metrics(tmp_path / "flip", "exp002_conv")
    assert plain["config"]["test_time_flip"] is False and flip["config"]["test_time_flip"] is True
    assert flip["overrides"] == {"test_time_flip": True, "epochs": 1}
    # Same training (same seed), another evaluation: the flipped average scores differently.
    assert flip["metrics"]["train"] != plain["metrics"]["train"]
    assert all(scores["crossentropy"] == scores["loss"] for scores in flip["metrics"].values())
    predictions = results_module.read_predictions(trial_path(tmp_path / "flip", "exp002_conv") / "predictions.npz")
    assert predictions.correct.mean() == pytest.approx(flip["metrics"]["test"]["accuracy"])


def test_crossentropy_is_plain_where_keras_loss_carries_smoothing_and_a_penalty(tiny_data):
    import keras
    import numpy as np

    from common import data as fmnist

    dataset = fmnist.load(tiny_data)
    keras.utils.set_random_seed(0)
    kernel = keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(0.01))
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), kernel])
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
                  metrics=["accuracy"])
    metrics, test_probabilities = evaluation.evaluate(model, dataset, {"test_time_flip": False, "one_hot": True})
    penalty = 0.01 * float(np.sum(np.square(kernel.kernel.numpy())))
    for split, (x, y) in dataset.splits().items():
        p = evaluation.class_probabilities(model, x)
        # by hand: the true class's probability alone, and Keras' targets 0.8 * one-hot + 0.2 / 10
        assert metrics[split]["crossentropy"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), rel=1e-5)
        smoothed = 0.8 * np.eye(10)[y] + 0.02
        assert metrics[split]["loss"] == pytest.approx(-np.mean(np.sum(smoothed * np.log(p), axis=1)) + penalty,
                                                       rel=1e-4)
        assert metrics[split]["loss"] > metrics[split]["crossentropy"] + 0.01
    assert np.array_equal(test_probabilities, evaluation.class_probabilities(model, dataset.x_test))


def test_rescore_adds_the_crossentropy_to_a_trial_from_before_it_from_its_kept_weights(tiny_data, tmp_path,
                                                                                       capsys):
    module = load_train_module(EXP002)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1", "--trials", "2"]
    assert module.main(args) == 0
    paths = [trial_path(tmp_path, "exp002_conv", trial) / "metrics.json" for trial in (0, 1)]
    complete = [json.loads(path.read_text()) for path in paths]
    for path, record in zip(paths, complete):  # as trials wrote them before the cross-entropy was recorded
        old = json.loads(json.dumps(record))
        for scores in old["metrics"].values():
            del scores["crossentropy"]
        path.write_text(json.dumps(old))
    (paths[1].parent / "model.weights.h5").unlink()
    capsys.readouterr()

    assert module.main(args + ["--rescore"]) == 0
    out = capsys.readouterr().out
    assert "trial 1/2: added crossentropy from its kept weights" in out and "trial 2/2: no kept weights" in out
    rescored = json.loads(paths[0].read_text())
    assert rescored.pop("rescored")[0]["added"] == ["crossentropy"]
    for split, scores in rescored["metrics"].items():
        assert scores["crossentropy"] == pytest.approx(complete[0]["metrics"][split]["crossentropy"], rel=1e-5)
        assert {k: scores[k] for k in ("loss", "accuracy")} == {k: complete[0]["metrics"][split][k]
                                                                for k in ("loss", "accuracy")}
    assert {k: v for k, v in rescored.items() if k != "metrics"} == {k: v for k, v in complete[0].items()
                                                                      if k != "metrics"}
    assert "crossentropy" not in json.loads(paths[1].read_text())["metrics"]["test"]
    assert module.main(args + ["--rescore"]) == 0
    assert "nothing to add" in capsys.readouterr().out
    assert module.main([*args[:4], "--trials", "2", "--rescore"]) == 0  # without the --epochs: the recipe's
    assert "trial 1/2: not finished; nothing to rescore" in capsys.readouterr().out

    # Weights that do not reproduce the recorded figures are not the trial's: refuse, write nothing.
    tampered = json.loads(paths[0].read_text())
    tampered["metrics"]["valid"]["loss"] *= 1.01
    del tampered["metrics"]["test"]["crossentropy"]
    paths[0].write_text(json.dumps(tampered))
    assert module.main(args + ["--rescore"]) == 2
    assert "not the weights it evaluated; nothing rescored" in capsys.readouterr().err
    assert json.loads(paths[0].read_text()) == tampered


def test_records_from_before_a_runner_option_existed_still_count_as_finished(tiny_data, tmp_path, capsys):
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path), "--epochs", "1"]
    assert module.main(args) == 0
    path = trial_path(tmp_path, "exp001_simple_dense") / "metrics.json"
    record = json.loads(path.read_text())
    assert record["schema"] == trial_record.SCHEMA_VERSION
    del record["config"]["test_time_flip"]  # as written before the option existed
    assert record["scoring_passes"] == 1  # one forward pass a split, no test-time flips
    for field in ("schema", "variant", "speed", "overrides", "scoring_passes"):  # and before the record had these
        del record[field]
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert module.main(args) == 0 and "1 already finished" in capsys.readouterr().out
    # every tool reads it in today's shape: what each missing field's absence meant
    upgraded = trial_record.read(path)
    assert upgraded["schema"] == 1 and upgraded["variant"] == "" and upgraded["speed"] == {}
    assert upgraded["overrides"] == {} and upgraded["metrics"] == record["metrics"]
    assert upgraded["scoring_passes"] == 2  # the scoring then took an evaluate and a predict pass
    assert trial_record.read(path.with_name("missing.json")) is None


def test_probe_options_valid_split_and_monitor(tiny_data, tmp_path, capsys):
    """The choices the log left open, as options: Keras' last-10% valid split, early stopping on valid accuracy."""
    module = load_train_module(EXP001)
    args = ["--data-dir", str(tiny_data), "--epochs", "3", "--patience", "1"]
    assert module.main(args + ["--results-dir", str(tmp_path / "last"), "--valid_split", "last"]) == 0
    last = read_metrics(tmp_path / "last", "exp001_simple_dense")
    assert last["config"]["valid_split"] == "last"
    assert last["provenance"]["data"]["split_sizes"] == {"train": 270, "valid": 30, "test": 100}
    assert module.main(args + ["--results-dir", str(tmp_path / "default")]) == 0
    default = read_metrics(tmp_path / "default", "exp001_simple_dense")
    assert last["metrics"]["valid"] != default["metrics"]["valid"]  # other images validate

    assert module.main(args + ["--results-dir", str(tmp_path / "acc"), "--monitor", "val_accuracy"]) == 0
    history = pd.read_csv(trial_path(tmp_path / "acc", "exp001_simple_dense") / "history.csv")
    record = read_metrics(tmp_path / "acc", "exp001_simple_dense")
    assert record["best_epoch"] == int(history.loc[history.val_accuracy.idxmax(), "epoch"])
    capsys.readouterr()
    assert module.main(args + ["--results-dir", str(tmp_path / "bad"), "--monitor", "accuracy"]) == runner.EXIT_USAGE
    assert "early stopping watches val_loss or val_accuracy" in capsys.readouterr().err


def test_a_config_key_added_later_with_its_old_behaviour_does_not_split_the_trials():
    from common import experiments

    old = {"epochs": 10, "l2": 1e-3}  # written before the experiment had `bn_order`
    new = {**experiments.RUNNER_DEFAULTS, "epochs": 10, "l2": 1e-3, "bn_order": "before_relu"}
    assert experiments.config_difference(old, new, defaults={"bn_order": "before_relu"}) == ""
    assert experiments.config_difference(old, {**new, "bn_order": "after_relu"}, {"bn_order": "before_relu"}) == \
        "bn_order 'before_relu' -> 'after_relu'"
    assert experiments.config_difference(old, new) == "bn_order None -> 'before_relu'"  # no default known


def _evaluation_only_pair(root):
    """exp901 (exp002's train.py) and exp902, the same but scored with test-time flips, as exp207 is to exp206."""
    source = EXP002.read_text()
    (root / "exp901_base").mkdir(parents=True)
    (root / "exp901_base" / "train.py").write_text(source.replace('EXPERIMENT = "exp002"', 'EXPERIMENT = "exp901"'))
    flip = (source.replace('EXPERIMENT = "exp002"', 'EXPERIMENT = "exp902"')
            .replace('BASE = "exp001"', 'BASE = "exp901"')
            .replace("CONFIG = dict(\n", "CONFIG = dict(\n    test_time_flip=True,  # evaluation only\n"))
    assert flip.count("exp901") == 1 and "test_time_flip=True" in flip
    (root / "exp902_flip").mkdir()
    (root / "exp902_flip" / "train.py").write_text(flip)
    return root / "exp901_base" / "train.py", root / "exp902_flip" / "train.py"


def test_an_evaluation_only_experiment_scores_its_bases_kept_weights(tiny_data, tmp_path, capsys):
    base_file, flip_file = _evaluation_only_pair(tmp_path / "code")
    base, flip = load_train_module(base_file), load_train_module(flip_file)
    args = ["--data-dir", str(tiny_data), "--epochs", "2", "--results-dir", str(tmp_path / "results")]
    assert base.main(args) == 0
    weights = trial_path(tmp_path / "results", "exp901_base") / results_module.WEIGHTS_FILE
    assert weights.exists()  # kept, beside the result files
    capsys.readouterr()
    assert flip.main(args) == 0
    out = capsys.readouterr().out
    assert "scoring the weights exp901_base trial 0 trained" in out and "epoch   1/2" not in out
    reused = read_metrics(tmp_path / "results", "exp902_flip")
    trained = read_metrics(tmp_path / "results", "exp901_base")
    assert reused["weights_from"]["folder"] == "exp901_base" and reused["weights_from"]["trial"] == 0
    assert reused["epochs_run"] == trained["epochs_run"] and reused["config"]["test_time_flip"] is True
    history = trial_path(tmp_path / "results", "exp902_flip") / "history.csv"
    assert history.read_text() == (weights.parent / "history.csv").read_text()

    # The same as training the weights again: exp901 run with the flip override trains them itself.
    assert base.main(args[:-1] + [str(tmp_path / "retrained"), "--test_time_flip", "true"]) == 0
    retrained = read_metrics(tmp_path / "retrained", "exp901_base")
    assert "weights_from" not in retrained and reused["metrics"] == retrained["metrics"]

    # Another training config (here fewer epochs) is not what the base trained: exp902 trains itself.
    other = ["--data-dir", str(tiny_data), "--epochs", "1", "--results-dir", str(tmp_path / "results")]
    capsys.readouterr()
    assert flip.main(other + ["--force"]) == 0
    out = capsys.readouterr().out
    assert "has not kept trained weights for this recipe; training them here" in out and "epoch   1/1" in out
    assert "weights_from" not in read_metrics(tmp_path / "results", "exp902_flip/variants/epochs=1")


def test_only_an_evaluation_change_with_the_same_code_reuses_weights(tmp_path):
    from common import experiments

    assert experiments.trains_like_base(REPO / "exp207_test_time_flip") == REPO / "exp206_longer_schedule"
    assert experiments.trains_like_base(REPO / "exp206_longer_schedule") is None  # 80 epochs, not 40
    assert experiments.trains_like_base(REPO / "exp005_colab") is None  # a deliberate rerun: it trains
    base_file, flip_file = _evaluation_only_pair(tmp_path)
    assert experiments.trains_like_base(flip_file.parent) == base_file.parent
    flip_file.write_text(flip_file.read_text().replace("Conv2D(32, 3,", "Conv2D(16, 3,", 1))
    assert experiments.trains_like_base(flip_file.parent) is None  # another model: not the base's weights
