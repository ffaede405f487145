"""The converged section of the report: the plateau rule, verdicts per device, the README's order."""

from __future__ import annotations

import json

from dyrelu.cli import main
from dyrelu.experiments import CONVERGED_BUDGET, CONVERGED_CLAIMS, append_row
from dyrelu.experiments.claims import plateau_choice
from dyrelu.experiments.report import (
    CONVERGED_COMMAND,
    converged_report,
    converged_summary,
    make_report,
    readme_summary,
)


def _plateau(epochs, val, test=90.0):
    return {
        "run": f"mobilenetv2_035-relu-epochs={epochs}-seed0-converged",
        "epochs": str(epochs),
        "val_acc": str(val),
        "test_acc": str(test),
        "seconds_per_epoch": "300",
    }


def _row(model, act, seed, acc, device="cpu"):
    return {
        "experiment": "C1-converged",
        "run": f"{model}-{act}-seed{seed}-converged",
        "model": model,
        "act": act,
        "k": 2 if act.startswith("dyrelu") else "",
        "act_kwargs": "{}",
        "seed": str(seed),
        "epochs": str(CONVERGED_BUDGET.epochs),
        "data_fraction": "1.0",
        "batch_size": "128",
        "test_acc": str(acc),
        "params": "1000",
        "madds": "1000000",
        "train_seconds": "3600",
        "seconds_per_epoch": "300",
        "threads": "1",
        "device": device,
        "torch": "2.14.1",
        "commit": "abc1234",
        "dyn_median": "0.05" if act.startswith("dyrelu") else "",
    }


def test_plateau_choice_is_the_shortest_schedule_within_tolerance_of_the_longest():
    assert plateau_choice([]) is None
    rows = [_plateau(3, 90.8), _plateau(6, 91.95), _plateau(12, 92.2)]
    assert plateau_choice(rows) == 6
    (line,) = [line for line in converged_report([], rows).splitlines() if line.startswith("| 3 |")]
    assert line.startswith("| 3 | 1 | 90.80 |") and "| 1.40 |" in line
    assert plateau_choice([_plateau(3, 91.95), _plateau(6, 92.3), _plateau(12, 92.2)]) == 3
    assert plateau_choice([_plateau(3, 90.0), _plateau(6, 91.0), _plateau(12, 92.2)]) == 12


def test_converged_report_states_the_rule_and_whether_the_budget_follows_it():
    text = converged_report([], [_plateau(3, 90.8), _plateau(6, 91.0), _plateau(12, 92.2)])
    assert text.startswith("## The converged budget\n") and CONVERGED_COMMAND in text
    rule = next(line for line in text.splitlines() if line.startswith("Rule: "))
    assert "**12 epochs**" in rule
    assert ("not that" in rule) == (CONVERGED_BUDGET.epochs != 12)
    assert "runs: 0 done, 45 to do" in text
    assert "Not run yet" in converged_report([], [])


def test_converged_report_says_so_far_only_while_runs_remain():
    from dyrelu.experiments import plan_runs

    specs = [spec for spec, _ in plan_runs(CONVERGED_CLAIMS, CONVERGED_BUDGET.seeds, CONVERGED_BUDGET.name)]
    rows = [{**_row("mobilenetv2_035", "relu", 0, 90.0), "run": spec.run_id} for spec in specs]
    partial = converged_report(rows[1:], [])
    assert f"runs: {len(rows) - 1} done, 1 to do; seeds so far:" in partial
    assert f"training time so far: {len(rows) - 1:.2f} process hours" in partial  # each row trained 3600 s
    complete = converged_report(rows, [])
    assert f"runs: {len(rows)} done, none to do; seeds: 0 (of 0, 1, 2)" in complete
    assert f"training time in all: {len(rows):.2f} process hours" in complete
    assert "time so far" not in complete and "seeds so far" not in complete


def test_converged_report_says_how_far_the_budget_is_behind_a_longer_schedule():
    budget = CONVERGED_BUDGET.epochs
    rows = [_plateau(6, 91.0), _plateau(budget, 92.2), _plateau(2 * budget, 92.9)]
    lines = converged_report([], rows).splitlines()
    rule = next(line for line in lines if line.startswith("Rule: "))
    assert f"**{2 * budget} epochs**" in rule and "not that" in rule
    text = "\n".join(lines)
    assert f"The grid's {budget} epochs end 0.70 pp of validation accuracy below {2 * budget} epochs" in text
    assert "still improving" in text and "is the longest schedule measured" not in text
    within = converged_report([], [_plateau(6, 91.0), _plateau(budget, 92.8), _plateau(2 * budget, 92.9)])
    assert f"**{budget} epochs**" in within and f"; the converged budget runs {budget} epochs." in within
    assert f"end 0.10 pp of validation accuracy below {2 * budget} epochs" in within and "still improving" not in within


