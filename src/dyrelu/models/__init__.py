"""Reference networks of the DY-ReLU paper with a model registry: MobileNetV2, ResNet, MobileNetV3.

Paper: Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027.

``create_model(name, act=...)`` builds a network with the activation ``act`` (any name of
:func:`dyrelu.list_acts`) at the paper's placement, one module per site with its channel count. Needs
torchvision (``pip install 'dyrelu[vision]'``).

Example:
    >>> from dyrelu.models import create_model, list_models
    >>> "mobilenetv2_100" in list_models()
    True
"""

from __future__ import annotations

try:
    import torchvision  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("dyrelu.models needs torchvision: pip install 'dyrelu[vision]'") from err

from dyrelu.models import mobilenetv2, mobilenetv3, resnet
from dyrelu.models._registry import create_model, list_models, register_model
from dyrelu.models.mobilenetv2 import MobileNetV2
from dyrelu.models.mobilenetv3 import MobileNetV3
from dyrelu.models.resnet import ResNet

__all__ = [
    "MobileNetV2",
    "MobileNetV3",
    "ResNet",
    "create_model",
    "list_models",
    "mobilenetv2",
    "mobilenetv3",
    "register_model",
    "resnet",
]
