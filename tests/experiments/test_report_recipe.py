"""The recipe study (claim R1): its budget, its rows and its report section, on small CSVs the tests write."""

from __future__ import annotations

import json

import pytest

from dyrelu.cli import main
from dyrelu.experiments import (
    RECIPE_BUDGET,
    RECIPE_CLAIM,
    Budget,
    claims_budget,
    read_results,
    run_grid,
    select_claims,
)
from dyrelu.experiments.claims import choose_recipe
from dyrelu.experiments.report import make_report, readme_summary, recipe_report
from dyrelu.experiments.stats import summarise_recipes
from dyrelu.train import load_checkpoint
from tests.experiments.rows import c2_rows, row, write_rows


def _recipe_rows(values: dict[str, tuple[float, float, float]]) -> list[dict]:
    """Rows of every R1 recipe, 3 seeds; ``values[label] = (val_acc, test_acc, dyn_median)``."""
    rows = []
    for config in RECIPE_CLAIM.configs:
        val, test, dyn = values[config.display]
        for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
            recipe = row(config.model, config.act, seed, test + jitter, **dict(config.act_kwargs))
            recipe |= {
                "experiment": "R1",
                "epochs": 2,
                "data_fraction": 1.0,
                "val_acc": val + jitter,
                "val_size": 5000,
                "train_kwargs": json.dumps(dict(config.train_kwargs), sort_keys=True) if config.train_kwargs else "",
                "dyn_median": "" if config.act == "relu" else dyn,
                "dyn_max": "" if config.act == "relu" else 3 * dyn,
            }
            rows.append(recipe)
    return rows


LABELS = [c.display for c in RECIPE_CLAIM.configs]


def _values(overrides=None):
    """Every recipe at 90 % and static, but ``overrides[i] = (val_acc, test_acc, dyn_median)`` for recipe i."""
    values = {label: (90.0, 90.0, 0.001) for label in LABELS}
    values["relu"] = (90.0, 90.0, 0.0)
    values.update({LABELS[i]: v for i, v in (overrides or {}).items()})
    return values


def test_recipe_budget_is_its_own():
    assert RECIPE_CLAIM.budget == RECIPE_BUDGET and RECIPE_BUDGET.val_size == 5000
    assert claims_budget([RECIPE_CLAIM]) == (RECIPE_BUDGET, "results/recipe.csv")
    with pytest.raises(ValueError, match="one budget"):
        claims_budget([*select_claims(["C1"]), RECIPE_CLAIM])


def test_choice_is_by_validation_accuracy_never_test(tmp_path):
    # recipe 3 has the best validation accuracy; recipe 4 the best test accuracy (it must not matter)
    values = _values({3: (91.0, 89.0, 0.05), 4: (90.5, 95.0, 0.03)})
    rows = write_rows(tmp_path / "r.csv", _recipe_rows(values))
    best, best_dynamic = choose_recipe(RECIPE_CLAIM, summarise_recipes(rows))
    assert best.display == LABELS[3] and best_dynamic.display == LABELS[3]
    text = recipe_report(rows)
    assert f"**Verdict (R1): holds: {LABELS[3]} develops dynamics and is above ReLU on validation accuracy.**" in text
    assert f"chosen by validation accuracy: **{LABELS[3]}** (dynamic" in text


def test_static_best_and_dynamic_recipes_below_relu(tmp_path):
    # the best by validation is static (zero init); every dynamic recipe is clearly below ReLU
    values = _values({1: (90.2, 90.0, 0.0008), 3: (85.0, 85.0, 0.05), 4: (84.0, 84.0, 0.04)})
    text = recipe_report(write_rows(tmp_path / "r.csv", _recipe_rows(values)))
    assert f"chosen by validation accuracy: **{LABELS[1]}** (static" in text
    assert f"best recipe whose layers are not static: **{LABELS[3]}**" in text
    assert "does not hold at this budget: every dynamic recipe is clearly below ReLU" in text
    assert "| 0.0008 / 0.0024 | static |" in text


def test_no_dynamic_recipe_and_incomplete_study(tmp_path):
    rows = write_rows(tmp_path / "r.csv", _recipe_rows(_values()))
    assert "does not hold at this budget: no recipe developed dynamics" in recipe_report(rows)
    text = recipe_report(rows[:-1])
    assert "no verdict yet: 5 of 6 recipes have 3 seeds (17 runs so far)" in text


