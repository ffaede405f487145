"""The paper's second task at small scale: keypoint heatmaps on a synthetic, context-dependent task.

The paper (Chen et al., "Dynamic ReLU", ECCV 2020, https://arxiv.org/abs/2003.10027, section 5.2) puts
DY-ReLU into a SimpleBaseline-style keypoint network on COCO: the channel-wise variants (B, C) help in
the backbone, and the spatial variant C wins in the head, where A or B can fall below ReLU. This
package tests that claim on a task a CPU can run: items (Fashion-MNIST or drawn shapes) pasted, scaled
and rotated on a noisy canvas with distractors, and five keypoints per target item that need context
to place (:mod:`~dyrelu.keypoints.synthetic`); a registry backbone with a deconvolution head whose
activations are chosen separately (:mod:`~dyrelu.keypoints.model`); heatmap MSE training with
:mod:`dyrelu.train`'s checkpoints and metrics (:mod:`~dyrelu.keypoints.engine`); evaluation and
rebuilding from a checkpoint (:mod:`~dyrelu.keypoints.evaluation`) with PCK and COCO's OKS AP
(:mod:`~dyrelu.keypoints.metrics`).

Example:
    >>> from dyrelu.keypoints import KeypointNet, make_keypoint_dataset
    >>> ds = make_keypoint_dataset(2, image_size=32, items="shapes")
    >>> net = KeypointNet(ds.num_keypoints, backbone_act="relu", head_act="dyrelu_c")
    >>> net((ds.images.float() / 255)).shape
    torch.Size([2, 5, 8, 8])
"""

from __future__ import annotations

from dyrelu.keypoints.config import KEYPOINT_MODEL_FIELDS, KeypointConfig
from dyrelu.keypoints.engine import KeypointFitResult, fit_keypoints
from dyrelu.keypoints.evaluation import (
    build_keypoint_model,
    evaluate_keypoint_checkpoint,
    evaluate_keypoints,
    keypoint_datasets,
    keypoint_model_from_checkpoint,
)
from dyrelu.keypoints.heatmaps import decode_heatmaps, gaussian_heatmaps
from dyrelu.keypoints.metrics import average_precision, oks, oks_ap, pck
from dyrelu.keypoints.model import KeypointNet, backbone_strides
from dyrelu.keypoints.synthetic import ITEM_SOURCES, KEYPOINT_NAMES, KeypointDataset, make_keypoint_dataset

__all__ = [
    "ITEM_SOURCES",
    "KEYPOINT_MODEL_FIELDS",
    "KEYPOINT_NAMES",
    "KeypointConfig",
    "KeypointDataset",
    "KeypointFitResult",
    "KeypointNet",
    "average_precision",
    "backbone_strides",
    "build_keypoint_model",
    "decode_heatmaps",
    "evaluate_keypoint_checkpoint",
    "evaluate_keypoints",
    "fit_keypoints",
    "gaussian_heatmaps",
    "keypoint_datasets",
    "keypoint_model_from_checkpoint",
    "make_keypoint_dataset",
    "oks",
    "oks_ap",
    "pck",
]