def test_converged_report_judges_each_device_apart_and_comes_first_in_the_readme(tmp_path):
    models = ("mobilenetv2_025", "mobilenetv2_035", "mobilenetv2_050")
    rows = [_row(m, "relu", s, 90.0 + 0.1 * s) for m in models for s in range(3)]
    rows += [_row(m, "dyrelu_b", s, 93.0 - 0.5 * i + 0.1 * s) for i, m in enumerate(models) for s in range(3)]
    rows += [{**_row("mobilenetv2_035", "relu", 0, 50.0, device="cuda"), "amp": "bf16"}]
    text = converged_report(rows, [])
    cpu, cuda = text.split("## Verdicts at the converged budget (cuda, bf16)")
    assert "## Verdicts at the converged budget (cpu)" in cpu and "50.00" not in cpu
    c1 = next(line for line in cpu.splitlines() if line.startswith("| C1-converged |"))
    assert "| holds |" in c1 and "runs: 19 done, 27 to do" in cpu  # the cuda row counts as a run of the grid
    assert "no verdict yet" in next(line for line in cuda.splitlines() if line.startswith("| C1-converged |"))
    short = [{**r, "run": r["run"].removesuffix("-converged"), "epochs": "4", "device": ""} for r in rows[:3]]
    report = make_report(short, preface=text)
    assert report.index("## The converged budget") < report.index("## The short budget") < report.index("## C1:")
    summary = readme_summary(report).splitlines()
    assert summary[0].startswith("| claim |") and sum(line.startswith("| claim |") for line in summary) == 1
    names = [line.split("|")[1].strip() for line in summary[2:]]
    assert names[: len(CONVERGED_CLAIMS)] == [c.name for c in CONVERGED_CLAIMS] and "C1" in names


def test_report_cli_puts_the_converged_section_first(tmp_path, capsys):
    results = tmp_path / "grid.csv"
    for seed in range(3):
        append_row(results, {**_row("mobilenetv2_035", "relu", seed, 90.0), "epochs": "4", "data_fraction": "0.1"})
    plateau = tmp_path / "plateau.csv"
    for row in (_plateau(3, 90.8), _plateau(12, 92.2)):
        append_row(plateau, row, columns=tuple(row))
    out = tmp_path / "R.md"
    argv = ["report", "--results", str(results), "--plateau-results", str(plateau), "--out", str(out)]
    argv += ["--converged-results", str(tmp_path / "none.csv"), "--recipe-results", str(tmp_path / "none.csv")]
    argv += ["--keypoint-results", str(tmp_path / "none.csv"), "--estimate", str(tmp_path / "none.csv")]
    argv += ["--cluttered-results", str(tmp_path / "none.csv"), "--upgrade-results", str(tmp_path / "none.csv")]
    assert main(argv) == 0
    text = out.read_text()
    assert text.index("### P1:") < text.index("## The short budget") and "| 12 | 1 | 92.20 |" in text
    # the count names every results file the report read, not only the short grid's
    assert f"wrote {out} from 5 runs (3 in {results}, 2 in {plateau})" in capsys.readouterr().out


def test_converged_summary_gives_the_verdicts_and_the_tables_of_claims_with_rows():
    from dyrelu.experiments.report import converged_summary

    rows = [_row("mobilenetv2_025", act, seed, 90.0 + seed) for act in ("relu", "dyrelu_b") for seed in (0, 1)]
    rows.append(_row("mobilenetv2_035", "dyrelu_b", 0, 91.0, device="cuda"))
    text = converged_summary(rows)
    assert text.startswith("4 runs on cpu\n")  # the CPU rows; the GPU row is another device's
    assert "| C1-converged |" in text and "no verdict yet: 0 of 6 configurations have 3 seeds (4 runs so far)" in text
    assert "## C1-converged:" in text and "## C2-converged:" not in text  # only claims with rows get a table
    assert "| mobilenetv2_025 | relu | 2 | 90.50 ± 0.71 |" in text
    assert converged_summary([]).startswith("0 runs on cpu\n")
    # a claim whose rows an earlier claim's table shows already gets no table of its own
    small = [_row("mobilenetv2_035", act, 0, 92.0) for act in ("relu", "dyrelu_b")]
    assert "## C1-converged:" in converged_summary(small) and "## C2-converged:" not in converged_summary(small)
    assert "## C2-converged:" in converged_summary([*small, _row("mobilenetv2_035", "dyrelu_a", 0, 92.0)])


