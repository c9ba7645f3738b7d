"""What emotion_lab adds to a Lightning checkpoint beyond the weights, and reads back on resume.

A checkpoint also carries the label names, the fitted calibration temperature, the random state and
step-guard counts a resumed run needs to continue exactly, and (for a frozen published encoder) a
reference to that encoder in place of its weights. The LightningModule's checkpoint hooks call these.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from emotion_lab.labels import ID2LABEL
from emotion_lab.models.calibration import checked_temperature
from emotion_lab.models.loading import ENCODER_PREFIX, WEIGHT_SETS, restore_referenced_encoder, weights_digest


def partial_config(factory: Any) -> dict[str, Any] | None:
    """A `_partial_` factory from config as plain data again (checkpoints hold no Python objects)."""
    if not isinstance(factory, functools.partial):
        return None
    func = factory.func
    return {"_target_": f"{func.__module__}.{func.__qualname__}", "_partial_": True, **factory.keywords}


def save_extras(module: Any, checkpoint: dict[str, Any]) -> None:
    """Add to `checkpoint` what `module` (an EmotionClassifier) needs besides its weights."""
    checkpoint["id2label"] = dict(ID2LABEL)
    # What a resumed run needs to continue exactly: dropout's random stream and the step guard's counts.
    checkpoint["emotion_lab_state"] = {
        "torch_rng": torch.get_rng_state(),
        "skipped_steps": module.skipped_steps,
        "skipped_in_a_row": module.skipped_in_a_row,
    }
    if module.calibration_temperature is not None:
        checkpoint["temperature"] = module.calibration_temperature
    if module.reference_frozen_encoder:
        for weights in WEIGHT_SETS:
            state = checkpoint.get(weights, {})
            for key in [k for k in state if k.startswith(ENCODER_PREFIX)]:
                del state[key]
        digest = module._encoder_digest or weights_digest(module.net.encoder)
        checkpoint["encoder_ref"] = {"name": module.net.config["encoder_name"], "sha256": digest}


def restore_extras(module: Any, checkpoint: dict[str, Any]) -> None:
    """Put back into `module` what `save_extras` stored (before Lightning loads the weights)."""
    restore_referenced_encoder(checkpoint, module.net.encoder, "checkpoint")
    state = checkpoint.get("emotion_lab_state", {})
    module.skipped_steps = state.get("skipped_steps", 0)
    module.skipped_in_a_row = state.get("skipped_in_a_row", 0)
    module.calibration_temperature = checked_temperature(checkpoint.get("temperature"), "checkpoint")
    # Restored at the first training batch, not now: restoring runs validation first, which draws too.
    module._resume_rng = state.get("torch_rng")
