"""Networks: an encoder stage (a transformers model) and a head that reads its token states.

Every network splits into `encode(input_ids, attention_mask) -> (hidden, mask)` and
`head(hidden, mask) -> logits`, so a head can also train from cached encoder states. A network
records its constructor arguments in `self.config` (with `_target_`), which checkpoints and
exported models store to rebuild it without Hydra.

Adding a variant: subclass `EmotionNet` (its constructor takes `pretrained`), implement `head`, and
add `emotion_lab/conf/model/net/<name>.yaml` with its `_target_`; the config is recorded from the constructor's
arguments (docs/extending.md).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from emotion_lab.encoders.loading import DEFAULT_ENCODER, load_encoder, run_layers, transformer_layers
from emotion_lab.errors import ConfigError
from emotion_lab.labels import NUM_CLASSES
from emotion_lab.models.bilstm import LSTM_IMPLS, run_bilstm

POOLING = ("mean", "max", "first", "mean_max")


def masked_pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool (B, T, D) states over the real tokens in `mask` (B, T): padding never contributes."""
    mask_f = mask.unsqueeze(-1).to(states.dtype)
    if how == "first":
        return states[:, 0]
    mean = (states * mask_f).sum(1) / mask_f.sum(1).clamp_min(1.0)
    if how == "mean":
        return mean
    maxed = states.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(states.dtype).min).amax(1)
    if how == "max":
        return maxed
    return torch.cat([mean, maxed], dim=-1)


class EmotionNet(nn.Module):
    """Base class: a transformers encoder plus a head over its token states.

    `freeze_encoder` freezes all of the encoder; `frozen_layers=k` freezes its embeddings and first
    k layers only, so the layers above fine-tune with the head (and can train from states cached
    at layer k: `forward_from_layer`).
    """

    def __init__(
        self, encoder_name: str, pretrained: bool, freeze_encoder: bool, num_classes: int, frozen_layers: int = 0
    ) -> None:
        super().__init__()
        self.encoder = load_encoder(encoder_name, pretrained=pretrained)
        self.pretrained = pretrained  # published weights: a checkpoint may name them instead of copying them
        self.encoder_dim: int = self.encoder.config.hidden_size
        self.num_classes = num_classes
        self.freeze_encoder = freeze_encoder
        self.frozen_layers = frozen_layers
        self._frozen_modules: list[nn.Module] = []
        if freeze_encoder:
            self._frozen_modules = [self.encoder]
        elif frozen_layers:
            layers = transformer_layers(self.encoder)
            if not 0 <= frozen_layers < len(layers):
                raise ConfigError(
                    f"model.net.frozen_layers={frozen_layers}: allowed 0..{len(layers) - 1} for this "
                    f"{len(layers)}-layer encoder (all of it: model.net.freeze_encoder=true)"
                )
            self._frozen_modules = [self.encoder.embeddings, *layers[:frozen_layers]]
        for module in self._frozen_modules:
            module.requires_grad_(False)
        # from_pretrained returns the encoder in eval mode, and Lightning keeps module modes as they
        # are: without this, fine-tuning would silently run with the encoder's dropout off.
        self.train()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass records its constructor's arguments in `self.config`, from the signature."""
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        signature = inspect.signature(init)
        if "pretrained" not in signature.parameters:
            raise TypeError(f"{cls.__qualname__}.__init__ must take `pretrained` (loading passes pretrained=False)")
        if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
            raise TypeError(f"{cls.__qualname__}.__init__ takes *args: a stored config can only name arguments")
        var_kw = next((n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD), None)

        @functools.wraps(init)
        def recording_init(self: EmotionNet, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self) is cls:  # the most derived constructor's arguments describe the network
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                # `pretrained` is not recorded: a stored network is rebuilt with pretrained=False.
                named = dict(bound.arguments)
                named.update(named.pop(var_kw, {}) if var_kw else {})
                named = {k: v for k, v in named.items() if k not in ("self", "pretrained")}
                self.config = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **named}

        cls.__init__ = recording_init

    @property
    def frozen_depth(self) -> int:
        """How far the encoder is frozen: its states up to this layer's output (0 = the embeddings)
        never change in training, so a feature cache may hold any of them."""
        if self.freeze_encoder:
            return self.encoder.config.num_hidden_layers
        return self.frozen_layers

    def train(self, mode: bool = True) -> EmotionNet:
        super().train(mode)
        for module in self._frozen_modules:
            # Frozen layers apply no dropout either: their states are deterministic, as in a cache.
            module.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden, attention_mask

    def head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(*self.encode(input_ids, attention_mask))

    def forward_from_layer(self, hidden: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits from the encoder's states after `layer` (e.g. cached): runs the layers above, then the head."""
        if layer != self.encoder.config.num_hidden_layers:  # mode (a) works with any encoder layout
            hidden = run_layers(self.encoder, hidden, mask, layer)
        return self.head(hidden, mask)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def encoder_parameters_by_depth(self) -> list[list[nn.Parameter]]:
        """Trainable encoder parameters from the bottom up: the embeddings, then each transformer layer;
        anything else the encoder holds (a final LayerNorm, say) goes with the top layer."""
        layers = transformer_layers(self.encoder)
        by_depth = [list(self.encoder.embeddings.parameters())] + [list(layer.parameters()) for layer in layers]
        placed = {id(p) for params in by_depth for p in params}
        by_depth[-1] += [p for p in self.encoder.parameters() if id(p) not in placed]
        return [[p for p in params if p.requires_grad] for params in by_depth]

    def head_parameters(self) -> list[nn.Parameter]:
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in encoder_ids]


