"""dyrelu.experiments.keypoints: the K1 grid, its rows and its questions, and the K1 section of the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyrelu.analysis import DYNAMICS_COLUMNS
from dyrelu.experiments.keypoints import (
    KEYPOINT_CLAIM,
    KEYPOINT_COLUMNS,
    KeypointBudget,
    append_keypoint_row,
    plan_keypoint_runs,
    read_results,
    run_keypoint_grid,
)
from dyrelu.experiments.report import keypoint_report
from tests.experiments.rows import keypoint_row
from tests.pins import assert_clean_import, assert_pinned

ROOT = Path(__file__).resolve().parents[2]


def test_public_api_is_pinned_and_imports_no_vision_package():
    import dyrelu.experiments as experiments
    from dyrelu.experiments import claims, estimate, grid, keypoints, report, stats

    assert_pinned(experiments, claims, estimate, grid, keypoints, report, stats)
    assert_clean_import("dyrelu.experiments", "dyrelu.experiments.keypoints", "dyrelu.experiments.report")


def test_the_claim_asks_its_questions_and_judges_them():
    assert [q.text.split()[0] for q in KEYPOINT_CLAIM.questions] == ["Does", "Do", "Do"]
    verdicts = KEYPOINT_CLAIM.verdicts({})
    assert [verdict for _, (verdict, notes) in verdicts] == ["no verdict yet: the configurations need 3 seeds each"] * 3


def test_plan_and_atomic_rows(tmp_path):
    runs = plan_keypoint_runs(seeds=(0, 1, 2))
    ids = [spec.run_id for spec in runs]
    assert len(ids) == 48 == len(set(ids)) and [spec.seed for spec in runs] == sorted(spec.seed for spec in runs)
    path = tmp_path / "results" / "keypoints.csv"
    append_keypoint_row(path, keypoint_row("relu", "relu", 0, 0.5) | {"unknown": 1})
    append_keypoint_row(path, keypoint_row("relu", "dyrelu_c", 0, 0.6))
    rows = read_results(path)
    assert list(rows[0]) == list(KEYPOINT_COLUMNS) and [r["head_act"] for r in rows] == ["relu", "dyrelu_c"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["keypoints.csv"]
    # a file written before the dynamics columns: its rows are read, and kept with those columns empty
    old = tmp_path / "old.csv"
    old_columns = [c for c in KEYPOINT_COLUMNS if not c.startswith("dyn_")]
    old.write_text(",".join(old_columns) + "\n" + ",".join(str(rows[0][c]) for c in old_columns) + "\n")
    append_keypoint_row(old, keypoint_row("relu", "dyrelu_b", 0, 0.6) | {"dyn_median": "0.0008"})
    first, second = read_results(old)
    assert list(first) == list(KEYPOINT_COLUMNS) and first["run"] == rows[0]["run"] and first["dyn_median"] == ""
    assert second["dyn_median"] == "0.0008" and second["dyn_max"] == ""


def test_report_tables_and_verdicts(tmp_path):
    path = tmp_path / "keypoints.csv"
    acts = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")
    # the paper's pattern: B/C backbones +5 AP, C head +6 AP, A head -4 AP; spreads of about 1 AP
    for seed, noise in enumerate((-0.01, 0.0, 0.01)):
        for b in acts:
            for h in acts:
                ap = 0.40 + 0.05 * (b in ("dyrelu_b", "dyrelu_c")) + 0.06 * (h == "dyrelu_c") - 0.04 * (h == "dyrelu_a")
                append_keypoint_row(path, keypoint_row(b, h, seed, round(ap + noise, 4)))
    text = keypoint_report(read_results(path))
    assert text == keypoint_report(read_results(path))  # a pure function of the rows
    assert "| ReLU | ReLU | 3 | 40.00 ± 1.00 |" in text
    assert "| DY-ReLU-B | DY-ReLU-C | 3 | 51.00 ± 1.00 |" in text and "+11.00 ± 1.41" in text
    assert "Does DY-ReLU-C in the head beat ReLU, A and B in the head? holds." in text
    assert "Do DY-ReLU-B and -C in the backbone beat ReLU in the backbone? holds." in text
    assert "Do A or B in the head fall below ReLU (ReLU backbone)? seen: DY-ReLU-A clearly below ReLU." in text
    assert "0.184M" in text and "8.00M" in text and "wall median 120 s" in text
    assert "| ReLU | ReLU | 3 | 40.00 ± 1.00 | 60.00 | 60.00 ± 0.00 |  | 0.184M | 8.00M | 110 |" in text
    assert "CPU time median 200 s, max 200 s" in text
    # a noisier grid: differences within the spread do not count
    noisy = tmp_path / "noisy.csv"
    for seed, noise in enumerate((-0.1, 0.0, 0.1)):
        for b in acts:
            for h in acts:
                append_keypoint_row(noisy, keypoint_row(b, h, seed, 0.4 + 0.01 * (h == "dyrelu_c") + noise))
    noisy_text = keypoint_report(read_results(noisy))
    assert "in the head? does not hold at our scale (all 12 within the spread)." in noisy_text
    assert "(ReLU backbone)? not seen." in noisy_text
    # the opposite of the paper: C in the head clearly worse, B/C backbones worse with the C head only
    opposite = tmp_path / "opposite.csv"
    for seed, noise in enumerate((-0.01, 0.0, 0.01)):
        for b in acts:
            for h in acts:
                ap = 0.40 - 0.05 * (h == "dyrelu_c") - 0.05 * (b != "relu" and h == "dyrelu_c")
                append_keypoint_row(opposite, keypoint_row(b, h, seed, round(ap + noise, 4)))
    opposite_text = keypoint_report(read_results(opposite))
    assert "in the head? does not hold at our scale (clearly lower in all 12)." in opposite_text
    assert (
        "in the backbone? does not hold at our scale (clearly lower in 2 of 8, the rest within the spread)."
        in opposite_text
    )
    assert "dyn" not in text + noisy_text + opposite_text and "static" not in text + noisy_text + opposite_text
    partial = keypoint_report([keypoint_row("relu", "relu", 0, 0.5)])
    assert "| ReLU | DY-ReLU-C | 0 | not run |" in partial and partial.count("no verdict yet") == 3
    # one seed of everything: large differences, but no verdicts before 3 seeds
    one_seed = [
        keypoint_row(b, h, 0, 0.4 + 0.2 * (h == "dyrelu_c") - 0.2 * (h == "dyrelu_a")) for b in acts for h in acts
    ]
    assert keypoint_report(one_seed).count("no verdict yet: the configurations need 3 seeds each") == 3


def test_report_shows_the_dynamics_and_calls_static_runs_static(tmp_path):
    acts = ("relu", "dyrelu_a", "dyrelu_b", "dyrelu_c")
    path = tmp_path / "static.csv"
    for seed, noise in enumerate((-0.1, 0.0, 0.1)):  # the noisy grid: nothing holds ...
        for b in acts:
            for h in acts:
                dyn = {} if "dyrelu" not in b + h else {"dyn_median": 0.001 + 0.0005 * seed, "dyn_max": 0.01}
                append_keypoint_row(path, keypoint_row(b, h, seed, 0.4 + 0.01 * (h == "dyrelu_c") + noise) | dyn)
    rows = read_results(path)
    text = keypoint_report(rows)
    header = "| backbone act | head act | seeds | AP | dyn. median | AP50 | PCK | Δ AP vs ReLU/ReLU | params |"
    assert header in text and "|---|---|---|---|---|---|---|---|---|---|---|" in text
    assert "| ReLU | ReLU | 3 | 40.00 ± 10.00 | – | 60.00 |" in text  # ... and nothing to measure in ReLU/ReLU
    assert "| DY-ReLU-B | DY-ReLU-C | 3 | 41.00 ± 10.00 | 0.0015 | 61.00 |" in text
    static = "static: this run tested ReLU plus an unused hyper function (mean dynamics median below 0.01 in"
    assert f"in the head? {static} 4 of the 4 DY-ReLU configurations under test; all 12 within the spread)." in text
    assert f"in the backbone? {static} 8 of the 8 DY-ReLU configurations under test;" in text
    assert f"(ReLU backbone)? {static} 2 of the 2 DY-ReLU configurations under test; not seen)." in text
    assert "does not hold" not in text
    # dynamic runs keep "does not hold"; configurations without the numbers show "–" and are not static
    dynamic = [r | {"dyn_median": "0.05"} if r["dyn_median"] else r for r in rows]
    dynamic_text = keypoint_report(dynamic)
    assert "static" not in dynamic_text and dynamic_text.count("does not hold at our scale") == 2
    assert "| 0.05 |" in dynamic_text and "(ReLU backbone)? not seen." in dynamic_text
    unmeasured = [r | {"dyn_median": ""} if r["head_act"] == "dyrelu_c" else r for r in rows]
    assert "| DY-ReLU-B | DY-ReLU-C | 3 | 41.00 ± 10.00 | – | 61.00 |" in keypoint_report(unmeasured)
    partial = keypoint_report(
        [keypoint_row("relu", "relu", 0, 0.5), keypoint_row("relu", "dyrelu_b", 0, 0.5) | {"dyn_median": "0"}]
    )
    assert "| ReLU | DY-ReLU-C | 0 | not run | | | | | | | |" in partial and partial.count("no verdict yet") == 3


def test_committed_k1_section_is_the_report_of_the_committed_results():
    results, reproduction = ROOT / "results" / "keypoints.csv", ROOT / "REPRODUCTION.md"
    if not results.exists() or not reproduction.exists():
        pytest.skip("no keypoint results in this checkout")
    text = reproduction.read_text()
    assert text[text.index("## K1") :] == keypoint_report(read_results(results)).rstrip("\n") + "\n"


def test_run_keypoint_grid_runs_once_and_skips_finished_runs(tmp_path):
    budget = KeypointBudget(
        items="shapes",
        epochs=1,
        num_train=32,
        num_test=8,
        batch_size=16,
        seeds=(0,),
        threads=1,
        extra={"image_size": 32, "head_channels": 8},
    )
    results = tmp_path / "keypoints.csv"
    logs = []
    assert run_keypoint_grid(results, tmp_path / "runs", budget=budget, limit=1, log=logs.append) == 1
    (row,) = read_results(results)
    assert row["run"] == "mobilenetv2_035-relu-relu-seed0" and row["experiment"] == "K1"
    assert 0.0 <= float(row["test_ap"]) <= 1.0 and int(row["params"]) > 0 and int(row["madds"]) > 0
    assert json.loads(json.dumps(row))["image_size"] == "32"
    assert run_keypoint_grid(results, tmp_path / "runs", budget=budget, limit=1, log=logs.append) == 1
    relu, dyrelu_a = read_results(results)
    assert [relu["head_act"], dyrelu_a["head_act"]] == ["relu", "dyrelu_a"]
    assert all(relu[key] == "" for key in DYNAMICS_COLUMNS)  # no DY-ReLU layer
    assert all(float(dyrelu_a[key]) >= 0.0 for key in DYNAMICS_COLUMNS)
    assert logs[0] == "0 of 16 runs done" and any(line.startswith("1 of 16 runs done") for line in logs)
