import functools

import pytest
import torch

from emotion_lab.encoders.loading import EncoderNotFoundError, load_encoder, load_tokenizer
from emotion_lab.errors import ConfigError
from emotion_lab.models.classifier import EmotionClassifier
from emotion_lab.models.losses import FocalLoss
from emotion_lab.models.networks import BiLSTMAttentionNet, EncoderLinearNet
from emotion_lab.models.optim import WarmupSchedule


def make_net(kind, encoder, **kwargs):
    torch.manual_seed(0)
    if kind == "hybrid":
        return BiLSTMAttentionNet(encoder, **{"lstm_hidden": 8, "attn_heads": 4, **kwargs})
    return EncoderLinearNet(encoder, **kwargs)


def make_classifier(net, lr: float = 1e-3, fused: bool = True, **kwargs) -> EmotionClassifier:
    """The classifier as emotion_lab/conf/model/default.yaml builds it: AdamW and the loss as factories."""
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01, fused=fused)
    return EmotionClassifier(
        net, loss=functools.partial(FocalLoss, gamma=2.0), optimizer=optimizer, scheduler=WarmupSchedule(), **kwargs
    )


def configure_optimizers(model: EmotionClassifier) -> dict:
    """`model.configure_optimizers()` outside a Trainer (the schedule only needs the step count)."""

    class FakeTrainer:
        estimated_stepping_batches = 100

    model._trainer = FakeTrainer()
    return model.configure_optimizers()


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


def test_lstm_implementations_share_weights_and_logits(tiny_encoder, batch):
    padded = make_net("hybrid", tiny_encoder, lstm_impl="padded").eval()
    packed = make_net("hybrid", tiny_encoder, lstm_impl="packed").eval()
    packed.load_state_dict(padded.state_dict())
    with torch.no_grad():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert torch.allclose(padded(ids, mask), packed(ids, mask), atol=1e-5)
    with pytest.raises(ConfigError, match="lstm_impl='cudnn'"):
        make_net("hybrid", tiny_encoder, lstm_impl="cudnn")


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


def test_frozen_layers_freeze_the_embeddings_and_lower_layers_only(tiny_encoder):
    net = make_net("hybrid", tiny_encoder, frozen_layers=1).train()
    trainable = {name for name, p in net.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("encoder.layer.1.") for name in trainable)
    # The frozen part runs without dropout, as it did when a cache was built from it.
    assert not net.encoder.embeddings.training and not net.encoder.encoder.layer[0].training
    assert net.encoder.encoder.layer[1].training
    assert net.frozen_depth == 1 and {id(p) for p in net.encoder_parameters()} == {
        id(p) for p in net.encoder.encoder.layer[1].parameters()
    }
    with pytest.raises(ConfigError, match="frozen_layers=2: allowed 0..1"):
        make_net("hybrid", tiny_encoder, frozen_layers=2)


def test_optimizer_gives_encoder_and_head_their_own_learning_rates(tiny_encoder):
    model = make_classifier(make_net("hybrid", tiny_encoder), lr=1e-3, encoder_lr=2e-5)

    config = configure_optimizers(model)
    head, encoder = config["optimizer"].param_groups
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.net.encoder.parameters()}
    # Linear warmup starts from zero: the initial_lr are the configured rates.
    assert (head["initial_lr"], encoder["initial_lr"]) == (1e-3, 2e-5)
    total = sum(p.numel() for g in config["optimizer"].param_groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())
    assert config["optimizer"].defaults["fused"] is True  # emotion_lab/conf/model/default.yaml's default too