def test_plateau_summary_says_whether_the_grid_is_at_convergence():
    from dyrelu.experiments.report import plateau_summary

    budget = CONVERGED_BUDGET.epochs
    assert plateau_summary([_plateau(budget, 93.5)]) == ""  # nothing longer measured
    text = plateau_summary([_plateau(budget, 93.5), _plateau(2 * budget, 94.24)])
    assert text.startswith("Not at convergence: mobilenetv2_035 with ReLU gains 0.74 pp of validation accuracy")
    assert text.endswith(f"these verdicts are at {budget} epochs.")
    assert plateau_summary([_plateau(budget, 94.0), _plateau(2 * budget, 94.2)]).startswith("At the plateau: ")


def test_the_cluttered_and_upgrade_claims_get_their_section_and_verdicts():
    from dyrelu.experiments.report import beyond_report

    def arm(act, acc, seed, dyn, **kwargs):
        row = {**_row("mobilenetv2_035", act, seed, acc + 0.1 * seed), "experiment": "U1", "dyn_median": dyn}
        return {**row, "act_kwargs": json.dumps(kwargs)} if kwargs else row

    def upgrade(exact, authors, dyn_exact="0.0003", dyn_authors="0.03"):
        return [
            row
            for seed in (0, 1, 2)
            for row in (
                arm("relu", 92.0, seed, ""),
                arm("dyrelu_b", exact, seed, dyn_exact),
                arm("dyrelu_b", authors, seed, dyn_authors, zero_init_last=False),
            )
        ]

    def u1_verdict(rows):
        (line,) = [line for line in beyond_report([], rows).splitlines() if line.startswith("| U1 |")]
        return line.rsplit(" | ", 1)[1].removesuffix(" |")

    text = beyond_report([], upgrade(93.0, 93.0))
    assert text.startswith("## Beyond the paper's setting\n")
    assert "| C1-cluttered | DY-ReLU-B beats ReLU" in text and "(0 runs so far)" in text
    assert "- training time: 9.00 process hours over the 9 runs of both files" in text  # 3600 s each
    # the exact upgrade is static: only the authors' init can hold, and the verdict names the static one
    assert u1_verdict(upgrade(93.0, 93.0)).startswith("holds: converted with the authors' init (not exact) clearly")
    assert "static, ReLU plus an unused hyper function: converted exactly (last FC at zero)" in text
    assert "converted exactly (last FC at zero) − fine-tuned as ReLU: +1.00" in text and "0.0003 (static)" in text
    assert u1_verdict(upgrade(93.0, 90.0)).startswith("does not hold at our scale: converted with the authors'")
    assert u1_verdict(upgrade(92.0, 92.0)).startswith("does not hold at our scale: no clear difference; static")
    assert u1_verdict(upgrade(93.0, 93.0, dyn_authors="0.001")).startswith("static: every upgrade kept")
    assert u1_verdict(upgrade(93.0, 90.0, dyn_exact="0.02")).startswith("holds: converted exactly (last FC at zero)")
    assert u1_verdict(upgrade(93.0, 90.0, dyn_exact="0.02")).endswith("clearly beats the ReLU fine-tune")
    # the start of each fine-tune: not recorded by these rows, then recorded by two of each arm's three
    assert "| fine-tuned as ReLU | 0 of 3 | not recorded | | | |" in text
    rows = upgrade(93.0, 93.0)
    for row in rows[3:]:
        authors = "40.0" if row["seed"] == "1" else "80.0"  # the authors' init: a conversion that costs more or less
        start = {"start_test_acc": "92.0" if row["act_kwargs"] == "{}" else authors, "start_val_acc": "92.5"}
        row.update(start, start_dyn_median="0" if row["act"] == "relu" or row["act_kwargs"] == "{}" else "0.02")
    lines = beyond_report([], rows).splitlines()
    assert "| converted exactly (last FC at zero) | 2 of 3 | 92.00 | 92.50 | 0 | 93.15 (93.10–93.20) |" in lines
    authors = "| converted with the authors' init (not exact) | 2 of 3 | 60.00 (40.00–80.00) | 92.50 | 0.02 |"
    assert f"{authors} 93.15 (93.10–93.20) |" in lines
    assert "| fine-tuned as ReLU | 2 of 3 | 92.00 | 92.50 |  | 92.15 (92.10–92.20) |" in lines
    readme = readme_summary(converged_report([], []) + "\n" + beyond_report([], upgrade(93.0, 93.0)))
    assert [line.split(" | ")[0] for line in readme.splitlines()[2:]][-2:] == ["| C1-cluttered", "| U1"]


