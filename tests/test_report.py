"""The comparison grid's bookkeeping and the report generator, on small CSVs the tests write."""

from __future__ import annotations

import json

import pytest

from dyrelu.cli import main
from dyrelu.experiments import (
    CLAIMS,
    COLUMNS,
    DEFAULT_CLAIMS,
    Budget,
    append_row,
    plan_runs,
    read_results,
    run_grid,
    select_claims,
)
from dyrelu.report import make_report, summarise


def _row(model, act, seed, acc, **act_kwargs):
    k = act_kwargs.get("k", 2 if act.startswith("dyrelu") or act in ("static_pwl", "maxout") else "")
    return {
        "experiment": "C1",
        "run": f"{model}-{act}-seed{seed}",
        "model": model,
        "act": act,
        "k": k,
        "act_kwargs": json.dumps(act_kwargs, sort_keys=True),
        "seed": seed,
        "epochs": 8,
        "data_fraction": 0.25,
        "batch_size": 128,
        "test_acc": acc,
        "test_loss": 0.5,
        "train_acc": 90.0,
        "params": 1000 if act == "relu" else 1100,
        "madds": 10_000_000 if act == "relu" else 10_500_000,
        "train_seconds": 100.0,
        "seconds_per_epoch": 12.5,
        "threads": 1,
        "torch": "2.14.1",
        "commit": "abc1234",
        "dyn_median": 0.05 if act.startswith("dyrelu") else "",  # dynamic: the verdicts judge accuracy alone
    }


def _write(path, rows):
    for row in rows:
        append_row(path, row)
    return read_results(path)


def test_plan_runs_deduplicates_shared_configurations():
    runs = plan_runs(DEFAULT_CLAIMS, seeds=(0, 1, 2))
    ids = [spec.run_id for spec, _ in runs]
    assert len(ids) == len(set(ids))
    baseline = [names for spec, names in runs if spec.run_id == "mobilenetv2_035-relu-seed0"]
    assert baseline == [["C1", "C2", "C3", "C4", "C5", "C7"]]
    # claim by claim (a run belongs to the first claim naming it), seed-major within each claim
    owners = [names[0] for _, names in runs]
    assert owners == sorted(owners, key=[c.name for c in DEFAULT_CLAIMS].index)
    for claim in DEFAULT_CLAIMS:
        seeds = [spec.seed for spec, names in runs if names[0] == claim.name]
        assert seeds == sorted(seeds)
    with pytest.raises(ValueError, match=r"unknown claims \['C9'\]"):
        select_claims(["C9"])


def test_append_row_is_atomic_and_keeps_columns(tmp_path):
    path = tmp_path / "results" / "grid.csv"
    rows = _write(path, [_row("m", "relu", 0, 90.0), _row("m", "dyrelu_b", 0, 91.0)])
    assert [r["act"] for r in rows] == ["relu", "dyrelu_b"]
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert not list(path.parent.glob(".*tmp"))


def test_summarise_mean_and_sample_std(tmp_path):
    rows = _write(tmp_path / "r.csv", [_row("m", "relu", s, acc) for s, acc in enumerate([90.0, 91.0, 92.0])])
    (stat,) = summarise(rows).values()
    assert stat.n == 3 and stat.mean == pytest.approx(91.0) and stat.std == pytest.approx(1.0)


def _c2_rows(a, b, c, relu=90.0):
    rows = []
    for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
        for act, acc in (("relu", relu), ("dyrelu_a", a), ("dyrelu_b", b), ("dyrelu_c", c)):
            rows.append(_row("mobilenetv2_035", act, seed, acc + jitter))
    return rows


def test_report_verdicts_follow_the_spread(tmp_path):
    holds = make_report(_write(tmp_path / "a.csv", _c2_rows(a=91.0, b=92.0, c=92.05)), select_claims(["C2"]))
    assert "| C2 |" in holds and "| holds |" in holds
    fails = make_report(_write(tmp_path / "b.csv", _c2_rows(a=89.0, b=89.5, c=91.0)), select_claims(["C2"]))
    assert "holds |" not in fails.split("## C2")[0]
    assert "B − A = +0.50 ± 0.14 pp (clearly higher)" in fails
    missing = make_report(_write(tmp_path / "c.csv", _c2_rows(91, 92, 92)), select_claims(["C1", "C2"]))
    assert (
        "| C1 | DY-ReLU-B beats ReLU, and the gain is larger for smaller networks. | no verdict yet: 2 of 8" in missing
    )
    two_seeds = make_report(_write(tmp_path / "d.csv", _c2_rows(91, 92, 92)[:8]), select_claims(["C2"]))
    assert "no verdict yet: 0 of 4 configurations have 3 seeds (8 runs so far)" in two_seeds


