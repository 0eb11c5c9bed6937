"""Compare two experiments: their code, their config, and their metrics with a significance test.

    python -m common.diff exp113 exp114_mixup_resnet [--format markdown] [--results-dir results]
    python -m common.diff exp104 exp104/l2=0.01          # a variant against its recipe (common.variants)

Sections: the unified diff of the two train.py files (coloured on a terminal); the config keys
that differ; and per split the loss and accuracy of each (mean±std over trials; where every trial
of both recorded it, also the plain cross-entropy, which label smoothing and L2 do not change), the difference
of the means (B - A) and, when both have at least two trials, Welch's t-test (two-sided, unequal
variances) with a plain verdict at the 5% level; where both kept their test predictions, McNemar's
exact test on the same test images and the accuracy per class. Where the two recipes' losses are
different quantities (label smoothing, an L2 penalty, test-time flips: see `loss_definition`), the
loss rows get no test and the output says which is which. An experiment without results is
compared on code and config only, and the output says so. Either side may be a variant,
EXPERIMENT/KEY=VALUE[,KEY=VALUE...], as its folder under results/ names it.
Trials on different data are never compared: each data copy with results gets its own table.
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.cli import EXIT_USAGE
from common import data as fmnist
from common import experiments, predictions, results, stats, variants
from common.trials import SPLITS, collect_trials
from common.markdown import table as markdown_table
from common.data import CLASS_NAMES

ALPHA = 0.05
COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
RESET = "\033[0m"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an experiment's recipe, or one of its variants."""

    folder: Path
    variant: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return variants.label(self.folder.name, variants.name(self.variant))

    def config(self) -> dict:
        return {**experiments.read_definition(self.folder).effective_config(), **self.variant}


def side(text: str) -> Side:
    """exp104, exp104_bs64_lr1e-4/ or exp104/l2=0.01: raises UnknownExperiment or VariantError."""
    name, raw = variants.parse_reference(text)
    folder = experiments.find(name)
    recipe = experiments.read_definition(folder).effective_config()
    return Side(folder, variants.of(variants.typed(folder, raw), recipe) if raw else {})


def code_diff(a: Path, b: Path, colour: bool) -> list[str]:
    lines = list(difflib.unified_diff(
        (a / "train.py").read_text().splitlines(), (b / "train.py").read_text().splitlines(),
        fromfile=f"{a.name}/train.py", tofile=f"{b.name}/train.py", lineterm=""))
    if colour:
        lines = [f"{COLOURS[line[0]]}{line}{RESET}" if line[:1] in COLOURS else line for line in lines]
    return lines


def config_diff(a: Side, b: Side) -> pd.DataFrame:
    config_a, config_b = a.config(), b.config()
    keys = [k for k in dict.fromkeys([*config_a, *config_b]) if config_a.get(k, "—") != config_b.get(k, "—")]
    return pd.DataFrame({"key": keys, "A": [repr(config_a[k]) if k in config_a else "—" for k in keys],
                         "B": [repr(config_b[k]) if k in config_b else "—" for k in keys]})


def welch(a: pd.Series, b: pd.Series) -> float:
    """Two-sided p-value of Welch's t-test; NaN when it cannot be computed (fewer than 2 trials)."""
    return stats.welch_p(a.mean(), a.std(), len(a), b.mean(), b.std(), len(b))


def verdict(metric: str, mean_a: float, mean_b: float, p: float) -> str:
    if math.isnan(p):
        return "no test (needs 2+ trials each)"
    if p >= ALPHA:
        return f"no significant difference, p={p:.2g}"
    b_better = mean_b > mean_a if metric == "accuracy" else mean_b < mean_a
    return f"{'B' if b_better else 'A'} better, p={p:.2g}"


def _mean_std(values: pd.Series) -> str:
    return stats.format_stat(values.mean(), values.std(), values.min(), values.max(), len(values)).split(",")[0] \
        + f" (n={len(values)})"


def loss_definition(config: dict) -> str:
    """What a recipe's recorded `loss` is (evaluation.evaluate): Keras' compiled loss, or with test-time
    flips the plain cross-entropy of the averaged probabilities."""
    if config.get("test_time_flip") or config.get("test_time_shift"):
        return "the plain cross-entropy of the probabilities averaged over each image's test-time views"
    smoothing, l2 = config.get("label_smoothing", 0), config.get("l2", 0)
    return ("the cross-entropy" + (f" against targets smoothed by {smoothing:g}" if smoothing else "")
            + (f" plus the L2 penalty ({l2:g} x the squared weights)" if l2 else ""))


