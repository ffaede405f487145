"""Recording DY-ReLU layers while a network runs: (x, y) samples, coefficients, attention, dynamic range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dyrelu.modules import DyReLUA, DyReLUB, DyReLUC

__all__ = ["LayerDynamics", "collect_dynamics", "dynamic_range", "dyrelu_layers", "summarize"]

_VARIANTS: tuple[tuple[type[nn.Module], str], ...] = ((DyReLUA, "A"), (DyReLUB, "B"), (DyReLUC, "C"))


def dyrelu_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The DY-ReLU modules of ``model`` (instances of DyReLUA, DyReLUB or DyReLUC) with their names.

    Args:
        model: any network.

    Returns:
        ``(name, module)`` pairs in ``named_modules`` order (the order of definition, usually depth);
        ``model`` itself is included (name ``""``) when it is a DY-ReLU.

    Example:
        >>> from torch import nn
        >>> from dyrelu import DyReLUB, DyReLUC
        >>> [name for name, _ in dyrelu_layers(nn.Sequential(DyReLUB(4), nn.ReLU(), DyReLUC(4)))]
        ['0', '2']
    """
    return [(name, m) for name, m in model.named_modules() if _variant(m) is not None]


def _variant(module: nn.Module) -> str | None:
    for cls, label in _VARIANTS:
        if isinstance(module, cls):
            return label
    return None


def dynamic_range(coefficients: Tensor) -> float:
    r"""How much DY-ReLU coefficients change with the input: the mean over slots of their spread over inputs.

    For coefficients ``c`` of shape ``(N, C', K)`` (``N`` inputs, ``C'`` channels, ``K`` pieces; ``C' = 1``
    for DY-ReLU-A), the dynamic range is

    .. math::
        D(c) = \frac{1}{C' K} \sum_{j=1}^{C'} \sum_{k=1}^{K}
               \sqrt{\frac{1}{N} \sum_{n=1}^{N} \left(c_{n,j,k} - \bar c_{j,k}\right)^2},
        \qquad \bar c_{j,k} = \frac{1}{N} \sum_{n=1}^{N} c_{n,j,k},

    the population standard deviation across inputs (not the sample one, so that ``N = 1`` gives 0
    rather than NaN), averaged over channels and pieces, computed in float64. It is in the coefficients'
    units (slopes for ``a``, intercepts for ``b``): with the paper's ``λ_a = 1``, ``λ_b = 0.5`` the slopes
    can move by less than 1 and the intercepts by less than 0.5 from their initial values. ``D = 0``
    exactly when every coefficient is the same for all inputs, i.e. the layer acts as a static
    piecewise-linear function (a fresh DY-ReLU, whose last FC is zero, is a static ReLU). A single input
    (``N = 1``) always gives 0: use many images.

    Args:
        coefficients: ``a`` or ``b`` as returned by the modules' ``hyper``, one row per input.

    Returns:
        ``D`` as a Python float, ``>= 0``.

    Shape:
        - coefficients: :math:`(N, C', K)`

    Example:
        >>> dynamic_range(torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]]))  # slopes 1 and 3: std 1; piece 2: 0
        0.5
    """
    if not isinstance(coefficients, Tensor) or coefficients.dim() != 3:
        shape = tuple(coefficients.shape) if isinstance(coefficients, Tensor) else type(coefficients).__name__
        raise ValueError(f"expected coefficients of shape (N, C', K), got {shape}")
    if coefficients.shape[0] == 0:
        raise ValueError(f"expected coefficients of at least one input, got shape {tuple(coefficients.shape)}")
    c = coefficients.detach().to(torch.float64)
    return float(c.std(dim=0, correction=0).mean())


