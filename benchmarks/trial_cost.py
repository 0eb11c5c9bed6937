"""What a trial of each experiment costs: floating-point operations, our measured epoch times, and
the compute a faster machine would need for the rest of the campaign.

    python benchmarks/trial_cost.py [--experiments 'exp2*'] [--data offline-v2] [--results-dir results]
        [--device-tflops 10]

Operations are counted from each model's layers: a multiply-add is two operations, in Conv2D,
DepthwiseConv2D and Dense layers (batch norm, activations, pooling and additions are left out: a few
percent). A training image costs three forward passes (the forward pass, and the backward pass's
gradients with respect to activations and to weights, Kaplan et al. 2020), a valid image one; an
epoch is the 54,000 training and 6,000 valid images, and a trial its planned epochs (early stopping
can end it sooner); *TFLOP spent/trial* is what the finished trials spent on average, the epochs they
ran and their scoring (common/cost.py, the time-to-accuracy table's figure). Beside the count: the
seconds per epoch of the finished trials under results/<data>/ (median over their epochs, the first
left out for tracing), with the CPU and threads they ran on, and the operations per second that makes;
where the trials ran on several machines, the figures are the fastest one's and `ran on` gives each
machine's median seconds an epoch. With --device-tflops R, the minutes a trial would take at a
sustained R TFLOP/s: an assumption you give, not a measurement (small nets at batch
128 reach a small fraction of a GPU's peak; the input pipeline may bound them first).

With --set KEY=VALUE [KEY=VALUE ...], the same count for a variant of the recipes that no folder holds yet,
e.g. a wider net: `--experiments exp206 --set widths=96,192,384`. Values are read as train.py's
--KEY flags read them; the variant's rows show no measured times (no trial of it ran).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import tensorflow_setup  # noqa: E402,F401  (quiets TensorFlow's start-up notices)
from common import data as fmnist  # noqa: E402
from common import cost, experiments, flops, results  # noqa: E402
from common.cli import UsageError  # noqa: E402
from common.variants import parse_like  # noqa: E402

TRAIN_IMAGES = round(60_000 * (1 - fmnist.VALID_FRACTION))
VALID_IMAGES = 60_000 - TRAIN_IMAGES


forward_flops = flops.forward_flops  # the tests and the table use it by this name


def measured_epochs(results_dir: Path, data: str, folder: str) -> dict:
    """Median seconds per epoch of an experiment's finished trials, and where they ran. Trials on
    several machines: the figures of the fastest (its median epoch), and each machine's median."""
    by_machine: dict[str, dict[str, list]] = {}
    for record, epoch_seconds in cost.trained_epochs(results_dir, data, folder):
        measured = by_machine.setdefault(cost.machine(record["provenance"]["hardware"]), {"seconds": [], "wall": []})
        measured["seconds"] += epoch_seconds.tolist()
        measured["wall"].append(record["wall_seconds"])
    if not by_machine:
        return {}
    medians = {machine: pd.Series(m["seconds"]).median() for machine, m in by_machine.items()}
    fastest = min(medians, key=medians.get)
    return {"trials": sum(len(m["wall"]) for m in by_machine.values()), "s/epoch": medians[fastest],
            "hours/trial": pd.Series(by_machine[fastest]["wall"]).mean() / 3600,
            "ran on": fastest if len(medians) == 1 else "; ".join(
                f"{machine}: {medians[machine]:.0f} s" for machine in sorted(medians, key=medians.get))}


def with_settings(config: dict, settings: list[str], folder: str) -> dict:
    """The config with each KEY=VALUE applied, the value read like the train.py flag --KEY."""
    config = dict(config)
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip().removeprefix("--").replace("-", "_")
        if not sep or key not in config:
            raise UsageError(f"--set {setting!r}: give KEY=VALUE with a KEY of {folder}'s config "
                             f"({', '.join(sorted(config))})")
        try:
            config[key] = parse_like(config[key], key)(text)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--set {setting!r}: {e}") from None
    return config


def cost_table(folders: list[Path], results_dir: Path, data: str, settings: list[str] = ()) -> pd.DataFrame:
    """One row per experiment; with settings (KEY=VALUE), for the variant of each that they make."""
    rows = []
    for folder in folders:
        definition = experiments.read_definition(folder)
        config = with_settings(definition.effective_config(), list(settings), folder.name)
        model = flops.model_of(folder, config, TRAIN_IMAGES)
        forward = forward_flops(model)
        epoch = forward * (flops.TRAINING_PASSES * TRAIN_IMAGES + VALID_IMAGES)
        # An evaluation-only experiment scores its base's kept weights: no epochs of its own.
        epochs = 0 if experiments.trains_like_base(folder) else config["epochs"]
        # A variant never ran: the folder's epoch times are not its own.
        measured = {} if settings else measured_epochs(results_dir, data, folder.name)
        name = folder.name + (f" [{', '.join(settings)}]" if settings else "")
        row = {"experiment": name, "parameters": model.count_params(), "MFLOP/image": forward / 1e6,
               "TFLOP/epoch": epoch / 1e12, "epochs": epochs, "TFLOP/trial": epoch * epochs / 1e12,
               "trials": config["trials"], "trials run": measured.get("trials", 0)}
        spent = (cost.trial_costs(results_dir, data, [folder.name], counter=cost.ForwardCounter({folder.name: forward}))
                 if not settings else pd.DataFrame())
        if not spent.empty:
            row["TFLOP spent/trial"] = spent.tflop.mean()
        if measured:
            row.update({"s/epoch": measured["s/epoch"],
                        "GFLOP/s": epoch / 1e9 / measured["s/epoch"], "hours/trial": measured["hours/trial"],
                        "ran on": measured["ran on"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("experiment")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=None, help="ids or patterns (default: all)")
    parser.add_argument("--data", default="offline-v2", help="the data name under results/ to read epoch times from")
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir())
    parser.add_argument("--device-tflops", type=float, default=None,
                        help="an assumed sustained rate in TFLOP/s: adds minutes per trial at that rate")
    parser.add_argument("--set", dest="settings", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="count a variant with these config values, e.g. widths=96,192,384 "
                             "or blocks_per_stage=4")
    args = parser.parse_args()
    try:
        folders = experiments.select(args.experiments)
        fmnist.check_name(args.data, results.data_names(args.results_dir))
        table = cost_table(folders, args.results_dir, args.data, args.settings)
    except (experiments.UnknownExperiment, UsageError, fmnist.DataError) as e:
        parser.error(str(e))  # exit 2, as every command's usage errors
    if args.device_tflops:
        table[f"min/trial at {args.device_tflops:g} TFLOP/s"] = table["TFLOP/trial"] / args.device_tflops / 60
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 40):
        print(table.to_string(float_format=lambda v: f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"))
    for label, trials in (("every trial", table["trials"]),
                          ("the trials not finished yet", (table["trials"] - table["trials run"]).clip(lower=0))):
        flops = (table["TFLOP/trial"] * trials).sum()
        at_rate = f", {flops / args.device_tflops / 3600:.1f} hours at {args.device_tflops:g} TFLOP/s" \
            if args.device_tflops else ""
        print(f"{label} of these {len(table)} experiments, every planned epoch: {flops:,.0f} TFLOP{at_rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
