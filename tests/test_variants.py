"""Variants: runs with overrides filed beside their recipe, swept by run_all, summarised against the recipe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from common import results, summarize, variant_summary, variants
from conftest import REPO, run_script
from test_predictions import one_hot
from test_summarize import record, write

EXP001 = REPO / "exp001_simple_dense"
EXP104 = REPO / "exp104_bs64_lr1e-4"


# ---------------------------------------------------------------- names

def test_a_variant_is_named_by_what_differs_from_the_recipe_in_one_canonical_form():
    recipe = {"trials": 10, "epochs": 100, "l2": 1e-3, "l2_layers": "all", "zoom_range": [0.9, 1.1],
              "batch_norm": True}
    assert variants.of({"trials": 3}, recipe) == {}  # the trial count is no change of recipe
    assert variants.of({"l2": 1e-3, "epochs": 100}, recipe) == {}  # values equal to the recipe's: no variant
    variant = variants.of({"l2": 1e-2, "batch_norm": False, "zoom_range": (0.8, 1.2), "trials": 3}, recipe)
    assert variants.name(variant) == "batch_norm=false,l2=0.01,zoom_range=[0.8,1.2]"  # sorted keys
    assert variants.name({"l2": 0.00001}) == variants.name({"l2": 1e-5}) == "l2=1e-05"
    assert variants.name({"note": "a b/c"}) == "note=a%20b%2Fc"  # no folder separators in a name
    assert variants.label("exp104_bs64_lr1e-4", "l2=0.01") == "exp104_bs64_lr1e-4/l2=0.01"
    assert variants.label("exp104_bs64_lr1e-4", "") == "exp104_bs64_lr1e-4"
    # the flags that run it read back as the same values
    assert variants.arguments({"l2": 0.01, "batch_norm": False, "zoom_range": [0.8, 1.2]}) == [
        "--batch_norm", "false", "--l2", "0.01", "--zoom_range", "[0.8, 1.2]"]


def test_references_and_grids_split_at_the_commas_outside_brackets():
    assert variants.parse_reference("exp104") == ("exp104", {})
    assert variants.parse_reference("exp104_bs64_lr1e-4/") == ("exp104_bs64_lr1e-4", {})
    assert variants.parse_reference("./exp107_merge_exp007/zoom_range=[0.8,1.2],batch_norm=false") == (
        "./exp107_merge_exp007", {"zoom_range": "[0.8,1.2]", "batch_norm": "false"})
    assert variants.parse_assignment("l2=0.01,0.003") == ("l2", ["0.01", "0.003"])
    assert variants.parse_assignment("zoom-range=[0.8,1.2],[0.9,1.1]") == ("zoom_range", ["[0.8,1.2]", "[0.9,1.1]"])
    grid = variants.grid([("l2", ["0.01", "0.003"]), ("batch_size", ["32", "64"])])
    assert grid == [{"l2": "0.01", "batch_size": "32"}, {"l2": "0.01", "batch_size": "64"},
                    {"l2": "0.003", "batch_size": "32"}, {"l2": "0.003", "batch_size": "64"}]
    assert variants.grid([]) == [{}]
    for bad in ("l2", "=0.01", "l2="):
        with pytest.raises(variants.VariantError, match="KEY=VALUE"):
            variants.parse_assignment(bad)


def test_a_key_the_experiment_lacks_or_a_value_of_the_wrong_type_is_named():
    with pytest.raises(variants.VariantError, match=r"exp001_simple_dense has no config key dropout; its keys: "
                                                    r"batch_size, epochs, fix_seed"):
        variants.typed(EXP001, {"dropout": "0.5"})
    with pytest.raises(variants.VariantError, match=r"--batch_size takes a value like 32 \(int\), not 'big'"):
        variants.typed(EXP001, {"batch_size": "big"})
    assert variants.typed(EXP104, {"l2": "1e-2", "l2_layers": "conv"}) == {"l2": 0.01, "l2_layers": "conv"}


def test_an_evaluation_only_variant_scores_the_recipes_weights():
    exp206, exp207 = REPO / "exp206_longer_schedule", REPO / "exp207_test_time_flip"
    assert variants.weights_source(exp206, {"test_time_flip": True}) == (exp206, "")
    assert variants.weights_source(exp206, {}) is None and variants.weights_source(exp206, {"epochs": 3}) is None
    assert variants.weights_source(exp207, {}) == (exp206, "")
    assert variants.weights_source(exp207, {"epochs": 3}) == (exp206, "epochs=3")


# ---------------------------------------------------------------- runs and sweeps

def test_a_sweep_runs_the_grid_beside_an_untouched_recipe_and_resumes(tiny_data, tmp_path):
    # The recipe's own trial first (exp001: early stopping, 100 epochs at most; seconds on the tiny data).
    assert run_script(str(EXP001 / "train.py"), "--data-dir", str(tiny_data), "--results-dir",
                      str(tmp_path)).returncode == 0
    recipe = next(tmp_path.glob("*/exp001_simple_dense/trial_0"))
    before = {p.name: p.read_bytes() for p in recipe.iterdir() if p.is_file()}
    sweep = ["-m", "common.run_all", "--only", "exp001", "--epochs", "1", "--trials", "1", "--data-dir",
             str(tiny_data), "--results-dir", str(tmp_path)]
    # Half the grid first, as a sweep cut short would leave it.
    half = run_script(*sweep, "--set", "learning_rate=0.01", "--set", "batch_size=16,32", cwd=REPO)
    assert half.returncode == 0, half.stdout + half.stderr
    finished = {p: p.read_bytes() for p in tmp_path.glob("*/exp001_simple_dense/variants/*/trial_0/metrics.json")}
    assert len(finished) == 2

    grid = ["--set", "learning_rate=0.01,1e-3", "--set", "batch_size=16,32"]  # 1e-3 and 32: the recipe's
    plan = run_script(*sweep, *grid, "--dry-run", cwd=REPO)
    assert "1 experiment(s), 4 trial(s): 2 to run, 2 done" in plan.stdout
    done = run_script(*sweep, *grid, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in (recipe.parent / "variants").iterdir())
    assert names == ["batch_size=16,epochs=1", "batch_size=16,epochs=1,learning_rate=0.01", "epochs=1",
                     "epochs=1,learning_rate=0.01"]
    for path, content in finished.items():
        assert path.read_bytes() == content  # the finished half was not run again
    assert {p.name: p.read_bytes() for p in recipe.iterdir() if p.is_file()} == before  # nor the recipe touched
    trial = recipe.parent / "variants" / "batch_size=16,epochs=1" / "trial_0"
    record = json.loads((trial / "metrics.json").read_text())
    assert record["config"]["batch_size"] == 16 and record["config"]["learning_rate"] == 0.001
    assert record["variant"] == "batch_size=16,epochs=1"
    table = pd.read_csv(tmp_path / "variants.csv")  # summarised at the end of the run
    assert sorted(table.variant) == names and set(table.trials) == {1} and set(table.recipe_trials) == {1}
    assert "4 trial(s): 0 to run, 4 done" in run_script(*sweep, *grid, "--dry-run", cwd=REPO).stdout


def test_overrides_that_are_not_config_keys_exit_2_naming_the_keys(tiny_data, tmp_path):
    sweep = run_script("-m", "common.run_all", "--only", "exp001", "--set", "dropout=0.1,0.2", "--data-dir",
                       str(tiny_data), "--results-dir", str(tmp_path), cwd=REPO)
    assert sweep.returncode == 2
    assert "error: exp001_simple_dense has no config key dropout; its keys: batch_size" in sweep.stderr
    malformed = run_script("-m", "common.run_all", "--only", "exp001", "--set", "dropout", "--data-dir",
                           str(tiny_data), cwd=REPO)
    assert malformed.returncode == 2 and "write KEY=VALUE or KEY=V1,V2" in malformed.stderr
    diff = run_script("-m", "common.diff", "exp001", "exp001/dropout=0.1", cwd=REPO)
    assert diff.returncode == 2 and "no config key dropout" in diff.stderr
    direct = run_script(str(EXP001 / "train.py"), "--dropout", "0.1", "--data-dir", str(tiny_data))
    assert direct.returncode == 2 and "unrecognized arguments: --dropout" in direct.stderr
    assert not any(tmp_path.rglob("metrics.json"))


# ---------------------------------------------------------------- the variants table

LABELS = np.arange(20) % 10


def _trial(results_dir, folder, variant, trial, test_acc, valid_acc, wrong):
    """A trial record (filed as the recipe's or the variant's) whose test predictions miss `wrong`."""
    rec = record("exp104", folder, trial, test_acc)
    rec["metrics"]["valid"]["accuracy"] = valid_acc
    rec["variant"] = variant
    name = rec["provenance"]["data"]["name"]
    path = results.trial_dir(results_dir, name, folder, trial, variant=variant) / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    classes = LABELS.copy()
    classes[wrong] = (classes[wrong] + 1) % 10
    results.write_predictions(path.with_name("predictions.npz"), one_hot(classes), LABELS)


def test_the_variant_table_against_hand_computed_counts_and_p_values(tmp_path):
    folder = EXP104.name
    recipe_test, recipe_valid = [0.90, 0.91, 0.93], [0.92, 0.92, 0.93]
    variant_test, variant_valid = [0.92, 0.95], [0.93, 0.95]
    # The recipe's trials 0 and 1 both miss images 0-5; the variant's both miss 4-6: with the same
    # seeds (trials 0 and 1) the variant fixes images 0-3 and breaks image 6.
    for trial, (t, v) in enumerate(zip(recipe_test, recipe_valid)):
        _trial(tmp_path, folder, "", trial, t, v, list(range(6)) if trial < 2 else [0])
    for trial, (t, v) in enumerate(zip(variant_test, variant_valid)):
        _trial(tmp_path, folder, "l2=0.01", trial, t, v, [4, 5, 6])
    write(tmp_path, "exp101_dense_stabilized", 0, record("exp101", "exp101_dense_stabilized", 0, 0.8))  # no variants

    readme = tmp_path / "README.md"
    assert summarize.summarize(tmp_path, readme, log=lambda _: None) == 0
    table = pd.read_csv(tmp_path / "variants.csv")
    row = table[table.trials > 0].set_index("variant").loc["l2=0.01"]
    assert (row.trials, row.recipe_trials, row.paired_trials) == (2, 3, 2)
    assert row.change == "l2 0.001 → 0.01"
    assert row.test_acc_mean == pytest.approx(np.mean(variant_test), abs=1e-6)
    assert row.test_acc_std == pytest.approx(np.std(variant_test, ddof=1), abs=1e-6)
    assert (row.test_acc_min, row.test_acc_max) == (0.92, 0.95)
    assert row.valid_delta == pytest.approx(np.mean(variant_valid) - np.mean(recipe_valid), abs=1e-6)
    assert row.test_delta == pytest.approx(np.mean(variant_test) - np.mean(recipe_test), abs=1e-6)
    welch = scipy_stats.ttest_ind(variant_test, recipe_test, equal_var=False).pvalue
    assert row.welch_p == pytest.approx(welch, rel=1e-4)
    assert (row.fixed, row.broken) == (4, 1)
    assert row.mcnemar_p == pytest.approx(scipy_stats.binomtest(1, 5, 0.5).pvalue, rel=1e-4)  # 2 * 6/32 = 0.375
    assert row.paired_recipe_acc == pytest.approx(14 / 20) and row.paired_acc == pytest.approx(17 / 20)
    assert (row.ensemble_trials, row.ensemble_acc) == (2, pytest.approx(17 / 20))
    assert row.why == "tf.keras' kernel_regularizer=\"l2\" means 0.01, not our 1e-3"  # from variants.txt
    # The variants exp104 plans without trials here are listed as such, with no figure.
    planned = table[table.trials == 0]
    assert "l2_layers=conv" in set(planned.variant) and planned.test_acc_mean.isna().all()
    # The recipes' tables are the recipes' alone.
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert int(summary[(summary.folder == folder) & (summary.split == "test")].trials.iloc[0]) == 3
    text = readme.read_text()
    assert "#### Variants on `data-ffffffff`" in text
    assert (f"| `exp104/l2=0.01` | l2 0.001 → 0.01 | 3, 2 of 3 | +0.0167 | 0.9350±0.0212, 0.9200–0.9500 | "
            f"+0.0217, p={welch:.2g} | 2 a side: 0.7000 → 0.8500, 4/1, p=0.38 |") in text
    assert "| `exp104/l2_layers=conv` |" in text and "not run yet" in text
    # still to run: exp104's plan of 11 trials less the 2 here (3 of l2=0.01, 3 of l2_layers=conv, 5 of one)
    assert "The variants the experiments plan (`variants.txt`) lack 9 trial(s) here" in text
    assert (tmp_path / "plots" / "data-ffffffff" / "variants" / f"{folder}.png").exists()


def test_an_experiment_readme_gets_its_variants_between_markers(tmp_path):
    rows = pd.DataFrame([{"data": "offline-v2", "experiment": "exp104", "folder": "exp104_bs64_lr1e-4",
                          "variant": "l2=0.01", "change": "l2 0.001 → 0.01", "why": "", "planned_trials": 3,
                          "trials": 0, "recipe_trials": 5}], columns=variant_summary.COLUMNS)
    folder = tmp_path / "exp104_bs64_lr1e-4"
    folder.mkdir()
    (folder / "train.py").write_text("")
    (folder / "README.md").write_text("# exp104\n\nText before.\n")
    other = tmp_path / "exp105_generator_onehot"
    other.mkdir()
    (other / "train.py").write_text("")
    (other / "README.md").write_text("# exp105\n")
    written = variant_summary.update_experiment_readmes(tmp_path, rows, {})
    assert written == [folder / "README.md"]
    text = (folder / "README.md").read_text()
    assert text.startswith("# exp104\n\nText before.\n") and variant_summary.MARKER_START in text
    assert "| `exp104/l2=0.01` |" in text and "0 of 3" in text
    assert (other / "README.md").read_text() == "# exp105\n"  # no variants, no markers: left alone
    # Rewritten in place, and to "none yet" when its variants are gone.
    variant_summary.update_experiment_readmes(tmp_path, rows.iloc[:0], {})
    text = (folder / "README.md").read_text()
    assert text.count(variant_summary.MARKER_START) == 1 and "No variants of this experiment" in text


def test_a_bad_line_in_variants_txt_names_the_file_and_line(tmp_path):
    folder = tmp_path / "exp104_bs64_lr1e-4"
    folder.mkdir()
    (folder / "train.py").write_text((EXP104 / "train.py").read_text())
    (folder / "variants.txt").write_text("# comment\nl2=0.01 3  # why\n\nl2=0.001\n")
    with pytest.raises(variants.VariantError, match=r"variants.txt:4: l2=0.001 is the recipe itself"):
        variant_summary.planned(folder)
    (folder / "variants.txt").write_text("l2=0.01 3  # why\ndropout=0.5\n")
    with pytest.raises(variants.VariantError, match=r"variants.txt:2: .*no config key dropout"):
        variant_summary.planned(folder)
    (folder / "variants.txt").write_text("l2=0.01 3  # why\n")
    (plan,) = variant_summary.planned(folder)
    assert (plan.variant, plan.trials, plan.why, plan.name) == ({"l2": 0.01}, 3, "why", "l2=0.01")


def test_diff_compares_a_variant_with_its_recipe(tmp_path, capsys):
    from common import diff

    folder = EXP104.name
    for trial, acc in enumerate([0.90, 0.91, 0.93]):
        _trial(tmp_path, folder, "", trial, acc, 0.92, [0])
    for trial, acc in enumerate([0.92, 0.95]):
        _trial(tmp_path, folder, "l2=0.01", trial, acc, 0.93, [4, 5, 6])
    assert diff.main(["exp104", "exp104/l2=1e-2", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "A = exp104_bs64_lr1e-4, B = exp104_bs64_lr1e-4/l2=0.01" in out
    assert "== Code: train.py ==\n\n(identical)" in out
    assert "l2 0.001 0.01" in " ".join(out.split("== Config ==")[1].split("== Metrics ==")[0].split())
    assert "0.9350±0.0212 (n=2)" in out and "0.9133±0.0153 (n=3)" in out
    assert "The loss rows measure different things" in out  # another L2 factor: another loss
    assert "Paired test on the same 20 test images" in out
    assert diff.main(["exp104/l2=0.01", "exp104/l2=0.01", "--results-dir", str(tmp_path)]) == 0
    assert "nothing to compare" in capsys.readouterr().out


def test_merge_files_a_variants_trials_under_the_variant(tmp_path):
    from common import merge

    source, home = tmp_path / "elsewhere", tmp_path / "home"
    _trial(source, EXP104.name, "l2=0.01", 0, 0.92, 0.93, [4])
    _trial(source, EXP104.name, "", 0, 0.90, 0.92, [0])
    assert merge.merge([source], home, move=False, log=lambda _: None) == 0
    variant = home / "data-ffffffff" / EXP104.name / "variants" / "l2=0.01" / "trial_0"
    assert json.loads((variant / "metrics.json").read_text())["variant"] == "l2=0.01"
    assert (variant / "predictions.npz").read_bytes() == (
        source / "data-ffffffff" / EXP104.name / "variants" / "l2=0.01" / "trial_0" / "predictions.npz").read_bytes()
    assert (home / "data-ffffffff" / EXP104.name / "trial_0" / "metrics.json").exists()  # the recipe's apart
    assert merge.merge([source], home, move=False, log=lambda _: None) == 0  # again: already there
