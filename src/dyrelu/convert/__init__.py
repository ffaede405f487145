"""Replace the ReLU call sites of a network by DY-ReLU: :func:`convert`.

Paper: Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027. The paper replaces the
activations inside the network's blocks, and a fresh DY-ReLU-A/B computes exactly ReLU, so a converted
network starts out computing what the original computed.

Swapping ``nn.ReLU`` modules one for one is not enough: torchvision's ``Bottleneck`` calls one ``self.relu``
at three sites with different channel counts, and DenseNet calls ``F.relu`` in ``forward``. The converter
therefore finds the *call sites* by running the model once, swaps modules where that is exact and rewrites,
with :mod:`torch.fx`, only the ``forward`` of the few modules that need it, after checking that the rewritten
forward reproduces the original on the example input. See :func:`convert`.
"""

from dyrelu.convert._convert import ConversionError, convert

__all__ = ["ConversionError", "convert"]
