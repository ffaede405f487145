"""dyrelu.train: optimizer groups, schedules, fit, exact resume, checkpoints and their errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dyrelu import DyReLUB, DyReLUC, StaticPWL
from dyrelu.data import BatchLoader, DataError, make_synthetic
from dyrelu.train import (
    CheckpointError,
    TrainConfig,
    WarmupCosine,
    evaluate,
    evaluate_checkpoint,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    param_groups,
    read_metrics,
    save_checkpoint,
    set_tau,
    tau_at,
)
from tests.runs import Stop, stop_after, without

DATA = {"num_samples": 64, "num_test": 16, "num_classes": 4, "image_size": 8}
TIMING = ("epoch_seconds", "train_images_per_second")


def tiny_net(act: nn.Module | None = None, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        act if act is not None else DyReLUB(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(8, 4),
    )


def config(**changes) -> TrainConfig:
    values = {
        "model": "tiny",
        "data": "synthetic",
        "data_kwargs": DATA,
        "epochs": 1,
        "batch_size": 16,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "threads": 1,
        "tensorboard": False,
    }
    return TrainConfig(**{**values, **changes})


def without_timing(rows):
    return without(rows, TIMING)


# -- optimizer and schedules -----------------------------------------------------------------------
def test_no_weight_decay_on_norms_biases_and_coefficients():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), DyReLUB(8), StaticPWL(8), nn.PReLU(8))
    decay, no_decay = param_groups(model, 1e-4)
    decayed = {id(p) for p in decay["params"]}
    assert decayed == {id(model[0].weight), id(model[2].fc1_weight), id(model[2].fc2_weight)}
    assert {id(model[3].a), id(model[3].b), id(model[2].fc2_bias), id(model[1].weight)} <= {
        id(p) for p in no_decay["params"]
    }
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_cosine_and_its_state():
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.4)
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=4, min_lr=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lrs[4] == pytest.approx(0.4) and lrs[-1] > 0.1 and all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    other = WarmupCosine(torch.optim.SGD([param], lr=0.4), total_steps=10, warmup_steps=4, min_lr=0.1)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == sched.get_last_lr()


def test_tau_schedule():
    assert tau_at(0, 4, start=9.0, epochs=2.0) == 9.0
    assert tau_at(4, 4, start=9.0, epochs=2.0) == pytest.approx(5.0)
    assert tau_at(100, 4, start=9.0, epochs=2.0) == 1.0
    model = nn.Sequential(DyReLUC(4), nn.Sequential(DyReLUC(4)), DyReLUB(4))
    assert set_tau(model, 3.0) == 2 and model[1][0].tau == 3.0


def test_config_validation():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        TrainConfig(opt="adam")
    with pytest.raises(ValueError, match=r"data_fraction in \(0, 1\], got 1.5"):
        TrainConfig(data_fraction=1.5)
    assert TrainConfig(opt="adamw").lr == 1e-3 and TrainConfig().replace(opt="adamw").weight_decay == 0.05
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epochs": 1, "colour": "red"})


# -- fit -------------------------------------------------------------------------------------------
def test_fit_one_epoch_then_resume_to_two(tmp_path):
    first = fit(config(epochs=1), tmp_path, model=tiny_net())
    assert [row["epoch"] for row in first.metrics] == [1]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["num_classes"] == 4 and state["config"]["in_chans"] == 3
    assert state["scheduler"]["last_step"] == 4 and state["optimizer"]["state"]
    assert set(state["rng"][0]) >= {"torch", "python", "numpy"} and state["input_shape"] == [3, 8, 8]
    lines = []
    second = fit(config(epochs=2), tmp_path, resume=True, model=tiny_net(), log=lines.append)
    assert any("resumed" in line and "after epoch 1" in line for line in lines)
    assert second.resumed_epoch == 1 and [row["epoch"] for row in second.metrics] == [1, 2]
    rows = read_metrics(tmp_path)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds"}
    assert rows == second.metrics  # the CSV holds the exact floats
    assert load_checkpoint(tmp_path)["epoch"] == 2


def test_same_seed_same_metrics_other_seed_other_metrics():
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(0)  # a model passed to fit is initialised by the caller
        runs.append(fit(config(epochs=2, seed=seed), model=tiny_net()).metrics)
    assert without_timing(runs[0]) == without_timing(runs[1])
    assert without_timing(runs[0]) != without_timing(runs[2])


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    """Dropout, augmentation, momentum and the schedule all continue exactly."""
    train = make_synthetic(64, num_classes=4, image_size=8)
    train.pad, train.flip = 2, True
    test = make_synthetic(16, num_classes=4, image_size=8, train=False)
    cfg = config(epochs=3, model="tiny-dropout")

    def run(out, **kwargs):
        torch.manual_seed(0)
        model = tiny_net(dropout=0.3)
        torch.manual_seed(123)  # the global state when fit starts does not matter
        return fit(cfg, out, model=model, train_set=train, test_set=test, **kwargs)

    full = run(tmp_path / "full")
    with pytest.raises(Stop):
        run(tmp_path / "crashed", log=stop_after(2))
    assert load_checkpoint(tmp_path / "crashed")["epoch"] == 2
    resumed = run(tmp_path / "crashed", resume=True)
    assert without_timing(resumed.metrics) == without_timing(full.metrics)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_lazy_activations_and_bf16_autocast(tmp_path):
    model = tiny_net(act=DyReLUB())  # channels inferred on a first forward pass before the optimizer exists
    result = fit(config(amp="bf16"), model=model)
    assert math.isfinite(result.metrics[0]["train_loss"]) and model[2].channels == 8
    with pytest.raises(ValueError, match=r"fp16.*CUDA"):
        fit(config(amp="fp16", device="cpu"), model=tiny_net())


def test_evaluate_matches_a_direct_computation():
    model = tiny_net().eval()
    ds = make_synthetic(20, num_classes=4, image_size=8)
    loader = BatchLoader(ds, 8, train=False)
    result = evaluate(model, loader)
    images, labels = zip(*loader, strict=True)
    logits = model(torch.cat(images))
    expected = nn.functional.cross_entropy(logits, torch.cat(labels)).item()
    assert result["loss"] == pytest.approx(expected, rel=1e-5) and result["count"] == 20
    assert result["acc"] == pytest.approx(100 * (logits.argmax(1) == torch.cat(labels)).float().mean().item())


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_rebuilds_a_registered_model_with_its_taus(tmp_path):
    cfg = config(model="mobilenetv2_035", act="dyrelu_c", act_kwargs={"reduction": 4}, tau_start=5.0, tau_epochs=2)
    result = fit(cfg, tmp_path)
    assert result.metrics[-1]["tau"] == pytest.approx(tau_at(4, 4, 5.0, 2.0))
    model, state = model_from_checkpoint(tmp_path / "last.pt")
    taus = {m.tau for m in model.modules() if isinstance(m, DyReLUC)}
    assert sorted(taus) == pytest.approx([3.0])
    # τ travels in the model's state dict, not beside it
    saved = [v.item() for k, v in state["model"].items() if k.endswith(".temperature")]
    assert saved and set(saved) == {3.0} and "taus" not in state
    # A checkpoint of dyrelu 0.1 (format 1) kept τ beside the weights, in "taus": it still loads with its τ.
    old = torch.load(tmp_path / "last.pt", weights_only=True)
    names = [k.removesuffix(".temperature") for k in old["model"] if k.endswith(".temperature")]
    old["model"] = {k: v for k, v in old["model"].items() if not k.endswith(".temperature")}
    old.update(version=1, taus=dict.fromkeys(names, 3.0))
    torch.save(old, tmp_path / "old.pt")
    old_model, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert sorted({m.tau for m in old_model.modules() if isinstance(m, DyReLUC)}) == pytest.approx([3.0])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), result.model(x), atol=1e-5)
    again = evaluate_checkpoint(tmp_path, device="cpu")
    assert again["acc"] == pytest.approx(result.metrics[-1]["test_acc"])
    assert again["loss"] == pytest.approx(result.metrics[-1]["test_loss"], rel=1e-4)


def test_tau_helpers_of_old_checkpoints_are_deprecated():
    from dyrelu.train.checkpoint import dyrelu_taus, load_taus

    model = nn.Sequential(DyReLUC(4, tau=3.0))
    with pytest.warns(DeprecationWarning, match="dyrelu_taus is deprecated"):
        assert dyrelu_taus(model) == {"0": 3.0}
    with pytest.warns(DeprecationWarning, match="load_taus is deprecated"):
        load_taus(model, {"0": 2.0})
    assert model[0].tau == 2.0


def test_fit_restores_threads_and_cudnn_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    threads = torch.get_num_threads()
    fit(config(threads=threads + 1), model=tiny_net())
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    assert torch.get_num_threads() == threads
    # also when the run fails after changing them (here: no data where the config points)
    with pytest.raises(DataError):
        fit(
            config(data="fashion-mnist", data_dir=str(tmp_path / "nothing"), data_kwargs={}, threads=threads + 1),
            model=tiny_net(),
        )
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    assert torch.get_num_threads() == threads


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    path = save_checkpoint({"config": {}, "epoch": 0, "model": {"w": torch.ones(2)}}, tmp_path / "c.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "corrupt or not a checkpoint"),
        (b"garbage" * 10, "corrupt or not a checkpoint"),
        ("truncated", "corrupt or not a checkpoint"),
        ("foreign", "not a dyrelu training checkpoint"),
        ("code", "corrupt or not a checkpoint"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "last.pt"
    if content == "truncated":
        save_checkpoint({"config": {}, "epoch": 1, "model": {"w": torch.ones(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "foreign":
        torch.save({"state_dict": {}}, path)
    elif content == "code":
        torch.save({"format": "dyrelu-checkpoint", "hook": print}, path)  # weights_only refuses functions
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_and_mismatched_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    fit(config(), tmp_path, model=tiny_net())
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        fit(config(), tmp_path, model=tiny_net())
    with pytest.raises(CheckpointError, match=r"model='tiny'.*model='other'"):
        fit(config(model="other", epochs=2), tmp_path, resume=True, model=tiny_net())
    with pytest.raises(CheckpointError, match="do not fit the model"):
        fit(config(epochs=2), tmp_path, resume=True, model=tiny_net(act=nn.ReLU()).append(nn.Linear(4, 4)))
    with pytest.raises(CheckpointError, match=r"built outside dyrelu\.models"):
        model_from_checkpoint(tmp_path)
    state = load_checkpoint(tmp_path)
    state["custom_model"] = False
    state["config"]["model"] = "mobilenetv2_035"
    with pytest.raises(CheckpointError, match="do not fit the model"):
        model_from_checkpoint(state)


def test_config_applies_the_recipe_and_reads_old_configs_as_they_ran():
    from dyrelu.recipe import SCRATCH_DYRELU_KWARGS, SCRATCH_TRAIN_OPTIONS

    config = TrainConfig(act="dyrelu_b", act_kwargs={"k": 3})
    assert config.act_kwargs == {**SCRATCH_DYRELU_KWARGS, "k": 3}
    assert config.hyper_weight_decay == SCRATCH_TRAIN_OPTIONS["hyper_weight_decay"]
    assert TrainConfig(act="relu").act_kwargs == {}
    assert TrainConfig(act="dyrelu_b", act_kwargs={"zero_init_last": True}).act_kwargs == {"zero_init_last": True}
    old = TrainConfig(act="dyrelu_b").to_dict()
    del old["hyper_weight_decay"], old["hyper_lr_scale"]
    old["act_kwargs"] = {}
    legacy = TrainConfig.from_dict(old)  # a dyrelu 0.1 config: zero init, decay on the hyper functions
    assert legacy.act_kwargs == {"zero_init_last": True} and legacy.hyper_weight_decay is True
    assert TrainConfig.from_dict(config.to_dict()) == config
