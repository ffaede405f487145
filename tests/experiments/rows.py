"""Result rows the experiments tests write: the grids' CSV columns with made-up values."""

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


def keypoint_row(backbone_act, head_act, seed, ap, pck=0.6):
    """A K1 results row of ``mobilenetv2_035`` with ``backbone_act`` and ``head_act`` at AP ``ap`` (in [0, 1])."""
    return {
        "experiment": "K1",
        "run": f"mobilenetv2_035-{backbone_act}-{head_act}-seed{seed}",
        "backbone": "mobilenetv2_035",
        "backbone_act": backbone_act,
        "head_act": head_act,
        "seed": seed,
        "epochs": 4,
        "num_train": 8192,
        "num_test": 1024,
        "image_size": 64,
        "items": "fashion-mnist",
        "batch_size": 32,
        "test_ap": ap,
        "test_ap50": min(ap + 0.2, 1.0),
        "test_ap75": ap / 2,
        "test_pck": pck,
        "test_oks": 0.5,
        "test_loss": 0.005,
        "train_loss": 0.004,
        "params": 184_000 if backbone_act == "relu" else 440_000,
        "madds": 8_000_000,
        "train_seconds": 120.0,
        "seconds_per_epoch": 30.0,
        "cpu_seconds": 110.0 if backbone_act == "relu" else 200.0,
        "threads": 1,
        "torch": "2.14.1",
        "commit": "abc1234",
    }
