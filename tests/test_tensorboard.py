"""python -m common.tensorboard: every finished trial as a TensorBoard run, read back by TensorBoard itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from common import tensorboard as export_module

DATA = "data-ffffffff"


def write_trial(results, folder, trial, test_acc, variant="", config=None, smoke=False):
    directory = results / ("smoke" if smoke else "") / DATA / folder
    directory = (directory / "variants" / variant if variant else directory) / f"trial_{trial}"
    directory.mkdir(parents=True)
    record = {"experiment": folder[:6], "folder": folder, "trial": trial, "seed": trial, "variant": variant,
              "epochs_run": 3, "smoke": smoke,
              "config": {"learning_rate": 1e-3, "widths": [32, 64], "zoom_range": None, **(config or {})},
              "metrics": {split: {"loss": 1 - test_acc, "accuracy": test_acc, "crossentropy": 1 - test_acc}
                          for split in ("train", "valid", "test")},
              "provenance": {"data": {"name": DATA, "fingerprint": "f" * 64}, "hardware": {"device": "CPU"}}}
    (directory / "metrics.json").write_text(json.dumps(record))
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.6, 0.5], "accuracy": [0.6, 0.7, 0.8],
                  "val_loss": [0.8, 0.7, 0.65], "val_accuracy": [0.65, 0.7, 0.72],
                  "learning_rate": [1e-3] * 3}).to_csv(directory / "history.csv", index=False)
    return directory


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    write_trial(results, "exp102_conv", 0, 0.90)
    write_trial(results, "exp102_conv", 1, 0.92)
    write_trial(results, "exp102_conv", 0, 0.80, variant="l2=0.01", config={"l2": 0.01})
    write_trial(results, "exp102_conv", 0, 0.10, smoke=True)  # never exported
    return results


def read_run(directory):
    """Scalars {tag: [(step, value)]} and the hparams of one run, by TensorBoard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    scalars = {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
               for tag in accumulator.Tags()["tensors"] if tag.startswith(("epoch/", "final/"))}
    content = next(iter(accumulator.PluginTagToContent("hparams").values()))
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for key, value in info.hparams.items()}
    return scalars, hparams


def test_every_finished_trial_becomes_a_run_with_its_epochs_and_hparams(results, tmp_path):
    logdir = tmp_path / "tb"
    assert export_module.export(results, logdir) == (3, 0, 0)
    runs = sorted(p.parent.relative_to(logdir).as_posix() for p in logdir.rglob(export_module.STAMP))
    assert runs == [f"{DATA}/exp102_conv/l2=0.01/trial_0", f"{DATA}/exp102_conv/trial_0", f"{DATA}/exp102_conv/trial_1"]
    scalars, hparams = read_run(logdir / DATA / "exp102_conv" / "trial_1")
    # float32 in the event files: equal to the CSV's figures within float32 rounding
    steps, values = zip(*scalars["epoch/val_accuracy"])
    assert steps == (1, 2, 3) and values == pytest.approx([0.65, 0.7, 0.72], rel=1e-6)
    assert scalars["epoch/loss"][-1][1] == pytest.approx(0.5) and "epoch/images_per_second" not in scalars
    assert [step for step, _ in scalars["final/test_accuracy"]] == [3]
    assert scalars["final/test_accuracy"][0][1] == pytest.approx(0.92, rel=1e-6)
    assert hparams["learning_rate"] == pytest.approx(1e-3) and hparams["widths"] == "[32, 64]"
    assert hparams["zoom_range"] == "null" and hparams["variant"] == "(recipe)" and hparams["trial"] == 1
    _, variant = read_run(logdir / DATA / "exp102_conv" / "l2=0.01" / "trial_0")
    assert variant["variant"] == "l2=0.01" and variant["l2"] == pytest.approx(0.01)
    # the dashboard's columns, at the logdir's top: every config key seen, the final metrics
    assert list(logdir.glob("events.out.tfevents.*"))


def test_a_rerun_rewrites_only_what_changed(results, tmp_path):
    logdir = tmp_path / "tb"
    export_module.export(results, logdir)
    assert export_module.export(results, logdir) == (0, 3, 0)
    history = results / DATA / "exp102_conv" / "trial_0" / "history.csv"
    history.write_text(history.read_text() + "4,0.4,0.85,0.6,0.75,0.001\n")  # a trial rerun with --force
    assert export_module.export(results, logdir) == (1, 2, 0)
    scalars, _ = read_run(logdir / DATA / "exp102_conv" / "trial_0")
    assert [step for step, _ in scalars["epoch/loss"]] == [1, 2, 3, 4]
    import shutil

    shutil.rmtree(results / DATA / "exp102_conv" / "trial_1")  # a trial taken away
    assert export_module.export(results, logdir) == (0, 2, 1)
    assert not (logdir / DATA / "exp102_conv" / "trial_1").exists()


def test_the_command_and_a_missing_results_dir(results, tmp_path, capsys):
    logdir = tmp_path / "tb"
    assert export_module.main(["--results-dir", str(results), "--logdir", str(logdir), "--only", "exp1*"]) == 0
    out = capsys.readouterr().out
    assert "3 run(s) written" in out and f"tensorboard --logdir {logdir}" in out
    assert export_module.main(["--results-dir", str(tmp_path / "none"), "--logdir", str(logdir)]) == 2
    assert "no results directory" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_tensorboard_serves_the_runs_and_their_scalars(results, tmp_path):
    logdir = tmp_path / "tb"
    export_module.export(results, logdir)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, runs = time.time() + 90, []
        while time.time() < deadline:
            try:
                runs = _get(f"http://127.0.0.1:{port}/data/runs")
                if f"{DATA}/exp102_conv/trial_1" in runs:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert {f"{DATA}/exp102_conv/trial_0", f"{DATA}/exp102_conv/l2=0.01/trial_0"} <= set(runs)
        tags = _get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags")
        assert {"epoch/val_accuracy", "final/test_accuracy"} <= set(tags[f"{DATA}/exp102_conv/trial_1"])
        assert _get(f"http://127.0.0.1:{port}/data/plugins_listing")["hparams"]["enabled"]
        # the HParams dashboard's table: every trial, sorted here by its test accuracy
        query = {"startIndex": 0, "sliceSize": 10, "allowedStatuses": ["STATUS_UNKNOWN"],
                 "colParams": [{"metric": {"tag": "final/test_accuracy"}, "order": "ORDER_DESC"}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
                                         json.dumps(query).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            groups = json.loads(response.read())["sessionGroups"]
        assert [g["name"] for g in groups] == [f"{DATA}/exp102_conv/trial_1", f"{DATA}/exp102_conv/trial_0",
                                               f"{DATA}/exp102_conv/l2=0.01/trial_0"]
        assert groups[0]["hparams"]["learning_rate"] == pytest.approx(1e-3)
    finally:
        server.terminate()
        server.wait(timeout=30)