@dataclass
class LayerDynamics:
    """What :func:`collect_dynamics` records for one DY-ReLU layer.

    Args:
        name: the module's name in the network (``named_modules``).
        variant: ``"A"``, ``"B"`` or ``"C"``.
        channels: C, the module's channel count.
        k: K, the number of pieces.
        a: the slopes of every input (for DY-ReLU-C, before the spatial attention scales them).
        b: the intercepts of every input.
        x: the sampled inputs of the activation.
        y: the outputs at the same positions (for DY-ReLU-C, including the attention).
        image: the index of the image (in the images given to :func:`collect_dynamics`) of each sample.
        num_images: N, the number of inputs the layer saw (images times calls per forward pass).
        attention: DY-ReLU-C only: π of the first images.
        attention_stats: DY-ReLU-C only: ``mean``, ``min``, ``max`` of π over all images and positions,
            and ``dynamic_range``: the mean over positions of π's population standard deviation across
            images (``None`` if the layer saw inputs of several spatial sizes).
        tau: DY-ReLU-C only: τ. gamma: DY-ReLU-C only: γ (``None``: HW/3).

    Shape:
        - a, b: :math:`(N, C', K)`, float32, ``C'`` is 1 for DY-ReLU-A and C otherwise
        - x, y, image: :math:`(P,)`
        - attention: :math:`(M, *S)`
    """

    name: str
    variant: str
    channels: int
    k: int
    a: Tensor
    b: Tensor
    x: Tensor
    y: Tensor
    image: Tensor
    num_images: int
    attention: Tensor | None = None
    attention_stats: dict[str, float | None] | None = None
    tau: float | None = None
    gamma: float | None = None

    @property
    def dynamic_range_a(self) -> float:
        """:func:`dynamic_range` of the slopes."""
        return dynamic_range(self.a)

    @property
    def dynamic_range_b(self) -> float:
        """:func:`dynamic_range` of the intercepts."""
        return dynamic_range(self.b)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: name, variant, channels, k, inputs, dynamic ranges and per-piece means/stds.

        ``mean_a[k]`` and ``std_a[k]`` are the mean and population standard deviation of piece ``k``'s
        slope over all inputs and channels (same for ``b``); floats are rounded to 6 significant digits.
        """
        a, b = self.a.to(torch.float64), self.b.to(torch.float64)
        out: dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "channels": self.channels,
            "k": self.k,
            "num_inputs": self.num_images,
            "dynamic_range_a": _round(self.dynamic_range_a),
            "dynamic_range_b": _round(self.dynamic_range_b),
            "mean_a": [_round(v) for v in a.mean(dim=(0, 1)).tolist()],
            "mean_b": [_round(v) for v in b.mean(dim=(0, 1)).tolist()],
            "std_a": [_round(v) for v in a.flatten(0, 1).std(dim=0, correction=0).tolist()],
            "std_b": [_round(v) for v in b.flatten(0, 1).std(dim=0, correction=0).tolist()],
        }
        if self.variant == "C":
            out["tau"] = self.tau
            out["gamma"] = self.gamma
            stats = self.attention_stats or {}
            out["attention"] = {key: None if v is None else _round(v) for key, v in stats.items()}
        return out


def _round(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


class _Recorder:
    """The forward hook of one DY-ReLU module: samples (x, y) pairs and records a, b (and π for C)."""

    def __init__(self, index: int, name: str, module: nn.Module, per_image: int, attention_images: int, seed: int):
        self.index = index
        self.name = name
        self.module = module
        self.variant = _variant(module)
        self.per_image = per_image
        self.attention_images = attention_images
        self.seed = seed
        self.offset = 0  # index of the current batch's first image, set by collect_dynamics
        self.a: list[Tensor] = []
        self.b: list[Tensor] = []
        self.x: list[Tensor] = []
        self.y: list[Tensor] = []
        self.image: list[Tensor] = []
        self.maps: list[Tensor] = []
        self.pi_shape: tuple[int, ...] | None = None
        self.pi_sum: Tensor | None = None
        self.pi_sumsq: Tensor | None = None
        self.pi_count = 0
        self.pi_min = math.inf
        self.pi_max = -math.inf
        self.pi_mixed_sizes = False

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(output, Tensor):
            return
        x = module._to_channels_first(inputs[0])  # (N, C, *S), as the module's forward sees it
        y = module._to_channels_first(output)
        context = kwargs.get("context", inputs[1] if len(inputs) > 1 else None)
        a, b = module.hyper(x, module._context_first(context, x))  # (N, C', K)
        self.a.append(a.detach().float().cpu())
        self.b.append(b.detach().float().cpu())
        self._sample(x.detach(), y.detach())
        if self.variant == "C":
            self._attention(module._scale(x).detach().float().squeeze(1).cpu())  # (N, *S)

    def _sample(self, x: Tensor, y: Tensor) -> None:
        n = x.shape[0]
        flat_x, flat_y = x.reshape(n, -1), y.reshape(n, -1)  # (N, C * prod(S))
        numel = flat_x.shape[1]
        if numel == 0:
            return
        # One generator per (seed, layer, image): the sample of an image does not depend on the batching.
        rows = []
        for i in range(n):
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.index, self.offset + i))
            rows.append(torch.randint(numel, (self.per_image,), generator=gen))
        idx = torch.stack(rows).to(x.device)  # (N, per_image)
        self.x.append(flat_x.gather(1, idx).float().flatten().cpu())
        self.y.append(flat_y.gather(1, idx).float().flatten().cpu())
        self.image.append((torch.arange(n) + self.offset).repeat_interleave(self.per_image))

    def _attention(self, pi: Tensor) -> None:
        kept = sum(m.shape[0] for m in self.maps)
        if kept < self.attention_images:
            self.maps.append(pi[: self.attention_images - kept].clone())
        if pi.numel():
            self.pi_min = min(self.pi_min, float(pi.min()))
            self.pi_max = max(self.pi_max, float(pi.max()))
        flat = pi.reshape(pi.shape[0], -1).to(torch.float64)  # (N, P)
        if self.pi_shape is None:
            self.pi_shape = tuple(pi.shape[1:])
            self.pi_sum = torch.zeros(flat.shape[1], dtype=torch.float64)
            self.pi_sumsq = torch.zeros(flat.shape[1], dtype=torch.float64)
        if tuple(pi.shape[1:]) != self.pi_shape:
            self.pi_mixed_sizes = True
            return
        self.pi_sum += flat.sum(0)
        self.pi_sumsq += flat.square().sum(0)
        self.pi_count += flat.shape[0]

    def result(self) -> LayerDynamics:
        module = self.module
        k = int(module.k)
        a, b = torch.cat(self.a), torch.cat(self.b)
        x = torch.cat(self.x) if self.x else torch.zeros(0)
        y = torch.cat(self.y) if self.y else torch.zeros(0)
        image = torch.cat(self.image) if self.image else torch.zeros(0, dtype=torch.int64)
        # Shuffle the points (seeded) so that no image is always drawn on top of the others.
        order = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(mix_seed(self.seed, self.index, -1)))
        layer = LayerDynamics(
            name=self.name,
            variant=self.variant,
            channels=int(module.channels or 0),
            k=k,
            a=a,
            b=b,
            x=x[order],
            y=y[order],
            image=image[order],
            num_images=a.shape[0],
        )
        if self.variant == "C":
            layer.tau = float(module.tau)
            layer.gamma = None if module.gamma is None else float(module.gamma)
            layer.attention = torch.cat(self.maps) if self.maps else None
            layer.attention_stats = self._attention_stats()
        return layer

    def _attention_stats(self) -> dict[str, float | None]:
        if self.pi_count == 0:
            return {"mean": None, "min": None, "max": None, "dynamic_range": None}
        mean = self.pi_sum / self.pi_count
        var = (self.pi_sumsq / self.pi_count - mean.square()).clamp_min(0.0)
        return {
            "mean": float(mean.mean()),
            "min": self.pi_min,
            "max": self.pi_max,
            "dynamic_range": None if self.pi_mixed_sizes else float(var.sqrt().mean()),
        }


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (a simple polynomial hash; only needs to be deterministic)."""
    h = 1469598103934665603
    for v in values:
        h = (h * 1099511628211 + (v & 0xFFFFFFFFFFFF)) % (2**63 - 1)
    return h