class BiLSTMAttentionNet(EmotionNet):
    """Encoder -> 2-layer BiLSTM -> multi-head self-attention (residual + LayerNorm) -> pooling -> linear.

    The LSTM only reads real tokens (`models.bilstm.run_bilstm`) and
    the attention gets a key-padding mask, so adding padding to a batch never changes a sentence's
    logits. For ablations, `lstm_layers=0` drops the BiLSTM
    (attention reads the encoder states) and `attn_heads=0` drops the attention.
    """

    def __init__(
        self,
        encoder_name: str = DEFAULT_ENCODER,
        lstm_hidden: int = 256,  # per direction: the attention width is 2 * lstm_hidden
        lstm_layers: int = 2,  # 0 = no BiLSTM (ablation)
        attn_heads: int = 4,  # 0 = no attention (ablation)
        dropout: float = 0.3,  # before the classifier, and between LSTM layers
        attn_dropout: float = 0.1,
        pooling: str = "mean",
        residual_norm: bool = True,  # residual + LayerNorm around the attention: stabler with a fresh head
        lstm_impl: str = "padded",  # padded (fused kernel per direction, faster on CPU) | packed; same weights
        freeze_encoder: bool = False,
        frozen_layers: int = 0,  # freeze the embeddings and this many lower encoder layers
        pretrained: bool = True,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        if lstm_layers < 0 or (lstm_layers and lstm_hidden < 1):
            raise ConfigError(
                f"model.net.lstm_hidden={lstm_hidden}, lstm_layers={lstm_layers}: must be >= 1 (layers 0 = no LSTM)"
            )
        if attn_heads < 0:
            raise ConfigError(f"model.net.attn_heads={attn_heads}: must be >= 1 (0 = no attention)")
        if lstm_layers:
            _check_heads(attn_heads, 2 * lstm_hidden)
        _check_pooling_and_dropout(pooling, dropout=dropout, attn_dropout=attn_dropout)
        if lstm_impl not in LSTM_IMPLS:
            raise ConfigError(f"model.net.lstm_impl={lstm_impl!r}: allowed values are {LSTM_IMPLS}")
        super().__init__(encoder_name, pretrained, freeze_encoder, num_classes, frozen_layers)
        self.lstm_impl = lstm_impl
        width = 2 * lstm_hidden if lstm_layers else self.encoder_dim
        self.lstm = (
            nn.LSTM(
                self.encoder_dim,
                lstm_hidden,
                num_layers=lstm_layers,
                bidirectional=True,
                batch_first=True,
                dropout=dropout if lstm_layers > 1 else 0.0,
            )
            if lstm_layers
            else None
        )
        if attn_heads:
            _check_heads(attn_heads, width)
            self.attention = nn.MultiheadAttention(width, attn_heads, dropout=attn_dropout, batch_first=True)
            self.norm = nn.LayerNorm(width) if residual_norm else None
        else:
            self.attention, self.norm = None, None
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width * (2 if pooling == "mean_max" else 1), num_classes)

    def head(self, hidden: torch.Tensor, mask: torch.Tensor, return_attention: bool = False):
        states, weights = hidden, None
        if self.lstm is not None:
            states = run_bilstm(self.lstm, hidden, mask.sum(1), self.lstm_impl)
        if self.attention is not None:
            attended, weights = self.attention(
                states, states, states, key_padding_mask=~mask.bool(), need_weights=return_attention
            )
            states = self.norm(states + attended) if self.norm is not None else attended
        logits = self.classifier(self.dropout(masked_pool(states, mask, self.pooling)))
        return (logits, weights) if return_attention else logits


def _check_pooling_and_dropout(pooling: str, **dropouts: float) -> None:
    if pooling not in POOLING:
        raise ConfigError(f"model.net.pooling={pooling!r}: allowed values are {POOLING}")
    for name, value in dropouts.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"model.net.{name}={value}: must be in [0, 1)")


def _check_heads(heads: int, width: int) -> None:
    if heads and width % heads:
        raise ConfigError(
            f"model.net.attn_heads={heads} must divide the attention width {width} (2*lstm_hidden, or the "
            f"encoder width without LSTM); allowed: {[h for h in range(1, min(width, 16) + 1) if width % h == 0]}"
        )


class EncoderLinearNet(EmotionNet):
    """The plain fine-tune: pooled encoder states -> dropout -> linear. A baseline and a template."""

    def __init__(
        self,
        encoder_name: str = DEFAULT_ENCODER,
        dropout: float = 0.1,
        pooling: str = "mean",  # all-MiniLM-L6-v2 was trained with mean pooling
        freeze_encoder: bool = False,
        frozen_layers: int = 0,
        pretrained: bool = True,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        _check_pooling_and_dropout(pooling, dropout=dropout)
        super().__init__(encoder_name, pretrained, freeze_encoder, num_classes, frozen_layers)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.encoder_dim * (2 if pooling == "mean_max" else 1), num_classes)

    def head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(masked_pool(hidden, mask, self.pooling)))
