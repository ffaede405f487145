"""Tests of dyrelu.convert: call sites, minimal rewriting, names, exactness, errors, real networks."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from dyrelu import DyReLUA, DyReLUB, DyReLUC, SEReLU, convert
from dyrelu.convert import ConversionError

DYRELU = (DyReLUA, DyReLUB, DyReLUC)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers --------------------------------------------------------------------------------------------------


class ActivationCounter(TorchFunctionMode):
    """Records the input shape of every ReLU/ReLU6 applied, however it is called (module, function, method)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        bounds = (*args[1:3], kwargs.get("min_val", -1.0), kwargs.get("max_val", 1.0))[:2]
        relu6 = name in ("hardtanh", "hardtanh_") and bounds == (0, 6)
        if (name in ("relu", "relu_", "relu6") or relu6) and args and isinstance(args[0], Tensor):
            self.shapes.append(tuple(args[0].shape))
        return func(*args, **kwargs)

    @property
    def feature_maps(self) -> int:
        """Calls on (N, C, H, W) feature maps with more than one position."""
        return sum(1 for s in self.shapes if len(s) == 4 and s[2] * s[3] > 1)

    @property
    def pooled(self) -> int:
        """Calls on (N, C, 1, 1) vectors (squeeze-excitation gates)."""
        return sum(1 for s in self.shapes if len(s) == 4 and s[2] * s[3] == 1)


def count_activations(model: nn.Module, x: Tensor) -> ActivationCounter:
    counter = ActivationCounter()
    with torch.no_grad(), counter:
        model(x)
    return counter


def dyrelus(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DYRELU)}


def relu6_as_relu(model: nn.Module) -> nn.Module:
    """A copy whose ReLU6 modules are ReLUs: what a fresh DY-ReLU computes in their place."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, nn.ReLU())
    return model


class Block(nn.Module):
    """Reuses one ReLU module at two sites with different channels and calls ReLU as functions and methods."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))  # 8 channels
        y = self.conv2(x)
        z = F.relu(y) + torch.relu(y) + y.relu()
        y.relu_()  # result unused: later reads of y see the activated values
        return self.relu(y + z)  # the same module, 16 channels


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if x.mean() > 0:  # control flow on the data: torch.fx cannot trace it
            return F.relu(x)
        return F.relu(-x)


