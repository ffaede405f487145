"""Result rows the experiments tests write: the classification grid's CSV columns with made-up values."""

from __future__ import annotations

import json

from dyrelu.experiments import append_row, read_results


def row(model, act, seed, acc, **act_kwargs):
    """A results row of ``model`` with ``act`` at test accuracy ``acc``; DY-ReLU rows are dynamic."""
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


def write_rows(path, rows):
    """Append ``rows`` to the results CSV ``path`` and read them back (strings, as the report gets them)."""
    for row in rows:
        append_row(path, row)
    return read_results(path)


def c2_rows(a, b, c, relu=90.0):
    """Claim C2's rows, three seeds: DY-ReLU-A, -B and -C at ``a``, ``b`` and ``c``, ReLU at ``relu``."""
    rows = []
    for seed, jitter in enumerate((-0.1, 0.0, 0.1)):
        for act, acc in (("relu", relu), ("dyrelu_a", a), ("dyrelu_b", b), ("dyrelu_c", c)):
            rows.append(row("mobilenetv2_035", act, seed, acc + jitter))
    return rows
