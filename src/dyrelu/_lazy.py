"""Lazy channel inference shared by the activations: parameters shaped by C, known now or on first use."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter


class LazyChannels(LazyModuleMixin, nn.Module):
    """Parameters whose shapes depend on the channel count C, known now or on the first forward pass.

    Subclasses define ``_shapes(channels)`` and ``reset_parameters()``; ``channels_last`` (set before
    calling this initialiser) selects ``(N, *, C)`` input instead of ``(N, C, *)``.
    """

    channels_last: bool = False
    _needs_spatial: bool = False

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
        for name, shape in self._buffer_shapes(channels or 1).items():
            if channels is None:
                self.register_buffer(name, UninitializedBuffer(**factory))
            else:
                self.register_buffer(name, torch.empty(shape, **factory))
        if channels is not None:
            self._initialize_hook.remove()
            self._load_hook.remove()
            del self._initialize_hook, self._load_hook
            self.reset_parameters()

    def _shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _buffer_shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        return {}

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def initialize_parameters(self, x: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        self.channels = self._channel_count(x)
        with torch.no_grad():
            for name, shape in {**self._shapes(self.channels), **self._buffer_shapes(self.channels)}.items():
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

    # -- layouts: (N, C, *) by default, (N, *, C) with channels_last ------------------------------------
    def _channel_count(self, x: Tensor) -> int:
        if x.dim() < 2:
            raise ValueError(f"expected input with a batch and a channel dim, got shape {tuple(x.shape)}")
        return x.shape[-1] if self.channels_last else x.shape[1]

    def _to_channels_first(self, x: Tensor) -> Tensor:
        """Check ``x`` and return it with channels at dim 1 (a view: no copy for channels-last input)."""
        got = self._channel_count(x)
        if got != self.channels:
            where = "the last dim" if self.channels_last else "dim 1"
            raise ValueError(f"expected {self.channels} channels at {where}, got {got} (input shape {tuple(x.shape)})")
        if x.dim() > 5:
            raise ValueError(f"expected at most 3 spatial dims, got input of shape {tuple(x.shape)}")
        if self._needs_spatial and x.dim() < 3:
            raise ValueError(
                f"{type(self).__name__} needs spatial positions: expected input (N, C, *spatial) with at least one "
                f"spatial dim, got shape {tuple(x.shape)}"
            )
        return x.movedim(-1, 1) if self.channels_last else x

    def _from_channels_first(self, y: Tensor) -> Tensor:
        return y.movedim(1, -1) if self.channels_last else y

    def extra_repr(self) -> str:
        return f"{self.channels}"
