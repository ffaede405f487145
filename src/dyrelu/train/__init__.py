"""Training and evaluation: one process or ``torchrun`` DDP, exact resume, metrics and checkpoints.

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> from dyrelu.train import TrainConfig, fit
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    >>> config = TrainConfig(model="tiny", epochs=1, batch_size=32, data_kwargs={"num_samples": 64}, tensorboard=False)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = fit(config, out, model=net)
    >>> [row["epoch"] for row in result.metrics]
    [1]
"""

from __future__ import annotations

from dyrelu.train.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from dyrelu.train.comparison import compare_checkpoints, correct_on_test_set
from dyrelu.train.config import MODEL_FIELDS, TrainConfig
from dyrelu.train.distributed import DistContext
from dyrelu.train.engine import FitResult, fit
from dyrelu.train.evaluation import (
    build_model,
    evaluate,
    evaluate_checkpoint,
    model_from_checkpoint,
    recompute_batchnorm,
    upgrade_model,
)
from dyrelu.train.metrics import METRICS_NAME, MetricsWriter, read_metrics
from dyrelu.train.optim import create_optimizer, param_groups
from dyrelu.train.schedule import WarmupCosine, set_tau, tau_at

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "MODEL_FIELDS",
    "CheckpointError",
    "DistContext",
    "FitResult",
    "MetricsWriter",
    "TrainConfig",
    "WarmupCosine",
    "build_model",
    "capture_rng",
    "compare_checkpoints",
    "correct_on_test_set",
    "create_optimizer",
    "evaluate",
    "evaluate_checkpoint",
    "find_checkpoint",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "param_groups",
    "read_metrics",
    "recompute_batchnorm",
    "restore_rng",
    "save_checkpoint",
    "set_tau",
    "tau_at",
    "upgrade_model",
]
