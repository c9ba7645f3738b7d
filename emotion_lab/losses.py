"""Classification losses selectable from config (`loss=focal`, `loss=ce`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emotion_lab.data.labels import NUM_CLASSES
from emotion_lab.errors import ConfigError

ALPHA_MODES = ("none", "inverse_frequency")


def class_weights(
    alpha: str | Sequence[float] | None, class_counts: Sequence[int] | None, num_classes: int = NUM_CLASSES
) -> torch.Tensor | None:
    """Per-class weights from a mode name or an explicit list.

    `inverse_frequency` gives each class N / (K * count), so the weights average to 1 over the
    training examples and the loss keeps its scale.
    """
    if alpha is None or alpha == "none":
        return None
    if isinstance(alpha, str):
        if alpha != "inverse_frequency":
            raise ConfigError(
                f"loss.alpha={alpha!r}: allowed values are {ALPHA_MODES} or a list of {num_classes} floats"
            )
        if class_counts is None:
            raise ConfigError("loss.alpha=inverse_frequency needs the training split's class counts")
        counts = torch.as_tensor(class_counts, dtype=torch.float).clamp_min(1)
        return counts.sum() / (len(counts) * counts)
    weights = torch.as_tensor(list(alpha), dtype=torch.float)
    if weights.shape != (num_classes,) or (weights < 0).any():
        raise ConfigError(f"loss.alpha={list(alpha)}: need {num_classes} non-negative floats, one per class")
    return weights


class FocalLoss(nn.Module):
    """Multiclass focal loss (Lin et al., 2017): mean over the batch of -alpha_y (1 - p_y)^gamma log p_y.

    gamma=0 without alpha is exactly cross-entropy; larger gamma shifts the gradient from the many
    easy sentences to the hard ones (love and surprise are mostly confused with joy).
    """

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma}: must be >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing={label_smoothing}: must be in [0, 1)")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits.float(), dim=-1)
        # Per-example cross-entropy (with optional smoothing), then the focal factor on the true class.
        ce = F.nll_loss(log_probs, target, reduction="none")
        if self.label_smoothing:
            ce = (1 - self.label_smoothing) * ce - self.label_smoothing * log_probs.mean(dim=-1)
        p_true = log_probs.gather(1, target[:, None]).squeeze(1).exp()
        loss = (1 - p_true).pow(self.gamma) * ce
        if self.alpha is not None:
            loss = loss * self.alpha[target]
        return loss.mean()


def consistency_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """R-Drop's regulariser (Liang et al., 2021): the symmetric KL divergence between the predictions
    of two forward passes with different dropout masks, averaged over both directions and the batch."""
    log_p, log_q = F.log_softmax(logits_a.float(), dim=-1), F.log_softmax(logits_b.float(), dim=-1)
    kl_pq = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    kl_qp = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return (kl_pq + kl_qp) / 2


def build_loss(
    name: str = "focal",
    gamma: float = 2.0,
    alpha=None,
    label_smoothing: float = 0.0,
    class_counts: Sequence[int] | None = None,
) -> nn.Module:
    """The loss named in config. `ce` is focal with gamma=0: one code path, identical values."""
    if name not in ("focal", "ce"):
        raise ConfigError(f"loss.name={name!r}: allowed values are 'focal' and 'ce'")
    return FocalLoss(
        gamma=gamma if name == "focal" else 0.0,
        alpha=class_weights(alpha, class_counts),
        label_smoothing=label_smoothing,
    )