def metrics_comparison(trials: pd.DataFrame, a: str, b: str, same_loss: bool = True) -> pd.DataFrame:
    """Per split and metric, A and B (labels: the `side` column of `trials`) side by side with Welch's
    test; `same_loss` False when the two recipes' losses measure different things (then their
    difference is shown without a test)."""
    rows = []
    for split in SPLITS:
        for metric in ("accuracy", "loss", "crossentropy"):
            values_a = trials[(trials.side == a) & (trials.split == split)][metric]
            values_b = trials[(trials.side == b) & (trials.split == split)][metric]
            if metric == "crossentropy" and (values_a.isna().any() or values_b.isna().any()):
                continue  # recorded only by trials since it was added: compare it where both sides have it
            comparable = metric != "loss" or same_loss
            p = welch(values_a, values_b) if comparable else math.nan
            rows.append({"split": split, "metric": metric, "A": _mean_std(values_a), "B": _mean_std(values_b),
                         "B - A": f"{values_b.mean() - values_a.mean():+.4f}",
                         "Welch p": "" if math.isnan(p) else f"{p:.3g}",
                         "verdict": verdict(metric, values_a.mean(), values_b.mean(), p) if comparable
                         else "not comparable: different losses (below)"})
    return pd.DataFrame(rows)


def paired_comparison(trials: pd.DataFrame, a: str, b: str, results_dir: Path, markdown: bool) -> list[str]:
    """McNemar's exact test on the same test images, and accuracy per class, from stored predictions:
    the ensembles of the trials both sides ran (same trial numbers), so that neither wins by count."""
    sides = {label: predictions.load_by_trial(results_dir, trials[trials.side == label]) for label in (a, b)}
    if not sides[a] or not sides[b]:
        return ["", "No paired test: " + " and ".join(label for label in (a, b) if not sides[label])
                + " kept no test predictions (trials from before predictions were stored)."]
    paired = predictions.same_trials(sides[a], sides[b])
    if paired is None:
        return ["", "No paired test: the two share no trial number with test predictions, or their predictions "
                    "are not on the same test images."]
    ens_a, ens_b, test = paired.a, paired.b, paired.test
    better = "no significant difference" if test.p_value >= ALPHA else (
        f"{'B' if test.only_b > test.only_a else 'A'} better")
    numbers = ", ".join(str(trial) for trial in paired.trials)

    per_class = pd.DataFrame({
        "class": CLASS_NAMES,
        "A": [f"{v:.4f}" for v in predictions.per_class_accuracy(ens_a.predicted, ens_a.labels)],
        "B": [f"{v:.4f}" for v in predictions.per_class_accuracy(ens_b.predicted, ens_b.labels)]})
    per_class["B - A"] = [f"{float(y) - float(x):+.4f}" for x, y in zip(per_class.A, per_class.B)]
    per_class.loc[len(per_class)] = ["all", f"{ens_a.accuracy:.4f}", f"{ens_b.accuracy:.4f}",
                                     f"{ens_b.accuracy - ens_a.accuracy:+.4f}"]
    members = f"trial {numbers}" if len(paired.trials) == 1 else f"the ensembles of trials {numbers}"
    return ["", f"Paired test on the same {len(ens_a.labels)} test images ({members} on each side): "
                f"A right and B wrong on {test.only_a}, A wrong and B right on {test.only_b}; McNemar's exact "
                f"test p={test.p_value:.3g}: {better}.",
            "", "Calibration of the same predictions (expected calibration error of the top-class probability, "
                f"15 bins: the gap between how sure and how often right; lower is better): "
                f"A {predictions.calibration_error(ens_a.probabilities.max(axis=1), ens_a.correct):.4f}, "
                f"B {predictions.calibration_error(ens_b.probabilities.max(axis=1), ens_b.correct):.4f}.",
            "", "Test accuracy per class:", "",
            markdown_table(per_class) if markdown else per_class.to_string(index=False)]


