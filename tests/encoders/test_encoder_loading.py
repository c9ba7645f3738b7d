"""Encoder resolution and running an encoder from a cached layer."""

import pytest
import torch
from transformers import MPNetConfig, MPNetModel

from emotion_lab.encoders.loading import run_layers
from emotion_lab.errors import ConfigError


def test_an_encoder_whose_layers_need_more_than_a_mask_is_not_run_from_a_layer():
    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    model = MPNetModel(config)
    hidden, mask = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="mpnet encoder cannot run from a cached layer"):
        run_layers(model, hidden, mask, 0)
    assert run_layers(model, hidden, mask, 2) is hidden  # above the top: nothing to run
