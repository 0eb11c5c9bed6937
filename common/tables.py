"""The main README's generated tables in Markdown: our results per data copy, the steps against their
bases, the variants in short, and the log's figures as reference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common import cost, markdown, stats, variant_summary
from common.trials import SPLITS
from common.estimates import planned_compute, remaining_compute, running_epoch_seconds


def _cells(rows: pd.DataFrame, metric: str) -> str:
    """The three splits of one experiment in one cell, as the log's table has them."""
    by_split = rows.set_index("split")
    return "<br>".join(stats.format_row_stat(by_split.loc[s], metric) for s in SPLITS if s in by_split.index)


def _epochs_cell(first: pd.Series) -> str:
    ran = (f"{first.epochs_run_min}" if first.epochs_run_min == first.epochs_run_max
           else f"{first.epochs_run_min}–{first.epochs_run_max}")
    cap = f"capped at {first.epochs_max}" if first.epochs_capped else f"max {first.epochs_max}"
    return f"{ran} ({cap})"


def _ensemble_cell(rows: pd.DataFrame) -> str:
    """The test accuracy of the trials' averaged probabilities, and how many trials it averages."""
    test = rows[rows.split == "test"].iloc[0]
    if pd.isna(test.ensemble_trials) or test.ensemble_trials < 2:
        return "–"
    return f"{test.ensemble_acc:.4f} ({int(test.ensemble_trials)})"


def _tta_cell(first: pd.Series) -> str:
    """How the test images were scored: flips, shifts by how many pixels, or plain (–)."""
    shift = first.get("test_time_shift", 0)
    shift = 0 if pd.isna(shift) else int(shift)
    views = (["flip"] if first.test_time_flip else []) + ([f"shifts {shift} px"] if shift else [])
    return ", ".join(views) or "–"


def _device_cell(devices: str) -> str:
    return "CPU and GPU trials" if "/" in devices else devices


def results_table(summary: pd.DataFrame, reference: pd.DataFrame) -> str:
    """One row per experiment of one data copy, the log's figures beside ours."""
    rows = []
    for folder, group in summary.groupby("folder", sort=True):
        first = group.iloc[0]
        trials = int(first.trials)
        trials_cell = f"{trials}" if trials >= first.default_trials else f"{trials} of {first.default_trials}"
        if not first.seed_fixed:
            trials_cell += " (seeds not fixed)"
        ref = reference[reference["experiment"] == first.experiment]
        rows.append({
            "No.": first.experiment, "Trials": trials_cell, "Epochs run": _epochs_cell(first),
            "loss (tr, vd, tt)": _cells(group, "loss"), "acc. (tr, vd, tt)": _cells(group, "accuracy"),
            "Ensemble acc. (tt)": _ensemble_cell(group),
            "TTA": _tta_cell(first),
            "Original log: acc. (tr, vd, tt)": _cells(ref, "accuracy") if not ref.empty else "–",
            "Test acc. vs log": (stats.versus_reference(group.set_index("split").loc["test"],
                                                        ref.set_index("split").loc["test"])
                                 if not ref.empty and "test" in set(group.split) else "–"),
            "Base": first.base if isinstance(first.base, str) else "None",
            "Explanation": first.explanation, "Hardware": _device_cell(first.device)})
    return markdown.table(pd.DataFrame(rows))


def steps_table(steps: pd.DataFrame) -> str:
    """One row per step of one data copy: ours (trial means, then the same images), the log's beside."""
    rows = []
    for step in steps.itertuples(index=False):
        paired = ("–" if pd.isna(step.mcnemar_p) else
                  f"{int(step.paired_trials)} a side: {step.ensemble_base:.4f} → {step.ensemble:.4f}, "
                  f"{int(step.fixed)}/{int(step.broken)}{markdown.p_value(step.mcnemar_p)}")
        rows.append({"Step": step.step, "Change": step.change, "Trials": f"{step.trials_base} → {step.trials}",
                     "Test acc. Δ, Welch p": f"{step.test_delta:+.4f}{markdown.p_value(step.welch_p)}",
                     "Same trials' ensembles: test acc., fixed/broken, McNemar p": paired,
                     "Original log: Δ, Welch p": ("–" if pd.isna(step.log_delta)
                                                  else f"{step.log_delta:+.4f}{markdown.p_value(step.log_welch_p)}")})
    return markdown.table(pd.DataFrame(rows))


