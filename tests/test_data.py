"""The IDX loader: valid files (gzipped or not), every kind of bad file, the split, the Keras fallback."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys

import numpy as np
import pytest

from common import data
from conftest import IMAGE_MAGIC, LABEL_MAGIC, REPO, make_dataset, run_script, write_idx


@pytest.fixture
def dataset_dir(tmp_path):
    return make_dataset(tmp_path / "fmnist", n_train=200, n_test=50)


def test_loads_gzipped_and_plain_files_alike(tmp_path, dataset_dir):
    plain = make_dataset(tmp_path / "plain", n_train=200, n_test=50, gz=False)
    a, b = data.load(dataset_dir), data.load(plain)
    assert a.copy.fingerprint == b.copy.fingerprint
    assert a.x_train.shape == (180, 28, 28, 1) and a.x_valid.shape == (20, 28, 28, 1)
    assert a.x_test.shape == (50, 28, 28, 1)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert a.x_train.max() == pytest.approx(230 / 255)
    assert a.copy.source == "idx" and a.copy.name == f"data-{a.copy.fingerprint[:8]}"
    assert a.copy.sizes == {"train": 200, "test": 50}


def test_environment_variable_names_the_directory(dataset_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(dataset_dir))
    assert data.load().copy.location == str(dataset_dir.resolve())


def test_known_copies_are_named_and_their_record_holds_no_path(dataset_dir, monkeypatch):
    fingerprint = data.load(dataset_dir).copy.fingerprint
    monkeypatch.setitem(data.KNOWN_COPIES, fingerprint[:16], ("offline-v9", "a copy we know"))
    copy = data.load(dataset_dir).copy
    assert (copy.name, copy.description) == ("offline-v9", "a copy we know")
    assert copy.record() == {"name": "offline-v9", "fingerprint": fingerprint, "description": "a copy we know",
                             "source": "idx", "sizes": {"train": 200, "test": 50}}
    assert str(dataset_dir) not in str(copy.record())


def test_official_files_are_recognised_by_their_published_checksums(dataset_dir, monkeypatch):
    assert data.load(dataset_dir).copy.name != "official"
    md5 = {name: hashlib.md5((dataset_dir / f"{name}.gz").read_bytes()).hexdigest() for name in data.FILES.values()}
    monkeypatch.setattr(data, "OFFICIAL_GZ_MD5", md5)  # pretend the tiny files are the official ones
    assert data.load(dataset_dir).copy.name == "official"


def test_fewer_test_images_than_ten_thousand_or_the_smoke_size(tmp_path):
    few = make_dataset(tmp_path / "few", n_train=200, n_test=37)
    assert len(data.load(few).y_test) == 37 and len(data.load(few, smoke=True).y_test) == 37


def test_keras_cache_is_read_without_starting_keras(dataset_dir, monkeypatch, tmp_path):
    cache = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    shutil.copytree(dataset_dir, cache)
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(sys.modules, "keras", None)  # importing keras would now fail
    copy = data.load(None).copy
    assert copy.source == "keras" and copy.location == str(cache.resolve())


def _rewrite(path, transform):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(transform(raw)))


@pytest.mark.parametrize("name, transform, message", [
    ("train-images-idx3-ubyte.gz", lambda raw: raw[:-100], "truncated"),
    ("train-images-idx3-ubyte.gz", lambda raw: raw + b"\0" * 5, "trailing bytes"),
    ("train-images-idx3-ubyte.gz", lambda raw: b"\0\0\x08\x01" + raw[4:], "wrong magic number"),
    ("t10k-labels-idx1-ubyte.gz", lambda raw: raw[:2], "truncated"),
])
def test_damaged_file_is_named_with_its_problem(dataset_dir, name, transform, message):
    _rewrite(dataset_dir / name, transform)
    with pytest.raises(data.DataError, match=message) as error:
        data.load(dataset_dir)
    assert name in str(error.value)


def test_corrupt_gzip(dataset_dir):
    path = dataset_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: cannot read it"):
        data.load(dataset_dir)


def test_wrong_image_size(dataset_dir):
    write_idx(dataset_dir / "t10k-images-idx3-ubyte", np.zeros((50, 32, 32)), IMAGE_MAGIC)
    with pytest.raises(data.DataError, match=r"items of shape \(32, 32\), expected \(28, 28\)"):
        data.load(dataset_dir)


def test_count_mismatch_names_both_files(dataset_dir):
    write_idx(dataset_dir / "train-labels-idx1-ubyte", np.arange(199) % 10, LABEL_MAGIC)
    with pytest.raises(data.DataError, match="has 200 images but .*train-labels.* has 199 labels"):
        data.load(dataset_dir)


def test_label_out_of_range(dataset_dir):
    labels = np.arange(50) % 10
    labels[7] = 12
    write_idx(dataset_dir / "t10k-labels-idx1-ubyte", labels, LABEL_MAGIC)
    with pytest.raises(data.DataError, match="label 12 at index 7 is out of range 0-9"):
        data.load(dataset_dir)


def test_missing_file_lists_what_is_expected(dataset_dir):
    (dataset_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="missing t10k-images-idx3-ubyte .*four Fashion-MNIST IDX files"):
        data.load(dataset_dir)


def test_missing_directory(tmp_path):
    with pytest.raises(data.DataError, match="no such directory.*--data-dir"):
        data.load(tmp_path / "nowhere")


def test_keras_download_failure_says_how_to_use_a_local_copy(monkeypatch, tmp_path):
    import keras

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(data.DataError,
                       match="could not download.*network unreachable.*--data-dir DIR or FASHION_MNIST_DIR"):
        data.load(None)


def test_bad_data_gives_one_clear_line_and_exit_2(tmp_path, dataset_dir):
    _rewrite(dataset_dir / "train-images-idx3-ubyte.gz", lambda raw: raw[:-1])
    done = run_script(str(REPO / "exp001_simple_dense" / "train.py"), "--data-dir", str(dataset_dir),
                      "--results-dir", str(tmp_path / "results"))
    assert done.returncode == 2
    assert "error: " in done.stderr and "train-images-idx3-ubyte.gz: truncated" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "results").rglob("metrics.json"))


# ---------------------------------------------------------------- split

def test_split_is_stratified_disjoint_and_deterministic():
    labels = np.repeat(np.arange(10), 600)
    train, valid = data.stratified_split(labels)
    again_train, again_valid = data.stratified_split(labels)
    assert np.array_equal(train, again_train) and np.array_equal(valid, again_valid)
    assert len(valid) == 600 and len(train) == 5400
    assert np.all(np.bincount(labels[valid]) == 60)
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(range(6000))
    other_train, _ = data.stratified_split(labels, seed=data.SPLIT_SEED + 1)
    assert not np.array_equal(train, other_train)


def test_default_split_is_54000_6000():
    labels = np.repeat(np.arange(10), 6000)
    train, valid = data.stratified_split(labels)
    assert (len(train), len(valid)) == (54000, 6000)


def test_every_load_validates_on_the_same_images(dataset_dir):
    a, b = data.load(dataset_dir), data.load(dataset_dir)
    assert np.array_equal(a.x_valid, b.x_valid) and np.array_equal(a.y_valid, b.y_valid)
    assert np.all(np.bincount(a.y_valid) == 2)


def test_smoke_subset_is_small_and_stratified(tmp_path):
    big = make_dataset(tmp_path / "big", n_train=2000, n_test=1000)
    smoke = data.load(big, smoke=True)
    assert len(smoke.y_train) == data.SMOKE_SIZES["train"]
    assert len(smoke.y_test) == data.SMOKE_SIZES["test"]
    counts = np.bincount(smoke.y_train, minlength=10)
    assert counts.min() > 50  # roughly 100 of each class


def test_fingerprint_tells_copies_apart(tmp_path, dataset_dir):
    other = make_dataset(tmp_path / "other", n_train=200, n_test=50)
    shutil.copy(dataset_dir / "t10k-labels-idx1-ubyte.gz", other / "t10k-labels-idx1-ubyte.gz")
    assert data.load(other).copy.fingerprint == data.load(dataset_dir).copy.fingerprint
    labels = np.arange(50) % 10
    labels[[0, 1]] = labels[[1, 0]]
    write_idx(other / "t10k-labels-idx1-ubyte", labels, LABEL_MAGIC)
    assert data.load(other).copy.fingerprint != data.load(dataset_dir).copy.fingerprint
