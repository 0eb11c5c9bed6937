"""Result files: where they live, how they are written (atomically), and the provenance they carry."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"
RESULTS_ENV_VAR = "FASHION_MNIST_RESULTS_DIR"  # e.g. a Google Drive folder in a notebook
SMOKE_SUBDIR = "smoke"  # smoke runs live apart, under results/smoke/, and are never summarised
PLOTS_SUBDIR = "plots"  # the summary's plots; like smoke/, never a data name
VARIANTS_SUBDIR = "variants"  # an experiment's runs with overrides: <experiment>/variants/<name>/trial_<i>/
METRICS_FILE, HISTORY_FILE, PREDICTIONS_FILE = "metrics.json", "history.csv", "predictions.npz"
# The trained weights a trial evaluated (no optimizer state): kept locally, never committed (.gitignore).
WEIGHTS_FILE = "model.weights.h5"
# a running trial's checkpoint folder and the state file in it (common/checkpoint.py), its lock file
CHECKPOINT_DIR, CHECKPOINT_STATE, LOCK_FILE = "checkpoint", "state.json", ".lock"
# A finished trial's files, metrics.json last: whoever copies a trial (Ray's driver, merge) writes it
# in this order, so that a trial counts as finished only once all of it is there.
TRIAL_FILES = (WEIGHTS_FILE, HISTORY_FILE, PREDICTIONS_FILE, METRICS_FILE)
# Test-set probabilities are kept as uint8, p * 255 rounded (at most 0.002 off), beside the exact
# predicted class: about 20 KB per trial for 4,443 test images, compressed.
PROBABILITY_SCALE = 255


def default_results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV_VAR) or DEFAULT_RESULTS_DIR).expanduser()


def experiment_dir(results_dir: Path, data_name: str, folder: str, smoke: bool = False, variant: str = "") -> Path:
    """results/<data name>/<experiment folder>/ (smoke runs: results/smoke/<data name>/...); a variant's
    (common.variants): results/<data name>/<experiment folder>/variants/<variant name>/."""
    base = results_dir / SMOKE_SUBDIR if smoke else results_dir
    return base / data_name / folder / (Path(VARIANTS_SUBDIR, variant) if variant else Path())


def data_names(results_dir: Path) -> list[str]:
    """The data copies that have trials under results_dir (results/<data name>/<experiment>/trial_<i>)."""
    if not results_dir.is_dir():
        return []
    return sorted(d.name for d in results_dir.iterdir()
                  if d.is_dir() and d.name not in (SMOKE_SUBDIR, PLOTS_SUBDIR)
                  and (any(d.glob("*/trial_*")) or any(d.glob(f"*/{VARIANTS_SUBDIR}/*/trial_*"))))


def trial_dir(results_dir: Path, data_name: str, folder: str, trial: int, smoke: bool = False,
              variant: str = "") -> Path:
    return experiment_dir(results_dir, data_name, folder, smoke, variant) / f"trial_{trial}"


# The finished trials under a data copy's folder, recipes and variants: <data>/<folder>/trial_<i>/ and
# <data>/<folder>/variants/<name>/trial_<i>/.
TRIAL_PATTERNS = (f"*/*/trial_*/{METRICS_FILE}", f"*/*/{VARIANTS_SUBDIR}/*/trial_*/{METRICS_FILE}")


def trial_location(relative: Path) -> tuple[str, str, str]:
    """(data name, experiment folder, variant name) of a metrics.json path relative to the results
    directory, in either of TRIAL_PATTERNS' layouts ("" for a recipe's trial)."""
    parts = relative.parts
    if len(parts) == 6 and parts[2] == VARIANTS_SUBDIR:
        return parts[0], parts[1], parts[3]
    return parts[0], parts[1], ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@dataclass(frozen=True)
class Predictions:
    """One trial's test-set predictions, in the test file's order."""

    counts: np.ndarray  # (n, 10) uint8, as stored: the class probabilities times 255, rounded
    predicted: np.ndarray  # (n,) the class of the highest probability, before quantisation
    labels: np.ndarray  # (n,) the true classes

    @property
    def probabilities(self) -> np.ndarray:
        """(n, 10) float32, each row summing to about 1."""
        return self.counts.astype(np.float32) / PROBABILITY_SCALE

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels


def write_predictions(path: Path, probabilities: np.ndarray, labels: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=np.round(probabilities * PROBABILITY_SCALE).astype(np.uint8),
                        predicted=probabilities.argmax(axis=1).astype(np.uint8),
                        labels=np.asarray(labels).astype(np.uint8))
    atomic_write_bytes(path, buffer.getvalue())


def read_predictions(path: Path) -> Predictions:
    with np.load(path) as stored:
        return Predictions(counts=stored["probabilities"],
                           predicted=stored["predicted"].astype(np.int64), labels=stored["labels"].astype(np.int64))


@contextlib.contextmanager
def trial_lock(directory: Path) -> Iterator[bool]:
    """Yields False when another process holds this trial; the OS drops the lock if we die."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.write(str(os.getpid()))
        handle.flush()
        yield True


def is_locked(lock_path: Path) -> bool:
    """True when another process holds this trial's lock (trial_lock) right now."""
    if not lock_path.exists():
        return False
    with open(lock_path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- provenance

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(code_paths: list[str] | None = None) -> dict[str, Any]:
    """The commit, and whether the code that computes the results differs from it.

    Only `code_paths` count (default: the whole tree but results/): README edits and new result
    files written while a run goes on do not make its code dirty.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", *(code_paths or [".", ":(exclude)results"]))
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "dirty_scope": code_paths or ["(all but results/)"]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpuinfo() -> str | None:
    """/proc/cpuinfo's text (None where it is missing: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def vector_instructions(cpuinfo: str | None = None) -> str | None:
    """The widest SIMD extension the CPU has: "AVX-512", "AVX2" or "AVX" (None where /proc/cpuinfo is
    missing). Machines with the same CPU name may differ here (one AMD EPYC with AVX-512, another
    with AVX2 only): about 2x in epoch time and other last digits of the results."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if cpuinfo is None:
        return None
    flags = set(cpuinfo.split())
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return "none of AVX, AVX2, AVX-512" if "flags" in flags else None


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's family and model numbers, e.g. "family 25, model 17" (None where /proc/cpuinfo is
    missing or has neither). Two CPUs sold under one name ("AMD EPYC", both with AVX-512) train
    exp206 1.7x apart; these numbers tell them apart."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if cpuinfo is None:
        return None
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']}, model {fields['model']}"


def hardware() -> dict[str, Any]:
    from common.tensorflow_setup import tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    return {"device": "GPU" if gpus else "CPU", "gpus": gpus, "cpu": cpu_name(),
            "cpu_vector_instructions": vector_instructions(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform()}


def versions() -> dict[str, str]:
    import keras
    import numpy

    from common.tensorflow_setup import tf

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__}


# Set by run_all --ray for the trials it sends to workers, whose copy of the code has no .git: the
# driver's account (git_state) of the code it sent.
GIT_STATE_ENV_VAR = "FASHION_MNIST_GIT_STATE"


def provenance(data: dict[str, Any], experiment_folder: str | None = None) -> dict[str, Any]:
    """`data` is what identifies the data (DataCopy.record()): name, fingerprint, kind of source."""
    code = ["common", "requirements.txt", f"{experiment_folder}/train.py"] if experiment_folder else None
    sent = os.environ.get(GIT_STATE_ENV_VAR)
    git = json.loads(sent) if sent else git_state(code)
    return {"git": git, "versions": versions(), "hardware": hardware(), "data": data}
