"""Lazy channel inference shared by the activations: parameters shaped by C, known now or on first use."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter


class LazyChannels(LazyModuleMixin, nn.Module):
    """Parameters whose shapes depend on the channel count C, known now or on the first forward pass."""

    def __init__(self, channels: int | None, device=None, dtype=None) -> None:
        super().__init__()
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"expected channels to be a positive integer or None, got {channels!r}")
        self.channels = channels
        factory = {"device": device, "dtype": dtype}
        for name, shape in self._shapes(channels or 1).items():
            if channels is None:
                setattr(self, name, UninitializedParameter(**factory))
            else:
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
        if channels is not None:
            self._initialize_hook.remove()
            self._load_hook.remove()
            del self._initialize_hook, self._load_hook
            self.reset_parameters()

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def initialize_parameters(self, x: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        self.channels = self._channel_count(x)
        with torch.no_grad():
            for name, shape in self._shapes(self.channels).items():
                getattr(self, name).materialize(shape)
            self.reset_parameters()

    def _lazy_load_hook(self, state_dict, prefix, *args) -> None:
        super()._lazy_load_hook(state_dict, prefix, *args)
        first = next(iter(self._shapes(1)))
        value = state_dict.get(prefix + first)
        if self.channels is None and value is not None and not isinstance(value, UninitializedParameter):
            self.channels = self._channels_from(first, value)

    def _channels_from(self, name: str, value: Tensor) -> int:
        return value.shape[0]

    def _channel_count(self, x: Tensor) -> int:
        if x.dim() < 2:
            raise ValueError(f"expected input with a batch and a channel dim (N, C, *), got shape {tuple(x.shape)}")
        return x.shape[1]

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.channels:
            got = x.shape[1] if x.dim() >= 2 else None
            raise ValueError(f"expected {self.channels} channels at dim 1, got {got} (input shape {tuple(x.shape)})")

    def extra_repr(self) -> str:
        return f"{self.channels}"
