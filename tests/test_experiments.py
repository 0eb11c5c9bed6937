"""Every experiment folder: consistent metadata, a smoke run on tiny data; discovery and the preview."""

from __future__ import annotations

import json

import pytest

import regression
from common import augment, experiments, preview

augment_zoom = augment.zoom

FOLDERS = experiments.all_folders()
IDS = [experiments.experiment_id(f) for f in FOLDERS]


def test_catalogue_so_far():
    assert {"exp001", "exp002", "exp003", "exp004", "exp005", "exp006", "exp007", "exp008"} <= set(IDS)
    assert {f"exp1{i:02d}" for i in range(1, 15)} <= set(IDS) and {f"exp20{i}" for i in range(1, 8)} <= set(IDS)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_metadata_is_consistent(folder):
    module = experiments.load_module(folder)
    assert module.EXPERIMENT == experiments.experiment_id(folder)
    for base in filter(None, (module.BASE or "").split(", ")):
        assert base in IDS and base < module.EXPERIMENT, f"{folder.name}: unknown or later base {base}"
    assert (folder / "README.md").is_file()
    assert {"trials", "seed", "epochs", "patience", "batch_size"} <= set(module.CONFIG)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_smoke_run_reproduces_the_recorded_metrics(folder, tiny_data, tmp_path):
    """Each experiment runs on tiny data and computes what it computed when its reference was recorded.

    A failure after a change to common/ means that change alters this experiment's results. If that
    is intended, re-record: python tests/regression.py --record (see tests/regression.py).
    """
    metrics = regression.run(folder, tiny_data, tmp_path)
    record = json.loads(next(tmp_path.glob(f"*/{folder.name}/**/trial_0/metrics.json")).read_text())
    epochs = regression.smoke_args(folder)[regression.smoke_args(folder).index("--epochs") + 1]
    assert record["experiment"] == experiments.experiment_id(folder) and record["epochs_run"] == int(epochs)
    assert not regression.differences(folder, metrics)


def test_every_reference_run_learned_the_task():
    """A reference at chance or diverged guards nothing: every one is well above chance (0.1)."""
    reference = regression.load_reference()
    assert set(reference) == {f.name for f in FOLDERS}
    assert {name: regression.not_learned(metrics) for name, metrics in reference.items()
            if regression.not_learned(metrics)} == {}
    assert regression.not_learned({s: {"loss": 2.31, "accuracy": 0.1} for s in ("train", "valid", "test")})
    assert regression.not_learned({s: {"loss": 17_000.0, "accuracy": 0.1} for s in ("train", "valid", "test")})


def test_regression_check_catches_a_change_in_shared_code(tiny_data, tmp_path, monkeypatch):
    """A deliberate change to common/ (another shuffle order per epoch) is caught."""
    from common import pipeline

    folder = experiments.find("exp001")
    original = pipeline.epoch_seed
    monkeypatch.setattr(pipeline, "epoch_seed", lambda seed, epoch: original(seed, epoch) + 1)
    changed = regression.differences(folder, regression.run(folder, tiny_data, tmp_path))
    assert changed and all(line.startswith("exp001_simple_dense ") for line in changed)


def test_regression_check_catches_a_change_under_an_sgd_recipe(tiny_data, tmp_path, monkeypatch):
    """exp205 (SGD with weight decay, its cosine schedule) with random crops of 1 pixel instead of 2."""
    from common import augment

    crop = augment.random_crop
    folder = experiments.find("exp205")
    monkeypatch.setattr(augment, "random_crop", lambda images, seed, padding: crop(images, seed, padding - 1))
    changed = regression.differences(folder, regression.run(folder, tiny_data, tmp_path))
    assert changed and all(line.startswith("exp205_sgd_weight_decay ") for line in changed)


