"""Start a new experiment from an existing one: its folder, its train.py and a README skeleton.

    python -m common.new exp208 --from exp206 "Wider ResNet: widths 96, 192, 384"
    python -m common.new exp208_wider --from exp206 "Wider ResNet"     # the folder name chosen

The new train.py is the base's with EXPERIMENT, BASE, EXPLANATION and the docstring set, nothing
else changed, so `python -m common.diff exp206 exp208` shows exactly those lines until you edit
CONFIG or the model. The README gets the collection's headings (hypothesis, change, result, what
it means) and the markers between which `python -m common.summarize` writes its result line and its
variants. An id that exists already, or a base that does not, is refused with exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

from common.cli import EXIT_USAGE
from common import experiments, result_lines, results, variant_summary

ID = re.compile(r"^exp(\d{3})$")


class NewError(Exception):
    """The command cannot make the folder; the message says why."""


def folder_name(name: str, explanation: str) -> str:
    """exp208 + "Wider ResNet: widths 96, ..." -> exp208_wider_resnet_widths; exp208_wider stays."""
    if experiments.FOLDER_PATTERN.match(name):
        return name
    if not ID.match(name):
        raise NewError(f"{name!r} is not an experiment id: write expNNN (exp208) or expNNN_slug (exp208_wider)")
    words = re.findall(r"[a-z0-9]+", explanation.lower())[:3] or ["new"]
    return f"{name}_{'_'.join(words)}"


def new_train_py(base_text: str, experiment: str, base: str, explanation: str, folder: str) -> str:
    """The base's train.py with its docstring and three declarations replaced, line for line."""
    tree = ast.parse(base_text)
    lines = base_text.splitlines(keepends=True)
    spans = []  # (first line, line after the last, new text), 0-based
    values = {key: json.dumps(value, ensure_ascii=False)  # "double quotes", as the train.py files write them
              for key, value in (("EXPERIMENT", experiment), ("BASE", base), ("EXPLANATION", explanation))}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in values:
            name = node.targets[0].id
            spans.append((node.lineno - 1, node.end_lineno, f"{name} = {values.pop(name)}\n"))
    if values:
        raise NewError(f"the base's train.py declares no top-level {', '.join(values)}")
    docstring = (f'"""{experiment}: {explanation}\n\nChange from {base}: (what this experiment changes, and why).\n'
                 f'Run: python {folder}/train.py --help\n"""\n')
    first = tree.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        spans.append((first.lineno - 1, first.end_lineno, docstring))
    else:
        spans.append((0, 0, docstring + "\n"))  # no docstring: one goes first
    for start, end, text in sorted(spans, reverse=True):  # from the bottom up: line numbers stay valid
        lines[start:end] = [text]
    return "".join(lines)


def readme(experiment: str, base: str, explanation: str) -> str:
    return "\n\n".join([
        f"# {experiment}: {explanation}",
        "**Hypothesis.** (What should this change do, and why?)",
        f"**Change from {base}**: {explanation}.",
        result_lines.MARKER_START + "\n" + result_lines.MARKER_END,  # summarize writes the result line here
        f"**What it means.** (A few lines of what we learned, once trials exist; `python -m common.diff "
        f"{base} {experiment}` shows the step in full.)",
        variant_summary.MARKER_START + "\n\n" + variant_summary.MARKER_END]) + "\n"


def create(name: str, base_name: str, explanation: str, root: Path = results.REPO_ROOT) -> Path:
    folder = folder_name(name, explanation)
    experiment = experiments.experiment_id(folder)
    taken = [f.name for f in experiments.all_folders(root) if experiments.experiment_id(f) == experiment]
    if taken or (root / folder).exists():
        raise NewError(f"{experiment} exists already ({', '.join(taken) or folder}); pick a free id "
                       f"(the last is {experiments.experiment_id(experiments.all_folders(root)[-1])})")
    try:
        base = experiments.find(base_name, root)
    except experiments.UnknownExperiment as e:
        raise NewError(f"--from: {e}") from None
    base_experiment = experiments.read_definition(base).experiment
    text = new_train_py((base / "train.py").read_text(), experiment, base_experiment, explanation, folder)
    target = root / folder
    target.mkdir()
    results.atomic_write_text(target / "train.py", text)
    results.atomic_write_text(target / "README.md", readme(experiment, base_experiment, explanation))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.new", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("name", help="the new id (exp208) or folder name (exp208_wider)")
    parser.add_argument("--from", dest="base", required=True, metavar="BASE", help="the experiment to start from")
    parser.add_argument("explanation", help="what changes, in a line (the results table shows it)")
    args = parser.parse_args(argv)
    try:
        target = create(args.name, args.base, args.explanation)
    except NewError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    experiment = experiments.experiment_id(target)
    print(f"created {target}/ (train.py from {args.base}, README.md)\n"
          f"next: edit CONFIG or the model in {target.name}/train.py, then\n"
          f"  python -m common.diff {args.base} {experiment}   # only what you changed\n"
          f"  python {target.name}/train.py --smoke   # a quick check that it runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
