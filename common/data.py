"""Fashion-MNIST: read and validate the four IDX files, fingerprint them, split train/valid.

Where the data comes from, in order: `--data-dir`, the environment variable
FASHION_MNIST_DIR, else Keras' download (cached under ~/.keras/datasets).
Every failure is a DataError whose message names the file, the problem and the fix.

Every copy is known by its fingerprint and a name: `offline-v1` and `offline-v2` for this project's
offline copies, `official` for the official files, `data-<8 hex digits>` for any other. Results
are filed under that name, so trials on different data never mix.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "FASHION_MNIST_DIR"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {  # role -> file name without .gz
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned byte, 3 dims / 1 dim

# The split is not a trial choice: every experiment and every trial validates on the same images.
VALID_FRACTION = 0.1  # 60,000 -> 54,000 train / 6,000 valid
SPLIT_SEED = 20201

# Smoke runs: a small stratified slice, enough to exercise every code path in seconds.
SMOKE_SIZES = {"train": 1000, "valid": 500, "test": 500}

# Data copies we know by fingerprint (its first 16 hex digits): a readable name, which is also the
# folder their results go to (results/<name>/...), and what is and is not official in them.
KNOWN_COPIES = {
    "a60bdaaf00013063": ("offline-v1", "offline stand-in copy (genuine images, not the official test split)"),
    "e37dc26dcf987e53": ("offline-v2", "offline copy v2: official test images (the first 4,443 of the "
                                       "10,000, official labels); 60,000 train images, mostly genuine, "
                                       "not the official train set"),
}
# The official files as Keras downloads them, known by the MD5 sums the Fashion-MNIST repository
# publishes (github.com/zalandoresearch/fashion-mnist, "Get the Data").
OFFICIAL_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
OFFICIAL = ("official", "official Fashion-MNIST (60,000 train and 10,000 test images)")


class DataError(Exception):
    """The data is missing or malformed; the message says which file and how to fix it."""


@dataclass(frozen=True)
class DataCopy:
    """Which data a run used. Results are keyed by `name` and record `record()`: no machine paths."""

    name: str  # readable for known copies (offline-v2, official), else data-<first 8 hex digits>
    fingerprint: str  # sha256 of the four raw uint8 arrays
    description: str
    source: str  # "idx" (a folder of IDX files) or "keras" (Keras' download)
    location: str  # that folder on this machine: for messages only, never written into results
    sizes: dict[str, int]  # images in the train and test files

    def record(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "description": self.description,
                "source": self.source, "sizes": self.sizes}


@dataclass(frozen=True)
class FashionMNIST:
    """Images as float32 in [0, 1], shape (n, 28, 28, 1); labels int32 in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    copy: DataCopy

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"train": (self.x_train, self.y_train), "valid": (self.x_valid, self.y_valid),
                "test": (self.x_test, self.y_test)}


def data_name(fingerprint: str) -> str:
    """The name results are filed under, for a fingerprint (official data is recognised by its files)."""
    known = KNOWN_COPIES.get(fingerprint[:16])
    return known[0] if known else f"data-{fingerprint[:8]}"


def describe_fingerprint(fingerprint: str) -> str:
    known = KNOWN_COPIES.get(fingerprint[:16])
    return known[1] if known else f"data {fingerprint[:16]}"


def check_name(name: str, with_results: list[str]) -> None:
    """A data name typed on a command line (--data): one that has results here, or a copy we know
    (which may have none yet). Anything else is a typo, not missing results: DataError lists both."""
    known = sorted({known_name for known_name, _ in KNOWN_COPIES.values()} | {OFFICIAL[0]})
    if name not in with_results and name not in known:
        raise DataError(f"no data named {name!r}: results here are on {', '.join(with_results) or 'no data yet'} "
                        f"(known copies: {', '.join(known)}); give one of those to --data")


# ---------------------------------------------------------------- IDX files

