"""Classification losses, one class each, selected with `loss=<file in emotion_lab/conf/loss>`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emotion_lab.errors import ConfigError
from emotion_lab.labels import NUM_CLASSES

ALPHA_MODES = ("inverse_frequency",)


def class_weights(
    alpha: str | Sequence[float] | None, class_counts: Sequence[int] | None, num_classes: int = NUM_CLASSES
) -> torch.Tensor | None:
    """Per-class weights from a mode name or an explicit list.

    `inverse_frequency` gives each class N / (K * count), so the weights average to 1 over the
    training examples and the loss keeps its scale.
    """
    if alpha is None:
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
    easy sentences to the hard ones (love and surprise are mostly confused with joy). `alpha` is
    `None`, six per-class weights, or `"inverse_frequency"`, whose weights come from the training
    split's class counts (`set_class_counts`, called by the LightningModule in `setup`).
    """

    def __init__(
        self, gamma: float = 2.0, alpha: str | Sequence[float] | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma}: must be >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing={label_smoothing}: must be in [0, 1)")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        if isinstance(alpha, str) and alpha not in ALPHA_MODES:
            raise ConfigError(
                f"loss.alpha={alpha!r}: allowed values are {ALPHA_MODES} or a list of {NUM_CLASSES} floats"
            )
        self.alpha_mode = alpha if isinstance(alpha, str) else None
        self.register_buffer("alpha", None if self.alpha_mode else class_weights(alpha, None), persistent=False)

    def set_class_counts(self, class_counts: Sequence[int]) -> None:
        """Derive `alpha` from the training split's label counts, where the config asked for that."""
        if self.alpha_mode is not None:
            self.alpha = class_weights(self.alpha_mode, class_counts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.alpha_mode == "inverse_frequency" and self.alpha is None:
            raise ConfigError("loss.alpha=inverse_frequency needs the training split's class counts")
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


class CrossEntropyLoss(FocalLoss):
    """Cross-entropy with the same options as the focal loss but `gamma` (it has none): focal loss at
    gamma=0, one code path and identical values, so `loss=ce` ablates exactly the focal factor."""

    def __init__(self, alpha: str | Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(gamma=0.0, alpha=alpha, label_smoothing=label_smoothing)


def consistency_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """R-Drop's regulariser (Liang et al., 2021): the symmetric KL divergence between the predictions
    of two forward passes with different dropout masks, averaged over both directions and the batch."""
    log_p, log_q = F.log_softmax(logits_a.float(), dim=-1), F.log_softmax(logits_b.float(), dim=-1)
    kl_pq = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    kl_qp = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return (kl_pq + kl_qp) / 2


class DistillationLoss(FocalLoss):
    """Knowledge distillation (Hinton et al., 2015) on top of the focal loss:

        focal(logits, labels) + weight * T^2 * KL(teacher_T || student_T)

    where `_T` are the softmax probabilities at temperature T, and the teacher's are the mean over its
    ensemble members (`teacher_logits` of shape batch x teachers x classes). T^2 keeps the KL term's
    gradient on the scale of the label term's as T grows. Batches without teacher logits (validation,
    test) get the focal loss alone. With weight 0 it is the focal loss; with a one-hot teacher and T=1,
    the KL term is the cross-entropy on the labels, so the loss is focal + weight * CE.
    """

    uses_teacher = True

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 2.0,
        gamma: float = 2.0,
        alpha: str | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(gamma=gamma, alpha=alpha, label_smoothing=label_smoothing)
        if weight < 0:
            raise ConfigError(f"loss.weight={weight}: must be >= 0 (0 = the focal loss alone)")
        if temperature <= 0:
            raise ConfigError(f"loss.temperature={temperature}: must be > 0")
        self.weight = float(weight)
        self.temperature = float(temperature)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = super().forward(logits, target)
        if teacher_logits is None or not self.weight:
            return loss
        t = self.temperature
        teacher = F.softmax(teacher_logits.float() / t, dim=-1).mean(dim=1)
        kl = F.kl_div(F.log_softmax(logits.float() / t, dim=-1), teacher, reduction="batchmean")
        return loss + self.weight * t * t * kl
