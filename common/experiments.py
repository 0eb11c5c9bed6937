"""Finding experiment folders by id (exp007) or folder name (exp007_mixup), and reading their train.py.

`read_definition` reads an experiment's EXPERIMENT, BASE, EXPLANATION and CONFIG from its train.py
without running it, so tools that only compare or plan (diff, run_all, summarize) never start
TensorFlow. `load_module` imports the train.py, for running it.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator

from common.results import REPO_ROOT

FOLDER_PATTERN = re.compile(r"^exp(\d{3})_[A-Za-z0-9_.-]+$")


# Config keys the runner itself reads besides the required ones, with their defaults.
#   test_time_flip  evaluate on each image and its mirror image, averaging the two predictions
#   test_time_shift evaluate also on each image shifted by this many pixels up, down, left and right
#                   (0: off), averaging the views' predictions (with flips: each view mirrored too)
#   monitor         what early stopping watches: "val_loss" (lower is better) or "val_accuracy"
#   valid_split     which 10% of the training file validates: "stratified" (the same fixed, stratified
#                   draw for every experiment) or "last" (the last 6,000 images, as Keras'
#                   fit(validation_split=0.1) takes them)
#   jit_compile     compile the training step with XLA (common/speed.py): how a trial runs, not what it
#                   computes (EXECUTION_KEYS)
RUNNER_DEFAULTS = {"fix_seed": True, "one_hot": False, "test_time_flip": False, "test_time_shift": 0,
                   "monitor": "val_loss",
                   "valid_split": "stratified", "jit_compile": False}


# Config keys that change only how a trained model is scored, never how it is trained.
EVALUATION_KEYS = frozenset({"test_time_flip", "test_time_shift"})
# Config keys that change how a trial runs, not what it computes: other kernels for the same step, as
# another CPU's are. Trials with either value are the same recipe (summarised together, resumable
# from each other's checkpoints, no variant); each trial records its value.
EXECUTION_KEYS = frozenset({"jit_compile"})
DECLARATIONS = ("EXPERIMENT", "BASE", "EXPLANATION", "CONFIG")  # what every train.py declares at its top


def config_difference(old: dict, new: dict, defaults: dict | None = None) -> str:
    """The keys two configs of one experiment differ in, "" when they are the same recipe.

    The trial count and the execution keys (EXECUTION_KEYS) are not part of the recipe. A key the
    older config lacks was added to the code later, with a default that keeps the older behaviour
    (the regression check holds every experiment to its recorded numbers): there it counts as that
    default, the runner's
    (RUNNER_DEFAULTS) or the experiment's own (`defaults`, its CONFIG).
    """
    known = {**RUNNER_DEFAULTS, **(defaults or {})}
    old = {**{k: v for k, v in known.items() if k not in old}, **old}
    keys = [k for k in sorted(set(old) | set(new))
            if k != "trials" and k not in EXECUTION_KEYS and old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


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


@dataclass(frozen=True)
class Definition:
    """What an experiment's train.py declares at its top."""

    experiment: str
    base: str | None
    explanation: str
    config: dict

    def effective_config(self) -> dict:
        """The config a run uses without overrides: the runner's defaults, then the experiment's."""
        return {**RUNNER_DEFAULTS, **self.config}


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _value(node: ast.expr):
    """A plain value: literals, tuples, lists, dict(...) or {...}, and arithmetic on them (1 / 0.3)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_value(item) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError(ast.unparse(node))


def read_definition(folder: Path) -> Definition:
    """EXPERIMENT, BASE, EXPLANATION and CONFIG of folder/train.py, read without running it."""
    path = folder / "train.py"
    names = set(DECLARATIONS)
    values = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in names:
            try:
                values[node.targets[0].id] = _value(node.value)
            except ValueError as e:
                raise ValueError(f"{path}: {node.targets[0].id} holds {e}, which is not a plain value (numbers, "
                                 f"strings, tuples, dict(...) and arithmetic on them); tools read it without "
                                 f"running the file") from None
    missing = sorted(names - set(values))
    if missing:
        raise ValueError(f"{path}: no top-level {', '.join(missing)}; every train.py declares "
                         f"EXPERIMENT, BASE, EXPLANATION and CONFIG")
    return Definition(values["EXPERIMENT"], values["BASE"], values["EXPLANATION"], values["CONFIG"])


def _training_code(folder: Path) -> str:
    """folder/train.py as code, without its docstring and declarations: what builds and trains the model."""
    body = ast.parse((folder / "train.py").read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    body = [node for node in body if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                                          and isinstance(node.targets[0], ast.Name)
                                          and node.targets[0].id in DECLARATIONS)]
    return ast.dump(ast.Module(body=body, type_ignores=[]))  # comments and line numbers do not count


def base_chain(folder: Path) -> Iterator[Path]:
    """An experiment's base, the base's base, and so on, while each names a single base experiment
    ("exp106, exp007" names two: no single chain goes on from there)."""
    while True:
        base = read_definition(folder).base
        try:
            folder = find(base, folder.parent) if base else None
        except UnknownExperiment:
            return
        if folder is None:
            return
        yield folder


def training_difference(old: dict, new: dict, defaults: dict | None = None) -> str:
    """config_difference, but for the keys that change only the evaluation (EVALUATION_KEYS)."""
    return config_difference({**old, **{k: new[k] for k in EVALUATION_KEYS if k in new}}, new, defaults)


def trains_like_base(folder: Path) -> Path | None:
    """The base experiment's folder when `folder` trains exactly the base's models, else None.

    That is an evaluation-only experiment (exp207 over exp206): its train.py differs from the base's
    only in its docstring, its declarations' names and some config key in EVALUATION_KEYS. Its trials
    can score the base's trained weights (same seed, same data) instead of training them again.
    """
    base = next(base_chain(folder), None)
    if base is None:
        return None
    config, base_config = read_definition(folder).effective_config(), read_definition(base).effective_config()
    if config == base_config:
        return None  # no evaluation change: a deliberate rerun of the recipe (exp005 of exp004) trains
    if training_difference(base_config, config) or _training_code(folder) != _training_code(base):
        return None
    return base