def test_regression_check_catches_a_change_in_an_evaluation_only_experiment(tiny_data, tmp_path, monkeypatch):
    """exp207 only changes the evaluation (test-time flips): mirroring up-down instead of left-right is caught."""
    from common import evaluation

    original, calls = evaluation.class_probabilities, []

    def wrong_axis(model, x):
        calls.append(1)
        return original(model, x[:, ::-1, ::-1, :] if len(calls) % 2 == 0 else x)  # the mirror copy, flipped up-down

    folder = experiments.find("exp207")
    monkeypatch.setattr(evaluation, "class_probabilities", wrong_axis)
    changed = regression.differences(folder, regression.run(folder, tiny_data, tmp_path))
    assert calls and changed and all(line.startswith("exp207_test_time_flip ") for line in changed)


def test_regression_check_catches_a_change_in_augmentation(tiny_data, tmp_path, monkeypatch):
    from common import augment

    folder = experiments.find("exp106")  # zoom and batch norm; exp006's deep plain net is noisier
    monkeypatch.setitem(augment.DEFAULTS, "zoom_fill", "constant")
    monkeypatch.setattr(augment, "zoom", lambda images, seed, zoom_range, fill="nearest":
                        augment_zoom(images, seed, zoom_range, "constant"))
    assert regression.differences(folder, regression.run(folder, tiny_data, tmp_path))


def test_find_by_id_folder_or_path():
    folder = experiments.find("exp002")
    assert folder.name == "exp002_conv"
    assert experiments.find("exp002_conv") == folder == experiments.find(str(folder))


@pytest.mark.parametrize("name, message", [("exp999", "no experiment 'exp999'; candidates: exp001_simple_dense"),
                                           ("mixup", "no experiment 'mixup'; candidates: exp007_mixup")])
def test_unknown_name_lists_candidates(name, message):
    with pytest.raises(experiments.UnknownExperiment, match=message):
        experiments.find(name)


def test_select_patterns_and_start():
    assert [f.name for f in experiments.select(["exp00[12]"])] == ["exp001_simple_dense", "exp002_conv"]
    assert [experiments.experiment_id(f) for f in experiments.select(["exp00*"], start="exp007")] == \
        ["exp007", "exp008"]
    with pytest.raises(experiments.UnknownExperiment):
        experiments.select(["exp9*"])