def collect_dynamics(
    model: nn.Module,
    images: Tensor,
    *,
    points_per_layer: int = 4096,
    attention_images: int = 4,
    batch_size: int = 64,
    seed: int = 0,
) -> list[LayerDynamics]:
    """Run ``model`` over ``images`` and record what each of its DY-ReLU layers does.

    A forward hook on every DY-ReLU module (see :func:`dyrelu_layers`) receives its input and output; channels-last
    modules' tensors are moved to channels-first as the module itself does. The hook calls the module's ``hyper`` on
    the input (or on the ``context`` the module was given) to get the coefficients ``a``, ``b`` of every image, and
    for DY-ReLU-C its ``_scale`` to get the spatial attention π. Of the input and output values, it keeps
    ``ceil(points_per_layer / N)`` positions (channel and location) per image, drawn uniformly with replacement by a
    generator seeded from ``(seed, layer, image index)``: the result depends only on the arguments, not on
    ``batch_size``.

    The model runs in eval mode under ``torch.no_grad`` and gets its previous mode back. A module
    called several times per forward pass contributes one set of coefficients per call; a module the
    forward pass never calls is left out of the result.

    Args:
        model: a network with at least one DY-ReLU module.
        images: the network's input, already normalised; moved to the device of the model's parameters.
        points_per_layer: about how many (x, y) pairs to keep per layer (at least one per image).
        attention_images: how many π maps to keep per DY-ReLU-C layer (the first images).
        batch_size: images per forward pass.
        seed: seeds the subsampling.

    Returns:
        One :class:`LayerDynamics` per DY-ReLU layer that ran, in :func:`dyrelu_layers` order.

    Raises:
        ValueError: ``model`` has no DY-ReLU layer (or none ran), ``images`` is empty, or an argument is
            out of range.

    Shape:
        - images: :math:`(N, *)`, what ``model`` takes, for example :math:`(N, C, H, W)`.
    """
    layers = dyrelu_layers(model)
    if not layers:
        raise ValueError(
            f"expected a network with at least one DY-ReLU layer (DyReLUA, DyReLUB or DyReLUC), found none in "
            f"{type(model).__name__}"
        )
    if not isinstance(images, Tensor) or images.dim() < 2 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected a non-empty batch of images (N, *), got {shape}")
    for arg, value, low in (
        ("points_per_layer", points_per_layer, 1),
        ("attention_images", attention_images, 0),
        ("batch_size", batch_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"expected {arg} to be an integer >= {low}, got {value!r}")
    n = images.shape[0]
    per_image = max(1, math.ceil(points_per_layer / n))
    recorders = [
        _Recorder(i, name, module, per_image, attention_images, seed) for i, (name, module) in enumerate(layers)
    ]
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    handles = [
        module.register_forward_hook(rec, with_kwargs=True) for (_, module), rec in zip(layers, recorders, strict=True)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                for rec in recorders:
                    rec.offset = start
                model(images[start : start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    ran = [rec for rec in recorders if rec.a]
    if not ran:
        raise ValueError(
            f"none of the {len(recorders)} DY-ReLU layers of {type(model).__name__} ran on the images: expected "
            "modules that the forward pass calls"
        )
    return [rec.result() for rec in ran]


def summarize(layers: Sequence[LayerDynamics]) -> list[dict[str, Any]]:
    """:meth:`LayerDynamics.summary` of each layer, JSON-ready."""
    return [layer.summary() for layer in layers]
