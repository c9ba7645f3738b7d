"""A classifier rebuilt from a Lightning checkpoint alone: no Hydra composition, no unpickling.

The network class must be emotion_lab's or from `trusted_modules`, and its encoder is downloaded only
with `allow_download` (emotion_lab.models.loading); the loss is looked up among emotion_lab's by name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_lab.errors import ModelLoadError, first_line
from emotion_lab.models.calibration import checked_temperature
from emotion_lab.models.classifier import EmotionClassifier
from emotion_lab.models.loading import checkpoint_network, checkpoint_spelling_words, read_checkpoint
from emotion_lab.models.losses import CrossEntropyLoss, DistillationLoss, FocalLoss

log = logging.getLogger(__name__)

# The losses a checkpoint may name, by exact class path (a file's `_target_` is looked up, never imported).
CHECKPOINT_LOSSES = {
    f"{cls.__module__}.{cls.__qualname__}": cls for cls in (FocalLoss, CrossEntropyLoss, DistillationLoss)
}


def checkpoint_loss(config: dict[str, Any] | None) -> Callable[[], nn.Module] | None:
    """The loss a checkpoint recorded, rebuilt as data: the class is looked up by its exact name among
    emotion_lab's losses and called with plain values only (no Hydra, so nothing nested is built).
    Checkpoints from before losses had a `_target_` name them `focal` or `ce`. Anything else is
    reported as cross-entropy."""
    if not config:
        return None
    config = dict(config)
    if "_target_" not in config:
        name = config.pop("name", "focal")
        config = {
            "_target_": "emotion_lab.models.losses." + ("CrossEntropyLoss" if name == "ce" else "FocalLoss"),
            **({"gamma": config["gamma"]} if name != "ce" and "gamma" in config else {}),
            "alpha": None if config.get("alpha") in (None, "none") else config["alpha"],
            "label_smoothing": config.get("label_smoothing", 0.0),
        }
    cls = CHECKPOINT_LOSSES.get(config.pop("_target_"))
    config.pop("_partial_", None)
    plain = all(isinstance(v, (int, float, str, type(None))) or _is_number_list(v) for v in config.values())
    if cls is None or not plain:
        log.warning("the checkpoint's loss is not one of emotion_lab's: losses are reported as cross-entropy")
        return None
    return functools.partial(cls, **config)


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)


def load_classifier(
    ckpt_path: str | Path,
    map_location: str | torch.device = "cpu",
    trusted_modules: Sequence[str] = (),
    allow_download: bool = False,
) -> EmotionClassifier:
    """The classifier `ckpt_path` holds, in eval mode, with its calibration temperature and, for a run
    with a spelling step, its dictionary (`spelling_words`)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ModelLoadError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file")
    checkpoint = read_checkpoint(path, map_location)
    net = checkpoint_network(checkpoint, path, trusted_modules, allow_download=allow_download)
    model = EmotionClassifier(net, loss=checkpoint_loss(checkpoint["hyper_parameters"].get("loss")))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise ModelLoadError(
            f"{path}: weights do not fit the network its config describes ({first_line(err)})"
        ) from None
    model.calibration_temperature = checked_temperature(checkpoint.get("temperature"), path)
    # The training words of a run with data.spelling: evaluation reads text through the same step.
    model.spelling_words = checkpoint_spelling_words(checkpoint, path)
    return model.eval()
