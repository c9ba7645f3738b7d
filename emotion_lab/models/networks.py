"""Networks: an encoder stage (a transformers model) and a head that reads its token states.

Every network splits into `encode(input_ids, attention_mask) -> (hidden, mask)` and
`head(hidden, mask) -> logits`, so a head can also train from cached encoder states. A network
records its constructor arguments in `self.config` (with `_target_`), which checkpoints and
exported models store to rebuild it without Hydra.

Adding a variant: subclass `EmotionNet`, implement `head`, call `self._record_config(...)`, and
add `conf/model/net/<name>.yaml` with its `_target_`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emotion_lab.data.labels import NUM_CLASSES
from emotion_lab.errors import ConfigError
from emotion_lab.models.encoder import DEFAULT_ENCODER, load_encoder

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
    """Base class: a transformers encoder plus a head over its token states."""

    def __init__(self, encoder_name: str, pretrained: bool, freeze_encoder: bool, num_classes: int) -> None:
        super().__init__()
        self.encoder = load_encoder(encoder_name, pretrained=pretrained)
        self.encoder_dim: int = self.encoder.config.hidden_size
        self.num_classes = num_classes
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        # from_pretrained returns the encoder in eval mode, and Lightning keeps module modes as they
        # are: without this, fine-tuning would silently run with the encoder's dropout off.
        self.train()

    def _record_config(self, **kwargs) -> None:
        cls = type(self)
        self.config = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}

    def train(self, mode: bool = True) -> EmotionNet:
        super().train(mode)
        if self.freeze_encoder:
            # A frozen encoder must not apply dropout either: its states should be deterministic.
            self.encoder.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden, attention_mask

    def head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(*self.encode(input_ids, attention_mask))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in encoder_ids]


class BiLSTMAttentionNet(EmotionNet):
    """Encoder -> 2-layer BiLSTM -> multi-head self-attention (residual + LayerNorm) -> pooling -> linear.

    The LSTM runs on packed sequences and the attention gets a key-padding mask, so adding padding
    to a batch never changes a sentence's logits. For ablations, `lstm_layers=0` drops the BiLSTM
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
        freeze_encoder: bool = False,
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
        super().__init__(encoder_name, pretrained, freeze_encoder, num_classes)
        self._record_config(
            encoder_name=encoder_name,
            lstm_hidden=lstm_hidden,
            lstm_layers=lstm_layers,
            attn_heads=attn_heads,
            dropout=dropout,
            attn_dropout=attn_dropout,
            pooling=pooling,
            residual_norm=residual_norm,
            freeze_encoder=freeze_encoder,
            num_classes=num_classes,
        )
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
            lengths = mask.sum(1).cpu()
            packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
            states, _ = self.lstm(packed)
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=hidden.shape[1])
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
        pretrained: bool = True,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        _check_pooling_and_dropout(pooling, dropout=dropout)
        super().__init__(encoder_name, pretrained, freeze_encoder, num_classes)
        self._record_config(
            encoder_name=encoder_name,
            dropout=dropout,
            pooling=pooling,
            freeze_encoder=freeze_encoder,
            num_classes=num_classes,
        )
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.encoder_dim * (2 if pooling == "mean_max" else 1), num_classes)

    def head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(masked_pool(hidden, mask, self.pooling)))
