import pytest
import torch

from emotion_lab.models.classifier import EmotionClassifier
from emotion_lab.models.encoder import EncoderNotFoundError, load_encoder, load_tokenizer
from emotion_lab.models.networks import BiLSTMAttentionNet, EncoderLinearNet


def make_net(kind, encoder, **kwargs):
    torch.manual_seed(0)
    if kind == "hybrid":
        return BiLSTMAttentionNet(encoder, **{"lstm_hidden": 8, "attn_heads": 4, **kwargs})
    return EncoderLinearNet(encoder, **kwargs)


@pytest.fixture
def batch(tiny_encoder):
    tokenizer = load_tokenizer(tiny_encoder)
    texts = ["i feel happy", "i am so scared of what happens tomorrow at the office", "wow"]
    return tokenizer(texts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("kind", ["hybrid", "linear"])
def test_logits_shape(kind, tiny_encoder, batch):
    net = make_net(kind, tiny_encoder).eval()
    assert net(batch["input_ids"], batch["attention_mask"]).shape == (3, 6)


@pytest.mark.parametrize("kind", ["hybrid", "linear"])
@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_extra_padding_does_not_change_logits(kind, pooling, tiny_encoder, batch):
    net = make_net(kind, tiny_encoder, pooling=pooling).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    padded_ids = torch.cat([ids, torch.zeros(3, 7, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 7, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        plain, padded = net(ids, mask), net(padded_ids, padded_mask)
        alone = net(ids[:1, : int(mask[0].sum())], mask[:1, : int(mask[0].sum())])
    assert torch.allclose(plain, padded, atol=1e-5)
    # A sentence's logits do not depend on the longer sentences it is batched with.
    assert torch.allclose(plain[:1], alone, atol=1e-5)


@pytest.mark.parametrize("ablation", [{"lstm_layers": 0}, {"attn_heads": 0}, {"lstm_layers": 0, "attn_heads": 0}])
def test_ablations_drop_their_layer_and_keep_padding_invariance(ablation, tiny_encoder, batch):
    net = make_net("hybrid", tiny_encoder, **ablation).eval()
    assert (net.lstm is None) == ("lstm_layers" in ablation)
    assert (net.attention is None) == ("attn_heads" in ablation)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    padded = (
        torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], 1),
        torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], 1),
    )
    with torch.no_grad():
        assert torch.allclose(net(ids, mask), net(*padded), atol=1e-5)


def test_head_accepts_precomputed_encoder_states(tiny_encoder, batch):
    net = make_net("hybrid", tiny_encoder).eval()
    with torch.no_grad():
        hidden, mask = net.encode(batch["input_ids"], batch["attention_mask"])
        assert hidden.shape == (*batch["input_ids"].shape, 32)
        assert torch.allclose(net.head(hidden, mask), net(batch["input_ids"], batch["attention_mask"]))


def test_heads_that_do_not_divide_the_width_fail_before_loading(monkeypatch):
    monkeypatch.setattr("emotion_lab.models.networks.load_encoder", lambda *a, **k: pytest.fail("loaded encoder"))
    with pytest.raises(ValueError, match=r"attn_heads=3 must divide the attention width 16"):
        BiLSTMAttentionNet("any", lstm_hidden=8, attn_heads=3)
    with pytest.raises(ValueError, match="pooling"):
        BiLSTMAttentionNet("any", pooling="cls_concat")
    with pytest.raises(ValueError, match=r"model.net.dropout=-0.1: must be in \[0, 1\)"):
        BiLSTMAttentionNet("any", dropout=-0.1)
    with pytest.raises(ValueError, match="attn_dropout=1.0"):
        BiLSTMAttentionNet("any", attn_dropout=1.0)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(EncoderNotFoundError, match="no-such-encoder-xyz"):
        load_encoder("no-such-encoder-xyz")


def test_default_encoder_resolves_offline_to_the_embedded_minilm():
    encoder = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert (encoder.config.hidden_size, encoder.config.num_hidden_layers) == (384, 6)
    assert encoder.pooler is None
    assert 22_000_000 < sum(p.numel() for p in encoder.parameters()) < 23_000_000


def test_encoder_trains_with_dropout_and_a_frozen_one_does_not(tiny_encoder):
    net = make_net("hybrid", tiny_encoder)
    assert net.training and net.encoder.training  # from_pretrained hands it back in eval mode
    frozen = make_net("hybrid", tiny_encoder, freeze_encoder=True).train()
    assert not frozen.encoder.training
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert frozen.encoder_parameters() == [] and frozen.head_parameters()


def test_optimizer_gives_encoder_and_head_their_own_learning_rates(tiny_encoder):
    model = EmotionClassifier(make_net("hybrid", tiny_encoder), optimizer={"lr": 1e-3, "encoder_lr": 2e-5})

    class FakeTrainer:
        estimated_stepping_batches = 100

    model._trainer = FakeTrainer()
    config = model.configure_optimizers()
    head, encoder = config["optimizer"].param_groups
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.net.encoder.parameters()}
    # Linear warmup starts from zero: the initial_lr are the configured rates.
    assert (head["initial_lr"], encoder["initial_lr"]) == (1e-3, 2e-5)
    total = sum(p.numel() for g in config["optimizer"].param_groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_bad_schedule_is_named(tiny_encoder):
    with pytest.raises(ValueError, match="allowed values"):
        EmotionClassifier(make_net("linear", tiny_encoder), scheduler={"name": "exponential"})