def test_report_tables_and_costs(tmp_path):
    rows = _write(tmp_path / "r.csv", _c2_rows(a=91.0, b=92.0, c=92.0))
    text = make_report(rows, select_claims(["C2"]))
    assert (
        "| mobilenetv2_035 | dyrelu_b | 3 | 92.00 ± 0.10 | +2.00 ± 0.14 | 0.05 | 0.001M | 10.50M | +5.0% | 12.5 |"
        in text
    )
    assert "## C6: cost" in text and "| 1.00× |" in text


def test_report_cli_regenerates_byte_identically(tmp_path, capsys):
    results = tmp_path / "grid.csv"
    _write(results, _c2_rows(a=91.0, b=92.0, c=92.0))
    out = tmp_path / "REPRODUCTION.md"
    argv = ["report", "--results", str(results), "--keypoint-results", str(tmp_path / "none.csv"), "--out", str(out)]
    assert main(argv) == 0
    first = out.read_bytes()
    assert "## K1" not in first.decode()
    assert main(argv) == 0
    assert out.read_bytes() == first
    assert main([*argv, "--check"]) == 0
    out.write_text("edited")
    assert main([*argv, "--check"]) == 1
    assert main(["report", "--results", str(tmp_path / "missing.csv")]) == 2
    assert "no results in" in capsys.readouterr().err


@pytest.mark.slow
def test_run_grid_runs_once_and_skips_finished_runs(tmp_path):
    budget = Budget(
        data="synthetic",
        epochs=1,
        batch_size=32,
        seeds=(0,),
        extra={"data_kwargs": {"num_samples": 64}, "eval_fraction": 0.5},
    )
    claim = select_claims(["C2"])
    results = tmp_path / "grid.csv"
    assert run_grid(results, tmp_path / "runs", claims=claim, budget=budget, limit=1, log=lambda _: None) == 1
    (row,) = read_results(results)
    assert row["run"] == "mobilenetv2_035-relu-seed0" and row["experiment"] == "C2"
    assert float(row["test_acc"]) >= 0 and int(row["params"]) > 0 and int(row["madds"]) > 0
    assert run_grid(results, tmp_path / "runs", claims=claim, budget=budget, limit=1, log=lambda _: None) == 1
    assert [r["act"] for r in read_results(results)] == ["relu", "dyrelu_a"]


