"""dyrelu: Dynamic ReLU (DY-ReLU, Chen et al., ECCV 2020, https://arxiv.org/abs/2003.10027) for PyTorch.

The core depends on torch alone; ``dyrelu.models`` needs torchvision (the ``vision`` extra).
"""

from __future__ import annotations

from dyrelu import functional
from dyrelu.activations import Maxout, SEReLU, StaticPWL
from dyrelu.aprelu import APReLU
from dyrelu.convert import ConversionError, convert
from dyrelu.modules import DyReLU, DyReLUA, DyReLUB, DyReLUC
from dyrelu.registry import create_act, get_act_layer, list_acts, register_act

__version__ = "0.1.0"

__all__ = [
    "APReLU",
    "ConversionError",
    "DyReLU",
    "DyReLUA",
    "DyReLUB",
    "DyReLUC",
    "Maxout",
    "SEReLU",
    "StaticPWL",
    "__version__",
    "convert",
    "create_act",
    "functional",
    "get_act_layer",
    "list_acts",
    "register_act",
]
