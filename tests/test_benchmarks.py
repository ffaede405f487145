"""Smoke test of the benchmark scripts: their functions on tiny shapes, one repeat, and the JSON fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import bench_activation  # noqa: E402
import bench_aprelu  # noqa: E402
import bench_model  # noqa: E402
import make_docs  # noqa: E402

META_FIELDS = {"date", "machine", "threads", "torch", "git_commit", "git_dirty", "load_average", "native_kernels"}


def _check_meta(meta: dict, threads: int) -> None:
    assert set(meta) >= META_FIELDS
    assert {"platform", "cpu", "cpu_count"} <= set(meta["machine"])
    assert meta["threads"] == threads
    assert meta["torch"] == torch.__version__


def test_naive_matches_ours():
    for variant in "ABC":
        for channels_last in (False, True):
            ours = _common.perturb(_common.VARIANTS[variant](4, k=3, channels_last=channels_last))
            x = torch.randn(2, 5, 6, 4) if channels_last else torch.randn(2, 4, 5, 6)
            torch.testing.assert_close(_common.NaiveDyReLU(ours)(x), ours(x))


def test_plain_aprelu_matches_ours_and_the_benchmark_writes_its_json(tmp_path):
    ours = _common.perturb(bench_aprelu.APReLU(4)).train()
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(bench_aprelu.PlainAPReLU(ours)(x), ours(x))
    out = tmp_path / "aprelu.json"
    assert bench_aprelu.main(["--batch", "4", "--rounds", "1", "--steps", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    _check_meta(data["meta"], 1)
    assert data["relu"]["train_vs_relu"] == 1.0 and data["aprelu_plain"]["train_vs_aprelu"] > 0


def test_saved_bytes_counts_storages_once():
    x = torch.randn(64, 64, requires_grad=True)
    # mul saves both operands, here two views of one storage
    assert _common.saved_bytes(lambda: x[:32] * x[32:]) == x.numel() * x.element_size()


def test_activation_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)  # compile time is not tested here
    shape = bench_activation.Shape("tiny", (2, 8, 4, 4))
    tokens = bench_activation.Shape("tiny-tokens", (2, 6, 8), channels_last=True)
    configs = [
        bench_activation.Config("B", 2, shape, "float32", "eager"),
        bench_activation.Config("C", 3, tokens, "bfloat16", "eager"),
        bench_activation.Config("B", 2, shape, "float32", "compile"),
    ]
    result = bench_activation.run(configs, repeats=1, warmup=0, threads=1, log=lambda *_: None)
    _check_meta(result["meta"], threads=1)
    rows = result["results"]
    assert len(rows) == 4 + 4 + 4
    for row in rows:
        assert row["forward_ms"] > 0 and row["train_ms"] > 0 and row["repeats"] == 1
        assert row["impl"] in {*bench_activation.COMPILE_IMPLS, *bench_activation.EAGER_IMPLS}
    ours = [r for r in rows if r["impl"] == "ours"]
    assert all(r["train_vs_naive"] > 0 and r["train_vs_relu"] > 0 for r in ours)
    assert all(r["train_vs_ours_aten"] > 0 for r in ours if r["mode"] == "eager")
    naive = [r for r in rows if r["impl"] == "naive"]
    for o, n in zip(ours, naive, strict=True):  # the naive one keeps the max's int64 indices too
        assert o["saved_bytes"] + o["input_bytes"] <= n["saved_bytes"]

    path = tmp_path / "activation.json"
    _common.write_json(result, path)
    assert json.loads(path.read_text())["benchmark"] == "activation"
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nprose stays\n\n<!-- generated:activation -->\nold\n<!-- /generated:activation -->\n"
    )
    make_docs.main(["--activation", str(path), "--model", "--out", str(doc)])
    text = doc.read_text()
    assert "prose stays" in text and "old" not in text and "| B | 2 | 2×8×4×4 | float32 |" in text
    assert "ours/ATen path" in text


def test_activation_grid():
    quick = bench_activation.grid(quick=True, compile_mode="subset")
    assert any(c.mode == "compile" for c in quick) and all(c.variant in "ABC" for c in quick)
    full = bench_activation.grid(quick=False, compile_mode="none")
    assert {c.shape.name for c in full} == set(bench_activation.SHAPES) and all(c.mode == "eager" for c in full)


def test_model_benchmark(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    models = pytest.importorskip("dyrelu.models")
    if "mobilenetv2_050" not in models.list_models():
        pytest.skip("mobilenetv2_050 is not registered")
    net = bench_model.Net("mobilenetv2_050", 1, 28, 2, 10, True)
    monkeypatch.setitem(bench_model.NETS, "tiny", net)
    result = bench_model.run(["tiny"], ["eager"], repeats=1, warmup=0, threads=1, rss=False, log=lambda *_: None)
    _check_meta(result["meta"], threads=1)
    rows = result["results"]
    assert [r["act"] for r in rows] == list(bench_model.ACTS)
    # the one-node path (issue 18) keeps sigma(z) and the coefficients instead of the hyper function's chain
    assert by_act(rows)["dyrelu_b"]["saved_bytes"] <= by_act(rows)["dyrelu_b_aten"]["saved_bytes"]
    by = {r["act"]: r for r in rows}
    assert by["relu"]["train_vs_relu"] == 1.0
    assert by["naive_dyrelu_b"]["saved_bytes"] > by["dyrelu_b"]["saved_bytes"] > by["relu"]["saved_bytes"]
    # the naive network wraps every DyReLU-B of ours
    naive = bench_model.build(net, "naive_dyrelu_b")
    assert any(isinstance(m, _common.NaiveDyReLU) for m in naive.modules())
    path = tmp_path / "model.json"
    _common.write_json(result, path)
    doc = tmp_path / "benchmarks.md"
    make_docs.main(["--activation", "--model", str(path), "--out", str(doc)])
    assert "| mobilenetv2_050 | 2×1×28×28 | eager | dyrelu_b |" in doc.read_text()


def by_act(rows):
    return {r["act"]: r for r in rows}


def test_peak_rss_subprocess():
    pytest.importorskip("torchvision")
    out = bench_model.peak_rss("mobilenetv2_050", "dyrelu_b", "eager", steps=1, threads=1, batch_size=2)
    assert out["peak_rss_mb"] >= out["rss_before_mb"] > 0
    assert out["peak_rss_increase_mb"] >= 0