def test_report_cli_appends_the_keypoint_section(tmp_path):
    from dyrelu.keypoint_experiments import KEYPOINT_COLUMNS, append_keypoint_row

    results, keypoints = tmp_path / "grid.csv", tmp_path / "keypoints.csv"
    _write(results, _c2_rows(a=91.0, b=92.0, c=92.0))
    append_keypoint_row(
        keypoints,
        {key: "1" for key in KEYPOINT_COLUMNS}
        | {
            "experiment": "K1",
            "run": "r",
            "backbone": "mobilenetv2_035",
            "backbone_act": "relu",
            "head_act": "relu",
            "seed": 0,
            "test_ap": 0.3,
            "test_ap50": 0.7,
            "test_pck": 0.7,
            "params": 1,
            "madds": 1,
            "cpu_seconds": 1,
        },
    )
    out = tmp_path / "REPRODUCTION.md"
    assert main(["report", "--results", str(results), "--keypoint-results", str(keypoints), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.index("## C6") < text.index("## K1") and text.endswith("\n") and not text.endswith("\n\n")


def test_report_refuses_rows_of_different_budgets(tmp_path):
    rows = [_row("m", "relu", 0, 90.0), {**_row("m", "relu", 1, 91.0), "epochs": 6}]
    with pytest.raises(ValueError, match=r"mix training budgets"):
        summarise(_write(tmp_path / "r.csv", rows))


def test_default_grid_is_every_claim_and_claims_without_runs_have_no_verdict(tmp_path):
    assert select_claims(None) == DEFAULT_CLAIMS and [c.name for c in select_claims(["C5", "C1"])] == ["C5", "C1"]
    assert tuple(c for c in CLAIMS if c.budget is None) == DEFAULT_CLAIMS  # R1, P1: own budgets, run when named
    assert {c.name for c in CLAIMS if c.budget is not None} >= {"R1", "P1"}
    text = make_report(_write(tmp_path / "r.csv", _c2_rows(91, 92, 92)))
    (c5_line,) = [line for line in text.splitlines() if line.startswith("| C5 |")]
    assert "no verdict yet: 2 of 5 configurations have 3 seeds (6 runs so far)" in c5_line  # ReLU and the default B


@pytest.mark.parametrize(
    ("gains", "expected"),
    [
        ((3.0, 2.0, 1.0, 1.0), "holds"),
        ((1.0, 1.0, 1.0, 1.0), "partly: DY-ReLU-B beats ReLU everywhere, but the gain does not clearly shrink"),
        ((1.0, 0.0, 0.0, 0.0), "partly: DY-ReLU-B beats ReLU on some networks only"),
        ((0.0, 0.1, -0.1, 0.0), "does not hold at our scale: DY-ReLU-B is within the spread of ReLU on every network"),
        ((0.0, 0.0, 0.0, -1.0), "does not hold at our scale: DY-ReLU-B is clearly below ReLU on resnet10"),
    ],
)
def test_c1_verdict(tmp_path, gains, expected):
    models = ("mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100", "resnet10")
    rows = []
    for seed, jitter in enumerate((-0.2, 0.0, 0.2)):
        for model, gain in zip(models, gains, strict=True):
            rows.append(_row(model, "relu", seed, 90.0 + jitter))
            rows.append(_row(model, "dyrelu_b", seed, 90.0 + gain + jitter))
    text = make_report(_write(tmp_path / "r.csv", rows), select_claims(["C1"]))
    (line,) = [line for line in text.splitlines() if line.startswith("| C1 |")]
    assert expected in line


@pytest.mark.parametrize(
    ("aprelu", "expected"),
    [(90.5, "holds"), (92.0, "does not hold at our scale: no clear difference"), (94.0, "APReLU is clearly higher")],
)
def test_aprelu_verdict(tmp_path, aprelu, expected):
    rows = []
    for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
        for act, acc in (("relu", 90.0), ("aprelu", aprelu), ("dyrelu_b", 92.0)):
            rows.append(_row("mobilenetv2_035", act, seed, acc + jitter))
    text = make_report(_write(tmp_path / "r.csv", rows), select_claims(["C7"]))
    (line,) = [line for line in text.splitlines() if line.startswith("| C7 |")]
    assert expected in line
    assert "DY-ReLU-B − APReLU" in text


def test_report_cli_fills_the_readme_summary(tmp_path, capsys):
    results = tmp_path / "grid.csv"
    _write(results, _c2_rows(a=91.0, b=92.0, c=92.05))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- reproduction-summary -->\nold\n<!-- /reproduction-summary -->\n\nafter\n")
    argv = ["report", "--results", str(results), "--keypoint-results", str(tmp_path / "none.csv")]
    argv += ["--out", str(tmp_path / "R.md"), "--readme", str(readme)]
    assert main(argv) == 0
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("# Title") and text.endswith("after\n")
    assert "| claim | paper | verdict at our scale |" in text and "| C2 |" in text
    assert main([*argv, "--check"]) == 0
    readme.write_text(text.replace("| C2 |", "| C9 |"))
    assert main([*argv, "--check"]) == 1
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert main([*argv[:-1], str(plain)]) == 2  # a README without the markers is an error, not skipped
    assert "expected the markers" in capsys.readouterr().err


def test_readme_summary_adds_the_keypoint_questions():
    from dyrelu.report import readme_summary

    report = "## Verdicts\n\n| claim | paper | verdict |\n|---|---|---|\n| C1 | x | holds |\n\n## K1\n\n"
    report += "**Does DY-ReLU-C in the head beat ReLU? not run yet.**\n"
    assert readme_summary(report).splitlines()[-1] == "| K1 | Does DY-ReLU-C in the head beat ReLU? | not run yet |"


def test_committed_report_and_readme_match_the_committed_results():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "results" / "grid.csv").exists():
        pytest.skip("no results in this checkout")
    argv = ["report", "--results", str(root / "results" / "grid.csv"), "--out", str(root / "REPRODUCTION.md")]
    argv += ["--keypoint-results", str(root / "results" / "keypoints.csv"), "--readme", str(root / "README.md")]
    argv += ["--recipe-results", str(root / "results" / "recipe.csv")]
    assert main([*argv, "--check"]) == 0, "run `make report` after adding results"


def test_c4_verdict_names_what_dyrelu_b_beats_and_trails(tmp_path):
    accs = {"relu": 90.0, "lrelu": 92.0, "prelu": 95.0, "dyrelu_b": 92.0}
    rows = [
        _row("mobilenetv2_035", act, seed, acc + jitter)
        for seed, jitter in enumerate((-0.1, 0.0, 0.1))
        for act, acc in accs.items()
    ]
    claim = select_claims(["C4"])[0]
    from dataclasses import replace

    small = replace(claim, configs=tuple(c for c in claim.configs if c.act in accs))
    text = make_report(_write(tmp_path / "r.csv", rows), [small])
    (line,) = [line for line in text.splitlines() if line.startswith("| C4 |")]
    assert "does not hold at our scale: DY-ReLU-B clearly beats relu (1 of 3) and is clearly below prelu" in line
