"""Regenerate the tables of docs/benchmarks.md from the benchmarks' JSON results.

The tables sit between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers; the prose
around them (how to run, what we tried) is kept as written.

Usage::

    python benchmarks/make_docs.py [--activation docs/benchmarks/activation.json]
                                   [--model docs/benchmarks/model.json] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
TEMPLATE = """# Benchmarks

<!-- generated:activation -->
<!-- /generated:activation -->

<!-- generated:model -->
<!-- /generated:model -->
"""


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_meta(meta: dict) -> str:
    m = meta["machine"]
    commit = (meta.get("git_commit") or "unknown")[:10] + (" (uncommitted changes)" if meta.get("git_dirty") else "")
    load = meta.get("load_average")
    parts = [
        f"{meta['date']}",
        f"{m['cpu']} ({m['cpu_count']} CPUs)",
        f"threads={meta['threads']}",
        f"torch {meta['torch']}",
        f"commit {commit}",
    ]
    if meta.get("native_kernels") is not None:
        parts.append(f"native kernels {'on' if meta['native_kernels'] else 'unavailable'}")
    if load:
        parts.append(f"load average {load[0]}")
    if meta.get("parallel_op_us") is not None:
        parts.append(f"a parallel 1M-float add took {meta['parallel_op_us']:.0f} µs (contention probe)")
    return "Measured " + ", ".join(parts) + "."


def render_activation(data: dict) -> str:
    rows = data["results"]
    keyed = {}
    for r in rows:
        key = (r["mode"], r["dtype"], r["variant"], r["k"], r["shape_name"])
        keyed.setdefault(key, {})[r["impl"]] = r
    out = [
        f"### Activation benchmark, {data['meta']['threads']} thread(s)",
        "",
        render_meta(data["meta"]),
        "Times are medians (ms) of interleaved repeats; *fwd+bwd* is a forward and a backward pass, *fwd* a "
        "forward pass without autograd; *saved* is what autograd keeps for backward, in multiples of the "
        "input's bytes.",
    ]
    goals = data.get("goals") or []
    if goals:
        out += ["", "| goal | measured | met |", "|---|---|---|"]
        out += [f"| {g['goal']} | {g['value']:.3f} | {'yes' if g['met'] else 'no'} |" for g in goals]
    for mode in ("eager", "compile"):
        order = {name: i for i, name in enumerate(("2d-small", "2d-large", "1d", "tokens"))}
        keys = sorted((k for k in keyed if k[0] == mode), key=lambda k: (k[2], k[3], order.get(k[4], 9), k[1]))
        if not keys:
            continue
        out += [
            "",
            f"#### {'Eager mode' if mode == 'eager' else 'torch.compile'}",
            "",
            "| variant | K | input | dtype | fwd+bwd ReLU | naive | ours | ours/ReLU | ours/naive "
            "| ours/ReLU (CPU time) | fwd ours/ReLU | fwd ours/naive | saved ours | saved naive |"
            + (" ours/eager ReLU |" if mode == "compile" else " ATen path | ours/ATen path |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if mode == "compile" else "---|---|"),
        ]
        for key in keys:
            impls = keyed[key]
            if not {"relu", "naive", "ours"} <= set(impls):
                continue
            ours, naive, relu = impls["ours"], impls["naive"], impls["relu"]
            shape = "×".join(map(str, ours["shape"])) + (" (N, L, C)" if ours["channels_last"] else "")
            out.append(
                f"| {key[2]} | {key[3]} | {shape} | {key[1]} | {relu['train_ms']:.2f} | {naive['train_ms']:.2f} "
                f"| {ours['train_ms']:.2f} | **{ours['train_vs_relu']:.2f}** | **{ours['train_vs_naive']:.2f}** "
                f"| {_num(ours.get('train_cpu_vs_relu'))} "
                f"| {ours['forward_vs_relu']:.2f} | {ours['forward_vs_naive']:.2f} "
                f"| {_num(ours['saved_ratio'])} | {_num(naive['saved_ratio'])} |"
                + (f" {_num(ours.get('train_vs_relu_eager'))} |" if mode == "compile" else _aten(impls))
            )
    return "\n".join(out)


def _aten(impls: dict) -> str:
    """The eager table's last columns: the ATen path (native kernels off) and ours relative to it."""
    aten = impls.get("ours_aten")
    if aten is None:
        return " – | – |"
    return f" {aten['train_ms']:.2f} | {_num(impls['ours'].get('train_vs_ours_aten'))} |"


def render_model(data: dict) -> str:
    rows = data["results"]
    out = [
        f"### Network benchmark, {data['meta']['threads']} thread(s)",
        "",
        render_meta(data["meta"]),
        "Channels-last memory format; medians (ms) of interleaved repeats. *saved* is what autograd keeps for "
        "backward during one training forward (eager mode); *peak RSS* is the peak resident memory (VmHWM) of a "
        "fresh process running a few training steps, *RSS growth* that peak minus the resident memory before "
        "the steps (after compilation, under torch.compile).",
    ]
    goals = data.get("goals") or []
    if goals:
        out += ["", "| goal | measured | met |", "|---|---|---|"]
        out += [f"| {g['goal']} | {g['value']:.3f} | {'yes' if g['met'] else 'no'} |" for g in goals]
    out += [
        "",
        "| network | input | mode | activation | train step | ×ReLU | ×ReLU (CPU time) | inference | ×ReLU "
        "| saved MiB | ×ReLU | peak RSS MiB | RSS growth MiB | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saved = None if r.get("saved_bytes") is None else r["saved_bytes"] / 2**20
        out.append(
            f"| {r['model']} | {'×'.join(map(str, r['input']))} | {r['mode']} | {r['act']} | {r['train_ms']:.0f} "
            f"| **{r['train_vs_relu']:.2f}** | {_num(r.get('train_cpu_vs_relu'))} | {r['infer_ms']:.0f} "
            f"| {r['infer_vs_relu']:.2f} | {_num(saved, 0)} "
            f"| {_num(r.get('saved_vs_relu'))} | {_num(r.get('peak_rss_mb'), 0)} "
            f"| {_num(r.get('peak_rss_increase_mb'), 0)} | {_num(r.get('compile_s'), 0)} |"
        )
    return "\n".join(out)


def replace_section(text: str, name: str, content: str) -> str:
    """Put ``content`` between the ``generated:name`` markers of ``text`` (appended when missing)."""
    begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    block = f"{begin}\n{content.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    results = DOCS / "benchmarks"
    parser.add_argument(
        "--activation", nargs="*", default=sorted(map(str, results.glob("activation*.json"))), help="JSON files"
    )
    parser.add_argument("--model", nargs="*", default=sorted(map(str, results.glob("model*.json"))), help="JSON files")
    parser.add_argument("--out", default=str(DOCS / "benchmarks.md"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    text = out.read_text() if out.exists() else TEMPLATE
    # Each file fills the section named after it: activation.json -> generated:activation.
    for paths, render in ((args.activation, render_activation), (args.model, render_model)):
        for path in map(Path, paths):
            if path.exists():
                text = replace_section(text, path.stem, render(json.loads(path.read_text())))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