def test_fused_and_unfused_adamw_take_the_same_step(tiny_encoder):
    weights = {}
    for fused in (True, False):
        model = make_classifier(make_net("linear", tiny_encoder), fused=fused)
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        optimizer = configure_optimizers(model)["optimizer"]
        for group in optimizer.param_groups:
            group["lr"] = 1e-2  # past the warmup, which starts at 0
        for step in range(3):
            for p in model.parameters():
                p.grad = torch.full_like(p, 0.5 - step)
            optimizer.step()
        weights[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert (weights[fused] - before).abs().min() > 1e-4
    assert torch.allclose(weights[True], weights[False], atol=1e-6)


def test_bad_schedule_is_named(tiny_encoder):
    with pytest.raises(ConfigError, match=r"model.scheduler.name='exponential': allowed values"):
        WarmupSchedule(name="exponential")
    with pytest.raises(ConfigError, match=r"model.scheduler.warmup_ratio=1.0"):
        WarmupSchedule(warmup_ratio=1.0)


def test_layer_decay_scales_each_encoder_layer_and_covers_every_parameter(tiny_encoder):
    model = make_classifier(make_net("hybrid", tiny_encoder), lr=1e-3, encoder_lr=1e-4, layer_decay=0.5)

    groups = configure_optimizers(model)["optimizer"].param_groups
    head, embeddings, layer1, layer2 = groups  # the tiny encoder has 2 layers
    encoder = model.net.encoder
    assert {id(p) for p in embeddings["params"]} == {id(p) for p in encoder.embeddings.parameters()}
    assert {id(p) for p in layer2["params"]} == {id(p) for p in encoder.encoder.layer[1].parameters()}
    # The top layer learns at encoder_lr, each one below at half the rate above it.
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-3, 2.5e-5, 5e-5, 1e-4])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_layer_decay_skips_frozen_layers(tiny_encoder):
    model = make_classifier(make_net("hybrid", tiny_encoder, frozen_layers=1), encoder_lr=1e-4, layer_decay=0.5)

    head, top = configure_optimizers(model)["optimizer"].param_groups
    assert top["initial_lr"] == pytest.approx(1e-4)
    assert {id(p) for p in top["params"]} == {id(p) for p in model.net.encoder.encoder.layer[1].parameters()}


@pytest.mark.parametrize("decay", [0.0, 1.5])
def test_bad_layer_decay_is_named(tiny_encoder, decay):
    with pytest.raises(ConfigError, match=r"model.layer_decay=.*\(0, 1\]"):
        make_classifier(make_net("linear", tiny_encoder), layer_decay=decay)


def test_gradient_clipping_still_clips_by_norm(tiny_encoder):
    model = make_classifier(make_net("linear", tiny_encoder))
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    model.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm == pytest.approx(1.0, rel=1e-2) and model.skipped_steps == 0  # unclipped: ~3 * sqrt(#params)


@pytest.mark.parametrize("scope", ["network", "head"])
def test_rdrop_in_eval_mode_is_the_plain_loss(tiny_encoder, batch, scope):
    # Without dropout both passes agree: the KL term is 0 and the doubled batch's mean is the plain mean.
    labelled = {**batch, "labels": torch.tensor([1, 4, 5])}
    plain = make_classifier(make_net("hybrid", tiny_encoder)).eval()
    rdrop = make_classifier(make_net("hybrid", tiny_encoder), rdrop=5.0, rdrop_scope=scope).eval()
    assert rdrop.training_step(labelled, 0).item() == pytest.approx(plain.training_step(labelled, 0).item(), abs=1e-6)


@pytest.mark.parametrize("scope", ["network", "head"])
def test_rdrop_compares_two_dropout_passes_of_the_same_batch(tiny_encoder, batch, monkeypatch, scope):
    from emotion_lab.models import classifier

    seen = []
    monkeypatch.setattr(classifier, "consistency_kl", lambda a, b: seen.append((a, b)) or a.new_zeros(()))
    model = make_classifier(make_net("hybrid", tiny_encoder, dropout=0.5), rdrop=1.0, rdrop_scope=scope)
    model.train()
    model.training_step({**batch, "labels": torch.tensor([1, 4, 5])}, 0)
    ((first, second),) = seen
    assert first.shape == second.shape == (3, 6)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rdrop": -1.0}, r"model.rdrop=-1.0: must be >= 0"),
        ({"rdrop_scope": "encoder"}, r"model.rdrop_scope='encoder': allowed values are \('network'"),
    ],
)
def test_bad_rdrop_options_are_named(tiny_encoder, options, message):
    with pytest.raises(ConfigError, match=message):
        make_classifier(make_net("linear", tiny_encoder), **options)
