"""The training configuration: one flat dataclass of primitives, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dyrelu.recipe import SCRATCH_TRAIN_OPTIONS, read_before_recipe, scratch_act_kwargs

__all__ = ["MODEL_FIELDS", "TrainConfig", "check_fields"]

#: Fields that define the network; a checkpoint rebuilds the model from them alone.
MODEL_FIELDS = ("model", "act", "act_kwargs", "act_context", "num_classes", "in_chans", "small_input")

_OPTIMIZERS = ("sgd", "adamw")
_AMP = ("none", "bf16", "fp16")
_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adamw": 0.05}


def check_fields(cls: type, values: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``values`` that are not fields of the dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}, expected some of {sorted(known)}")


@dataclass
class TrainConfig:
    """Everything that determines a training run (together with the code and the machine).

    ``None`` fields are resolved when training starts: ``num_classes``, ``in_chans`` and the image
    size from the data, ``small_input`` as "images of at most 64 pixels", ``lr``/``weight_decay``
    per optimizer (SGD: 0.1 / 5e-4, AdamW: 1e-3 / 0.05), ``channels_last`` for convolutional nets.

    Args:
        model: a name of :func:`dyrelu.models.list_models`.
        act: a name of :func:`dyrelu.list_acts`, or ``None`` for the architecture's own activations.
        act_kwargs: passed to every activation (for example ``{"k": 3}``). For a DY-ReLU, the recipe's module
            options (:data:`dyrelu.recipe.SCRATCH_DYRELU_KWARGS`, ``zero_init_last=False``) are added unless
            given: the config records them. For DY-ReLU-C it also records ``spatial_norm``
            (:data:`dyrelu.recipe.DYRELU_C_KWARGS`, the module's default ``True``) unless given; a dyrelu 0.1 config
            reads as ``spatial_norm=False``, what it ran with.
        act_context: where DY-ReLU hyper functions read their context: ``"input"`` (the paper) or
            ``"block"`` (MobileNetV2's block input); see :func:`dyrelu.models.create_model`.
        num_classes, in_chans, small_input: passed to :func:`dyrelu.models.create_model`.
        data: a name of :func:`dyrelu.data.list_datasets`.
        data_dir: the data folder (``None``: the dataset's default).
        data_kwargs: options of the data source (synthetic: ``num_samples``, ``image_size``, ...).
        data_fraction: train on a deterministic, class-stratified fraction of the training set (after
            the validation images are held out).
        val_size: hold out this many training images as a validation set (class-stratified, fixed:
            the same images for every seed and model), evaluated each epoch (``val_acc``); 0: none.
        eval_fraction: evaluate on such a fraction of the test set.
        augment: the dataset's augmentation (random crop with padding, flip) in training.
        epochs: the number of epochs.
        batch_size: images per step and process (the global batch is ``batch_size * world_size``).
        eval_batch_size: images per evaluation step (``None``: twice ``batch_size``).
        opt: ``"sgd"`` (Nesterov momentum) or ``"adamw"``.
        lr: the peak learning rate, reached after the warm-up, then cosine-annealed per step to ``min_lr``.
        momentum: SGD's momentum.
        weight_decay: applied to weights only (not to norms, biases or activation coefficients).
        hyper_lr_scale: learning-rate multiplier for the DY-ReLU modules' parameters (their hyper functions).
        hyper_weight_decay: whether the hyper functions' weights get ``weight_decay`` (see
            :func:`dyrelu.train.param_groups`); the recipe's default is ``False``. A config saved by dyrelu 0.1
            (without these fields) reads as what it ran with: decay on, ``zero_init_last=True``.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        min_lr: the learning rate at the end of the cosine.
        label_smoothing: of the training loss.
        clip_grad: clip the gradients' global norm to this value (``None``: no clipping).
        amp: ``"none"``, ``"bf16"`` (autocast; CPU and GPU) or ``"fp16"`` (GPU, with a gradient scaler).
        tau_start: DY-ReLU-C's softmax temperature at the start, annealed linearly to ``tau_end`` over
            ``tau_epochs`` (``None``: the modules keep their own τ).
        tau_epochs, tau_end: see ``tau_start``.
        dynamics_images: for networks with DY-ReLU layers, measure their dynamics each epoch on this many
            test images (the first ones; :func:`dyrelu.analysis.dynamics_numbers`, ``dyn_*`` metrics); 0: never.
        precise_bn: before each evaluation, recompute the BatchNorm layers' running statistics over this many
            training images (spread evenly over the training set, not augmented) with the epoch's final weights
            (:func:`dyrelu.train.recompute_batchnorm`); 0: evaluate with the running averages of training. Short
            runs at a high learning rate need it: their running averages lag the weights, and an early epoch can
            evaluate near chance with a test loss in the hundreds while its weights are fine.
        seed: seeds the initialisation, the data order, the augmentation and dropout.
        workers: DataLoader processes building batches (results do not depend on it).
        threads: intra-op CPU threads per process (``None``: the available cores / local processes).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        channels_last: NHWC memory format (``None``: for networks with 2-D convolutions).
        tensorboard: also log to TensorBoard in ``out_dir/tb`` when it is installed.
        init_from: start from the weights of this checkpoint (a ``dyrelu train`` run folder or checkpoint
            file) instead of a fresh initialisation: the upgrade of a trained network. Its network must be
            ``model`` with ``act``, or with ReLU when ``act`` is a DY-ReLU: then :func:`dyrelu.convert` puts a
            fresh DY-ReLU at every ReLU (A and B: exact, the network computes what it computed), with
            ``zero_init_last=True`` recorded in ``act_kwargs`` instead of the from-scratch recipe. The epochs,
            the optimizer and the schedule start fresh.
    """

    model: str = "mobilenetv2_050"
    act: str | None = "relu"
    act_kwargs: dict[str, Any] = field(default_factory=dict)
    act_context: str = "input"
    num_classes: int | None = None
    in_chans: int | None = None
    small_input: bool | None = None
    data: str = "synthetic"
    data_dir: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    data_fraction: float = 1.0
    val_size: int = 0
    eval_fraction: float = 1.0
    augment: bool = True
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int | None = None
    opt: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    hyper_lr_scale: float = SCRATCH_TRAIN_OPTIONS["hyper_lr_scale"]
    hyper_weight_decay: bool = SCRATCH_TRAIN_OPTIONS["hyper_weight_decay"]
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    clip_grad: float | None = None
    amp: str = "none"
    tau_start: float | None = None
    tau_epochs: float = 0.0
    tau_end: float = 1.0
    dynamics_images: int = 256
    precise_bn: int = 0
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    device: str | None = None
    channels_last: bool | None = None
    tensorboard: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.opt = str(self.opt).lower()
        self.amp = str(self.amp).lower()
        if self.opt not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.opt!r}, expected one of {', '.join(_OPTIMIZERS)}")
        if self.amp not in _AMP:
            raise ValueError(f"unknown mixed precision mode {self.amp!r}, expected one of {', '.join(_AMP)}")
        checks = (
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("data_fraction", 0.0 < self.data_fraction <= 1.0, "in (0, 1]"),
            ("val_size", self.val_size >= 0, "an integer >= 0"),
            ("hyper_lr_scale", self.hyper_lr_scale > 0, "> 0"),
            ("dynamics_images", self.dynamics_images >= 0, "an integer >= 0"),
            ("precise_bn", self.precise_bn >= 0, "an integer >= 0"),
            ("eval_fraction", 0.0 < self.eval_fraction <= 1.0, "in (0, 1]"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "in [0, 1)"),
            ("workers", self.workers >= 0, ">= 0"),
            ("tau_epochs", self.tau_epochs >= 0, ">= 0"),
            ("tau_end", self.tau_end > 0, "> 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"expected {name} {expected}, got {getattr(self, name)!r}")
        if self.init_from is not None and str(self.act).lower().startswith("dyrelu"):
            # An upgrade starts where the trained network is: a fresh DY-ReLU computes its ReLU exactly.
            self.act_kwargs = {"zero_init_last": True, **self.act_kwargs}
        # DY-ReLU trained from scratch gets the recipe's module options (an upgrade keeps its zero_init_last=True),
        # recorded in the config; DY-ReLU-C records which attention the run computed, too.
        self.act_kwargs = scratch_act_kwargs(self.act, self.act_kwargs)
        if self.act_context not in ("input", "block"):
            raise ValueError(f"unknown act_context {self.act_context!r}, expected 'input' or 'block'")
        if self.tau_start is not None and self.tau_start <= 0:
            raise ValueError(f"expected a positive tau_start, got {self.tau_start}")
        if self.lr is None:
            self.lr = _DEFAULT_LR[self.opt]
        if self.weight_decay is None:
            self.weight_decay = _DEFAULT_WD[self.opt]
        if self.lr <= 0:
            raise ValueError(f"expected a positive learning rate, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what checkpoints and ``config.json`` store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        Example:
            >>> TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()).epochs
            3
        """
        check_fields(cls, values, "training options")
        return cls(**read_before_recipe(values, [("act", "act_kwargs")]))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; the per-optimizer defaults follow a changed ``opt``."""
        values = self.to_dict()
        if "opt" in changes and changes["opt"] != self.opt:
            values["lr"] = None if "lr" not in changes else values["lr"]
            values["weight_decay"] = None if "weight_decay" not in changes else values["weight_decay"]
        values.update(changes)
        return TrainConfig(**values)
