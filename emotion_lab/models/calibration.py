"""Calibration: how far predicted probabilities are from observed accuracy, and temperature scaling.

Temperature scaling divides the logits by one scalar T fitted on validation (minimum negative
log-likelihood): T > 1 softens an overconfident model, T < 1 sharpens an underconfident one. It
never changes which label has the highest probability, so accuracy and F1 are untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torchmetrics.functional.classification import multiclass_calibration_error

from emotion_lab.errors import ModelLoadError

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)


def calibration_scores(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """Negative log-likelihood and expected calibration error (ECE, 15 equal-width confidence bins)
    of `softmax(logits / temperature)` against `targets`."""
    scaled = logits.float() / temperature
    return {
        "nll": float(F.cross_entropy(scaled, targets)),
        "ece": float(
            multiclass_calibration_error(scaled.softmax(-1), targets, logits.shape[-1], n_bins=ECE_BINS, norm="l1")
        ),
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature in TEMPERATURE_RANGE that minimises the NLL of `logits / T` (a 1-D convex problem)."""
    logits = logits.float()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), targets))

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    return math.exp(minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4}).x)


def checked_temperature(value, where) -> float | None:
    """A temperature read from a file: None when it has none (files from before calibration), else a
    positive finite number, or ModelLoadError naming `where`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ModelLoadError(f"{where}: temperature {value!r} is not a positive number")
    return float(value)