class DataDependentModule(DataDependent):
    """Data-dependent control flow but one ReLU module called once: a module swap is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.act(x) if x.mean() > 0 else self.act(-x)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), Block())


# -- call sites, names, exactness -------------------------------------------------------------------------------


def test_reused_module_functional_and_method_calls():
    torch.manual_seed(0)
    net = small_net().eval()
    block = net[3]
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = net(x)
    assert count_activations(net, x).feature_maps == 7
    assert convert(net, example_input=x) is net
    assert type(block) is Block and net[3] is block  # the class and the object are kept
    assert count_activations(net, x).feature_maps == 0
    names = dyrelus(net)
    assert sorted(names) == ["2", "3.relu", "3.relu_1", "3.relu_2", "3.relu_3", "3.relu_4", "3.relu_5"]
    assert {name: m.channels for name, m in names.items()} == {
        "2": 4,
        "3.relu": 8,
        "3.relu_1": 16,
        "3.relu_2": 16,
        "3.relu_3": 16,
        "3.relu_4": 16,
        "3.relu_5": 16,
    }
    assert "relu" in block.forward.code
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)


def test_module_registered_twice_in_a_sequential():
    torch.manual_seed(0)
    relu = nn.ReLU(inplace=True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 8, 3), relu).eval()
    x = torch.randn(2, 3, 10, 10)
    expected = net(x)
    convert(net)
    assert [type(m) for m in net] == [nn.Conv2d, DyReLUB, nn.Conv2d, DyReLUB]  # each name gets a site
    assert (net[1].channels, net[3].channels) == (4, 8)
    torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)


def test_rewrite_in_training_mode_replays_dropout():
    class Drop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.drop = nn.Dropout(0.5)
            self.relu = nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            return self.relu(self.drop(self.relu(self.conv(x))))

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Drop())
    convert(net)  # the check of the rewritten forward against the original sees the same dropout masks
    assert isinstance(net[1].relu_1, DyReLUB) and net[1].relu_1.training


def test_default_example_input_and_names_are_deterministic():
    trained = convert(small_net())
    fresh = convert(small_net())
    assert list(fresh.state_dict()) == list(trained.state_dict())
    fresh.load_state_dict(trained.state_dict())


def test_convert_twice_changes_nothing():
    net = convert(small_net())
    modules = dict(net.named_modules())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    forward = net[3].forward
    convert(net)
    assert dict(net.named_modules()) == modules
    assert net[3].forward is forward
    assert list(net.state_dict()) == list(state)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_converting_again_with_other_options_converts_the_rest():
    torch.manual_seed(0)
    net = small_net().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    convert(net, exclude="*.F.relu")
    assert sorted(dyrelus(net)) == ["2", "3.relu", "3.relu_1"]
    convert(net)  # traces the rewritten forward of the block
    assert sorted(dyrelus(net)) == ["2", "3.relu", "3.relu_1", "3.relu_2", "3.relu_3", "3.relu_4", "3.relu_5"]
    torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)


def test_dyrelu_activations_are_leaves():
    dy = DyReLUB(4)
    se = SEReLU(4)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), dy, se, nn.ReLU())
    convert(net)
    assert net[1] is dy and net[2] is se
    assert isinstance(net[3], DyReLUB)
    assert "forward" not in vars(dy) and "forward" not in vars(se)


def test_model_mode_dtype_and_buffers_are_kept():
    torch.manual_seed(0)
    net = small_net().double()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    convert(net)  # in training mode: the example run must not touch the BatchNorm statistics
    assert all(m.training for m in net.modules())
    for key, value in stats.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert {p.dtype for p in net.parameters()} == {torch.float64}

    net = small_net().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = net(x)
    convert(net)
    assert not any(m.training for m in net.modules())
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    assert {p.device for p in net.parameters()} == {torch.device("cpu")}
    out = net(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_is_kept():
    net = small_net().cuda().eval()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    expected = net(x)
    convert(net)
    assert {p.device.type for p in net.parameters()} == {"cuda"}
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)


def test_inplace_calls_on_views_and_arguments_are_exact():
    class ViewInplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)
            y[:, :4].relu_()  # changes y through a view
            return y

    class ArgumentInplace(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            F.relu(x, inplace=True)  # changes the caller's tensor
            return x * 2

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.view = ViewInplace()  # registered first: the default example input reads the first convolution
            self.conv = nn.Conv2d(8, 8, 1)
            self.arg = ArgumentInplace()

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(self.view(x))
            return self.arg(y) + y  # reads y after the in-place call

    torch.manual_seed(0)
    net = Outer()
    x = torch.randn(2, 3, 6, 6)
    expected = net(x)
    convert(net)
    assert isinstance(net.view.relu, DyReLUB) and isinstance(net.arg.relu, DyReLUB)
    torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)
    net(x).sum().backward()  # autograd through the rewritten in-place calls


def test_pickle_and_deepcopy_of_rewritten_modules():
    torch.manual_seed(0)
    net = convert(small_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    clone = copy.deepcopy(net)
    assert clone[3].forward.module is clone[3]
    torch.testing.assert_close(clone(x), expected)
    with torch.no_grad():
        clone[3].conv2.weight.zero_()  # the copy runs its own modules
    assert not torch.allclose(clone(x), expected)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded[3]) is Block
    torch.testing.assert_close(loaded(x), expected)


# -- options ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["A", "b", "C"])
def test_variant_k_and_kwargs_pass_through(variant):
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU())
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), head)
    convert(net, variant, k=3, reduction=4, lambda_b=0.25, example_input=torch.randn(2, 3, 8, 8))
    cls = {"A": DyReLUA, "B": DyReLUB, "C": DyReLUC}[variant.upper()]
    assert type(net[1]) is cls
    assert (net[1].k, net[1].reduction, net[1].lambda_b) == (3, 4, 0.25)
    # DyReLUC needs spatial positions: the (N, C) call site of the head is left as it is.
    assert isinstance(net[2][2], nn.ReLU if cls is DyReLUC else cls)


def test_channels_last_token_layout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 5, 6)  # (N, L, C) tokens
    expected = net(x)
    convert(net, channels_last=True, example_input=x)
    assert net[1].channels == 8 and net[1].channels_last
    torch.testing.assert_close(net(x), expected)


def test_bad_arguments():
    net = small_net()
    with pytest.raises(ValueError, match="'D'"):
        convert(net, "D")
    with pytest.raises(ValueError, match="gelu"):
        convert(net, targets=("relu", "gelu"))
    with pytest.raises(ValueError, match=r"expected k \(number of pieces\)"):
        convert(net, k=0)
    with pytest.raises(TypeError, match="channels"):
        convert(net, channels=4)
    with pytest.raises(TypeError, match="example_input"):
        convert(net, example_input=3)
    with pytest.raises(ValueError, match="example_input"):
        convert(nn.Sequential(nn.ReLU(), nn.Flatten()))
    with pytest.raises(RuntimeError, match="example_input"):
        convert(net, example_input=torch.randn(2, 5, 8, 8))  # wrong number of channels
    assert isinstance(net[2], nn.ReLU)  # nothing changed


def test_include_and_exclude():
    # Block's module sites are named "3.relu", its functional calls "3.F.relu".
    net = convert(small_net(), include="3.*", exclude=["*.F.relu"])
    assert isinstance(net[2], nn.ReLU)
    assert sorted(dyrelus(net)) == ["3.relu", "3.relu_1"]

    net = convert(small_net(), exclude="3.relu")
    assert isinstance(net[3].relu, nn.ReLU)
    assert sorted(dyrelus(net)) == ["2", "3.relu_1", "3.relu_2", "3.relu_3", "3.relu_4"]

    net = convert(small_net(), include=["2"])
    assert sorted(dyrelus(net)) == ["2"]
    assert "forward" not in vars(net[3])


def test_relu6_targets():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x: Tensor) -> Tensor:
            x = self.act(self.conv(x) * 4)
            return F.relu6(x - 3) + F.hardtanh(x - 5, 0.0, 6.0) + F.relu(x)

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    net = Net()
    assert sorted(dyrelus(convert(copy.deepcopy(net)))) == ["relu"]  # relu6 is not a default target
    as_relu = Net()
    as_relu.load_state_dict(net.state_dict())

    def relu_everywhere(m: nn.Module, y: Tensor) -> Tensor:
        y = F.relu(m.conv(y) * 4)
        return F.relu(y - 3) + F.relu(y - 5) + F.relu(y)

    convert(net, targets=("relu6", "relu"))
    assert sorted(dyrelus(net)) == ["act", "relu", "relu6", "relu6_1"]
    torch.testing.assert_close(net(x), relu_everywhere(as_relu, x), atol=1e-5, rtol=0)
    net = convert(Net(), targets="relu6")
    assert sorted(dyrelus(net)) == ["act", "relu6", "relu6_1"]


def test_squeeze_excitation_choice():
    SqueezeExcitation = pytest.importorskip("torchvision.ops").SqueezeExcitation

    def make() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), SqueezeExcitation(16, 4))

    x = torch.randn(2, 3, 10, 10)
    net = convert(make().eval())
    assert isinstance(net[1], DyReLUB)
    assert isinstance(net[2].activation, nn.ReLU)  # acts on the pooled (N, 4, 1, 1) vector: left by default
    counter = count_activations(net, x)
    assert (counter.feature_maps, counter.pooled) == (0, 1)

    net = convert(make().eval(), convert_se=True)
    assert isinstance(net[2].activation, DyReLUB) and net[2].activation.channels == 4
    counter = count_activations(net, x)
    assert (counter.feature_maps, counter.pooled) == (0, 0)


def test_unreached_modules_warn():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.act = nn.ReLU()
            self.unused = nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            return self.act(self.conv(x))

    net = Net()
    with pytest.warns(UserWarning, match="unused"):
        convert(net)
    assert isinstance(net.unused, nn.ReLU) and isinstance(net.act, DyReLUB)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))


# -- what cannot be converted ----------------------------------------------------------------------------------


def test_untraceable_functional_call_raises_and_names_the_site():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), DataDependent())
    with pytest.raises(ConversionError, match=r"'2\.F\.relu'") as info:
        convert(net)
    message = str(info.value)
    assert "DataDependent" in message and "relu()" in message and "trace" in message
    assert isinstance(net[1], nn.ReLU) and not dyrelus(net)  # the model is left unchanged
    convert(net, exclude="2.*")  # the other sites convert
    assert sorted(dyrelus(net)) == ["1"]


def test_untraceable_module_with_single_call_is_swapped():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), DataDependentModule())
    convert(net)
    assert isinstance(net[1].act, DyReLUB) and "forward" not in vars(net[1])


def test_untraceable_reused_module_raises():
    class Reuse(DataDependentModule):
        def forward(self, x: Tensor) -> Tensor:
            x = self.act(self.conv(x))
            return self.act(x) if x.mean() > 0 else self.act(-x)

    with pytest.raises(ConversionError, match=r"'1\.act' \(ReLU module called at several sites"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), Reuse()))


def test_training_dependent_forward_raises():
    class Dropout(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return F.dropout(F.relu(x), 0.5, training=self.training)

    with pytest.raises(ConversionError, match=r"self\.training"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), Dropout()))


def test_inplace_add_on_an_argument_raises():
    class AddInplace(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            x += 1  # torch.fx would trace x + 1
            return F.relu(x)

    with pytest.raises(ConversionError, match="in-place changes of its arguments"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), AddInplace()))


def test_unfaithful_trace_is_caught_by_the_check_against_the_original():
    class TypeCheck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            y = self.relu(x)
            if isinstance(y, Tensor):  # False for an fx proxy: the traced graph drops this line
                y = y * 2
            return self.relu(y - 1)

    with pytest.raises(ConversionError, match="does not reproduce its output"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), TypeCheck()))


class OptionalShortcut(nn.Module):
    """Reuses its ReLU and branches on an optional argument, as timm's DLA blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor, shortcut: Tensor | None = None) -> Tensor:
        if shortcut is None:
            shortcut = x
        return self.relu(self.relu(self.conv(x)) + shortcut)