def data_sections(summary: pd.DataFrame, reference: pd.DataFrame, plot_links: dict[str, str],
                  results_dir: Path | None = None, steps: pd.DataFrame | None = None,
                  variant_rows: pd.DataFrame | None = None,
                  time_sections: dict[str, tuple[pd.DataFrame, str]] | None = None) -> list[str]:
    """A labelled table per data copy: results on different data are never in one table."""
    sections = []
    for name, group in summary.groupby("data", sort=True):
        first = group.iloc[0]
        mine = steps[steps.data == name] if steps is not None else pd.DataFrame()
        my_variants = variant_rows[variant_rows.data == name] if variant_rows is not None else pd.DataFrame()
        sections += [
            f"### Our results on `{name}`",
            f"Data `{name}`: {first.data_description} (sha256 {first.data_fingerprint[:16]}…).",
            results_table(group, reference),
            "Each cell: train, valid and test, as `mean±std, min–max` over the trials (std: sample "
            "standard deviation, ddof=1); a single trial shows its value alone. *Ensemble*: the test "
            "accuracy of the trials' averaged class probabilities (how many trials), where two or more "
            "kept their predictions. *TTA*: evaluated with test-time flips (each image scored with its "
            "mirror image) or shifts (and moved that many pixels up, down, left and right), the views' "
            "probabilities averaged. The *Original log* "
            "column is the log's own figure on the official data, for reference; it was not produced "
            "by this repository (see reference/). *Test acc. vs log*: our mean minus the log's, with "
            "Welch's t-test where both have 2+ trials, else whether ours lies inside the log's min–max; "
            "it sees the trial-to-trial spread only, not that the two test sets differ (4,443 of the "
            "official images here against all 10,000: about 0.004 of sampling error).",
            remaining_compute(group, name, running_epoch_seconds(results_dir, name) if results_dir else None)
            + planned_compute(group, my_variants),
            *([f"#### Step by step on `{name}`",
               "Each experiment against its base (`results/steps.csv`; `python -m common.diff BASE EXP` for "
               "one step in full). *Test acc. Δ*: the change of the mean over trials, with Welch's t-test "
               "where both sides have 2+ trials: would another trial of the step score better? "
               "*Same trials' ensembles*: on each side the trials both ran (the same trial numbers, so the "
               "same seeds where seeds are fixed) averaged, or the one trial; equal counts, since an "
               "ensemble of more members scores higher by itself. On the same test images: the images the "
               "step fixed and broke, and McNemar's exact test: do the step's predictions beat its base's "
               "on these very images? *Original log*: the log's own change, 10 trials a side where it ran "
               "them.",
               steps_table(mine)] if not mine.empty else []),
            *(variants_section(name, my_variants) if not my_variants.empty else []),
            *(time_to_accuracy_section(name, *time_sections[name]) if name in (time_sections or {}) else []),
            *([plot_links[name]] if plot_links.get(name) else [])]
    return sections


def variants_section(data: str, rows: pd.DataFrame) -> list[str]:
    """The main README's short table of one data copy's variants."""
    return [f"#### Variants on `{data}`", variant_summary.LEGEND + " Each experiment's README has its variants "
            "in full, with their ensembles.", variant_summary.table(rows, short=True)]


def reference_table(reference: pd.DataFrame) -> str:
    """The original log's figures in the same shape, clearly labelled."""
    rows = [{"No.": experiment, "Trials": int(group.iloc[0].trials), "loss (tr, vd, tt)": _cells(group, "loss"),
             "acc. (tr, vd, tt)": _cells(group, "accuracy"), "Base": group.iloc[0].base,
             "Explanation (translated)": group.iloc[0].note_en}
            for experiment, group in reference.groupby("experiment", sort=True)]
    return markdown.table(pd.DataFrame(rows))


def time_to_accuracy_section(data: str, rows: pd.DataFrame, plot_link: str) -> list[str]:
    return [f"#### Time to accuracy on `{data}`",
            "The fast series (exp3xx) beside the long recipes (`results/time_to_accuracy.csv`, "
            "common/cost.py): mean test accuracy over the trials, and what a trial spent. *TFLOP*: the "
            "operations of the epochs it ran and of its scoring, the same on every machine. *Minutes*: "
            "its wall time on the machine it ran on; *= exp206 epochs*: that time in epochs of exp206's "
            "trials on the same CPU and threads, a figure that carries across machines. Targets: 0.940 "
            "at 40 TFLOP or less, 0.9468 (exp206's mean) at 200, 0.950 at 700 "
            "([the fast series](docs/fast-series.md)).",
            time_to_accuracy_table(rows), plot_link]


def time_to_accuracy_table(rows: pd.DataFrame) -> str:
    """The fast series against the long recipes: accuracy and what a trial costs (common/cost.py)."""
    return markdown.table(pd.DataFrame([{
        "No.": r.experiment, "Trials": r.trials,
        "Test acc.": stats.format_stat(r.test_mean, r.test_std, r.test_min, r.test_max, r.trials),
        "TFLOP a trial": f"{r.tflop:,.1f}" if r.tflop < 100 else f"{r.tflop:,.0f}",
        "Minutes a trial": f"{r.minutes:.1f}",
        "= exp206 epochs": "–" if pd.isna(r.reference_epochs) else f"{r.reference_epochs:.1f}",
        "Ran on": cost.ran_on(r.machines)} for r in rows.itertuples()]))
