"""Rebuilding a network from a file someone else may have written: the file is data, never code.

A model folder (`emotion_lab.json`) or a checkpoint names its network class in `net._target_`. Only a
subclass of `EmotionNet` is built, and only from emotion_lab or from modules the user trusts by name
(`trusted_modules`; `--trust-module` on the command line); anything else is refused before any
module outside those is imported, so a file cannot make loading run a function of its choosing.

Nor can a file make loading allocate more than its weights hold: the network its config describes is
first built on the meta device (no memory) and its shapes compared with the stored tensors'; only a
network that fits them is built. And a file cannot make loading download: an encoder it names loads
from a local folder or the hub cache only, unless the caller passes `allow_download=True`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emotion_lab.encoders.loading import downloads_refused
from emotion_lab.errors import ModelLoadError, first_line
from emotion_lab.labels import ID2LABEL
from emotion_lab.models.networks import EmotionNet
from emotion_lab.robustness.spelling import SPELLING_KEY, WordRecognizer

TRUSTED_BY_DEFAULT = ("emotion_lab",)
ENCODER_PREFIX = "net.encoder."
# A checkpoint's full sets of module weights: Lightning's, and the raw weights a WeightAveraging callback keeps.
WEIGHT_SETS = ("state_dict", "current_model_state")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def network_class(target: Any, trusted_modules: Sequence[str] = ()) -> type[EmotionNet]:
    """The `EmotionNet` subclass `target` names, or a one-line `ModelLoadError` saying why not."""
    if not isinstance(target, str) or "." not in target:
        raise ModelLoadError(f"net._target_={target!r}: not a class path such as emotion_lab.models.networks.X")
    module_name, _, class_name = target.rpartition(".")
    trusted = (*TRUSTED_BY_DEFAULT, *trusted_modules)
    if not any(_within(module_name, package) for package in trusted):
        raise ModelLoadError(
            f"net._target_={target!r}: refused, a model file may only build emotion_lab networks; if this is "
            f"your own network, trust its module explicitly (trusted_modules=[{module_name}] or "
            f"--trust-module {module_name})"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError as err:
        raise ModelLoadError(f"net._target_={target!r}: cannot import {module_name} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, EmotionNet)):
        raise ModelLoadError(f"net._target_={target!r}: refused, not a subclass of EmotionNet")
    return cls


def build_network(config: Any, trusted_modules: Sequence[str] = (), **overrides: Any) -> EmotionNet:
    """A network with fresh weights (to be loaded) from its recorded config (`pretrained=True`: with the
    encoder's published weights)."""
    if not isinstance(config, dict):
        raise ModelLoadError(f"net: expected the network's config as a mapping, got {type(config).__name__}")
    arguments = {key: value for key, value in config.items() if key != "_target_"}
    cls = network_class(config.get("_target_"), trusted_modules)
    try:
        return cls(**{**arguments, "pretrained": False, **overrides})
    except TypeError as err:
        raise ModelLoadError(f"net: the recorded settings do not fit {cls.__name__} ({err})") from None


def stored_shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def check_shapes(
    config: Any,
    shapes: dict[str, tuple[int, ...]],
    source: Any,
    trusted_modules: Sequence[str] = (),
    skip_prefix: str | None = None,
    **overrides: Any,
) -> None:
    """One line unless the network `config` describes (built on the meta device: no memory) has exactly the
    tensor `shapes` stored in `source`; keys under `skip_prefix` (an encoder stored elsewhere) are not compared."""
    with torch.device("meta"):
        probe = build_network(config, trusted_modules, **overrides)
    # position_ids buffers differ between transformers versions; they are not weights.
    expected = {
        key: tuple(tensor.shape)
        for key, tensor in probe.state_dict().items()
        if not key.endswith("position_ids") and not (skip_prefix and key.startswith(skip_prefix))
    }
    found = {key: shape for key, shape in shapes.items() if not key.endswith("position_ids")}
    wrong = [key for key in expected if key in found and found[key] != expected[key]]
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected and not (skip_prefix and key.startswith(skip_prefix))]
    if wrong:
        key = wrong[0]
        raise ModelLoadError(
            f"{source}: weights do not fit the network ({len(wrong)} of another shape, e.g. {key}: {found[key]} "
            f"in the file, {expected[key]} in the network its config describes); nothing was allocated"
        )
    if missing or unexpected:
        raise ModelLoadError(
            f"{source}: weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            "incompatible emotion_lab version or a different model"
        )


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint of an emotion_lab model, read as data (tensors and plain containers only),
    with its network config and labels checked; anything else is a one-line `ModelLoadError`."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ModelLoadError(
            f"{path}: not a readable emotion_lab checkpoint ({type(err).__name__}: {first_line(err)})"
        ) from None
    net = checkpoint.get("hyper_parameters", {}).get("net") if isinstance(checkpoint, dict) else None
    if not isinstance(net, dict) or "_target_" not in net:
        raise ModelLoadError(
            f"{path}: a Lightning checkpoint without an emotion_lab network config (hyper_parameters.net)"
        )
    if checkpoint.get("id2label", ID2LABEL) != ID2LABEL:
        raise ModelLoadError(f"{path}: labels {checkpoint['id2label']} differ from emotion_lab's {ID2LABEL}")
    return checkpoint


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's tensors in name order: the same weights give the same digest, whatever
    file or format they were read from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def restore_referenced_encoder(checkpoint: dict[str, Any], encoder: torch.nn.Module, source: Any) -> None:
    """Put a frozen encoder's weights back into a checkpoint that references it instead of storing it
    (`encoder_ref`: name and digest), after checking that `encoder` holds exactly those weights."""
    reference = checkpoint.get("encoder_ref")
    if reference is None:
        return
    found = weights_digest(encoder)
    if found != reference.get("sha256"):
        raise ModelLoadError(
            f"{source}: trained on encoder {reference.get('name')!r} with weights sha256 "
            f"{str(reference.get('sha256'))[:12]}..., but that name now loads weights {found[:12]}...; "
            "the checkpoint stores only the head: make that name load those weights again (the same local folder "
            "or hub revision)"
        )
    for weights in WEIGHT_SETS:  # the trained weights, and the raw ones beside a weight average's
        if weights in checkpoint:
            checkpoint[weights].update({ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()})