def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read one IDX file (gzipped or not) and check its header against what Fashion-MNIST has."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read it ({e}); the file is damaged, download it again") from None
    ndim = 1 + len(item_shape)
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated, only {len(raw)} bytes; download it again")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DataError(f"{path}: wrong magic number 0x{found_magic:08x}, expected 0x{magic:08x}; "
                        f"this is not a Fashion-MNIST {'image' if ndim == 3 else 'label'} file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        raise DataError(f"{path}: items of shape {dims[1:]}, expected {item_shape}")
    expected = header_size + int(np.prod(dims))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: {len(raw)} bytes for {dims[0]} items, expected "
                        f"{expected}; download it again")
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def find_file(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{n}[.gz]" for n in FILES.values())
    raise DataError(f"{directory}: missing {name} (or {name}.gz); the directory must hold the four "
                    f"Fashion-MNIST IDX files: {expected}")


def read_idx_dir(directory: Path) -> dict[str, np.ndarray]:
    """The four arrays of an IDX directory, validated against each other."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; give the folder that holds the four "
                        f"IDX files with --data-dir DIR or {ENV_VAR}=DIR")
    arrays = {}
    for role, name in FILES.items():
        path = find_file(directory, name)
        if role.endswith("images"):
            arrays[role] = read_idx(path, IMAGE_MAGIC, (28, 28))
        else:
            labels = read_idx(path, LABEL_MAGIC, ())
            if labels.size and labels.max() > 9:
                bad = int(np.argmax(labels > 9))
                raise DataError(f"{path}: label {labels[bad]} at index {bad} is out of range 0-9; "
                                f"the file is damaged or not Fashion-MNIST")
            arrays[role] = labels
        arrays[f"{role}_path"] = path
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{arrays[f'{split}_images_path']} has {n_images} images but "
                            f"{arrays[f'{split}_labels_path']} has {n_labels} labels; "
                            f"the two files do not belong together")
    return {role: arrays[role] for role in FILES}


def download_with_keras() -> Path:
    """Fetch the official files into Keras' cache (a no-op once cached) and return that folder."""
    cache = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets" / "fashion-mnist"
    if all((cache / f"{name}.gz").is_file() for name in FILES.values()):
        return cache  # already downloaded: no need to start TensorFlow for Keras' get_file
    from common.tensorflow_setup import tf  # noqa: F401  (imported here: reading IDX files needs no TensorFlow)
    import keras

    try:
        paths = [keras.utils.get_file(f"{name}.gz", origin=KERAS_ORIGIN + f"{name}.gz",
                                      cache_subdir=os.path.join("datasets", "fashion-mnist"))
                 for name in FILES.values()]
    except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
        raise DataError(f"could not download Fashion-MNIST through Keras ({type(e).__name__}: {e}). "
                        f"Without internet, point at a local copy of the four IDX files: "
                        f"--data-dir DIR or {ENV_VAR}=DIR") from None
    return Path(paths[0]).parent


# ---------------------------------------------------------------- fingerprint and split

def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for role in FILES:
        digest.update(role.encode())
        digest.update(np.ascontiguousarray(arrays[role]).tobytes())
    return digest.hexdigest()


def stratified_split(labels: np.ndarray, valid_fraction: float = VALID_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, valid): the same fraction of every class goes to valid, in a fixed order."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_valid = int(round(len(members) * valid_fraction))
        valid.append(members[:n_valid])
        train.append(members[n_valid:])
    # Shuffle across classes so that a prefix (the smoke subset) is stratified too.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(valid))


def _scale(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir if data_dir else os.environ.get(ENV_VAR)
    return Path(chosen).expanduser() if chosen else None


def _is_official(directory: Path) -> bool:
    paths = {name: directory / f"{name}.gz" for name in OFFICIAL_GZ_MD5}
    return all(path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == OFFICIAL_GZ_MD5[name]
               for name, path in paths.items())


def open_copy(data_dir: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], DataCopy]:
    """The four raw arrays and which copy they are (see the module docstring for the source).

    Needs no TensorFlow: run_all and the summary use it to learn the data's name quickly.
    """
    directory = resolve_data_dir(data_dir)
    source = "idx"
    if directory is None:
        directory, source = download_with_keras(), "keras"
    arrays = read_idx_dir(directory)
    digest = fingerprint(arrays)
    if digest[:16] not in KNOWN_COPIES and _is_official(directory):
        name, description = OFFICIAL
    else:
        name, description = data_name(digest), describe_fingerprint(digest)
    copy = DataCopy(name=name, fingerprint=digest, description=description, source=source,
                    location=str(directory.resolve()),
                    sizes={"train": len(arrays["train_labels"]), "test": len(arrays["test_labels"])})
    return arrays, copy


VALID_SPLITS = ("stratified", "last")


def load(data_dir: str | os.PathLike | None = None, smoke: bool = False,
         valid_split: str = "stratified") -> FashionMNIST:
    """Load, validate, fingerprint and split Fashion-MNIST (see the module docstring for the source).

    valid_split "stratified" (every experiment's default) validates on a fixed stratified 10% of the
    training file; "last" on its last 10%, in file order, as Keras' fit(validation_split=0.1) does.
    """
    arrays, copy = open_copy(data_dir)
    if valid_split == "stratified":
        train_idx, valid_idx = stratified_split(arrays["train_labels"])
    elif valid_split == "last":
        n_valid = int(round(len(arrays["train_labels"]) * VALID_FRACTION))
        train_idx = np.arange(len(arrays["train_labels"]) - n_valid)
        valid_idx = np.arange(len(train_idx), len(arrays["train_labels"]))
    else:
        raise DataError(f"valid_split {valid_split!r} is not one of {', '.join(VALID_SPLITS)}")
    test_idx = np.arange(len(arrays["test_labels"]))  # any number of test images (offline-v2 has 4,443)
    if smoke:
        train_idx, valid_idx = train_idx[:SMOKE_SIZES["train"]], valid_idx[:SMOKE_SIZES["valid"]]
        test_idx = np.random.default_rng(SPLIT_SEED).permutation(test_idx)[:SMOKE_SIZES["test"]]
    images, labels = arrays["train_images"], arrays["train_labels"].astype(np.int32)
    return FashionMNIST(
        x_train=_scale(images[train_idx]), y_train=labels[train_idx],
        x_valid=_scale(images[valid_idx]), y_valid=labels[valid_idx],
        x_test=_scale(arrays["test_images"][test_idx]),
        y_test=arrays["test_labels"][test_idx].astype(np.int32),
        copy=copy,
    )