def test_report_cli_appends_r1_and_readme_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults of the files not named here must not be the repository's results
    results, recipes, readme = tmp_path / "grid.csv", tmp_path / "recipe.csv", tmp_path / "README.md"
    write_rows(results, c2_rows(a=91.0, b=92.0, c=92.0))
    write_rows(recipes, _recipe_rows(_values({3: (91.0, 89.0, 0.05)})))
    readme.write_text("x\n<!-- reproduction-summary -->\n<!-- /reproduction-summary -->\n")
    out = tmp_path / "REPRODUCTION.md"
    argv = ["report", "--results", str(results), "--recipe-results", str(recipes), "--out", str(out)]
    assert main([*argv, "--keypoint-results", str(tmp_path / "none.csv"), "--readme", str(readme)]) == 0
    text = out.read_text()
    assert text.index("## C6") < text.index("## R1") and text.endswith("\n") and not text.endswith("\n\n")
    (row,) = [line for line in readme.read_text().splitlines() if line.startswith("| R1 |")]
    verdict = f"holds: {LABELS[3]} develops dynamics and is above ReLU on validation accuracy"
    assert row == f"| R1 | {RECIPE_CLAIM.statement} | {verdict} |"
    assert readme_summary(text).splitlines()[-1] == row


def test_static_dyrelu_configurations_are_not_judged(tmp_path):
    rows = [{**r, "dyn_median": 0.0005 if r["act"] != "relu" else ""} for r in c2_rows(a=85.0, b=85.0, c=85.0)]
    text = make_report(write_rows(tmp_path / "r.csv", rows))
    (c2,) = [line for line in text.splitlines() if line.startswith("| C2 |")]
    assert "static: this run tested ReLU plus an unused hyper function (dyrelu_a, dyrelu_b, dyrelu_c)" in c2
    assert "does not hold" not in c2 and "- on accuracy alone: partly: only B ≈ C" in text
    assert "| 0.0005 |" in text  # the slope range beside the accuracy
    dynamic = [{**r, "dyn_median": 0.05 if r["act"] != "relu" else ""} for r in c2_rows(a=91.0, b=92.0, c=92.0)]
    (c2,) = [
        line for line in make_report(write_rows(tmp_path / "d.csv", dynamic)).splitlines() if line.startswith("| C2 |")
    ]
    assert "static" not in c2 and "not recorded" not in c2


@pytest.mark.slow
def test_run_grid_writes_validation_and_dynamics(tmp_path):
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        val_size=16,
        name="recipe",
        extra={"data_kwargs": {"num_samples": 96, "image_size": 8}, "eval_fraction": 0.5, "dynamics_images": 16},
        dyrelu_defaults={"zero_init_last": True},
    )
    results = tmp_path / "recipe.csv"
    done = run_grid(results, tmp_path / "runs", claims=[RECIPE_CLAIM], budget=budget, limit=4, log=lambda _: None)
    assert done == 4
    rows = {r["run"]: r for r in read_results(results)}
    relu = rows["mobilenetv2_035-relu-seed0-recipe"]
    assert relu["val_acc"] and relu["val_size"] == "16" and relu["dyn_median"] == ""
    linear = rows["mobilenetv2_035-dyrelu_b-zero_init_last=False-seed0-recipe"]
    assert float(linear["dyn_median"]) > 0 and float(linear["dyn_max"]) >= float(linear["dyn_median"])
    lr = rows["mobilenetv2_035-dyrelu_b-hyper_lr_scale=3.0-hyper_weight_decay=False-seed0-recipe"]
    assert json.loads(lr["train_kwargs"]) == {"hyper_lr_scale": 3.0, "hyper_weight_decay": False}
    # the budget's DY-ReLU defaults reach DY-ReLU runs only, under the configuration's own options
    saved = {run: load_checkpoint(tmp_path / "runs" / run)["config"] for run in rows}
    assert saved["mobilenetv2_035-relu-seed0-recipe"]["act_kwargs"] == {}
    assert saved["mobilenetv2_035-dyrelu_b-seed0-recipe"]["act_kwargs"] == {"zero_init_last": True}
    assert saved[linear["run"]]["act_kwargs"] == {"zero_init_last": False}
    assert saved[lr["run"]]["hyper_lr_scale"] == 3.0 and saved[lr["run"]]["hyper_weight_decay"] is False
