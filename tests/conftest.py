"""Shared fixtures: tiny Fashion-MNIST look-alikes written as real IDX files (no ../shared needed)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = True) -> Path:
    data = idx_bytes(array, magic)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Learnable images: noise plus a bright band whose row depends on the class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28))
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 230
    return images.astype(np.uint8)


def make_dataset(directory: Path, n_train: int = 300, n_test: int = 100, gz: bool = True, seed: int = 1) -> Path:
    """Four IDX files; another `seed` gives another data copy (other images, same shapes)."""
    directory.mkdir(parents=True, exist_ok=True)
    y_train = np.arange(n_train) % 10
    y_test = np.arange(n_test) % 10
    write_idx(directory / "train-images-idx3-ubyte", synthetic_images(y_train, seed), IMAGE_MAGIC, gz)
    write_idx(directory / "train-labels-idx1-ubyte", y_train, LABEL_MAGIC, gz)
    write_idx(directory / "t10k-images-idx3-ubyte", synthetic_images(y_test, seed + 1), IMAGE_MAGIC, gz)
    write_idx(directory / "t10k-labels-idx1-ubyte", y_test, LABEL_MAGIC, gz)
    return directory


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("fmnist"))


def data_name_of(directory: Path) -> str:
    """The name a data copy's results are filed under (results/<name>/...)."""
    from common import data

    return data.open_copy(directory)[1].name


@pytest.fixture(scope="session")
def tiny_name(tiny_data) -> str:
    return data_name_of(tiny_data)


def trial_path(results: Path, folder: str, trial: int = 0) -> Path:
    """The trial folder under results/<data name>/<folder>/: the one data copy the test ran on."""
    matches = sorted(results.glob(f"*/{folder}/**/trial_{trial}"))  # the recipe or a variant
    assert len(matches) == 1, f"expected one data copy with {folder}/trial_{trial} in {results}: {matches}"
    return matches[0]


def run_script(*args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a python command as a user would, from another working directory by default; `env`
    adds to the environment (a value None unsets the variable)."""
    full_env = {k: v for k, v in os.environ.items() if k != "FASHION_MNIST_DIR"}
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset it
    return subprocess.run([sys.executable, *args], cwd=cwd or Path("/"), env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def python_sigint(monkeypatch) -> list:
    """SIGINT in Python's own handler, as in any train.py (a test worker may hold another), and the
    exceptions Python drops in finalizers collected in the list it gives, instead of printed."""
    dropped: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield dropped
    signal.signal(signal.SIGINT, previous)


def drop_an_interrupt() -> None:
    """Ctrl-C to this process from inside a finalizer, where Python drops its KeyboardInterrupt (as
    it does in TensorFlow's, at each epoch's end)."""
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    Finalized()  # dropped at once: its __del__ runs
