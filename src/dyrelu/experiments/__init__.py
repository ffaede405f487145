"""The reproduction tool: the paper's claims as grids of training runs, run resumably, judged and reported.

- :mod:`~dyrelu.experiments.grid`: runs, budgets, the resumable pool and the results CSV, shared by every grid;
- :mod:`~dyrelu.experiments.claims`: each claim, its configurations and its verdict rule;
- :mod:`~dyrelu.experiments.stats`: result rows over seeds, and when a difference is clear;
- :mod:`~dyrelu.experiments.keypoints`: the keypoint grid (claim K1) and its questions;
- :mod:`~dyrelu.experiments.estimate`: what a grid will cost, before it runs;
- :mod:`~dyrelu.experiments.report`: REPRODUCTION.md from the results CSVs, nothing hand-written.

The names below are the classification grid's (``dyrelu compare``); the others are in their modules.

Example:
    >>> from dyrelu.experiments import select_claims, plan_runs
    >>> [spec.run_id for spec, claims in plan_runs(select_claims(["C7"]), seeds=(0,))]
    ['mobilenetv2_035-relu-seed0', 'mobilenetv2_035-aprelu-seed0', 'mobilenetv2_035-dyrelu_b-seed0']
"""

from __future__ import annotations

from dyrelu.experiments.claims import (
    CLAIMS,
    CLUTTERED_CLAIM,
    CONVERGED_CLAIMS,
    DEFAULT_CLAIMS,
    PLATEAU_CLAIM,
    RECIPE_CLAIM,
    UPGRADE_CLAIM,
    Claim,
    claims_budget,
    select_claims,
)
from dyrelu.experiments.grid import (
    CLUTTERED_BUDGET,
    COLUMNS,
    CONVERGED_BUDGET,
    DEFAULT_BUDGET,
    ESTIMATE_COLUMNS,
    RECIPE_BUDGET,
    UPGRADE_BUDGET,
    Budget,
    Config,
    RunSpec,
    append_row,
    pending_runs,
    plan_runs,
    read_results,
    run_grid,
    write_estimate,
)

__all__ = [
    "CLAIMS",
    "CLUTTERED_BUDGET",
    "CLUTTERED_CLAIM",
    "COLUMNS",
    "CONVERGED_BUDGET",
    "CONVERGED_CLAIMS",
    "DEFAULT_BUDGET",
    "DEFAULT_CLAIMS",
    "ESTIMATE_COLUMNS",
    "PLATEAU_CLAIM",
    "RECIPE_BUDGET",
    "RECIPE_CLAIM",
    "UPGRADE_BUDGET",
    "UPGRADE_CLAIM",
    "Budget",
    "Claim",
    "Config",
    "RunSpec",
    "append_row",
    "claims_budget",
    "pending_runs",
    "plan_runs",
    "read_results",
    "run_grid",
    "select_claims",
    "write_estimate",
]
