"""Parameter groups and the learning-rate schedule: what the LightningModule hands the optimizer."""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_scheduler

from emotion_lab.errors import ConfigError


class WarmupSchedule:
    """A per-step schedule from transformers: `linear` and `cosine` warm up linearly over the first
    `warmup_ratio` of the run's optimizer steps, then decay; `constant` keeps the rate fixed (no
    warm-up). Built from config and checked then, applied once the Trainer knows the step count."""

    NAMES = ("linear", "cosine", "constant")

    def __init__(self, name: str = "linear", warmup_ratio: float = 0.06) -> None:
        if name not in self.NAMES:
            raise ConfigError(f"model.scheduler.name={name!r}: allowed values are {self.NAMES}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(f"model.scheduler.warmup_ratio={warmup_ratio}: must be in [0, 1)")
        self.name = name
        self.warmup_ratio = warmup_ratio

    def __call__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return get_scheduler(
            self.name, optimizer, num_warmup_steps=int(self.warmup_ratio * total_steps), num_training_steps=total_steps
        )


def encoder_groups(net: Any, lr: float, layer_decay: float) -> list[dict[str, Any]]:
    """The encoder's parameter groups. With layer-wise decay d < 1 the top layer learns at `lr`, each
    layer below at d times the one above, the embeddings least: the lower layers hold the
    general-purpose features that fine-tuning should disturb least."""
    if layer_decay == 1.0:  # one group: checkpoints written before layer-wise decay existed still resume
        params = net.encoder_parameters()
        return [{"params": params, "lr": lr}] if params else []
    by_depth = net.encoder_parameters_by_depth()
    top = len(by_depth) - 1
    return [
        {"params": params, "lr": lr * layer_decay ** (top - depth)} for depth, params in enumerate(by_depth) if params
    ]