def test_the_plateau_study_compares_dyrelu_b_with_relu_at_the_longer_schedule():
    def p1(act, epochs, val, test):
        return {**_row("mobilenetv2_035", act, 0, test), "epochs": str(epochs), "val_acc": str(val)}

    plateau = [p1("relu", 12, 93.5, 92.9), p1("relu", 24, 94.24, 93.83)]
    # a DY-ReLU-B row of the study does not move the ReLU baseline's rule
    assert plateau_choice([*plateau, p1("dyrelu_b", 24, 99.0, 99.0)]) == plateau_choice(plateau) == 24
    assert "DY-ReLU-B against ReLU on" not in converged_report([], plateau)  # no DY-ReLU-B run yet
    plateau.append({**p1("dyrelu_b", 24, 94.5, 94.0), "dyn_median": "0.06"})
    converged = [{**_row("mobilenetv2_035", act, s, acc + s), "val_acc": "93"} for act, acc in (("relu", 92.9),
                 ("dyrelu_b", 93.3)) for s in (0, 1)]  # fmt: skip
    # C3's K = 1 (an affine map) is DY-ReLU-B with other options: not the configuration the plateau study ran
    k1 = {**_row("mobilenetv2_035", "dyrelu_b", 0, 87.56), "val_acc": "88.12", "k": "1", "act_kwargs": '{"k": 1}'}
    lines = converged_report([*converged, {**k1, "experiment": "C3-converged"}], plateau).splitlines()
    assert not any("88.12 / 87.56" in line for line in lines)
    assert "| 24 | 1 | 94.24 | 93.83 | 0.00 | 300 |" in lines  # the ReLU schedules' table: ReLU rows only
    assert "| 12 | 0 | 93.00 / 92.90 | 93.00 / 93.30 | +0.00 | +0.40 | 0.05 | C1-converged |" in lines
    assert "| 24 | 0 | 94.24 / 93.83 | 94.50 / 94.00 | +0.26 | +0.17 | 0.06 | P1 |" in lines
    assert any("varies by 0.71 pp (sample standard deviation over its seeds)" in line for line in lines)


def test_claim_tables_show_the_validation_accuracy_beside_the_test_accuracy_when_the_rows_have_it():
    from dyrelu.experiments.report import converged_summary

    val = {("relu", 0): 93.0, ("relu", 1): 93.2, ("dyrelu_b", 0): 92.9, ("dyrelu_b", 1): 93.5}
    rows = [
        {**_row("mobilenetv2_025", act, seed, 92.5 + 0.5 * (act != "relu") + 0.1 * seed), "val_acc": str(v)}
        for (act, seed), v in val.items()
    ]
    lines = converged_summary(rows).splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert "| test acc. (%) | Δ vs ReLU (pp) | val. acc. (%) | Δ val. vs ReLU (pp) |" in header
    relu = next(line for line in lines if line.startswith("| mobilenetv2_025 | relu |"))
    dyb = next(line for line in lines if line.startswith("| mobilenetv2_025 | dyrelu_b |"))
    assert "| 92.55 ± 0.07 |  | 93.10 ± 0.14 |  |" in relu
    assert "| 93.05 ± 0.07 | +0.50 ± 0.10 | 93.20 ± 0.42 | +0.10 ± 0.45 |" in dyb
    assert len(header.split("|")) == len(dyb.split("|")) == len(relu.split("|"))
    not_run = next(line for line in lines if line.startswith("| mobilenetv2_050 | relu |"))
    assert len(not_run.split("|")) == len(header.split("|"))
    # rows without a validation split (the short grid) keep the table without those columns
    plain = converged_summary([_row("mobilenetv2_025", "relu", 0, 92.0)])
    assert "val. acc." not in plain
    # one row of a configuration without it: its validation cell is empty, not a mean of the others
    mixed = converged_summary([*rows, _row("mobilenetv2_025", "relu", 2, 92.6)]).splitlines()
    relu = next(line for line in mixed if line.startswith("| mobilenetv2_025 | relu |"))
    assert "| 92.57 ± 0.06 |  | – |  |" in relu