def test_arguments_that_are_always_none_are_fixed():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), OptionalShortcut()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    convert(net)
    assert isinstance(net[1].relu_1, DyReLUB)
    torch.testing.assert_close(net(x), expected)
    assert "shortcut = None" in net[1].forward.code  # the signature is kept
    with pytest.raises(AssertionError, match="shortcut"):
        net[1](torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))


def test_arguments_that_are_sometimes_none_raise():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = OptionalShortcut()

        def forward(self, x: Tensor) -> Tensor:
            return self.block(self.block(x), x)

    with pytest.raises(ConversionError, match="shortcut=None and with shortcut given"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 3), Twice()))


# -- real networks ----------------------------------------------------------------------------------------------


def torchvision_model(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: getattr(pytest.importorskip("torchvision").models, name)(num_classes=10, **kwargs)


def timm_model(name: str) -> Callable[[], nn.Module]:
    return lambda: pytest.importorskip("timm").create_model(name, pretrained=False, num_classes=10)


MODELS = {
    "tv_resnet18": (torchvision_model("resnet18"), {}),
    "tv_resnet50": (torchvision_model("resnet50"), {}),
    "tv_mobilenet_v2": (torchvision_model("mobilenet_v2"), {"targets": ("relu6",)}),
    "tv_mobilenet_v3_small": (torchvision_model("mobilenet_v3_small"), {}),
    "tv_densenet121": (torchvision_model("densenet121"), {}),
    "timm_resnet18": (timm_model("resnet18"), {}),
    "timm_mobilenetv3_large_100": (timm_model("mobilenetv3_large_100"), {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_networks(name):
    factory, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(2, 3, 64, 64)
    reference = relu6_as_relu(model) if "relu6" in kwargs.get("targets", ()) else model
    with torch.no_grad():
        expected = reference(x)
    before = count_activations(model, x)
    assert before.feature_maps > 0
    cls = type(model)

    convert(model, **kwargs)

    # Every call site on a feature map is converted; squeeze-excitation gates keep theirs (convert_se=False).
    after = count_activations(model, x)
    assert after.feature_maps == 0
    assert after.pooled == before.pooled
    assert len(dyrelus(model)) == before.feature_maps
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)

    # The model is still what its library made.
    assert type(model) is cls
    if name.startswith("tv_resnet"):
        assert isinstance(model, pytest.importorskip("torchvision").models.ResNet) and isinstance(model.fc, nn.Linear)
    if name.startswith("timm"):
        assert model.forward_features(x).dim() == 4
        assert model.pretrained_cfg["architecture"] in name

    # Converting again changes nothing.
    keys = list(model.state_dict())
    convert(model, **kwargs)
    assert list(model.state_dict()) == keys

    # A training step changes the DY-ReLU parameters.
    model.train()
    acts = list(dyrelus(model).values())
    initial = [act.fc2_bias.detach().clone() for act in acts]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), torch.tensor([1, 2]))
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(b, act.fc2_bias) for b, act in zip(initial, acts, strict=True)]
    # timm's ResNet zero-initialises the last BatchNorm of each block, so the first DY-ReLU of a block gets no
    # gradient in the first step.
    expected = len(acts) // 2 + 1 if name == "timm_resnet18" else len(acts)
    assert sum(changed) >= expected, f"{changed.count(False)} of {len(acts)} DY-ReLUs did not change"

    # The state_dict round trip: a freshly converted model loads the trained one.
    fresh = convert(factory(), **kwargs)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_torch_compile_runs_rewritten_forwards():
    torch.manual_seed(0)
    net = convert(small_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), net(x))