def render(a: Side | Path, b: Side | Path, results_dir: Path, markdown: bool, colour: bool,
           data: str | None = None) -> str:
    a, b = (s if isinstance(s, Side) else Side(s) for s in (a, b))
    definition_a, definition_b = experiments.read_definition(a.folder), experiments.read_definition(b.folder)
    out = []

    def heading(text: str) -> None:
        out.extend(["", f"## {text}" if markdown else f"== {text} ==", ""])

    out.append(f"# {a.label} vs {b.label}" if markdown else f"A = {a.label}, B = {b.label}")
    out.append("")
    for letter, one, definition in (("A", a, definition_a), ("B", b, definition_b)):
        what = f"a variant of {one.folder.name}; " if one.variant else ""
        out.append(f"{'- ' if markdown else ''}{letter}: {one.label} ({what}base {definition.base}): "
                   f"{definition.explanation}")

    heading("Code: train.py")
    lines = code_diff(a.folder, b.folder, colour and not markdown)
    out.extend((["```diff", *lines, "```"] if markdown else lines) if lines else ["(identical)"])

    heading("Config")
    table = config_diff(a, b)
    out.append("(identical)" if table.empty else
               markdown_table(table) if markdown else table.to_string(index=False))
    for one, other in ((a, b), (b, a)):
        if variants.weights_source(one.folder, one.variant) == (other.folder, variants.name(other.variant)):
            out.extend(["", f"{one.label} trains exactly what {other.label} trains (they differ in evaluation "
                            f"only): its trials score the weights {other.label}'s trials kept (without them, they "
                            f"train the same recipe), so the metrics below differ by the evaluation alone."])

    heading("Metrics")
    loss_a, loss_b = (loss_definition(one.config()) for one in (a, b))
    trials, problems = collect_trials(results_dir, with_variants=True)
    if not trials.empty:
        trials = trials.assign(side=[variants.label(f, v) for f, v in zip(trials.folder, trials.variant)])
        trials = trials[trials.side.isin([a.label, b.label]) & ((trials.data == data) if data else True)]
    names = sorted(set(trials.data)) if not trials.empty else []
    if a.label == b.label:
        out.append(f"A and B are the same ({a.label}): nothing to compare.")
        names = []
    elif not names:
        out.append(f"No results yet for {a.label} and {b.label}" + (f" on {data}" if data else "")
                   + f" in {results_dir}: code and config only.")
    for name in names:  # trials on different data are never compared with each other
        on_data = trials[trials.data == name]
        out.extend([f"On {name} ({on_data.data_description.iloc[0]}):", ""])
        missing = [one.label for one in (a, b) if one.label not in set(on_data.side)]
        if missing:
            out.append(f"No results on {name} for {' and '.join(missing)}: nothing to compare.")
        else:
            table = metrics_comparison(on_data, a.label, b.label, loss_a == loss_b)
            out.append(markdown_table(table) if markdown else table.to_string(index=False))
            if loss_a != loss_b:
                out.extend(["", f"The loss rows measure different things: A's loss is {loss_a}, B's {loss_b}. "
                                + ("The crossentropy rows (against the true classes, on both sides) compare."
                                   if (table.metric == "crossentropy").any() else
                                   "Not every trial of the two recorded the plain cross-entropy, which would "
                                   "compare (trials record it since 2026-11-29; `train.py --rescore` adds it "
                                   "to a trial that kept its weights).")])
            out.extend(paired_comparison(on_data, a.label, b.label, results_dir, markdown))
        out.append("")
    if names:
        out.append("Cells: mean±std over trials (sample std) and the trial count. Two tests, two questions. "
                   "Welch's t-test (two-sided, unequal variances, on the trials' accuracies): would another "
                   "trial of B score better than another trial of A? It sees the trial-to-trial spread. "
                   "McNemar's exact test (on the test images that exactly one of the two gets right): do B's "
                   "predictions beat A's on these very images? It sees the image-to-image spread of the "
                   f"models at hand (each side's ensemble of the trials both ran, or that one trial). 'better' means "
                   f"p < {ALPHA}.")
    out.extend(f"warning: {p}" for p in problems)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="experiment A: id (exp113) or folder name; a variant: exp104/l2=0.01")
    parser.add_argument("b", help="experiment B, or a variant")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir())
    parser.add_argument("--out", type=Path, help="write to this file instead of the terminal")
    parser.add_argument("--data", metavar="NAME", help="compare only the trials on this data (e.g. offline-v2; "
                        "default: every data copy with results, each on its own)")
    args = parser.parse_args(argv)
    try:
        a, b = side(args.a), side(args.b)
        if args.data:
            fmnist.check_name(args.data, results.data_names(args.results_dir))
    except (experiments.UnknownExperiment, variants.VariantError, fmnist.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = render(a, b, args.results_dir, args.format == "markdown",
                      colour=args.out is None and sys.stdout.isatty(), data=args.data)
    except ValueError as e:  # a train.py whose CONFIG cannot be read without running it
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        results.atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
