"""Tests of dyrelu.analysis.cost: hand counts, the activations' cost and the paper's MobileNetV2 numbers."""

from __future__ import annotations

import pytest
from torch import nn

from dyrelu import DyReLUA, DyReLUB, DyReLUC
from dyrelu.analysis.cost import ActProfile, Profile, compare_acts, count_params, format_comparison, profile_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_hand_count() -> None:
    # 1×3×10×10 → conv 3×3 → 8×8×8: each of the 512 outputs takes 3·3·3 = 27 MAdds; the linear 512 × 10.
    profile = profile_model(_tiny(), (1, 3, 10, 10))
    assert profile == Profile(params=8 * 27 + 8 + 512 * 10 + 10, madds=512 * 27 + 512 * 10, input_size=(1, 3, 10, 10))


def test_madds_scale_with_batch() -> None:
    assert profile_model(_tiny(), (4, 3, 10, 10)).madds == 4 * profile_model(_tiny(), (1, 3, 10, 10)).madds


@pytest.mark.parametrize(("cls", "outputs"), [(DyReLUA, 4), (DyReLUB, 4 * 16)])
def test_dyrelu_hyper_function_cost(cls: type[nn.Module], outputs: int) -> None:
    # FC C → C/R (16 → 2) and FC C/R → 2K·C' per sample; the piecewise max is elementwise, not counted.
    profile = profile_model(cls(16), (3, 16, 5, 5))
    assert profile.madds == 3 * (16 * 2 + 2 * outputs)
    assert profile.params == 16 * 2 + 2 + 2 * outputs + outputs


def test_dyrelu_c_counts_the_spatial_conv() -> None:
    # DY-ReLU-B's hyper function plus the 1×1 conv C → 1 at each of the 25 positions.
    assert profile_model(DyReLUC(16), (3, 16, 5, 5)).madds == 3 * (16 * 2 + 2 * 64 + 16 * 25)


def test_lazy_module_is_materialised() -> None:
    assert profile_model(DyReLUB(), (1, 16, 4, 4)).params == count_params(DyReLUB(16))


def test_keeps_training_mode_and_runs_on_meta() -> None:
    model = _tiny().train()
    profile_model(model, (1, 3, 10, 10))
    assert model.training
    meta = _tiny().to("meta")
    assert profile_model(meta, (1, 3, 10, 10)) == profile_model(_tiny(), (1, 3, 10, 10))


def test_count_params_counts_shared_once() -> None:
    linear = nn.Linear(4, 4)
    assert count_params(nn.Sequential(linear, linear)) == 20


def test_bad_input_size() -> None:
    with pytest.raises(ValueError, match=r"positive ints, batch included, got \(1, 0, 4\)"):
        profile_model(_tiny(), (1, 0, 4))


def test_mobilenetv2_100_matches_the_paper() -> None:
    rows = {row.act: row for row in compare_acts("mobilenetv2_100")}
    relu = rows["relu"]
    assert relu.params == 3_504_872  # torchvision's MobileNetV2
    assert relu.madds == pytest.approx(300.8e6, rel=0.01)  # the paper's 300M
    assert relu.madds_overhead == 0.0
    # The paper: about +5% MAdds for DY-ReLU-B; we count its FCs (+2.2%), not the elementwise max.
    assert 1.0 < rows["dyrelu_b"].madds_overhead < 8.0
    assert 0.0 < rows["dyrelu_a"].madds_overhead < rows["dyrelu_b"].madds_overhead
    assert rows["dyrelu_b"].madds_overhead < rows["dyrelu_c"].madds_overhead < 8.0
    assert rows["dyrelu_c"].params > rows["dyrelu_b"].params > rows["dyrelu_a"].params > relu.params


def test_compare_acts_baseline_not_in_acts() -> None:
    rows = compare_acts("resnet10", ["dyrelu_b"], input_size=32, num_classes=10, small_input=True)
    relu = compare_acts("resnet10", ["relu"], input_size=32, num_classes=10, small_input=True)[0]
    (row,) = rows
    assert row.madds_overhead == pytest.approx(100 * (row.madds - relu.madds) / relu.madds)
    assert row.params_overhead == pytest.approx(100 * (row.params - relu.params) / relu.params)


def test_compare_acts_on_cpu_equals_meta() -> None:
    kwargs = {"input_size": (32, 24), "num_classes": 10, "in_chans": 1, "small_input": True}
    assert compare_acts("resnet10", ["dyrelu_c"], device="cpu", **kwargs) == compare_acts(
        "resnet10", ["dyrelu_c"], **kwargs
    )


def test_compare_acts_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        compare_acts("nope")
    with pytest.raises(ValueError, match="at least one activation"):
        compare_acts("resnet10", [])


def test_format_comparison_is_aligned() -> None:
    rows = [ActProfile("relu", 1_000_000, 2_000_000, 0.0, 0.0), ActProfile("dyrelu_b", 1_500_000, 2_100_000, 50.0, 5.0)]
    lines = format_comparison(rows).splitlines()
    assert lines[0].split() == ["act", "params", "(M)", "vs", "relu", "MAdds", "(M)", "vs", "relu"]
    assert lines[2].split() == ["dyrelu_b", "1.500", "+50.00%", "2.10", "+5.00%"]
    assert len({len(line) for line in lines}) == 1


def test_dyrelu_profile_is_a_deprecated_alias():
    import dyrelu.analysis.cost as cost
    import dyrelu.profile as alias

    assert alias.__all__ == cost.__all__
    for name in alias.__all__:
        with pytest.warns(DeprecationWarning, match=f"import {name} from dyrelu.analysis.cost"):
            assert getattr(alias, name) is getattr(cost, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        alias.nothing  # noqa: B018