def test_preview_writes_a_png(tiny_data, tmp_path, capsys):
    out = tmp_path / "preview.png"
    assert preview.main(["exp008", "--data-dir", str(tiny_data), "--out", str(out), "--draws", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert preview.main(["exp001", "--data-dir", str(tiny_data), "--out", str(tmp_path / "x.png")]) == 2
    assert "configures no augmentation" in capsys.readouterr().err


def test_regression_check_ignores_accuracy_flips_but_not_loss_changes():
    """Near chance, float noise flips a few of 30 images between CPUs; the loss tells a real change."""
    reference = {"exp001_simple_dense": {s: {"loss": 2.3, "accuracy": 0.1} for s in ("train", "valid", "test")}}
    folder = experiments.find("exp001")
    flipped = {s: {"loss": 2.3 * (1 + 2e-4), "accuracy": 0.2} for s in ("train", "valid", "test")}
    assert regression.differences(folder, flipped, reference) == []
    changed = {**flipped, "valid": {"loss": 2.3 * (1 + 2e-3), "accuracy": 0.1}}
    assert regression.differences(folder, changed, reference) == [
        "exp001_simple_dense valid loss: 2.304600, recorded 2.300000 (relative difference 2.0e-03, tolerance 1.0e-03)"]
    # An experiment with more float noise on record gets five times that noise.
    noisy = {"exp001_simple_dense": {**reference["exp001_simple_dense"], "noise": 1e-3}}
    assert regression.differences(folder, changed, noisy) == []
    assert regression.differences(folder, {**flipped, "valid": {"loss": 2.3 * 1.006, "accuracy": 0.1}}, noisy)


def test_a_layer_with_adapt_is_fitted_to_the_training_images_before_training(tiny_data, tmp_path):
    """exp308's whitening layer has Keras' `adapt`: the runner calls it with the training images once,
    before the first epoch. The kept (untrained) kernel is what adapting a fresh layer to them gives,
    and it decorrelates their 3x3 patches: it is not Keras' random start."""
    import numpy as np

    from common import data
    from common.checkpoint import layers_only
    from conftest import run_script, trial_path

    folder = experiments.find("exp308")
    out = run_script(str(folder / "train.py"), "--data-dir", str(tiny_data), "--results-dir", str(tmp_path),
                     *regression.smoke_args(folder))
    assert out.returncode == 0, out.stderr
    module = experiments.load_module(folder)
    model = module.build_model({**module.CONFIG, "steps_per_epoch": 1})
    layer = next(layer for layer in model.layers if isinstance(layer, module.PatchWhitening))
    layers_only(model).load_weights(trial_path(tmp_path, "exp308_whitened_first_layer") / "model.weights.h5")
    kept = layer.kernel.numpy()

    fresh = module.PatchWhitening(module.CONFIG["whitening_eps"])
    fresh.build((None, 28, 28, 1))
    x_train = data.load(tiny_data).x_train
    fresh.adapt(x_train)
    # Same images, same whitening map: filters F with F F^T = (covariance + eps)^-1, which holds
    # whatever basis (and signs) the eigendecomposition picks for a repeated eigenvalue.
    kept_map, fresh_map = kept[..., 0, :9].reshape(9, 9), fresh.kernel.numpy()[..., 0, :9].reshape(9, 9)
    assert np.allclose(kept_map @ kept_map.T, fresh_map @ fresh_map.T, rtol=1e-4, atol=1e-3)
    assert np.array_equal(kept[..., :9], -kept[..., 9:])
    patches = np.lib.stride_tricks.sliding_window_view(x_train[..., 0], (3, 3), axis=(1, 2)).reshape(-1, 9)
    whitened = np.cov(patches @ kept[..., 0, :9].reshape(9, 9), rowvar=False)
    assert np.abs(whitened - np.diag(np.diag(whitened))).max() < 1e-3 * np.diag(whitened).max()


def test_lookahead_pulls_the_weights_back_to_the_slow_copy_as_airbench_does():
    """exp312's optimizer against the algorithm written out in numpy (airbench's LookaheadState on
    Nesterov SGD): before its start it takes SGD's steps untouched; from then on every 5th step pulls the
    slow copy toward the weights by 1 - rho, rho = 0.95**5 * progress**3, and the weights jump to it,
    and at each epoch's end the weights are the slow copy."""
    import keras
    import numpy as np

    module = experiments.load_module(experiments.find("exp312"))
    total, per_epoch, lr, momentum = 36, 12, 0.1, 0.9  # epochs end between pulls too
    optimizer = module.LookaheadSGD(total, per_epoch, every=5, start=0.3, decay=0.95, power=3.0,
                                    learning_rate=lr, momentum=momentum, nesterov=True)
    weights = keras.Variable(np.ones(4, dtype="float32"))
    grads = np.random.default_rng(0).normal(size=(total, 4)).astype("float32")

    w, slow, velocity, start = np.ones(4), np.zeros(4), np.zeros(4), round(0.3 * total)
    for step, g in enumerate(grads, start=1):
        optimizer.apply([keras.ops.convert_to_tensor(g)], [weights])
        velocity = momentum * velocity - lr * g  # Keras' Nesterov SGD, no weight decay
        w = w + momentum * velocity - lr * g
        rho = 0.95 ** 5 * (step / total) ** 3 if step > start else 0.0
        if step % 5 == 0:
            slow = slow + (1 - rho) * (w - slow)
            if step > start:
                w = slow.copy()
        if step > start and step % per_epoch == 0:
            w = slow.copy()
        assert np.allclose(weights.numpy(), w, rtol=1e-5, atol=1e-6), step
        if step == start:  # untouched so far: plain SGD's steps
            plain = np.ones(4) + sum(momentum * v - lr * gg for v, gg in _velocities(grads[:step], lr, momentum))
            assert np.allclose(weights.numpy(), plain, rtol=1e-5, atol=1e-6)
    assert not np.allclose(w, plain)  # and it did pull


def _velocities(grads, lr, momentum):
    velocity = 0.0
    for g in grads:
        velocity = momentum * velocity - lr * g
        yield velocity, g
