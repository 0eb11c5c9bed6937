"""Variants: an experiment run with overrides, filed as a result of its own beside its recipe.

    python exp104_bs64_lr1e-4/train.py --l2 0.01        -> results/<data>/exp104_bs64_lr1e-4/variants/l2=0.01/trial_<i>/
    python -m common.run_all --only exp104 --set l2=0.01,0.003 --set batch_size=32,64   # the 2x2 grid
    python -m common.diff exp104 exp104/l2=0.01          # a variant against its recipe

A variant is named by the config keys whose value differs from the recipe (train.py's CONFIG), sorted,
as `key=value` joined by commas: `batch_size=32,l2=0.01`. Values are written in one canonical way
(1e-2 and 0.01 name the same variant; booleans as true/false; lists as [0.8,1.2]). The trial count
is not part of a recipe, so `--trials` never makes a variant; an override equal to the recipe's value
is no override. The recipe's own trials are what its CONFIG says, and a variant never touches them.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from common import experiments
from common.experiments import EVALUATION_KEYS, EXECUTION_KEYS

# Keys that never make a variant: how many trials, or which kernels run the step, is not what they train.
NOT_RECIPE = frozenset({"trials"}) | EXECUTION_KEYS
SAFE = "=,+-_.[]"  # beside letters and digits, what a variant's folder name keeps as it is


def parse_like(default: Any, key: str) -> Callable[[str], Any]:
    """A reader of command-line text as a value of the same type as the config default (nanoGPT style);
    an argparse type, raising ArgumentTypeError with the expected form."""

    def parse(text: str) -> Any:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"--{key} takes true or false, not {text!r}")
        if isinstance(default, str):
            return text
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if default is None:
            return value
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            value = type(default)(value)
        if type(value) is not type(default):
            raise argparse.ArgumentTypeError(
                f"--{key} takes a value like {default!r} ({type(default).__name__}), not {text!r}")
        return value

    return parse


def _plain(value: Any) -> Any:
    """A value as it comes back from metrics.json (tuples become lists), so that values compare equal."""
    return json.loads(json.dumps(value))


def of(overrides: dict, recipe: dict) -> dict:
    """The variant that `overrides` make of `recipe` (the effective config without overrides): the keys
    whose value differs from the recipe's, NOT_RECIPE aside. {} is the recipe itself."""
    return {key: _plain(value) for key, value in sorted(overrides.items())
            if key not in NOT_RECIPE and _plain(value) != _plain(recipe.get(key))}


def format_value(value: Any) -> str:
    """A value as a variant's name writes it: the canonical form of what one would type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def name(variant: dict) -> str:
    """The variant's folder name, "" for the recipe: `key=value` sorted by key, joined by commas;
    characters a folder name should not hold (/, spaces, ...) are percent-encoded."""
    text = ",".join(f"{key}={format_value(variant[key])}" for key in sorted(variant))
    return quote(text, safe=SAFE)


def label(folder: str, variant_name: str) -> str:
    """How tools name a variant: exp104_bs64_lr1e-4/l2=0.01 (the recipe: its folder alone)."""
    return f"{folder}/{variant_name}" if variant_name else folder


def command_value(value: Any) -> str:
    """A typed value as command-line text that parse_like reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def arguments(variant: dict) -> list[str]:
    """The train.py flags that run this variant."""
    return [part for key in sorted(variant) for part in (f"--{key}", command_value(variant[key]))]


def split_values(text: str) -> list[str]:
    """Split at the commas outside brackets: "0.01,0.003" -> two values, "[0.8,1.2],[0.9,1.1]" -> two lists."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[({"
        depth -= char in "])}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


class VariantError(ValueError):
    """Overrides that an experiment cannot take; the message names the keys it has."""


def typed(folder: Path, raw: dict[str, str]) -> dict:
    """Command-line text per key, read as the experiment's config types; unknown keys and values of the
    wrong type raise VariantError naming what the experiment takes."""
    config = experiments.read_definition(folder).effective_config()
    unknown = sorted(set(raw) - set(config))
    if unknown:
        raise VariantError(f"{folder.name} has no config key {', '.join(unknown)}; its keys: "
                           f"{', '.join(sorted(config))}")
    try:
        return {key: parse_like(config[key], key)(text) for key, text in raw.items()}
    except argparse.ArgumentTypeError as e:
        raise VariantError(f"{folder.name}: {e}") from None


def parse_assignment(text: str) -> tuple[str, list[str]]:
    """--set's `key=v1,v2,...` as the key and its values (still text)."""
    key, sep, values = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key or values == "":
        raise VariantError(f"--set {text!r}: write KEY=VALUE or KEY=V1,V2,... (e.g. --set l2=0.01,0.003)")
    return key, split_values(values)


def grid(assignments: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of the --set values (Hydra multirun's habit), later keys varying fastest;
    [{}] without assignments: the recipe alone. A key given twice: its last --set counts."""
    keys = list(dict(assignments))
    values = [dict(assignments)[key] for key in keys]
    return [dict(zip(keys, combination)) for combination in itertools.product(*values)]


def parse_reference(text: str) -> tuple[str, dict[str, str]]:
    """`exp104/l2=0.01,batch_size=32` -> ("exp104", {"l2": "0.01", "batch_size": "32"}); a plain
    experiment name or path -> (it, {}). The variant part is whatever follows the first `/` that is
    followed by `key=`."""
    head, sep, tail = text.rstrip("/").partition("/")
    while sep and "=" not in tail.split("/")[0]:  # a path: exp104_bs64_lr1e-4/ or ./exp104.../l2=0.01
        more_head, sep, tail = tail.partition("/")
        head = f"{head}/{more_head}"
    if not sep:
        return head, {}
    raw = {}
    for part in split_values(tail):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise VariantError(f"{text!r}: a variant is written EXPERIMENT/KEY=VALUE[,KEY=VALUE...], "
                               f"e.g. exp104/l2=0.01")
        raw[key.replace("-", "_")] = value
    return head, raw


def weights_source(folder: Path, variant: dict) -> tuple[Path, str] | None:
    """Where a trial of this experiment and variant can take trained weights from instead of training
    them: (experiment folder, variant name) of trials that train exactly the same, or None.

    An evaluation-only experiment (exp207 over exp206) scores its base's weights, and a variant that
    changes only evaluation keys (test_time_flip) scores its recipe's: what matters is the training.
    """
    base = experiments.trains_like_base(folder)
    training = {k: v for k, v in variant.items() if k not in EVALUATION_KEYS}
    source = (base or folder, name(training))
    return None if source == (folder, name(variant)) else source
