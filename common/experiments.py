"""Finding experiment folders by id (exp007) or folder name (exp007_mixup), and loading their train.py."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from common.results import REPO_ROOT

FOLDER_PATTERN = re.compile(r"^exp(\d{3})_[A-Za-z0-9_.-]+$")


class UnknownExperiment(LookupError):
    """A name that matches no experiment folder, or more than one; the message lists the candidates."""


def all_folders(root: Path = REPO_ROOT) -> list[Path]:
    """Every expNNN_<slug>/ folder with a train.py, in experiment order."""
    folders = [p for p in root.iterdir()
               if p.is_dir() and FOLDER_PATTERN.match(p.name) and (p / "train.py").is_file()]
    return sorted(folders, key=lambda p: p.name)


def experiment_id(folder: Path | str) -> str:
    return Path(folder).name.split("_", 1)[0]


def find(name: str, root: Path = REPO_ROOT) -> Path:
    """The folder for an id, a folder name or a path; raises UnknownExperiment with the candidates."""
    path = Path(name)
    if (path / "train.py").is_file() and FOLDER_PATTERN.match(path.resolve().name):
        return path.resolve()
    folders = all_folders(root)
    key = path.name.rstrip("/")
    matches = [f for f in folders if f.name == key] or [f for f in folders if experiment_id(f) == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownExperiment(f"{name!r} is ambiguous: {', '.join(f.name for f in matches)}")
    close = [f.name for f in folders if key.lower() in f.name.lower()]
    candidates = close or [f.name for f in folders]
    raise UnknownExperiment(f"no experiment {name!r}; candidates: {', '.join(candidates)}")


def select(patterns: list[str] | None = None, start: str | None = None, root: Path = REPO_ROOT) -> list[Path]:
    """Folders matching any of the ids, names or shell patterns (exp1*), from `start` on."""
    folders = all_folders(root)
    if patterns:
        chosen = []
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                hits = [f for f in folders if fnmatch.fnmatch(f.name, pattern)
                        or fnmatch.fnmatch(experiment_id(f), pattern)]
                if not hits:
                    raise UnknownExperiment(f"no experiment matches {pattern!r}; candidates: "
                                            f"{', '.join(f.name for f in folders)}")
            else:
                hits = [find(pattern, root)]
            chosen += [h for h in hits if h not in chosen]
        folders = sorted(chosen, key=lambda p: p.name)
    if start:
        first = experiment_id(find(start, root))
        folders = [f for f in folders if experiment_id(f) >= first]
    return folders


def load_module(folder: Path) -> ModuleType:
    """Import an experiment's train.py (its CONFIG, build_model, main) without running it."""
    spec = importlib.util.spec_from_file_location(f"{folder.name}.train", folder / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
