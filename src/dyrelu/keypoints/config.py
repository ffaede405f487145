"""The keypoint training configuration: one flat dataclass of primitives, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dyrelu.keypoints.synthetic import ITEM_SOURCES
from dyrelu.recipe import SCRATCH_TRAIN_OPTIONS, read_before_recipe, scratch_act_kwargs
from dyrelu.train.config import check_fields

__all__ = ["KEYPOINT_MODEL_FIELDS", "KeypointConfig"]

#: Fields that define the network; a checkpoint rebuilds the model from them alone.
KEYPOINT_MODEL_FIELDS = (
    "backbone",
    "backbone_act",
    "head_act",
    "backbone_act_kwargs",
    "head_act_kwargs",
    "output_stride",
    "head_layers",
    "head_channels",
    "small_input",
)
#: Fields that define the task (the data and the targets); they may not change on resume either.
TASK_FIELDS = ("items", "image_size", "num_train", "data_seed", "max_distractors", "max_rotation", "sigma")

_OPTIMIZERS = ("sgd", "adamw")


@dataclass
class KeypointConfig:
    """Everything that determines a keypoint training run (with the code and the machine).

    The defaults are the grid's setting (see :mod:`dyrelu.experiments.keypoints`): MobileNetV2 ×0.35 cut
    at stride 16, two 64-channel deconvolution layers, 16×16 heatmaps for 64×64 images of Fashion-MNIST
    items, AdamW with a cosine schedule.

    Args:
        backbone: a name of :func:`dyrelu.models.list_models`.
        backbone_act: the backbone's activation (a name of :func:`dyrelu.list_acts`; ``None``: the
            architecture's own).
        head_act: the head's activation.
        backbone_act_kwargs: passed to every backbone activation.
        head_act_kwargs: passed to every head activation.
        output_stride: where the backbone is cut (see :func:`dyrelu.keypoints.backbone_strides`).
        head_layers: deconvolution layers (each doubles the resolution).
        head_channels: channels per head layer.
        small_input: the backbone's stem for small images.
        items: ``"fashion-mnist"`` or ``"shapes"`` (see :func:`dyrelu.keypoints.make_keypoint_dataset`).
        data_dir: the Fashion-MNIST folder (``None``: the system's).
        image_size: the canvas side in pixels (a multiple of ``output_stride``).
        num_train: training images (a fixed set, rendered once).
        num_test: evaluation images (the test split: other samples, unseen items).
        data_seed: the seed of the data (the same for every training seed, like a real dataset).
        max_distractors: distractor items per image, 0 to this many.
        max_rotation: the target's rotation range in degrees, ``[-max_rotation, max_rotation]``.
        sigma: the target Gaussians' standard deviation in heatmap pixels.
        epochs: the number of epochs.
        batch_size: images per training step.
        eval_batch_size: images per evaluation step (``None``: twice ``batch_size``).
        opt: ``"adamw"`` (SimpleBaseline trains with Adam) or ``"sgd"`` (Nesterov momentum).
        lr: the peak learning rate, after a linear warm-up, then cosine-annealed per step to ``min_lr``.
        momentum: SGD's momentum.
        weight_decay: on weights only (not on norms, biases or activation coefficients).
        hyper_lr_scale, hyper_weight_decay: the DY-ReLU hyper functions' optimizer groups, as in
            :class:`dyrelu.train.TrainConfig` (the recipe's defaults; a dyrelu 0.1 config reads as decay on
            and ``zero_init_last=True``). DY-ReLU activations get the recipe's module options unless given, and
            DY-ReLU-C also ``spatial_norm=True`` (:data:`dyrelu.recipe.DYRELU_C_KWARGS`; 0.1 configs: ``False``).
        warmup_epochs: the warm-up length in epochs (fractions allowed).
        min_lr: the learning rate at the end.
        clip_grad: clip the gradients' global norm to this (``None``: no clipping).
        tau_start, tau_epochs, tau_end: DY-ReLU-C's temperature schedule, as in
            :class:`dyrelu.train.TrainConfig` (``None``: the modules keep their τ).
        pck_alpha: PCK's tolerance as a fraction of the item's size.
        oks_kappa: OKS's per-keypoint constant κ.
        seed: seeds the initialisation and the batch order.
        threads: CPU threads (``None``: the available cores).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        channels_last: NHWC memory format (about 1.6× faster for MobileNetV2 on CPU).
        tensorboard: also log to TensorBoard in ``out_dir/tb`` when it is installed.
        dynamics_images: for networks with DY-ReLU layers, measure their dynamics each epoch on this many
            test images (the first ones; :func:`dyrelu.analysis.dynamics_numbers`, ``dyn_*`` metrics); 0: never.
    """

    backbone: str = "mobilenetv2_035"
    backbone_act: str | None = "relu"
    head_act: str = "relu"
    backbone_act_kwargs: dict[str, Any] = field(default_factory=dict)
    head_act_kwargs: dict[str, Any] = field(default_factory=dict)
    output_stride: int = 16
    head_layers: int = 2
    head_channels: int = 64
    small_input: bool = False
    items: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int = 64
    num_train: int = 8192
    num_test: int = 1024
    data_seed: int = 0
    max_distractors: int = 2
    max_rotation: float = 60.0
    sigma: float = 1.5
    epochs: int = 4
    batch_size: int = 32
    eval_batch_size: int | None = None
    opt: str = "adamw"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    hyper_lr_scale: float = SCRATCH_TRAIN_OPTIONS["hyper_lr_scale"]
    hyper_weight_decay: bool = SCRATCH_TRAIN_OPTIONS["hyper_weight_decay"]
    warmup_epochs: float = 0.25
    min_lr: float = 0.0
    clip_grad: float | None = None
    tau_start: float | None = None
    tau_epochs: float = 0.0
    tau_end: float = 1.0
    pck_alpha: float = 0.1
    oks_kappa: float = 0.1
    seed: int = 0
    threads: int | None = None
    device: str | None = None
    channels_last: bool = True
    tensorboard: bool = False
    dynamics_images: int = 256

    def __post_init__(self) -> None:
        self.opt = str(self.opt).lower()
        if self.opt not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.opt!r}, expected one of {', '.join(_OPTIMIZERS)}")
        if self.items not in ITEM_SOURCES:
            raise ValueError(f"unknown item source {self.items!r}, expected one of {', '.join(ITEM_SOURCES)}")
        checks = (
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("num_train", self.num_train >= self.batch_size, f"at least batch_size ({self.batch_size})"),
            ("num_test", self.num_test >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("sigma", self.sigma > 0, "> 0 (heatmap pixels)"),
            ("pck_alpha", self.pck_alpha > 0, "> 0"),
            ("oks_kappa", self.oks_kappa > 0, "> 0"),
            ("tau_epochs", self.tau_epochs >= 0, ">= 0"),
            ("tau_end", self.tau_end > 0, "> 0"),
            ("dynamics_images", self.dynamics_images >= 0, "an integer >= 0"),
            ("image_size", self.image_size % self.output_stride == 0, f"a multiple of {self.output_stride}"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"expected {name} {expected}, got {getattr(self, name)!r}")
        if self.tau_start is not None and self.tau_start <= 0:
            raise ValueError(f"expected a positive tau_start, got {self.tau_start}")
        if not self.hyper_lr_scale > 0:
            raise ValueError(f"expected hyper_lr_scale > 0, got {self.hyper_lr_scale!r}")
        # DY-ReLU trained from scratch gets the recipe's module options, recorded in the config (DY-ReLU-C: which
        # attention the run computed, too).
        self.backbone_act_kwargs = scratch_act_kwargs(self.backbone_act, self.backbone_act_kwargs)
        self.head_act_kwargs = scratch_act_kwargs(self.head_act, self.head_act_kwargs)

    @property
    def heatmap_stride(self) -> int:
        """Image pixels per heatmap pixel."""
        return self.output_stride // 2**self.head_layers

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what checkpoints and ``config.json`` store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> KeypointConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        Example:
            >>> KeypointConfig.from_dict(KeypointConfig(epochs=3).to_dict()).epochs
            3
        """
        check_fields(cls, values, "keypoint training options")
        acts = [("backbone_act", "backbone_act_kwargs"), ("head_act", "head_act_kwargs")]
        return cls(**read_before_recipe(values, acts))

    def replace(self, **changes: Any) -> KeypointConfig:
        """A copy with ``changes``."""
        return KeypointConfig(**{**self.to_dict(), **changes})
