"""REPRODUCTION.md from the results CSVs: tables, the claims' verdicts and their notes, nothing hand-written.

The report renders what the claims judge (:mod:`dyrelu.experiments.claims`, the K1 questions of
:mod:`dyrelu.experiments.keypoints`) from the statistics of their rows (:mod:`dyrelu.experiments.stats`). Every
function here is a pure function of the CSV rows (no clock, no machine state), so regenerating the report from
the committed CSVs gives the committed file byte for byte. Its sections, in order: the converged budget
(:func:`converged_report`, passed to :func:`make_report` as its ``preface``), the short grid
(:func:`make_report`), the recipe study R1 (:func:`recipe_report`) and the keypoint claim K1
(:func:`keypoint_report`); :func:`readme_summary` collects every verdict into the README's table.

One module per section: ``converged`` (with the plateau study), ``beyond`` (C1-cluttered, U1), ``short`` (the short
grid and the cost table), ``recipe`` (R1), ``keypoints`` (K1), ``readme``; ``_tables`` holds what they share.
"""

from __future__ import annotations

from dyrelu.experiments.report._tables import claim_section, verdict_table
from dyrelu.experiments.report.beyond import beyond_report
from dyrelu.experiments.report.converged import (
    CONVERGED_COMMAND,
    GPU_COMMAND,
    converged_report,
    converged_summary,
    first_device_stats,
    plateau_summary,
)
from dyrelu.experiments.report.keypoints import keypoint_report
from dyrelu.experiments.report.readme import README_MARKERS, readme_summary, replace_readme_summary
from dyrelu.experiments.report.recipe import recipe_report
from dyrelu.experiments.report.short import make_report

__all__ = [
    "CONVERGED_COMMAND",
    "GPU_COMMAND",
    "README_MARKERS",
    "beyond_report",
    "claim_section",
    "converged_report",
    "converged_summary",
    "first_device_stats",
    "keypoint_report",
    "make_report",
    "plateau_summary",
    "readme_summary",
    "recipe_report",
    "replace_readme_summary",
    "verdict_table",
]