def checkpoint_network(
    checkpoint: dict[str, Any], path: Path, trusted_modules: Sequence[str] = (), allow_download: bool = False
) -> EmotionNet:
    """A checkpoint's network, unloaded, once its shapes fit the stored weights; with its frozen encoder's
    published weights (checked, and put into the checkpoint's state dict) when the checkpoint references
    the encoder rather than storing it. The encoder it names is downloaded only with `allow_download`."""
    referenced = "encoder_ref" in checkpoint
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: a checkpoint without a state_dict of tensors")
    shapes = {k.removeprefix("net."): tuple(v.shape) for k, v in state.items() if k.startswith("net.")}
    config = checkpoint["hyper_parameters"]["net"]
    with contextlib.nullcontext() if allow_download else downloads_refused():
        check_shapes(config, shapes, path, trusted_modules, skip_prefix="encoder." if referenced else None)
        # A referenced encoder is rebuilt from its published weights: their own size, checked by digest below.
        net = build_network(config, trusted_modules, **({"pretrained": True} if referenced else {}))
    restore_referenced_encoder(checkpoint, net.encoder, path)
    return net


def checkpoint_spelling_words(checkpoint: dict, source: Path) -> dict[str, int] | None:
    """The spelling step's training words a checkpoint of a run with `data.spelling` carries, checked, or None."""
    # Lightning keys a datamodule's state by its class name: a subclass of EmotionDataModule has its own.
    states = [value for value in checkpoint.values() if isinstance(value, dict) and SPELLING_KEY in value]
    words = states[0][SPELLING_KEY] if states else None
    return WordRecognizer.checked_counts(words, str(source)) if words is not None else None
