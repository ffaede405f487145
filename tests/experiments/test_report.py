"""dyrelu.experiments.report: REPRODUCTION.md and the README's table from small CSVs the tests write."""

from __future__ import annotations

import math

import pytest

from dyrelu.cli import main
from dyrelu.experiments import select_claims
from dyrelu.experiments.keypoints import KEYPOINT_COLUMNS, append_keypoint_row
from dyrelu.experiments.report import make_report, readme_summary
from dyrelu.experiments.stats import describe_difference, format_difference, summarise
from tests.experiments.rows import c2_rows, row, write_rows


def test_summarise_mean_and_sample_std(tmp_path):
    rows = write_rows(tmp_path / "r.csv", [row("m", "relu", s, acc) for s, acc in enumerate([90.0, 91.0, 92.0])])
    (stat,) = summarise(rows).values()
    assert stat.n == 3 and stat.mean == pytest.approx(91.0) and stat.std == pytest.approx(1.0)


def test_one_seed_has_no_spread_and_the_tables_say_so(tmp_path):
    """One run measures no spread: its table cells and differences show "± –", never "± 0.00" (which reads as a
    measured, perfectly reproducible result) and a difference with an unknown spread is never clear."""
    rows = [row("mobilenetv2_035", "relu", s, acc) for s, acc in enumerate([90.0, 90.5, 91.0])]
    rows = write_rows(tmp_path / "r.csv", [*rows, row("mobilenetv2_035", "dyrelu_b", 0, 93.0)])
    stats = summarise(rows)
    one = next(s for s in stats.values() if s.n == 1)
    assert math.isnan(one.std) and math.isnan(one.diff(next(s for s in stats.values() if s.n == 3))[1])
    assert describe_difference(3.0, math.nan) == "spread unknown (one seed)"
    assert format_difference(2.5, math.nan) == "+2.50 ± –"
    text = make_report(rows, select_claims(["C1"]))
    assert "| mobilenetv2_035 | dyrelu_b | 1 | 93.00 ± – | +2.50 ± – |" in text
    assert "| mobilenetv2_035 | relu | 3 | 90.50 ± 0.50 |" in text and "± 0.00" not in text


def test_report_refuses_rows_of_different_budgets(tmp_path):
    rows = [row("m", "relu", 0, 90.0), {**row("m", "relu", 1, 91.0), "epochs": 6}]
    with pytest.raises(ValueError, match=r"mix training budgets"):
        summarise(write_rows(tmp_path / "r.csv", rows))


def test_report_tables_and_costs(tmp_path):
    rows = write_rows(tmp_path / "r.csv", c2_rows(a=91.0, b=92.0, c=92.0))
    text = make_report(rows, select_claims(["C2"]))
    assert (
        "| mobilenetv2_035 | dyrelu_b | 3 | 92.00 ± 0.10 | +2.00 ± 0.14 | 0.05 | 0.001M | 10.50M | +5.0% | 12.5 |"
        in text
    )
    assert "## C6: cost" in text and "| 1.00× |" in text


def test_report_cli_regenerates_byte_identically(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default paths of the other results files (results/...) exist in the repository
    results = tmp_path / "grid.csv"
    write_rows(results, c2_rows(a=91.0, b=92.0, c=92.0))
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


def test_report_cli_appends_the_keypoint_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults of the files not named here must not be the repository's results
    results, keypoints = tmp_path / "grid.csv", tmp_path / "keypoints.csv"
    write_rows(results, c2_rows(a=91.0, b=92.0, c=92.0))
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


def test_report_cli_fills_the_readme_summary(tmp_path, capsys):
    results = tmp_path / "grid.csv"
    write_rows(results, c2_rows(a=91.0, b=92.0, c=92.05))
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
    report = "## Verdicts\n\n| claim | paper | verdict |\n|---|---|---|\n| C1 | x | holds |\n\n## K1\n\n"
    report += "**Does DY-ReLU-C in the head beat ReLU? not run yet.**\n"
    assert readme_summary(report).splitlines()[-1] == "| K1 | Does DY-ReLU-C in the head beat ReLU? | not run yet |"


def test_committed_report_and_readme_match_the_committed_results():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "results" / "grid.csv").exists():
        pytest.skip("no results in this checkout")
    argv = ["report", "--results", str(root / "results" / "grid.csv"), "--out", str(root / "REPRODUCTION.md")]
    argv += ["--keypoint-results", str(root / "results" / "keypoints.csv"), "--readme", str(root / "README.md")]
    argv += ["--recipe-results", str(root / "results" / "recipe.csv")]
    for option, name in (
        ("--converged-results", "converged.csv"),
        ("--plateau-results", "plateau.csv"),
        ("--estimate", "converged_estimate.csv"),
        ("--cluttered-results", "cluttered.csv"),
        ("--upgrade-results", "upgrade.csv"),
    ):
        argv += [option, str(root / "results" / name)]
    assert main([*argv, "--check"]) == 0, "run `make report` after adding results"
