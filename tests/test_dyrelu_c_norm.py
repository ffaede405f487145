"""DY-ReLU-C normalises its attention logits (``spatial_norm``), as the paper and the authors' code do."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.autograd import gradcheck

from dyrelu import DyReLUC
from dyrelu.keypoints import KeypointConfig, build_keypoint_model, keypoint_model_from_checkpoint
from dyrelu.train import TrainConfig, build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from dyrelu.train.evaluation import materialize

#: DyReLUC's state in dyrelu 0.1 (τ, ``temperature``, came after it and is optional when loading).
STATE_0_1 = ["fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias", "spatial_weight"]
NORM_STATE = ["spatial_bn_weight", "spatial_bn_bias", "spatial_bn_running_mean", "spatial_bn_running_var"]


def _dynamic(**kwargs) -> DyReLUC:
    """A float64 DyReLUC whose attention is not uniform (its weights as nn.Linear/nn.Conv2d initialise them)."""
    torch.manual_seed(0)
    return DyReLUC(8, zero_init_last=False, dtype=torch.float64, **kwargs)


def _strip_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.rsplit(".", 1)[-1].startswith("spatial_bn_")}


# -- the module ------------------------------------------------------------------------------------------------
def test_attention_ignores_the_input_scale_in_training_mode():
    x = 8 * torch.randn(3, 8, 5, 6, dtype=torch.float64)  # logits of a large variance: eps (1e-5) hardly counts
    normed = _dynamic().train()
    torch.testing.assert_close(normed._scale(2.5 * x), normed._scale(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(normed._scale(0.5 * x), normed._scale(x), rtol=0, atol=1e-6)
    pi = normed._scale(x)
    assert pi.shape == (3, 1, 5, 6) and (pi.amax() - pi.amin()) > 0.05  # not uniform: the test can fail
    # Without the normalisation (dyrelu 0.1) a larger input sharpens the softmax.
    raw = _dynamic(spatial_norm=False).train()
    assert (raw._scale(2.5 * x) - raw._scale(x)).abs().max() > 0.01


def test_normalisation_uses_batch_statistics_in_training_and_running_ones_in_eval():
    module = _dynamic()
    x = torch.randn(4, 8, 3, 5, dtype=torch.float64)
    module._scale(x)  # training mode: updates the running statistics, as nn.BatchNorm1d(1) does
    reference = torch.nn.BatchNorm1d(1, dtype=torch.float64)
    logits = torch.einsum("c,ncp->np", module.spatial_weight, x.flatten(2)).unsqueeze(1)
    reference(logits)
    torch.testing.assert_close(module.spatial_bn_running_mean, reference.running_mean)
    torch.testing.assert_close(module.spatial_bn_running_var, reference.running_var)
    module.eval()
    reference.eval()
    with torch.no_grad():
        module.spatial_bn_weight.fill_(1.5)
        module.spatial_bn_bias.fill_(0.25)
        reference.weight.fill_(1.5)
        reference.bias.fill_(0.25)
    off = DyReLUC(8, zero_init_last=False, spatial_norm=False, dtype=torch.float64)
    off.load_state_dict(_strip_norm(module.state_dict()))
    expected = torch.clamp(torch.softmax(reference(logits) / module.tau, dim=-1) * 5, max=1.0).view(4, 1, 3, 5)
    torch.testing.assert_close(module._scale(x), expected)
    assert not torch.allclose(off._scale(x), expected)


def test_a_fresh_module_starts_at_relu_over_three_in_both_modes():
    x = torch.randn(3, 8, 5, 7)
    for module in (DyReLUC(8), DyReLUC(8).eval(), DyReLUC(), DyReLUC(8, spatial_norm=False)):
        torch.testing.assert_close(module(x), torch.relu(x) / 3)


def test_state_dict_keys_and_strict_loading():
    assert list(DyReLUC(4, spatial_norm=False).state_dict()) == [*STATE_0_1, "temperature"]
    normed = DyReLUC(4).state_dict()
    assert set(normed) == {*STATE_0_1, "temperature", *NORM_STATE}
    assert normed["spatial_bn_weight"].shape == normed["spatial_bn_running_var"].shape == (1,)
    # A state dict of dyrelu 0.1 loads strictly into DyReLUC(spatial_norm=False), eager or lazy ...
    torch.manual_seed(0)
    old = {k: v for k, v in DyReLUC(4, zero_init_last=False, spatial_norm=False).state_dict().items() if k in STATE_0_1}
    x = torch.randn(2, 4, 3, 3)
    outputs = []
    for module in (DyReLUC(4, spatial_norm=False), DyReLUC(spatial_norm=False)):
        module.load_state_dict(old)
        assert module.channels == 4
        torch.testing.assert_close(module.spatial_weight, old["spatial_weight"])
        outputs.append(module(x))
    torch.testing.assert_close(outputs[0], outputs[1])
    # ... and not into a normalising one, which would compute something else.
    with pytest.raises(RuntimeError, match=r"Missing key.*spatial_bn_weight"):
        DyReLUC(4).load_state_dict(old)
    with pytest.raises(RuntimeError, match=r"Unexpected key.*spatial_bn_weight"):
        DyReLUC(4, spatial_norm=False).load_state_dict(normed)


def test_the_normalisation_is_the_modules_own_state():
    module = _dynamic()
    assert {name for name, _ in module.named_parameters(recurse=False)} >= {"spatial_bn_weight", "spatial_bn_bias"}
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    module(x)
    module.eval()
    expected = module(x)
    for other in (copy.deepcopy(module), copy.deepcopy(DyReLUC(spatial_norm=True, dtype=torch.float64))):
        other.load_state_dict(module.state_dict())
        torch.testing.assert_close(other.eval()(x), expected)
    # reset_parameters and zero_init_last start the normalisation afresh
    for reset in (module.reset_parameters, module.zero_init_last):
        with torch.no_grad():
            module.spatial_bn_weight.fill_(2.0)
            module.spatial_bn_running_var.fill_(5.0)
        reset()
        assert module.spatial_bn_weight.item() == 1.0 and module.spatial_bn_bias.item() == 0.0
        assert module.spatial_bn_running_mean.item() == 0.0 and module.spatial_bn_running_var.item() == 1.0
    assert "spatial_norm=True" in repr(module) and "spatial_norm=False" in repr(DyReLUC(4, spatial_norm=False))


def test_gradcheck_in_training_mode():
    module = _dynamic().train()
    with torch.no_grad():  # a non-trivial affine part, so that its gradients are checked too
        module.spatial_bn_weight.fill_(1.3)
        module.spatial_bn_bias.fill_(-0.2)
    names = [name for name, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    x = torch.randn(3, 8, 3, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps, strict=True)), (x,))

    assert gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5)
    # the attention alone, where the normalisation's gradient is not hidden by the piecewise maximum
    assert gradcheck(module._scale, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_channels_last_memory_and_layout_give_the_same_output(train):
    module = _dynamic().train(train)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    expected = module(x)
    torch.testing.assert_close(module(x.to(memory_format=torch.channels_last)), expected)
    y = module(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    tokens = DyReLUC(8, channels_last=True, dtype=torch.float64).train(train)
    tokens.load_state_dict(module.state_dict())
    torch.testing.assert_close(tokens(x.movedim(1, -1)), expected.movedim(1, -1))


def test_one_value_in_training_mode_is_not_normalised():
    module = _dynamic().train()
    x = torch.randn(1, 8, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(module(x), _dynamic(spatial_norm=False)(x))  # π = min(γ, 1) = 1/3 either way
    assert module.spatial_bn_running_var.item() == 1.0  # no statistics from a single value


def test_a_float32_module_takes_bfloat16_input():
    module = DyReLUC(8, zero_init_last=False)
    x = torch.randn(2, 8, 4, 4)
    y = module(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), module(x), atol=0.05, rtol=0.05)


# -- configs and checkpoints ------------------------------------------------------------------------------------
def test_configs_record_spatial_norm():
    assert TrainConfig(act="dyrelu_c").act_kwargs == {"zero_init_last": False, "spatial_norm": True}
    assert TrainConfig(act="dyrelu_c", act_kwargs={"spatial_norm": False}).act_kwargs["spatial_norm"] is False
    assert "spatial_norm" not in TrainConfig(act="dyrelu_b").act_kwargs
    cfg = TrainConfig(act="dyrelu_c")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # a config of dyrelu 0.1 (before the recipe's fields) ran without the normalisation
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("hyper_weight_decay", "hyper_lr_scale")}
    old["act_kwargs"] = {"k": 3}
    assert TrainConfig.from_dict(old).act_kwargs == {"zero_init_last": True, "spatial_norm": False, "k": 3}
    old["act"] = "dyrelu_b"
    assert TrainConfig.from_dict(old).act_kwargs == {"zero_init_last": True, "k": 3}

    keypoints = KeypointConfig(backbone_act="dyrelu_c", head_act="dyrelu_c")
    assert keypoints.backbone_act_kwargs["spatial_norm"] is True and keypoints.head_act_kwargs["spatial_norm"] is True
    assert "spatial_norm" not in KeypointConfig(head_act="dyrelu_b").head_act_kwargs
    old = {k: v for k, v in keypoints.to_dict().items() if k not in ("hyper_weight_decay", "hyper_lr_scale")}
    old |= {"backbone_act": "dyrelu_b", "backbone_act_kwargs": {}, "head_act_kwargs": {}}
    converted = KeypointConfig.from_dict(old)
    assert converted.head_act_kwargs == {"zero_init_last": True, "spatial_norm": False}
    assert converted.backbone_act_kwargs == {"zero_init_last": True}


def _as_version_2(path, out):
    """Rewrite a checkpoint as this dyrelu wrote it before the normalisation: format 2, no spatial_norm."""
    state = torch.load(path, weights_only=True)
    for kwargs in ("act_kwargs", "backbone_act_kwargs", "head_act_kwargs"):
        if kwargs in state["config"]:
            state["config"][kwargs] = {k: v for k, v in state["config"][kwargs].items() if k != "spatial_norm"}
    state["version"] = 2
    torch.save(state, out)
    return out


def test_a_version_2_checkpoint_rebuilds_its_model_without_the_normalisation(tmp_path):
    cfg = TrainConfig(
        model="mobilenetv2_035", act="dyrelu_c", act_kwargs={"spatial_norm": False}, num_classes=4, in_chans=3
    )
    cfg = cfg.replace(small_input=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    materialize(model, (3, 16, 16))
    assert not any(k.endswith("spatial_bn_weight") for k in model.state_dict())
    state = {"config": cfg.to_dict(), "epoch": 1, "model": model.state_dict(), "input_shape": [3, 16, 16]}
    save_checkpoint(state, tmp_path / "new.pt")
    assert load_checkpoint(tmp_path / "new.pt")["version"] == 3
    old = _as_version_2(tmp_path / "new.pt", tmp_path / "old.pt")
    loaded = load_checkpoint(old)
    assert loaded["config"]["act_kwargs"] == {"zero_init_last": False, "spatial_norm": False}
    rebuilt, _ = model_from_checkpoint(old)  # loads the weights strictly
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x))
    # A version-3 checkpoint keeps what its config says; without the option, a config means the default.
    cfg_new = TrainConfig(model="mobilenetv2_035", act="dyrelu_c", num_classes=4, in_chans=3, small_input=True)
    model = build_model(cfg_new)
    materialize(model, (3, 16, 16))
    assert any(k.endswith("spatial_bn_weight") for k in model.state_dict())
    save_checkpoint({**state, "config": cfg_new.to_dict(), "model": model.state_dict()}, tmp_path / "norm.pt")
    assert load_checkpoint(tmp_path / "norm.pt")["config"]["act_kwargs"]["spatial_norm"] is True
    model_from_checkpoint(tmp_path / "norm.pt")


def test_a_version_2_keypoint_checkpoint_rebuilds_its_model_without_the_normalisation(tmp_path):
    cfg = KeypointConfig(
        backbone_act="dyrelu_c",
        head_act="dyrelu_c",
        backbone_act_kwargs={"spatial_norm": False},
        head_act_kwargs={"spatial_norm": False},
        output_stride=8,
        head_channels=8,
        image_size=32,
    )
    torch.manual_seed(0)
    model = build_keypoint_model(cfg)
    state = {"config": cfg.to_dict(), "epoch": 1, "model": model.state_dict(), "task": "keypoints"}
    save_checkpoint(state, tmp_path / "new.pt")
    loaded = load_checkpoint(_as_version_2(tmp_path / "new.pt", tmp_path / "old.pt"))
    assert loaded["config"]["backbone_act_kwargs"]["spatial_norm"] is False
    assert loaded["config"]["head_act_kwargs"]["spatial_norm"] is False
    keypoint_model_from_checkpoint(tmp_path / "old.pt")  # loads the weights strictly
