"""The README's table of verdicts, collected from a generated report."""

from __future__ import annotations

import itertools

#: The README block that :func:`replace_readme_summary` fills.
README_MARKERS = ("<!-- reproduction-summary -->", "<!-- /reproduction-summary -->")


def readme_summary(report: str) -> str:
    """The verdicts of a generated report (:func:`make_report`, optionally with the converged, recipe and
    keypoint sections) as one markdown table for the README: the rows of every verdict table in the order of
    the report (the converged budget's first), then one row per section with a verdict of its own."""
    lines = report.splitlines()
    table = []
    for start, line in enumerate(lines):
        if not line.startswith("## Verdicts"):
            continue
        rows = itertools.takewhile(lambda row: row.startswith("|"), lines[start + 2 :])
        table += list(rows) if not table else list(rows)[2:]  # one header
    question = ""
    for line in lines:
        if line.startswith("Tested: "):
            question = line.removeprefix("Tested: ")
        if line.startswith("**Verdict (") and "): " in line:  # a section with its own budget (R1)
            name, verdict = line.strip("*").removeprefix("Verdict (").rstrip(".").split("): ", 1)
            table.append(f"| {name} | {question} | {verdict} |")
        if line.startswith(("**Does ", "**Do ")) and "? " in line:
            question, verdict = line.strip("*").rstrip(".").split("? ", 1)
            table.append(f"| K1 | {question}? | {verdict} |")
    return "\n".join(table)


def replace_readme_summary(readme: str, summary: str) -> str:
    """``readme`` with the text between :data:`README_MARKERS` replaced by ``summary``.

    Raises ``ValueError`` when the markers are missing.
    """
    begin, end = README_MARKERS
    if begin not in readme or end not in readme:
        raise ValueError(f"expected the markers {begin} and {end} in the README")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{summary.strip()}\n{end}{tail}"