def test_a_complete_claim_notes_each_difference_on_the_validation_split_too():
    from dyrelu.experiments.claims import claim_verdicts, select_claims
    from dyrelu.experiments.stats import summarise

    models = ("mobilenetv2_025", "mobilenetv2_035", "mobilenetv2_050")

    def row(model, act, seed, test, val):
        return {**_row(model, act, seed, test + 0.05 * seed), "val_acc": str(val + 0.05 * seed)}

    rows = [row(m, "relu", s, 92.0, 93.0) for m in models for s in range(3)]
    # DY-ReLU-B: +1 pp on the test set everywhere; on validation +1 pp, 0 and -1 pp
    rows += [row(m, "dyrelu_b", s, 93.0, 94.0 - i) for i, m in enumerate(models) for s in range(3)]
    (claim,) = select_claims(["C1-converged"])
    verdict, notes = claim_verdicts([claim], summarise(rows))[claim.name]
    assert verdict.startswith("partly: DY-ReLU-B beats ReLU everywhere")  # the verdict stays on the test set
    validation = [n for n in notes if n.startswith("validation: ")]
    assert validation == [
        "validation: mobilenetv2_025 dyrelu_b − ReLU = +1.00 ± 0.07 pp (clearly higher; on the test set clearly "
        "higher)",
        "validation: mobilenetv2_035 dyrelu_b − ReLU = +0.00 ± 0.07 pp (within the spread; on the test set clearly "
        "higher)",
        "validation: mobilenetv2_050 dyrelu_b − ReLU = -1.00 ± 0.07 pp (clearly lower; on the test set clearly higher)",
    ]
    # rows without a validation split (the short grid) get no such note
    plain = [{**r, "val_acc": ""} for r in rows]
    assert not [n for n in claim_verdicts([claim], summarise(plain))[claim.name][1] if n.startswith("validation")]


def test_claims_note_the_paired_test_of_each_seed_from_the_correctness_file(tmp_path):
    import torch

    from dyrelu.analysis.paired import mcnemar_p, pack_correct
    from dyrelu.experiments.correct import correct_path, read_correct, record_correct

    rows = [_row("mobilenetv2_035", act, 1, acc) for act, acc in (("relu", 60.0), ("dyrelu_b", 70.0))]
    rows.append({**_row("mobilenetv2_035", "relu", 2, 50.0, device="cuda"), "amp": "bf16"})
    results = tmp_path / "converged.csv"
    for row in rows:
        append_row(results, row)
    relu = torch.tensor([True] * 6 + [False] * 4)
    dyb = torch.tensor([True] * 7 + [False] * 3)  # one image more, none fewer
    for run, correct in ((rows[0]["run"], relu), (rows[1]["run"], dyb), (rows[2]["run"], dyb)):
        record_correct(correct_path(results), run, {"images": 10, "labels": "L", "correct": pack_correct(correct)})
    text = converged_report(rows, [], correct=read_correct(correct_path(results)))
    note = (
        "- paired on the same test images (McNemar's exact test, per seed): mobilenetv2_035 dyrelu_b − ReLU: "
        f"seed 1 +10.00 pp (1 vs 0 images right in one only, p = {mcnemar_p(1, 0):.2g})"
    )
    cpu, cuda = text.split("## Verdicts at the converged budget (cuda, bf16)")
    assert cpu.count(note) == 3 and cpu.count(note.replace("dyrelu_b −", "dyrelu_b K=2 −")) == 1  # C1, C2, C4; C3
    assert "paired on the same test images" not in cuda  # the cuda run is not paired with the cpu ones
    assert "(3 of 3 runs:" in cpu and "--backfill-correct" in cpu
    assert "paired on the same" not in converged_report(rows, [])  # without the file: no notes, nothing invented
    summary = converged_summary(rows, correct=read_correct(correct_path(results)))  # what the demo prints
    assert summary.count(note) == 1 and "paired on the same" not in converged_summary(rows)
    assert "(0 of 3 runs:" in converged_report(rows, [])

    argv = ["report", "--results", str(results), "--converged-results", str(results), "--out", str(tmp_path / "R.md")]
    argv += ["--plateau-results", str(tmp_path / "none.csv"), "--recipe-results", str(tmp_path / "none.csv")]
    argv += ["--keypoint-results", str(tmp_path / "none.csv"), "--estimate", str(tmp_path / "none.csv")]
    argv += ["--cluttered-results", str(tmp_path / "none.csv"), "--upgrade-results", str(tmp_path / "none.csv")]
    assert main(argv) == 0 and note in (tmp_path / "R.md").read_text()
